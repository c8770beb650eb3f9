package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/fsx"
	"github.com/orch-dev/orch/pkg/store"
)

// Cache restores and collects stage outputs through a store.
//
// Local is where blobs are linked from; Store is the store records and blobs
// are looked up in and written to: Local itself, or a store that keeps Local
// in front of a remote.
type Cache struct {
	Store store.Store
	Local *store.Local
	Memo  *Memo

	mu sync.Mutex
	// verified remembers blobs hashed in this process with the stat they
	// had; a blob whose size, mtime or inode changed since (a stage wrote
	// to a hard-linked input: root ignores the read-only mode) is hashed
	// again.
	verified map[digest.Digest]blobStat
	// Corrupt is called (concurrently) for every blob that failed
	// verification and was evicted.
	Corrupt func(d digest.Digest, err error)
}

// New returns a Cache over s with local blobs in l.
func New(s store.Store, l *store.Local, m *Memo) *Cache {
	return &Cache{Store: s, Local: l, Memo: m, verified: map[digest.Digest]blobStat{}}
}

// Lookup returns the record under key. A missing record wraps
// store.ErrNotFound; a corrupt one wraps store.ErrCorrupt.
func (c *Cache) Lookup(ctx context.Context, key digest.Digest) (*Record, error) {
	return GetRecord(ctx, c.Store, key)
}

// ensure makes blob d present in the local store and verified, fetching it
// from c.Store if needed. A blob that fails verification is evicted and
// reported with an error wrapping store.ErrCorrupt.
func (c *Cache) ensure(ctx context.Context, d digest.Digest) (string, error) {
	p := c.Local.BlobPath(d)
	c.mu.Lock()
	seen, ok := c.verified[d]
	c.mu.Unlock()
	if ok && statOf(p) == seen {
		return p, nil
	}
	if _, err := os.Stat(p); err != nil {
		if store.Store(c.Local) == c.Store {
			return "", fmt.Errorf("blob %s: %w", d.Short(), store.ErrNotFound)
		}
		r, err := c.Store.OpenBlob(ctx, d)
		if err != nil {
			return "", err
		}
		err = c.Local.PutBlob(ctx, d, r) // verifies while writing
		r.Close()
		if err != nil {
			return "", err
		}
	}
	got, _, err := digest.File(p)
	if err != nil {
		return "", fmt.Errorf("blob %s: %w", d.Short(), err)
	}
	if got != d {
		err := fmt.Errorf("blob %s: content hashes to %s: %w", d.Short(), got.Short(), store.ErrCorrupt)
		_ = c.Local.DeleteBlob(ctx, d)
		if c.Corrupt != nil {
			c.Corrupt(d, err)
		}
		return "", err
	}
	c.markVerified(d)
	return p, nil
}

type blobStat struct {
	size, mtime int64
	ino         uint64
}

func statOf(p string) blobStat {
	var st unix.Stat_t
	if unix.Stat(p, &st) != nil {
		return blobStat{size: -1}
	}
	return blobStat{size: st.Size, mtime: st.Mtim.Nano(), ino: st.Ino}
}

// Check verifies that every blob of out is present and intact, fetching
// missing ones into the local store, without materializing anything.
func (c *Cache) Check(ctx context.Context, out Output) error {
	if _, err := c.ensure(ctx, out.Digest); err != nil {
		return err
	}
	if !out.Dir {
		return nil
	}
	t, err := c.tree(ctx, out.Digest)
	if err != nil {
		return err
	}
	for _, e := range t.Entries {
		if !e.Dir {
			if _, err := c.ensure(ctx, e.Digest); err != nil {
				return fmt.Errorf("%s: %w", e.Path, err)
			}
		}
	}
	return nil
}

// Tree returns the verified, decoded Tree blob d (fetched from c.Store into
// the local store if needed).
func (c *Cache) Tree(ctx context.Context, d digest.Digest) (*Tree, error) { return c.tree(ctx, d) }

