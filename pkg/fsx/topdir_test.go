package fsx

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func dirFlags(t *testing.T, dir string) (uint32, bool) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	return flags, err == nil
}

// A new directory is marked as a top directory where the file system has
// the flag (ext4: /tmp here); an existing one is not touched; missing
// parents are made.
func TestMkdirTop(t *testing.T) {
	root := t.TempDir()
	if _, ok := dirFlags(t, root); !ok {
		t.Skip("the file system of the temp dir has no inode flags")
	}
	dir := filepath.Join(root, "a", "b", ".orch")
	if err := MkdirTop(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	flags, _ := dirFlags(t, dir)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	// ext2/3/4 (one magic number) keep the flag; elsewhere a file system
	// may take the ioctl and drop it, which is not an error.
	if st.Type == unix.EXT4_SUPER_MAGIC && flags&fsTopdirFl == 0 {
		t.Errorf("a new directory on ext4 is not marked (flags %#x)", flags)
	}
	if f, _ := dirFlags(t, filepath.Join(root, "a")); f&fsTopdirFl != 0 {
		t.Errorf("a parent made on the way is marked too")
	}
	existing := filepath.Join(root, "existing")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := MkdirTop(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	if f, _ := dirFlags(t, existing); f&fsTopdirFl != 0 {
		t.Errorf("an existing directory was marked")
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := MkdirTop(file, 0o755); err == nil {
		t.Errorf("MkdirTop over a regular file: no error")
	}
}
