// Package fsx opens files with fewer system calls than package os.
//
// os.OpenFile readies every file for the network poller: on Linux it sets
// O_NONBLOCK, tries epoll_ctl (which refuses regular files), and clears
// O_NONBLOCK again — five calls besides openat. orch opens several files per
// stage (inputs, outputs, the log, the record, a lock), and on a VM each
// call is several microseconds, so at a thousand stages they show in a
// profile. Files from fsx are plain blocking descriptors wrapped by
// os.NewFile: reads and writes on them block an OS thread, which is what
// happens for regular files anyway.
package fsx

import (
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Open is os.OpenFile for regular files and directories.
func Open(path string, flag int, perm os.FileMode) (*os.File, error) {
	fd, err := open(path, flag, perm)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

func open(path string, flag int, perm os.FileMode) (int, error) {
	for {
		fd, err := unix.Open(path, flag|unix.O_CLOEXEC, uint32(perm.Perm()))
		if err != unix.EINTR {
			return fd, err
		}
	}
}

var tempSeq atomic.Uint32

func init() { tempSeq.Store(uint32(time.Now().UnixNano())) }

// CreateTemp is os.CreateTemp: a new file in dir named by pattern with its
// last "*" replaced by a unique string, opened for reading and writing.
func CreateTemp(dir, pattern string) (*os.File, error) {
	prefix, suffix := pattern, ""
	if i := strings.LastIndexByte(pattern, '*'); i >= 0 {
		prefix, suffix = pattern[:i], pattern[i+1:]
	}
	for try := 0; ; try++ {
		name := dir + string(os.PathSeparator) + prefix + strconv.FormatUint(uint64(tempSeq.Add(0x9E3779B9)), 36) + strconv.Itoa(os.Getpid()%1000) + suffix
		f, err := Open(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil || !os.IsExist(err) || try == 100 {
			return f, err
		}
	}
}

// ReadFile is os.ReadFile for small files read by the thousand (records on
// every plan): open, read to EOF, close, and nothing else.
func ReadFile(path string) ([]byte, error) {
	fd, err := open(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 2048)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		case n == 0:
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

var direntBufs = sync.Pool{New: func() any { b := make([]byte, 8192); return &b }}

// Names returns the names in directory dir, but "." and "..", unsorted (a
// symlink at dir is an error, not followed):
// open, getdents64 to the end, close. os.ReadDir does the same calls and
// besides builds and sorts a DirEntry per name; orch asks this of two empty
// directories per stage.
func Names(dir string) ([]string, error) {
	fd, err := open(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd)
	bp := direntBufs.Get().(*[]byte)
	defer direntBufs.Put(bp)
	var names []string
	for {
		n, err := unix.Getdents(fd, *bp)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "readdirent", Path: dir, Err: err}
		}
		if n <= 0 {
			return names, nil
		}
		_, _, names = unix.ParseDirent((*bp)[:n], -1, names)
	}
}
