package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/fsx"
)

// Local is a Store on a local directory:
//
//	ROOT/blobs/ab/abcdef…       blob content, read-only (0444)
//	ROOT/records/ab/abcdef…     record bytes
//	ROOT/tmp/                   temp files, renamed into place
//	ROOT/locks/keys             per-key advisory locks: one byte each
//	                            (open-file-description locks, fcntl(2))
//
// Every write goes to a temp file in ROOT/tmp and is renamed into place, so a
// reader, or a process killed mid-write, never leaves a partial entry. Writes
// are not fsynced one by one: Sync flushes the whole file system once, at the
// end of a run. After a power loss a torn blob is caught by verification on
// restore, and a torn record fails to parse; both are then misses.
type Local struct {
	root string

	// keyLocks is the file whose bytes are the per-key locks (Lock),
	// opened on first use.
	keyLocksOnce sync.Once
	keyLocks     *os.File
	keyLocksErr  error
	// held are the keys this process has locked, each with a channel
	// closed on release: byte-range locks on one descriptor do not
	// exclude each other within a process.
	heldMu sync.Mutex
	held   map[digest.Digest]chan struct{}
}

var _ Store = (*Local)(nil)

// OpenLocal opens (creating if needed) a local store rooted at dir.
func OpenLocal(dir string) (*Local, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local store %s: %w", dir, err)
	}
	for _, sub := range []string{"blobs", "records", "tmp", "locks"} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o755); err != nil {
			return nil, fmt.Errorf("local store %s: %w", dir, err)
		}
	}
	return &Local{root: abs}, nil
}

// Root returns the store's directory.
func (l *Local) Root() string { return l.root }

// BlobPath returns where blob d lives (or would live) on disk. Callers may
// hard-link or reflink the file but must never write to it.
func (l *Local) BlobPath(d digest.Digest) string {
	h := d.String()
	return filepath.Join(l.root, "blobs", h[:2], h)
}

func (l *Local) recordPath(key digest.Digest) string {
	h := key.String()
	return filepath.Join(l.root, "records", h[:2], h)
}

// StatBlob implements Store.
func (l *Local) StatBlob(_ context.Context, d digest.Digest) (int64, error) {
	fi, err := os.Stat(l.BlobPath(d))
	if err != nil {
		return 0, notFound("blob", d, err)
	}
	return fi.Size(), nil
}

// PutBlob implements Store.
func (l *Local) PutBlob(_ context.Context, d digest.Digest, r io.Reader) error {
	final := l.BlobPath(d)
	if _, err := os.Stat(final); err == nil {
		return nil
	}
	tmp, err := fsx.CreateTemp(filepath.Join(l.root, "tmp"), "blob-*")
	if err != nil {
		return fmt.Errorf("put blob %s: %w", d.Short(), err)
	}
	h := digest.NewHasher()
	_, err = io.Copy(io.MultiWriter(tmp, h), r)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if got := h.Sum(); got != d {
			err = fmt.Errorf("content hashes to %s: %w", got.Short(), ErrCorrupt)
		}
	}
	if err == nil {
		err = l.place(tmp.Name(), final)
	}
	if err != nil {
		// The temp file goes only on failure: after the rename it is gone,
		// and removing it anyway costs two failing system calls a blob.
		os.Remove(tmp.Name())
		return fmt.Errorf("put blob %s: %w", d.Short(), err)
	}
	return nil
}

// AdoptFile moves the file at path, whose digest the caller has just computed
// as d, into the store without copying (rename; a copy across file systems or
// when the file has other hard links). The file at path is gone afterwards. Adopting a blob that already exists
// removes path and returns nil.
func (l *Local) AdoptFile(d digest.Digest, path string) error {
	final := l.BlobPath(d)
	// A file with other hard links (a command that linked a workspace file
	// as its output) is copied: moving it would make the blob share an
	// inode, and a mode, with a file the user may edit.
	var st unix.Stat_t
	shared := unix.Lstat(path, &st) == nil && st.Nlink > 1
	var err error
	if !shared {
		err = l.place(path, final)
	}
	if shared || errors.Is(err, unix.EXDEV) {
		f, oerr := os.Open(path)
		if oerr != nil {
			return fmt.Errorf("adopt blob %s: %w", d.Short(), oerr)
		}
		defer f.Close()
		if err = l.PutBlob(context.Background(), d, f); err == nil {
			return os.Remove(path)
		}
	}
	return err
}

