//go:build linux

package digest

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func statID(t *testing.T, path string) FileID {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return FileIDOf(&st)
}

// create creates path and returns it with a FileWriter over it.
func create(t *testing.T, path string) (*os.File, *FileWriter) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	return f, NewFileWriter(f)
}

// write writes p through w.
func write(t *testing.T, w *FileWriter, p []byte) {
	t.Helper()
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
}

// A FileWriter's digest is the file's, remembered under the file's state
// and recalled once.
func TestFileWriterRemembers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	_, w := create(t, path)
	var want bytes.Buffer
	for i := range 7 { // pieces larger and smaller than a hashing chunk
		p := bytes.Repeat([]byte{byte(i), byte(i * 7)}, (i*hashChunk)/3+5)
		want.Write(p)
		write(t, w, p)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("file content differs from what was written (err %v)", err)
	}
	id := statID(t, path)
	d, ok := Recall(id)
	if !ok {
		t.Fatal("no digest remembered for the file as it closed")
	}
	if fd, _, _ := File(path); d != fd {
		t.Fatalf("remembered %s, the file hashes to %s", d.Short(), fd.Short())
	}
	if _, ok := Recall(id); ok {
		t.Fatal("a digest is recalled once")
	}
}

// A file changed after its writer closed it is not in the remembered state:
// nothing is recalled for it, and the cache hashes it.
func TestFileWriterChangedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	_, w := create(t, path)
	write(t, w, []byte("hello"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	before := statID(t, path)
	g, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Write([]byte(" world")); err != nil {
		t.Fatal(err)
	}
	g.Close()
	if _, ok := Recall(statID(t, path)); ok {
		t.Fatal("a digest was recalled for a file appended to after its writer closed")
	}
	Recall(before) // forget it
}

// A file written partly around the FileWriter (its size is not the bytes
// hashed) gets no digest.
func TestFileWriterBypassed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	f, w := create(t, path)
	write(t, w, []byte("hello"))
	if _, err := f.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := Recall(statID(t, path)); ok {
		t.Fatal("a digest was remembered for bytes the FileWriter did not see")
	}
}
