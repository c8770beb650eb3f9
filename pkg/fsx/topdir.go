package fsx

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// fsTopdirFl is FS_TOPDIR_FL of linux/fs.h (chattr +T), which x/sys/unix
// does not define.
const fsTopdirFl = 0x00020000

// MkdirTop makes dir (and its missing parents) for a tree of its own, like
// orch's state directory: when dir is new, it is marked as the top of a
// directory hierarchy (chattr +T) where the file system knows the flag. On
// ext4 the directories made in it are then placed, by the Orlov
// allocator, in block groups with many free inodes, not beside dir in the
// group its parent shares with whatever else the user keeps there; that
// matters on ext4 without a journal, whose inode allocator passes over every
// inode of the group freed in the last minute or more, one by one, when it
// makes a file. An existing dir is left as it is.
func MkdirTop(dir string, perm os.FileMode) error {
	err := os.Mkdir(dir, perm)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(dir), perm); err == nil {
			err = os.Mkdir(dir, perm)
		}
	}
	if errors.Is(err, fs.ErrExist) {
		if fi, serr := os.Stat(dir); serr == nil && fi.IsDir() {
			return nil
		}
	}
	if err != nil {
		return err
	}
	markTop(dir)
	return nil
}

// markTop sets FS_TOPDIR_FL on dir, silently doing nothing where the file
// system has no such flag (tmpfs, XFS, NFS, ...): it is a placement hint.
func markTop(dir string) {
	fd, err := open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil || flags&fsTopdirFl != 0 {
		return
	}
	_ = unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags|fsTopdirFl))
}
