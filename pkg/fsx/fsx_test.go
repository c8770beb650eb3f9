package fsx

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestReadFile(t *testing.T) {
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
		got, err := ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("ReadFile(%d bytes) = %d bytes, %v", n, len(got), err)
		}
	}
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v, want fs.ErrNotExist", err)
	}
	if _, err := ReadFile(dir); err == nil {
		t.Errorf("reading a directory succeeded")
	}
}

func TestOpenAndCreateTemp(t *testing.T) {
	dir := t.TempDir()
	seen := map[string]bool{}
	for range 50 {
		f, err := CreateTemp(dir, "record-*.tmp")
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(f.Name())
		if seen[name] || filepath.Dir(f.Name()) != dir || name[:7] != "record-" || filepath.Ext(name) != ".tmp" {
			t.Fatalf("CreateTemp name %q (dir %s)", f.Name(), filepath.Dir(f.Name()))
		}
		seen[name] = true
		if _, err := f.WriteString("x"); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	path := filepath.Join(dir, "f")
	f, err := Open(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o444)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o444 || fi.Size() != 5 {
		t.Errorf("Open created %v, %v", fi, err)
	}
	if _, err := Open(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); !errors.Is(err, fs.ErrExist) {
		t.Errorf("O_EXCL on an existing file: %v", err)
	}
	if _, err := Open(filepath.Join(dir, "missing"), os.O_RDONLY, 0); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestNames(t *testing.T) {
	dir := t.TempDir()
	got, err := Names(dir)
	if err != nil || len(got) != 0 {
		t.Fatalf("Names(empty dir) = %q, %v; want none", got, err)
	}
	// Enough long names that getdents needs several calls with an 8 KiB buffer.
	want := []string{"sub", ".hidden", "a b"}
	for i := range 400 {
		want = append(want, fmt.Sprintf("file-with-a-rather-long-name-%04d", i))
	}
	for _, n := range want {
		var err error
		if n == "sub" {
			err = os.Mkdir(filepath.Join(dir, n), 0o755)
		} else {
			err = os.WriteFile(filepath.Join(dir, n), nil, 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err = Names(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("Names: %d names, want %d (first %q)", len(got), len(want), got[:min(3, len(got))])
	}
	if _, err := Names(filepath.Join(dir, "a b")); err == nil {
		t.Errorf("Names of a regular file succeeded")
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if names, err := Names(link); err == nil {
		t.Errorf("Names followed a symlink to a directory: %d names", len(names))
	}
	if _, err := Names(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Names of a missing directory: %v, want fs.ErrNotExist", err)
	}
}
