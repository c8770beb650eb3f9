package digest

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/zeebo/blake3"

	"github.com/orch-dev/orch/pkg/fsx"
)

// Size is the length of a Digest in bytes.
const Size = 32

// Digest is the BLAKE3-256 hash of some content.
type Digest [Size]byte

// Zero is the zero Digest; it never names real content.
var Zero Digest

// ErrSyntax is returned by Parse for anything that is not 64 hex characters.
var ErrSyntax = errors.New("digest: not 64 hex characters")

// String returns the 64-character lower-case hex form.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// Short returns the first 12 hex characters, for display.
func (d Digest) Short() string { return d.String()[:12] }

// IsZero reports whether d is the zero Digest.
func (d Digest) IsZero() bool { return d == Zero }

// MarshalText implements encoding.TextMarshaler.
func (d Digest) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Digest) UnmarshalText(b []byte) error {
	p, err := Parse(string(b))
	if err != nil {
		return err
	}
	*d = p
	return nil
}

// Parse parses the 64-character hex form.
func Parse(s string) (Digest, error) {
	var d Digest
	if len(s) != 2*Size {
		return d, fmt.Errorf("%w: %q", ErrSyntax, s)
	}
	if _, err := hex.Decode(d[:], []byte(s)); err != nil {
		return d, fmt.Errorf("%w: %q", ErrSyntax, s)
	}
	return d, nil
}

// Bytes returns the digest of b.
func Bytes(b []byte) Digest {
	if len(b) >= ParallelThreshold {
		return parallelBytes(b)
	}
	return Digest(blake3.Sum256(b))
}

// String returns the digest of s.
func String(s string) Digest { return Bytes([]byte(s)) }

// serialReader is Reader for content known to be small.
func serialReader(r io.Reader) (Digest, int64, error) {
	h := blake3.New()
	n, err := io.Copy(h, r)
	if err != nil {
		return Zero, n, err
	}
	var d Digest
	h.Sum(d[:0])
	return d, n, nil
}

// File returns the digest and size of the file at path. Big files are hashed
// on all cores, memory-mapped where the platform allows.
func File(path string) (Digest, int64, error) {
	f, err := fsx.Open(path, os.O_RDONLY, 0)
	if err != nil {
		return Zero, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Zero, 0, err
	}
	return OpenFile(f, fi.Size())
}

// OpenFile digests the open file f, of size bytes, from its start: on all
// cores from ParallelThreshold on.
func OpenFile(f *os.File, size int64) (Digest, int64, error) {
	if size >= ParallelThreshold {
		d, err := parallelFile(f, size)
		return d, size, err
	}
	return serialReader(f)
}

// Hasher is an incremental hasher for streaming content.
type Hasher struct{ h *blake3.Hasher }

// NewHasher returns an empty Hasher.
func NewHasher() *Hasher { return &Hasher{h: blake3.New()} }

// Write adds p to the hash; it never fails.
func (h *Hasher) Write(p []byte) (int, error) { return h.h.Write(p) }

// Sum returns the digest of everything written so far.
func (h *Hasher) Sum() Digest {
	var d Digest
	h.h.Sum(d[:0])
	return d
}