func (c *Cache) tree(ctx context.Context, d digest.Digest) (*Tree, error) {
	p, err := c.ensure(ctx, d)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	t, err := DecodeTree(b)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %v: %w", d.Short(), err, store.ErrCorrupt)
	}
	return t, nil
}

// Restore materializes out at dst, read-only, replacing whatever is there.
// Files are hard-linked from the local store, or copied where linking fails.
// Every blob is verified first. The result is built beside dst and renamed
// into place, so concurrent restores of the same dst (two orch processes on
// one workspace) each leave a complete dst.
func (c *Cache) Restore(ctx context.Context, out Output, dst string) error {
	if err := mkdirParent(dst); err != nil {
		return err
	}
	if !out.Dir {
		// A file: link (or copy) it beside dst under a unique name, then
		// rename over dst, which replaces a file atomically.
		p, err := c.ensure(ctx, out.Digest)
		if err != nil {
			return err
		}
		tmp := fmt.Sprintf("%s.restore-%d-%d", dst, os.Getpid(), restoreSeq.Add(1))
		if err := linkOrCopy(p, tmp, false); err != nil {
			return err
		}
		if err := os.Rename(tmp, dst); err == nil {
			// When dst is already a link to the same blob, rename does
			// nothing and tmp stays (rename(2) on two links to one file).
			if _, err := os.Lstat(tmp); err == nil {
				os.Remove(tmp)
			}
			return nil
		}
		os.Remove(tmp)
		// dst is a directory in the way (an output that used to be one):
		// fall through to the general path, which moves it aside.
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".restore-*")
	if err != nil {
		return err
	}
	defer removeAll(tmp)
	build := filepath.Join(tmp, "x")
	if err := c.build(ctx, out, build); err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		err := os.Rename(build, dst)
		if err == nil || attempt == 10 {
			if err == nil && out.Dir {
				err = os.WriteFile(dirMarker(dst), []byte(out.Digest.String()), 0o644)
			}
			return err
		}
		// dst is a directory (rename cannot replace a non-empty one) or in
		// the way: move it aside atomically, then delete it at leisure, so a
		// concurrent restorer renaming into dst is never deleted under.
		aside := filepath.Join(tmp, fmt.Sprintf("old%d", attempt))
		if err := os.Rename(dst, aside); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
}

var restoreSeq atomic.Int64

// mkdirParent creates dst's parent directory: one mkdir when its own parent
// exists, which is the common case, MkdirAll otherwise.
func mkdirParent(dst string) error {
	dir := filepath.Dir(dst)
	err := os.Mkdir(dir, 0o755)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return nil
	}
	return os.MkdirAll(dir, 0o755)
}

// dirMarker is the file beside a restored directory that names its Tree,
// so Linked can recognise it without reading it.
func dirMarker(dst string) string {
	return filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tree")
}

// RestoreCopy materializes out at dst like Restore, but as independent
// copies (reflinks where the file system has them), never hard links: for
// commands, which could otherwise write through a link into the cache (the
// read-only mode does not stop root, or an owner who chmods).
func (c *Cache) RestoreCopy(ctx context.Context, out Output, dst string) error {
	if err := mkdirParent(dst); err != nil {
		return err
	}
	return c.buildMode(ctx, out, dst, true)
}

func (c *Cache) build(ctx context.Context, out Output, dst string) error {
	return c.buildMode(ctx, out, dst, false)
}