// PlaceFile moves the file at path, whose digest is d, into the store by
// rename; the caller has made it read-only and knows it has no other hard
// link (AdoptFile checks both itself). If the blob exists already, path is
// removed and placed is false.
func (l *Local) PlaceFile(d digest.Digest, path string) (placed bool, err error) {
	return l.move(path, l.BlobPath(d))
}

// move renames tmp to final unless final exists; then it removes tmp.
func (l *Local) move(tmp, final string) (placed bool, err error) {
	err = l.renameNew(tmp, final)
	if errors.Is(err, fs.ErrExist) {
		return false, os.Remove(tmp)
	}
	return err == nil, err
}

// renameNew renames tmp to final, creating final's directory, unless final
// exists: then it returns an error matching fs.ErrExist and leaves both.
// One renameat2(RENAME_NOREPLACE) does the check and the move; where the
// file system lacks it, a stat and a rename do.
func (l *Local) renameNew(tmp, final string) error {
	for try := 0; ; try++ {
		err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EEXIST):
			return &fs.PathError{Op: "rename", Path: final, Err: fs.ErrExist}
		case errors.Is(err, unix.ENOENT) && try == 0:
			if err := os.MkdirAll(filepath.Dir(final), 0o755); err != nil {
				return err
			}
			continue
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP):
			if _, err := os.Lstat(final); err == nil {
				return &fs.PathError{Op: "rename", Path: final, Err: fs.ErrExist}
			}
			return l.rename(tmp, final)
		}
		return &os.LinkError{Op: "rename", Old: tmp, New: final, Err: err}
	}
}

// place renames tmp to final, read-only, creating final's directory. If
// final exists already (the same content, by its name), tmp is removed and
// final is left as it is: replacing it would cut the hard links restores
// made to it.
func (l *Local) place(tmp, final string) error {
	if err := os.Chmod(tmp, 0o444); err != nil {
		return err
	}
	_, err := l.move(tmp, final)
	return err
}

// rename renames tmp to final, creating final's directory. It calls
// renameat(2) directly: os.Rename first stats final (to refuse replacing a
// directory), one more system call per record that buys nothing here.
func (l *Local) rename(tmp, final string) error {
	err := unix.Renameat(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final)
	if errors.Is(err, unix.ENOENT) {
		if err = os.MkdirAll(filepath.Dir(final), 0o755); err == nil {
			err = unix.Renameat(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final)
		}
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: tmp, New: final, Err: err}
	}
	return nil
}

// OpenBlob implements Store.
func (l *Local) OpenBlob(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
	f, err := fsx.Open(l.BlobPath(d), os.O_RDONLY, 0)
	if err != nil {
		return nil, notFound("blob", d, err)
	}
	return f, nil
}

// DeleteBlob implements Store.
func (l *Local) DeleteBlob(_ context.Context, d digest.Digest) error {
	if err := os.Remove(l.BlobPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", d.Short(), err)
	}
	return nil
}

// ListBlobs implements Store.
func (l *Local) ListBlobs(ctx context.Context, fn func(digest.Digest, int64) error) error {
	return l.walk(ctx, "blobs", func(d digest.Digest, fi fs.FileInfo) error { return fn(d, fi.Size()) })
}

// GetRecord implements Store.
func (l *Local) GetRecord(_ context.Context, key digest.Digest) ([]byte, error) {
	b, err := fsx.ReadFile(l.recordPath(key))
	if err != nil {
		return nil, notFound("record", key, err)
	}
	return b, nil
}

// PutRecord implements Store.
func (l *Local) PutRecord(_ context.Context, key digest.Digest, data []byte) error {
	tmp, err := fsx.CreateTemp(filepath.Join(l.root, "tmp"), "record-*")
	if err != nil {
		return fmt.Errorf("put record %s: %w", key.Short(), err)
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = l.rename(tmp.Name(), l.recordPath(key))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("put record %s: %w", key.Short(), err)
	}
	return nil
}

