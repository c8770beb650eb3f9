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
	p, _, err := c.ensureSize(ctx, d)
	return p, err
}

// ensureSize is ensure that also returns the blob's size, as verified.
func (c *Cache) ensureSize(ctx context.Context, d digest.Digest) (string, int64, error) {
	p := c.Local.BlobPath(d)
	c.mu.Lock()
	seen, ok := c.verified[d]
	c.mu.Unlock()
	if ok && statOf(p) == seen {
		return p, seen.size, nil
	}
	if _, err := os.Stat(p); err != nil {
		if store.Store(c.Local) == c.Store {
			return "", -1, fmt.Errorf("blob %s: %w", d.Short(), store.ErrNotFound)
		}
		r, err := c.Store.OpenBlob(ctx, d)
		if err != nil {
			return "", -1, err
		}
		err = c.Local.PutBlob(ctx, d, r) // verifies while writing
		r.Close()
		if err != nil {
			return "", -1, err
		}
	}
	got, _, err := digest.File(p)
	if err != nil {
		return "", -1, fmt.Errorf("blob %s: %w", d.Short(), err)
	}
	if got != d {
		err := fmt.Errorf("blob %s: content hashes to %s: %w", d.Short(), got.Short(), store.ErrCorrupt)
		_ = c.Local.DeleteBlob(ctx, d)
		if c.Corrupt != nil {
			c.Corrupt(d, err)
		}
		return "", -1, err
	}
	return p, c.markVerified(d).size, nil
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
		p, size, err := c.ensureSize(ctx, out.Digest)
		if err != nil {
			return err
		}
		// Where nothing is at dst yet (a first run), one link is all.
		if err := os.Link(p, dst); err == nil {
			return nil
		}
		tmp := fmt.Sprintf("%s.restore-%d-%d", dst, os.Getpid(), restoreSeq.Add(1))
		if err := linkOrCopy(p, tmp, false, size); err != nil {
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

// CopyOver is RestoreCopy into a directory that already holds regular files
// from an earlier use: the file output out is written into the file reuse
// (dst itself, or another file of dst's directory, renamed to dst),
// truncated first, instead of into a new file. Where files are created and
// unlinked by the thousand, ext4 without a journal makes each allocation
// skip every inode deleted in the last half minute (recently_deleted in
// ext4's inode allocator): reusing inodes avoids that cost. A file with
// other hard links, or anything not a regular file, is not reused. A
// directory output, or reuse == "", is RestoreCopy, after removing
// whatever an earlier use left at dst.
func (c *Cache) CopyOver(ctx context.Context, out Output, dst, reuse string) error {
	if out.Dir || reuse == "" {
		if reuse != "" {
			_ = removeAll(reuse)
		}
		err := c.RestoreCopy(ctx, out, dst)
		if errors.Is(err, fs.ErrExist) {
			// Left there by a command of an earlier use, not a spare.
			_ = removeAll(dst)
			err = c.RestoreCopy(ctx, out, dst)
		}
		return err
	}
	p, size, err := c.ensureSize(ctx, out.Digest)
	if err != nil {
		return err
	}
	fresh := func() error {
		_ = removeAll(dst)
		return cloneOrCopy(p, dst, false, size)
	}
	if reuse != dst {
		if err := unix.Renameat(unix.AT_FDCWD, reuse, unix.AT_FDCWD, dst); err != nil {
			_ = removeAll(reuse)
			return fresh()
		}
	}
	// O_NONBLOCK: a FIFO a command left under the name would otherwise
	// block the open until a reader came (ENXIO now, and a fresh copy).
	const wflags = unix.O_WRONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK
	fd, err := unix.Open(dst, wflags, 0)
	if errors.Is(err, unix.EACCES) {
		// A read-only spare is made writable only when it is a regular
		// file of one link: a hard link to a blob (or to anything else)
		// keeps its mode, and gets a fresh copy.
		var st unix.Stat_t
		if unix.Lstat(dst, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 && unix.Chmod(dst, 0o600) == nil {
			fd, err = unix.Open(dst, wflags, 0)
		}
	}
	if err != nil {
		return fresh()
	}
	out2 := os.NewFile(uintptr(fd), dst)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		out2.Close()
		return fresh() // linked elsewhere by a command: never write through it
	}
	// Overwritten in place, then cut to size: truncating to zero first
	// would free the blocks, and ext4 then allocates the new ones at close
	// (auto_da_alloc), both measurable at a thousand stages.
	err = overwrite(out2, p, size, st.Size)
	if err == nil && st.Mode&0o7777 != 0o444 {
		err = unix.Fchmod(fd, 0o444)
	}
	if cerr := out2.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

func (c *Cache) build(ctx context.Context, out Output, dst string) error {
	return c.buildMode(ctx, out, dst, false)
}

func (c *Cache) buildMode(ctx context.Context, out Output, dst string, copies bool) error {
	place := func(p, target string, exec bool, size int64) error {
		if copies {
			return cloneOrCopy(p, target, exec, size)
		}
		return linkOrCopy(p, target, exec, size)
	}
	if !out.Dir {
		p, size, err := c.ensureSize(ctx, out.Digest)
		if err != nil {
			return err
		}
		return place(p, dst, false, size)
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
		p, size, err := c.ensureSize(ctx, e.Digest)
		if err != nil {
			return fmt.Errorf("%s: %w", e.Path, err)
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if err := place(p, target, e.Exec, size); err != nil {
			return err
		}
	}
	return nil
}

// Linked reports whether dst already holds out, reading no content: for a
// file, dst is the very inode of its local blob, of out's size; for a
// directory, the marker Restore left beside it names out's Tree.
func (c *Cache) Linked(out Output, dst string) bool {
	if out.Dir {
		b, err := os.ReadFile(dirMarker(dst))
		if err != nil || string(b) != out.Digest.String() {
			return false
		}
		return c.linkedTree(out.Digest, dst)
	}
	a, err := os.Lstat(dst)
	if err != nil || !a.Mode().IsRegular() || a.Size() != out.Size {
		// The size costs nothing to check and catches a blob that a
		// crash left short or empty (written back after its record).
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
		if err != nil || !os.SameFile(a, bl) || a.Size() != e.Size {
			return errMismatch
		}
		return nil
	})
	return err == nil && n == len(t.Entries)
}

var errMismatch = errors.New("mismatch")

func linkOrCopy(src, dst string, exec bool, size int64) error {
	if !exec {
		if err := os.Link(src, dst); err == nil {
			return nil
		}
	}
	return cloneOrCopy(src, dst, exec, size)
}

// cloneOrCopy writes an independent, read-only copy of src at dst, which
// must not exist (callers pass fresh paths): a reflink (FICLONE) where the
// file system shares extents, a byte copy otherwise. The file is created
// with its final mode, so no chmod or rename follows. size is src's size as
// verified (-1: unknown).
func cloneOrCopy(src, dst string, exec bool, size int64) error {
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
	err = cloneInto(out, in, size)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

// overwrite makes the content of out, now old bytes long, the blob at src
// of size bytes.
func overwrite(out *os.File, src string, size, old int64) error {
	in, err := fsx.Open(src, os.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer in.Close()
	// The plain way: empty out, then clone or copy from in's start.
	fromScratch := func() error {
		if _, err := in.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := out.Truncate(0); err != nil {
			return err
		}
		return cloneInto(out, in, size)
	}
	if size < 0 || noCopyRange.Load() {
		return fromScratch()
	}
	var off int64
	for off < size {
		n, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), &off, int(size-off), 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			if err != nil {
				noCopyRange.Store(true)
			}
			return fromScratch()
		}
	}
	if old > size {
		return out.Truncate(size)
	}
	return nil
}

// noCopyRange is set once copy_file_range has failed: overwrite falls back
// to truncating and copying.
var noCopyRange atomic.Bool

// cloneInto makes out's content in's: a reflink where the file system
// shares extents, a copy otherwise.
func cloneInto(out, in *os.File, size int64) error {
	if !noReflink.Load() {
		err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd()))
		if err == nil {
			return nil
		}
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
			noReflink.Store(true) // this file system has none: do not ask again
		}
	}
	return copyAll(out, in, size)
}

