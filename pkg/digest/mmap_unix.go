//go:build unix

package digest

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// mapFile maps the first size bytes of f read-only into memory. unmap must be
// called once the bytes are no longer used.
func mapFile(f *os.File, size int64) (b []byte, unmap func(), err error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, nil, errors.New("digest: cannot map this size")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	cerr := rc.Control(func(fd uintptr) {
		b, err = unix.Mmap(int(fd), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	})
	if cerr != nil {
		return nil, nil, cerr
	}
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}
