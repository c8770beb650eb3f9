package cache

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/fsx"
)

// memoVersion is bumped when the memo's encoding changes; an old memo is
// ignored (everything is re-hashed once).
const memoVersion = 1

// racyWindow: a file whose mtime is this close to the moment it was hashed
// may have been written again within the file system's timestamp granularity
// without its stat changing, so its memo entry is not trusted (as git does).
const racyWindow = 2 * time.Second

type memoEntry struct {
	Size     int64
	Mtime    int64
	Ctime    int64
	Ino      uint64
	Dev      uint64
	Digest   digest.Digest
	HashedAt int64
}

type memoFile struct {
	Version int
	Entries map[string]memoEntry
}

// Memo remembers file digests keyed by absolute path and the stat that
// produced them. It is safe for concurrent use.
type Memo struct {
	path string
	now  func() time.Time

	mu      sync.Mutex
	entries map[string]memoEntry
	dirty   bool
	hashed  int // files read since load, for tests and stats
}

// LoadMemo reads the memo at path. A missing or unreadable memo is an empty
// one: the memo is an optimisation and never a source of truth.
func LoadMemo(path string) *Memo {
	m := &Memo{path: path, now: time.Now, entries: map[string]memoEntry{}}
	f, err := fsx.Open(path, os.O_RDONLY, 0)
	if err != nil {
		return m
	}
	defer f.Close()
	var mf memoFile
	if err := gob.NewDecoder(f).Decode(&mf); err == nil && mf.Version == memoVersion && mf.Entries != nil {
		m.entries = mf.Entries
	}
	return m
}

// Hashed returns how many files were read since the memo was loaded.
func (m *Memo) Hashed() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hashed
}

// Save writes the memo atomically if anything changed.
func (m *Memo) Save() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirty || m.path == "" {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(m.path), ".memo-*")
	if err != nil {
		return fmt.Errorf("save memo: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = gob.NewEncoder(tmp).Encode(memoFile{Version: memoVersion, Entries: m.entries})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), m.path)
	}
	if err != nil {
		return fmt.Errorf("save memo: %w", err)
	}
	m.dirty = false
	return nil
}

func statKey(fi fs.FileInfo) memoEntry {
	e := memoEntry{Size: fi.Size(), Mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		e.Ctime = st.Ctim.Sec*1e9 + st.Ctim.Nsec
		e.Ino = st.Ino
		e.Dev = st.Dev
	}
	return e
}

// File returns the digest and size of the regular file at abs (following
// symlinks), reading it only when its stat changed since it was last hashed.
func (m *Memo) File(abs string) (digest.Digest, int64, error) {
	fi, err := os.Stat(abs)
	if err != nil {
		return digest.Zero, 0, err
	}
	return m.fileInfo(abs, fi)
}

func (m *Memo) fileInfo(abs string, fi fs.FileInfo) (digest.Digest, int64, error) {
	if !fi.Mode().IsRegular() {
		return digest.Zero, 0, fmt.Errorf("%s: not a regular file", abs)
	}
	cur := statKey(fi)
	m.mu.Lock()
	old, ok := m.entries[abs]
	m.mu.Unlock()
	if ok && old.Size == cur.Size && old.Mtime == cur.Mtime && old.Ctime == cur.Ctime &&
		old.Ino == cur.Ino && old.Dev == cur.Dev && old.HashedAt-cur.Mtime > int64(racyWindow) {
		return old.Digest, old.Size, nil
	}
	d, n, err := digest.File(abs)
	if err != nil {
		return digest.Zero, 0, err
	}
	if n != cur.Size {
		return digest.Zero, 0, fmt.Errorf("%s: changed while it was read", abs)
	}
	cur.Digest = d
	cur.HashedAt = m.now().UnixNano()
	m.mu.Lock()
	m.entries[abs] = cur
	m.dirty = true
	m.hashed++
	m.mu.Unlock()
	return d, n, nil
}

// Path returns the content digest of a file or directory at abs: a file's
// BLAKE3, or a directory's Tree digest. For a directory it also returns the
// Tree and the absolute path of every file in it, in Tree order.
func (m *Memo) Path(abs string) (digest.Digest, int64, error) {
	fi, err := os.Stat(abs)
	if err != nil {
		return digest.Zero, 0, err
	}
	if !fi.IsDir() {
		return m.fileInfo(abs, fi)
	}
	t, _, err := m.Tree(abs)
	if err != nil {
		return digest.Zero, 0, err
	}
	return t.Digest(), t.Size(), nil
}

// Tree describes the directory at abs, hashing its files through the memo.
// Symlinks are followed if they stay inside abs; one that leaves it is an
// error. It returns the absolute path of each file entry, in Tree order.
func (m *Memo) Tree(abs string) (*Tree, []string, error) {
	root, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, nil, err
	}
	t := &Tree{Version: treeVersion}
	var files []string
	err = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		rel = SafeString(filepath.ToSlash(rel))
		if de.Type()&fs.ModeSymlink != 0 {
			target, err := filepath.EvalSymlinks(p)
			if err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
			if !within(root, target) {
				return fmt.Errorf("%s: symlink leaves the directory (→ %s): %w", rel, target, ErrEscape)
			}
			fi, err := os.Stat(target)
			if err != nil {
				return err
			}
			if fi.IsDir() {
				return fmt.Errorf("%s: symlink to a directory is not supported", rel)
			}
			d, n, err := m.fileInfo(target, fi)
			if err != nil {
				return err
			}
			t.Entries = append(t.Entries, TreeEntry{Path: rel, Digest: d, Size: n, Exec: fi.Mode()&0o111 != 0})
			files = append(files, target)
			return nil
		}
		if de.IsDir() {
			t.Entries = append(t.Entries, TreeEntry{Path: rel, Dir: true})
			files = append(files, "")
			return nil
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("%s: not a regular file or directory", rel)
		}
		d, n, err := m.fileInfo(p, fi)
		if err != nil {
			return err
		}
		t.Entries = append(t.Entries, TreeEntry{Path: rel, Digest: d, Size: n, Exec: fi.Mode()&0o111 != 0})
		files = append(files, p)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return t, files, nil
}

// ErrEscape reports a path that leaves the directory it must stay in.
var ErrEscape = errors.New("path escapes its directory")

func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !filepath.IsAbs(rel) && (len(rel) < 3 || rel[:3] != "../")
}