func (c *Cache) buildMode(ctx context.Context, out Output, dst string, copies bool) error {
	place := func(p, target string, exec bool) error {
		if copies {
			return cloneOrCopy(p, target, exec)
		}
		return linkOrCopy(p, target, exec)
	}
	if !out.Dir {
		p, err := c.ensure(ctx, out.Digest)
		if err != nil {
			return err
		}
		return place(p, dst, false)
	}
	t, err := c.tree(ctx, out.Digest)
	if err != nil {
		return err
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	for _, e := range t.Entries {
		target := filepath.Join(dst, filepath.FromSlash(UnsafeString(e.Path)))
		if !within(dst, target) {
			return fmt.Errorf("tree %s: entry %q: %w", out.Digest.Short(), e.Path, store.ErrCorrupt)
		}
		if e.Dir {
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			continue
		}
		p, err := c.ensure(ctx, e.Digest)
		if err != nil {
			return fmt.Errorf("%s: %w", e.Path, err)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if err := place(p, target, e.Exec); err != nil {
			return err
		}
	}
	return nil
}

// Linked reports whether dst already holds out, reading no content: for a
// file, dst is the very inode of its local blob; for a directory, the marker
// Restore left beside it names out's Tree.
func (c *Cache) Linked(out Output, dst string) bool {
	if out.Dir {
		b, err := os.ReadFile(dirMarker(dst))
		if err != nil || string(b) != out.Digest.String() {
			return false
		}
		return c.linkedTree(out.Digest, dst)
	}
	a, err := os.Lstat(dst)
	if err != nil || !a.Mode().IsRegular() {
		return false
	}
	b, err := os.Stat(c.Local.BlobPath(out.Digest))
	return err == nil && os.SameFile(a, b)
}

// linkedTree reports whether the directory dst holds exactly the entries of
// tree d, each file the very inode of its blob: stats only.
func (c *Cache) linkedTree(d digest.Digest, dst string) bool {
	b, err := os.ReadFile(c.Local.BlobPath(d))
	if err != nil {
		return false
	}
	t, err := DecodeTree(b)
	if err != nil {
		return false
	}
	want := map[string]TreeEntry{}
	for _, e := range t.Entries {
		want[filepath.Join(dst, filepath.FromSlash(UnsafeString(e.Path)))] = e
	}
	n := 0
	err = filepath.WalkDir(dst, func(p string, de fs.DirEntry, err error) error {
		if err != nil || p == dst {
			return err
		}
		e, ok := want[p]
		if !ok || e.Dir != de.IsDir() {
			return errMismatch
		}
		n++
		if e.Dir {
			return nil
		}
		a, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if e.Exec { // copies, not links: compare size only
			if a.Size() != e.Size {
				return errMismatch
			}
			return nil
		}
		bl, err := os.Stat(c.Local.BlobPath(e.Digest))
		if err != nil || !os.SameFile(a, bl) {
			return errMismatch
		}
		return nil
	})
	return err == nil && n == len(t.Entries)
}

var errMismatch = errors.New("mismatch")

func linkOrCopy(src, dst string, exec bool) error {
	if !exec {
		if err := os.Link(src, dst); err == nil {
			return nil
		}
	}
	return cloneOrCopy(src, dst, exec)
}

// cloneOrCopy writes an independent, read-only copy of src at dst, which
// must not exist (callers pass fresh paths): a reflink (FICLONE) where the
// file system shares extents, a byte copy otherwise. The file is created
// with its final mode, so no chmod or rename follows.
func cloneOrCopy(src, dst string, exec bool) error {
	in, err := fsx.Open(src, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	mode := os.FileMode(0o444)
	if exec {
		mode = 0o555
	}
	out, err := fsx.Open(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if cerr := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); cerr != nil {
		_, err = io.Copy(out, in)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

// removeAll removes path even where it holds read-only directories.
func removeAll(path string) error {
	if err := os.RemoveAll(path); err == nil {
		return nil
	}
	// Read-only directories inside (made by a user or a command): make them
	// writable and try again.
	_ = filepath.WalkDir(path, func(p string, de fs.DirEntry, err error) error {
		if err == nil && de.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(path)
}

// RemoveAll removes path, including read-only directories inside it.
func RemoveAll(path string) error { return removeAll(path) }

// Collect hashes the file or directory a stage wrote at src and moves it into
// the local store; src is gone afterwards. It returns the Output and the
// digests of every blob it stored (for upload to a remote).
func (c *Cache) Collect(ctx context.Context, src string) (Output, []digest.Digest, error) {
	fi, err := os.Lstat(src)
	if err != nil {
		return Output{}, nil, err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return Output{}, nil, fmt.Errorf("is a symlink; outputs must be regular files or directories: %w", ErrEscape)
	}
	if fi.Mode().IsRegular() {
		d, n, err := digest.File(src)
		if err != nil {
			return Output{}, nil, err
		}
		if err := c.Local.AdoptFile(d, src); err != nil {
			return Output{}, nil, err
		}
		c.markVerified(d)
		return Output{Digest: d, Size: n}, []digest.Digest{d}, nil
	}
	if !fi.IsDir() {
		return Output{}, nil, fmt.Errorf("not a regular file or directory")
	}
	if src, err = filepath.EvalSymlinks(src); err != nil {
		return Output{}, nil, err
	}
	t, files, err := (&Memo{entries: map[string]memoEntry{}, now: c.Memo.now}).Tree(src)
	if err != nil {
		return Output{}, nil, err
	}
	var blobs []digest.Digest
	seen := map[digest.Digest]bool{}
	for i, e := range t.Entries {
		if e.Dir {
			continue
		}
		// Symlinked entries point at files inside src that are adopted as
		// entries of their own.
		if files[i] != filepath.Join(src, filepath.FromSlash(UnsafeString(e.Path))) || seen[e.Digest] {
			continue
		}
		seen[e.Digest] = true
		if err := c.Local.AdoptFile(e.Digest, files[i]); err != nil {
			return Output{}, nil, err
		}
		c.markVerified(e.Digest)
		blobs = append(blobs, e.Digest)
	}
	enc := t.Encode()
	td := digest.Bytes(enc)
	if err := c.Local.PutBlob(ctx, td, bytes.NewReader(enc)); err != nil {
		return Output{}, nil, err
	}
	blobs = append(blobs, td)
	// What remains of src (directories, duplicate files, symlinks) is in
	// the store now; src is gone afterwards, as for a file.
	if err := removeAll(src); err != nil {
		return Output{}, nil, err
	}
	return Output{Digest: td, Size: t.Size(), Dir: true}, blobs, nil
}

// PutBytes stores b as a blob (logs, small artifacts) and returns its digest.
func (c *Cache) PutBytes(ctx context.Context, b []byte) (digest.Digest, error) {
	d := digest.Bytes(b)
	if err := c.Local.PutBlob(ctx, d, bytes.NewReader(b)); err != nil {
		return d, err
	}
	return d, nil
}

// ReadBlob returns a (small) blob's verified bytes.
func (c *Cache) ReadBlob(ctx context.Context, d digest.Digest) ([]byte, error) {
	b, _, err := c.ReadBlobTail(ctx, d, -1)
	return b, err
}

// ReadBlobTail returns the verified blob's last limit bytes (all of it when
// limit < 0) and its whole size: a server shows the end of a huge log
// without holding it in memory.
func (c *Cache) ReadBlobTail(ctx context.Context, d digest.Digest, limit int64) ([]byte, int64, error) {
	p, err := c.ensure(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	size, off := fi.Size(), int64(0)
	if limit >= 0 && size > limit {
		off = size - limit
	}
	b := make([]byte, size-off)
	n, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, err
	}
	return b[:n], size, nil
}

// Save writes r after making sure every blob in blobs is in c.Store: blobs
// first, the record last.
func (c *Cache) Save(ctx context.Context, r *Record, blobs []digest.Digest) error {
	if u, ok := c.Store.(store.BlobUploader); ok {
		if err := u.UploadBlobs(ctx, blobs); err != nil {
			return err
		}
	} else if store.Store(c.Local) != c.Store {
		for _, d := range blobs {
			if _, err := c.Store.StatBlob(ctx, d); err == nil {
				continue
			}
			f, err := c.Local.OpenBlob(ctx, d)
			if err != nil {
				return err
			}
			err = c.Store.PutBlob(ctx, d, f)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	return PutRecord(ctx, c.Store, r)
}

func (c *Cache) markVerified(d digest.Digest) {
	st := statOf(c.Local.BlobPath(d))
	c.mu.Lock()
	c.verified[d] = st
	c.mu.Unlock()
}