// collectFile is Collect of a regular file with one open: it is hashed,
// made read-only and checked through the descriptor, then renamed into the
// store; its stat is the blob's, so it counts as verified without another.
// ok is false, with no error, when src is not a regular file of one link
// (Collect's general path takes it).
func (c *Cache) collectFile(src string) (out Output, ok bool, err error) {
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0) // NONBLOCK: a FIFO must not block the open
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return Output{}, false, nil // a symlink: refused below
		}
		return Output{}, false, &fs.PathError{Op: "open", Path: src, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		unix.Close(fd)
		return Output{}, false, nil
	}
	_ = unix.SetNonblock(fd, false) // a regular file: plain reads, not the poller
	f := os.NewFile(uintptr(fd), src)
	defer f.Close()
	d, n, err := fileDigest(f, &st)
	if err != nil {
		return Output{}, false, err
	}
	if err := unix.Fchmod(fd, 0o444); err != nil {
		return Output{}, false, err
	}
	placed, err := c.Local.PlaceFile(d, src)
	if err != nil {
		return Output{}, false, err
	}
	if placed {
		c.mu.Lock()
		c.verified[d] = blobStat{size: st.Size, mtime: st.Mtim.Nano(), ino: st.Ino}
		c.mu.Unlock()
	} else {
		c.markVerified(d)
	}
	return Output{Digest: d, Size: n}, true, nil
}

