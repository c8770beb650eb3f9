package cache

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// CopyOver writes an input into a file an earlier stage left: the content
// is exactly the blob's whatever was there, the file is read-only and not
// a link into the cache, and nothing outside is written through a link.
func TestCopyOver(t *testing.T) {
	e := newEnv(t)
	c := e.cache()
	src := e.path("stage/out/data.csv")
	writeAt(t, src, "a,b\n1,2\n", past)
	out, _ := collect(t, c, src)
	in := e.path("w1/in")
	if err := os.MkdirAll(in, 0o755); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, dst string) {
		t.Helper()
		b, err := os.ReadFile(dst)
		if err != nil || string(b) != "a,b\n1,2\n" {
			t.Fatalf("%s holds %q, %v; want the blob's content", dst, b, err)
		}
		fi, err := os.Lstat(dst)
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o444 {
			t.Fatalf("%s: %v %v; want a read-only regular file", dst, fi.Mode(), err)
		}
		blob, _ := os.Stat(e.local.BlobPath(out.Digest))
		if os.SameFile(fi, blob) {
			t.Fatalf("%s is the cache's blob itself", dst)
		}
		if b, _ := os.ReadFile(e.local.BlobPath(out.Digest)); string(b) != "a,b\n1,2\n" {
			t.Fatalf("the blob changed: %q", b)
		}
	}
	for _, tc := range []struct {
		name  string
		old   string // what the earlier stage left
		other bool   // reuse a file of another name
	}{
		{name: "longer", old: "a much longer earlier input\nwith more lines\n"},
		{name: "shorter", old: "x"},
		{name: "empty", old: ""},
		{name: "renamed", old: "from another input", other: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := filepath.Join(in, "data")
			reuse := dst
			if tc.other {
				reuse = filepath.Join(in, "previous")
			}
			os.Remove(dst)
			if err := os.WriteFile(reuse, []byte(tc.old), 0o444); err != nil {
				t.Fatal(err)
			}
			if err := c.CopyOver(t.Context(), out, dst, reuse); err != nil {
				t.Fatal(err)
			}
			check(t, dst)
			if tc.other {
				if _, err := os.Lstat(reuse); err == nil {
					t.Errorf("%s is still there", reuse)
				}
			}
		})
	}
	t.Run("linked elsewhere", func(t *testing.T) {
		// A command hard-linked its input into the workspace: rewriting
		// the file in place would change the workspace's file.
		dst := filepath.Join(in, "data")
		os.Remove(dst)
		if err := os.WriteFile(dst, []byte("user data"), 0o644); err != nil {
			t.Fatal(err)
		}
		keep := e.path("workspace-copy.csv")
		if err := os.Link(dst, keep); err != nil {
			t.Fatal(err)
		}
		if err := c.CopyOver(t.Context(), out, dst, dst); err != nil {
			t.Fatal(err)
		}
		check(t, dst)
		if b, _ := os.ReadFile(keep); string(b) != "user data" {
			t.Errorf("the other link now holds %q", b)
		}
	})
	t.Run("symlink", func(t *testing.T) {
		dst := filepath.Join(in, "data")
		os.Remove(dst)
		target := e.path("target.txt")
		if err := os.WriteFile(target, []byte("target"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, dst); err != nil {
			t.Fatal(err)
		}
		if err := c.CopyOver(t.Context(), out, dst, dst); err != nil {
			t.Fatal(err)
		}
		check(t, dst)
		if b, _ := os.ReadFile(target); string(b) != "target" {
			t.Errorf("written through the symlink: %q", b)
		}
	})
	t.Run("fifo", func(t *testing.T) {
		// A command replaced its input by a named pipe: opening it to
		// write must not wait for a reader (found in review: the next
		// stage's setup hung, deaf to SIGTERM).
		dst := filepath.Join(in, "data")
		os.Remove(dst)
		if err := unix.Mkfifo(dst, 0o644); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.CopyOver(t.Context(), out, dst, dst) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("CopyOver still blocked opening a FIFO after 30 s")
		}
		check(t, dst)
	})
	t.Run("no spare", func(t *testing.T) {
		dst := filepath.Join(in, "fresh")
		if err := c.CopyOver(t.Context(), out, dst, ""); err != nil {
			t.Fatal(err)
		}
		check(t, dst)
	})
}
