package cache

import (
	"encoding/json"
	"fmt"

	"github.com/orch-dev/orch/pkg/digest"
)

const treeVersion = 1

// TreeEntry is one file or sub-directory of a Tree.
type TreeEntry struct {
	Path   string        `json:"path"` // slash-separated, relative to the tree
	Digest digest.Digest `json:"digest,omitzero"`
	Size   int64         `json:"size,omitempty"`
	Exec   bool          `json:"exec,omitempty"`
	Dir    bool          `json:"dir,omitempty"`
}

// Tree is the manifest of a directory. Entries are in lexical walk order
// (filepath.WalkDir), which is deterministic.
type Tree struct {
	Version int         `json:"v"`
	Entries []TreeEntry `json:"entries"`
}

// Encode returns the canonical encoding of t.
func (t *Tree) Encode() []byte {
	b, err := json.Marshal(t)
	if err != nil {
		panic(fmt.Sprintf("cache: encode tree: %v", err))
	}
	return b
}

// Digest returns the digest of t's encoding; it names the directory.
func (t *Tree) Digest() digest.Digest { return digest.Bytes(t.Encode()) }

// Size is the total size of t's files.
func (t *Tree) Size() int64 {
	var n int64
	for _, e := range t.Entries {
		n += e.Size
	}
	return n
}

// DecodeTree parses a Tree blob.
func DecodeTree(b []byte) (*Tree, error) {
	var t Tree
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, err
	}
	if t.Version != treeVersion {
		return nil, fmt.Errorf("tree version %d, want %d", t.Version, treeVersion)
	}
	return &t, nil
}