// verifyWritten (ORCH_DIGEST=verify) hashes every output again that a
// built-in writer hashed as it wrote it, and fails the stage on a mismatch.
var verifyWritten = os.Getenv("ORCH_DIGEST") == "verify"

// fileDigest is the digest and size of the open file f with stat st: the
// one orch's own writer computed while writing it (digest.FileWriter), if
// the file is still in the state it closed in (inode, size, mtime and
// ctime to the nanosecond), else the file hashed.
func fileDigest(f *os.File, st *unix.Stat_t) (digest.Digest, int64, error) {
	d, ok := digest.Recall(digest.FileIDOf(st))
	if !ok {
		return digest.OpenFile(f, st.Size)
	}
	if verifyWritten {
		got, _, err := digest.OpenFile(f, st.Size)
		if err != nil {
			return d, 0, err
		}
		if got != d {
			return d, 0, fmt.Errorf("%s: digest computed while writing %s, file hashes to %s (ORCH_DIGEST=verify)", f.Name(), d, got)
		}
	}
	return d, st.Size, nil
}

// noReflink is set once FICLONE has failed because the file system cannot
// share extents (ext4): the cache and the attempt directories live on one
// file system, so every later copy would fail the same way.
var noReflink atomic.Bool

// copyAll copies in, of size bytes, to out with copy_file_range, without
// the extra call io.Copy makes to find the end; io.Copy does it where the
// size is unknown (-1) or copy_file_range cannot.
func copyAll(out, in *os.File, size int64) error {
	if size < 0 {
		_, err := io.Copy(out, in)
		return err
	}
	for left := size; left > 0; {
		n, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), nil, int(left), 0)
		if err != nil || n == 0 {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			_, err = io.Copy(out, in) // copy_file_range unsupported here, or the file grew
			return err
		}
		left -= int64(n)
	}
	return nil
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
	if out, ok, err := c.collectFile(src); ok || err != nil {
		return out, []digest.Digest{out.Digest}, err
	}
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

func (c *Cache) markVerified(d digest.Digest) blobStat {
	st := statOf(c.Local.BlobPath(d))
	c.mu.Lock()
	c.verified[d] = st
	c.mu.Unlock()
	return st
}
