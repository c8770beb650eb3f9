package digest

import (
	"os"

	"golang.org/x/sys/unix"
)

// FileIDOf is the FileID of a file with stat st.
func FileIDOf(st *unix.Stat_t) FileID {
	return FileID{Dev: st.Dev, Ino: st.Ino, Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
}

func fileID(f *os.File) (FileID, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return FileID{}, err
	}
	return FileIDOf(&st), nil
}
