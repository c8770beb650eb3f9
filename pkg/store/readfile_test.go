package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestReadSmallFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 2047, 2048, 2049, 4096, 100_000} {
		path := filepath.Join(dir, fmt.Sprint(n))
		want := make([]byte, n)
		for i := range want {
			want[i] = byte(i*7 + n)
		}
		if err := os.WriteFile(path, want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readSmallFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("readSmallFile(%d bytes) = %d bytes, %v", n, len(got), err)
		}
	}
	if _, err := readSmallFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	if _, err := readSmallFile(dir); err == nil {
		t.Errorf("reading a directory succeeded")
	}
}