// DeleteRecord implements Store.
func (l *Local) DeleteRecord(_ context.Context, key digest.Digest) error {
	if err := os.Remove(l.recordPath(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete record %s: %w", key.Short(), err)
	}
	return nil
}

// ListRecords implements Store.
func (l *Local) ListRecords(ctx context.Context, fn func(digest.Digest) error) error {
	return l.walk(ctx, "records", func(d digest.Digest, _ fs.FileInfo) error { return fn(d) })
}

func (l *Local) walk(ctx context.Context, sub string, fn func(digest.Digest, fs.FileInfo) error) error {
	top := filepath.Join(l.root, sub)
	dirs, err := os.ReadDir(top)
	if err != nil {
		return fmt.Errorf("list %s: %w", sub, err)
	}
	for _, dir := range dirs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !dir.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(top, dir.Name()))
		if err != nil {
			return fmt.Errorf("list %s: %w", sub, err)
		}
		for _, e := range ents {
			d, err := digest.Parse(e.Name())
			if err != nil {
				continue // not ours
			}
			fi, err := e.Info()
			if err != nil {
				continue // deleted meanwhile
			}
			if err := fn(d, fi); err != nil {
				return err
			}
		}
	}
	return nil
}

// Sync flushes every write of this store (and the rest of its file system)
// to stable storage with one syncfs(2).
func (l *Local) Sync() error {
	f, err := os.Open(l.root)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// Lock takes the advisory lock named key, shared by every process using this
// store directory. If another process or goroutine holds it, Lock calls
// waiting once and retries until the lock is free or ctx ends. The returned
// func releases it.
//
// A lock is one byte of ROOT/locks/keys, at an offset taken from the key,
// locked with an open-file-description lock (F_OFD_SETLK): no file is
// created per key, which cost an inode (and a quarter of a millisecond on
// an ext4 mounted with discard) for every stage run. The lock goes with
// the descriptor, so a killed process releases it; NFS clients map it to
// NFS byte-range locks.
func (l *Local) Lock(ctx context.Context, key digest.Digest, waiting func()) (func(), error) {
	l.keyLocksOnce.Do(func() {
		l.keyLocks, l.keyLocksErr = os.OpenFile(filepath.Join(l.root, "locks", "keys"), os.O_CREATE|os.O_RDWR, 0o644)
	})
	if l.keyLocksErr != nil {
		return nil, fmt.Errorf("lock %s: %w", key.Short(), l.keyLocksErr)
	}
	told := false
	wait := func() {
		if !told && waiting != nil {
			waiting()
			told = true
		}
	}
	// Within this process: one holder per key.
	mine := make(chan struct{})
	for {
		l.heldMu.Lock()
		other, busy := l.held[key]
		if !busy {
			if l.held == nil {
				l.held = map[digest.Digest]chan struct{}{}
			}
			l.held[key] = mine
		}
		l.heldMu.Unlock()
		if !busy {
			break
		}
		wait()
		select {
		case <-other:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	release := func() {
		l.heldMu.Lock()
		delete(l.held, key)
		l.heldMu.Unlock()
		close(mine)
	}
	// Among processes: the key's byte.
	fd := int(l.keyLocks.Fd())
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart, Start: keyOffset(key), Len: 1}
	delay := 5 * time.Millisecond
	for {
		err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
		if err == nil {
			return func() {
				un := lk
				un.Type = unix.F_UNLCK
				_ = unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &un)
				release()
			}, nil
		}
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) && !errors.Is(err, unix.EINTR) {
			release()
			return nil, fmt.Errorf("lock %s: %w", key.Short(), err)
		}
		wait()
		select {
		case <-ctx.Done():
			release()
			return nil, context.Cause(ctx)
		case <-time.After(delay):
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

// keyOffset is the byte of ROOT/locks/keys that stands for key: 62 bits of
// the key, so distinct keys share a byte with probability 2^-62.
func keyOffset(key digest.Digest) int64 {
	return int64(binary.LittleEndian.Uint64(key[:8]) >> 2)
}

func notFound(what string, d digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %s: %w", what, d.Short(), ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", what, d.Short(), err)
}

// IsNotFound reports whether err means a missing blob or record.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
