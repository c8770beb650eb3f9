package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
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
//	ROOT/locks/abcdef….lock     per-key advisory locks (flock)
//
// Every write goes to a temp file in ROOT/tmp and is renamed into place, so a
// reader, or a process killed mid-write, never leaves a partial entry. Writes
// are not fsynced one by one: Sync flushes the whole file system once, at the
// end of a run. After a power loss a torn blob is caught by verification on
// restore, and a torn record fails to parse; both are then misses.
type Local struct {
	root string
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
	if _, err := os.Stat(final); err == nil {
		return os.Remove(path)
	}
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

// place renames tmp to final, read-only, creating final's directory.
func (l *Local) place(tmp, final string) error {
	if err := os.Chmod(tmp, 0o444); err != nil {
		return err
	}
	return l.rename(tmp, final)
}

// rename renames tmp to final, creating final's directory.
func (l *Local) rename(tmp, final string) error {
	err := os.Rename(tmp, final)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(final), 0o755); err == nil {
			err = os.Rename(tmp, final)
		}
	}
	return err
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
// store directory. If another process holds it, Lock calls waiting once and
// retries until the lock is free or ctx ends. The returned func releases it.
func (l *Local) Lock(ctx context.Context, key digest.Digest, waiting func()) (func(), error) {
	path := filepath.Join(l.root, "locks", key.String()+".lock")
	f, err := fsx.Open(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", key.Short(), err)
	}
	told := false
	delay := 5 * time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() {
				// Unlink while holding the lock would race with a waiter that
				// already opened the file; keep the small file instead.
				_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", key.Short(), err)
		}
		if !told && waiting != nil {
			waiting()
			told = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, context.Cause(ctx)
		case <-time.After(delay):
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

func notFound(what string, d digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s %s: %w", what, d.Short(), ErrNotFound)
	}
	return fmt.Errorf("%s %s: %w", what, d.Short(), err)
}

// IsNotFound reports whether err means a missing blob or record.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
