package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/pkg/digest"
)

// A local store used as a shared remote (a directory on a shared file
// system) holds leases as files ROOT/leases/ab/HEX. Every change of a lease
// happens under an exclusive flock of ROOT/locks/HEX.lease, which makes
// create, compare-and-replace and compare-and-delete atomic among the
// processes that share the directory (flock is honoured by NFSv4 and
// emulated with byte-range locks by Linux NFS clients). A lease's tag is
// the digest of its content.

var _ LeaseStore = (*Local)(nil)

func (l *Local) leasePath(key digest.Digest) string {
	h := key.String()
	return filepath.Join(l.root, "leases", h[:2], h)
}

// withLeaseLock runs fn holding the exclusive lock of key's lease.
func (l *Local) withLeaseLock(ctx context.Context, key digest.Digest, fn func() error) error {
	f, err := os.OpenFile(filepath.Join(l.root, "locks", key.String()+".lease"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("lease %s: %w", key.Short(), err)
	}
	defer f.Close()
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("lease %s: lock: %w", key.Short(), err)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return fn()
}

func leaseTag(data []byte) string { return digest.Bytes(data).String()[:32] }

func (l *Local) writeLease(key digest.Digest, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Join(l.root, "tmp"), "lease-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	final := l.leasePath(key)
	err = os.Rename(tmp.Name(), final)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(final), 0o755); err == nil {
			err = os.Rename(tmp.Name(), final)
		}
	}
	return err
}

// CreateLease implements LeaseStore.
func (l *Local) CreateLease(ctx context.Context, key digest.Digest, data []byte) (tag string, created bool, err error) {
	err = l.withLeaseLock(ctx, key, func() error {
		if _, err := os.Stat(l.leasePath(key)); err == nil {
			return nil
		}
		if err := l.writeLease(key, data); err != nil {
			return err
		}
		tag, created = leaseTag(data), true
		return nil
	})
	if err != nil {
		return "", false, fmt.Errorf("create lease %s: %w", key.Short(), err)
	}
	return tag, created, nil
}

// GetLease implements LeaseStore.
func (l *Local) GetLease(_ context.Context, key digest.Digest) ([]byte, string, error) {
	b, err := os.ReadFile(l.leasePath(key))
	if err != nil {
		return nil, "", notFound("lease", key, err)
	}
	return b, leaseTag(b), nil
}

// ReplaceLease implements LeaseStore.
func (l *Local) ReplaceLease(ctx context.Context, key digest.Digest, tag string, data []byte) (newTag string, ok bool, err error) {
	err = l.withLeaseLock(ctx, key, func() error {
		cur, err := os.ReadFile(l.leasePath(key))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if leaseTag(cur) != tag {
			return nil
		}
		if err := l.writeLease(key, data); err != nil {
			return err
		}
		newTag, ok = leaseTag(data), true
		return nil
	})
	if err != nil {
		return "", false, fmt.Errorf("replace lease %s: %w", key.Short(), err)
	}
	return newTag, ok, nil
}

// DeleteLease implements LeaseStore.
func (l *Local) DeleteLease(ctx context.Context, key digest.Digest, tag string) error {
	err := l.withLeaseLock(ctx, key, func() error {
		cur, err := os.ReadFile(l.leasePath(key))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if tag != "" && leaseTag(cur) != tag {
			return nil
		}
		if err := os.Remove(l.leasePath(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete lease %s: %w", key.Short(), err)
	}
	return nil
}

// ListLeases implements LeaseStore.
func (l *Local) ListLeases(ctx context.Context, fn func(digest.Digest) error) error {
	if _, err := os.Stat(filepath.Join(l.root, "leases")); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return l.walk(ctx, "leases", func(d digest.Digest, _ fs.FileInfo) error { return fn(d) })
}
