package store_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
	"github.com/orch-dev/orch/pkg/store/storetest"
)

func openLocal(t *testing.T) *store.Local {
	t.Helper()
	l, err := store.OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLocalConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return openLocal(t) })
}

// One store shared by every subtest, as a bucket is shared.
func TestLocalConformanceShared(t *testing.T) {
	l := openLocal(t)
	storetest.Run(t, func(*testing.T) store.Store { return l })
	// Everything a subtest wrote it deleted, but for the shared empty blob.
	var left []string
	_ = l.ListBlobs(t.Context(), func(d digest.Digest, _ int64) error {
		if d != digest.Bytes(nil) {
			left = append(left, "blob "+d.Short())
		}
		return nil
	})
	_ = l.ListRecords(t.Context(), func(d digest.Digest) error { left = append(left, "record "+d.Short()); return nil })
	if len(left) > 0 {
		t.Errorf("the suite left %v behind in a shared store", left)
	}
	checkTmpEmpty(t, l)
}

func checkTmpEmpty(t *testing.T, l *store.Local) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(l.Root(), "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("temp file left behind: tmp/%s", e.Name())
	}
}

func TestOpenLocalLayout(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	l, err := store.OpenLocal("cache")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "cache"); l.Root() != want {
		t.Errorf("Root() = %q, want absolute %q", l.Root(), want)
	}
	for _, sub := range []string{"blobs", "records", "tmp", "locks"} {
		if fi, err := os.Stat(filepath.Join(dir, "cache", sub)); err != nil || !fi.IsDir() {
			t.Errorf("OpenLocal did not create %s/: %v", sub, err)
		}
	}
	// Opening again is fine and sees the same content.
	b := []byte("hello")
	if err := l.PutBlob(t.Context(), digest.Bytes(b), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	l2, err := store.OpenLocal(filepath.Join(dir, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := l2.StatBlob(t.Context(), digest.Bytes(b)); err != nil || n != 5 {
		t.Errorf("reopened store: StatBlob = %d, %v", n, err)
	}
}

func TestLocalBlobPath(t *testing.T) {
	l := openLocal(t)
	b := []byte("blob path")
	d := digest.Bytes(b)
	h := d.String()
	want := filepath.Join(l.Root(), "blobs", h[:2], h)
	if got := l.BlobPath(d); got != want {
		t.Fatalf("BlobPath = %q, want %q", got, want)
	}
	if _, err := os.Stat(want); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("blob file exists before PutBlob: %v", err)
	}
	if err := l.PutBlob(t.Context(), d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(want)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o444 {
		t.Errorf("blob file mode %v, want read-only 0444", fi.Mode().Perm())
	}
	if got, _ := os.ReadFile(want); !bytes.Equal(got, b) {
		t.Errorf("blob file holds %q, want %q", got, b)
	}
}

func TestLocalPutCorruptLeavesNothing(t *testing.T) {
	l := openLocal(t)
	b := []byte("the real content")
	d := digest.Bytes(b)
	err := l.PutBlob(t.Context(), d, strings.NewReader("other content"))
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("PutBlob with wrong bytes: %v, want ErrCorrupt", err)
	}
	if _, err := os.Lstat(l.BlobPath(d)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("blob file exists after a corrupt put: %v", err)
	}
	checkTmpEmpty(t, l)
}

// Files that are not blobs (an editor's backup, a stray temp file) are not listed.
func TestLocalListSkipsStrangers(t *testing.T) {
	l := openLocal(t)
	b := []byte("x")
	d := digest.Bytes(b)
	if err := l.PutBlob(t.Context(), d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if err := l.PutRecord(t.Context(), d, b); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(l.BlobPath(d))
	for _, p := range []string{
		filepath.Join(dir, "notes.txt"),
		filepath.Join(l.Root(), "blobs", "README"),
		filepath.Join(l.Root(), "records", "README"),
		filepath.Join(l.Root(), "tmp", "blob-123"),
	} {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var blobs, recs []digest.Digest
	if err := l.ListBlobs(t.Context(), func(d digest.Digest, _ int64) error { blobs = append(blobs, d); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := l.ListRecords(t.Context(), func(d digest.Digest) error { recs = append(recs, d); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(blobs) != 1 || blobs[0] != d || len(recs) != 1 || recs[0] != d {
		t.Errorf("listed blobs %v and records %v, want just %s in each", blobs, recs, d.Short())
	}
}

func writeFile(t *testing.T, dir, name string, b []byte) (string, digest.Digest) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, digest.Bytes(b)
}

func TestLocalAdoptFile(t *testing.T) {
	l := openLocal(t)
	work := t.TempDir()
	b := []byte("an output the stage wrote")
	p, d := writeFile(t, work, "out.bin", b)
	before, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.AdoptFile(d, p); err != nil {
		t.Fatalf("AdoptFile: %v", err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("source still exists after AdoptFile: %v", err)
	}
	after, err := os.Stat(l.BlobPath(d))
	if err != nil {
		t.Fatalf("blob missing after AdoptFile: %v", err)
	}
	if !os.SameFile(before, after) {
		t.Errorf("AdoptFile copied the file; want it moved (same inode)")
	}
	if after.Mode().Perm() != 0o444 {
		t.Errorf("adopted blob mode %v, want 0444", after.Mode().Perm())
	}
	if n, err := l.StatBlob(t.Context(), d); err != nil || n != int64(len(b)) {
		t.Errorf("StatBlob after AdoptFile = %d, %v", n, err)
	}

	// Adopting a blob that already exists removes the source and keeps the blob.
	p2, _ := writeFile(t, work, "again.bin", b)
	if err := l.AdoptFile(d, p2); err != nil {
		t.Fatalf("AdoptFile of an existing blob: %v", err)
	}
	if _, err := os.Lstat(p2); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("source of an already stored blob still exists: %v", err)
	}
	again, err := os.Stat(l.BlobPath(d))
	if err != nil || !os.SameFile(after, again) {
		t.Errorf("adopting an existing blob replaced it (%v)", err)
	}
	got, _ := os.ReadFile(l.BlobPath(d))
	if !bytes.Equal(got, b) {
		t.Errorf("blob content %q, want %q", got, b)
	}
	checkTmpEmpty(t, l)
}

// A file with another hard link (a command that linked a workspace file as its
// output) is copied, so the blob shares neither inode nor mode with it.
func TestLocalAdoptFileWithOtherLinks(t *testing.T) {
	l := openLocal(t)
	work := t.TempDir()
	b := []byte("a workspace file the user edits")
	ws, d := writeFile(t, work, "workspace.csv", b)
	out := filepath.Join(work, "out.csv")
	if err := os.Link(ws, out); err != nil {
		t.Fatal(err)
	}
	if err := l.AdoptFile(d, out); err != nil {
		t.Fatalf("AdoptFile: %v", err)
	}
	if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("source still exists after AdoptFile: %v", err)
	}
	wfi, err := os.Stat(ws)
	if err != nil {
		t.Fatalf("the other link is gone: %v", err)
	}
	if wfi.Mode().Perm() != 0o644 {
		t.Errorf("the other link's mode changed to %v", wfi.Mode().Perm())
	}
	bfi, err := os.Stat(l.BlobPath(d))
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(wfi, bfi) {
		t.Errorf("the blob shares its inode with a workspace file")
	}
	if bfi.Mode().Perm() != 0o444 {
		t.Errorf("blob mode %v, want 0444", bfi.Mode().Perm())
	}
	// Editing the workspace file leaves the blob intact.
	if err := os.WriteFile(ws, []byte("edited"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(l.BlobPath(d)); !bytes.Equal(got, b) {
		t.Errorf("blob changed with the workspace file: %q", got)
	}
	checkTmpEmpty(t, l)
}

// Adopting from another file system copies, verifies, and removes the source.
func TestLocalAdoptFileAcrossFileSystems(t *testing.T) {
	l := openLocal(t)
	shm, err := os.MkdirTemp("/dev/shm", "orch-storetest-")
	if err != nil {
		t.Skipf("no second file system to adopt from: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	if dev(t, shm) == dev(t, l.Root()) {
		t.Skip("/dev/shm is on the same file system as the store")
	}
	content := bytes.Repeat([]byte("cross device "), 1000)
	p, d := writeFile(t, shm, "out.bin", content)
	if err := l.AdoptFile(d, p); err != nil {
		t.Fatalf("AdoptFile across file systems: %v", err)
	}
	if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("source still exists after AdoptFile across file systems: %v", err)
	}
	got, err := os.ReadFile(l.BlobPath(d))
	if err != nil || !bytes.Equal(got, content) {
		t.Errorf("adopted blob: %d bytes, %v", len(got), err)
	}
	if fi, err := os.Stat(l.BlobPath(d)); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("adopted blob mode: %v, %v; want 0444", fi.Mode().Perm(), err)
	}
	checkTmpEmpty(t, l)
}

func dev(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Dev)
}

func TestLocalSync(t *testing.T) {
	l := openLocal(t)
	b := []byte("sync me")
	if err := l.PutBlob(t.Context(), digest.Bytes(b), bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if err := l.PutRecord(t.Context(), digest.Bytes(b), b); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Errorf("Sync: %v", err)
	}
}

// Lock: a second taker waits, is told once, and gets the lock when it is
// released. Runs in a synctest bubble, so Lock's retry timer uses fake time.
func TestLocalLockWaits(t *testing.T) {
	l := openLocal(t)
	key := digest.String("stage key")
	synctest.Test(t, func(t *testing.T) {
		unlock, err := l.Lock(t.Context(), key, func() { t.Error("first Lock of a free key called waiting") })
		if err != nil {
			t.Fatal(err)
		}
		var waited atomic.Int32
		told := make(chan struct{})
		acquired := make(chan func())
		go func() {
			un, err := l.Lock(t.Context(), key, func() {
				if waited.Add(1) == 1 {
					close(told)
				}
			})
			if err != nil {
				t.Error(err)
				close(acquired)
				return
			}
			acquired <- un
		}()
		<-told
		// Let the waiter retry many times (fake time: instant).
		time.Sleep(5 * time.Second)
		synctest.Wait()
		select {
		case <-acquired:
			t.Fatal("second Lock returned while the first holder still had the lock")
		default:
		}
		// Another key is independent.
		other, err := l.Lock(t.Context(), digest.String("other key"), func() { t.Error("Lock of another key waited") })
		if err != nil {
			t.Fatal(err)
		}
		other()

		unlock()
		un := <-acquired
		if un == nil {
			t.Fatal("second Lock failed")
		}
		if n := waited.Load(); n != 1 {
			t.Errorf("waiting called %d times, want once", n)
		}
		un()
		// Free again: taken at once.
		un, err = l.Lock(t.Context(), key, func() { t.Error("Lock after release waited") })
		if err != nil {
			t.Fatal(err)
		}
		un()
	})
}

func TestLocalLockCancel(t *testing.T) {
	l := openLocal(t)
	key := digest.String("stage key")
	synctest.Test(t, func(t *testing.T) {
		unlock, err := l.Lock(t.Context(), key, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		cause := errors.New("run interrupted")
		ctx, cancel := context.WithCancelCause(t.Context())
		done := make(chan error)
		go func() {
			un, err := l.Lock(ctx, key, func() { cancel(cause) })
			if un != nil {
				un()
			}
			done <- err
		}()
		if err := <-done; !errors.Is(err, cause) {
			t.Errorf("Lock with ctx cancelled while waiting: %v, want the cause %v", err, cause)
		}
		// A nil waiting callback is allowed too.
		ctx2, cancel2 := context.WithTimeout(t.Context(), time.Second)
		defer cancel2()
		if un, err := l.Lock(ctx2, key, nil); !errors.Is(err, context.DeadlineExceeded) {
			if un != nil {
				un()
			}
			t.Errorf("Lock with a deadline on a held lock: %v, want DeadlineExceeded", err)
		}
	})
}

// The lock is shared by processes: a child process holding it makes this one
// wait. The child is this test binary (see TestMain).
func TestLocalLockAcrossProcesses(t *testing.T) {
	l := openLocal(t)
	key := digest.String("shared key")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+l.Root()+"|"+key.String())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper process: %q, %v", line, err)
	}
	told := make(chan struct{})
	got := make(chan error, 1)
	go func() {
		un, err := l.Lock(t.Context(), key, func() { close(told) })
		if un != nil {
			un()
		}
		got <- err
	}()
	<-told // the child holds it: we wait
	stdin.Close()
	if err := <-got; err != nil {
		t.Errorf("Lock after the other process released it: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("helper process: %v", err)
	}
}

const helperEnv = "ORCH_STORE_TEST_LOCK_HELPER"

func TestMain(m *testing.M) {
	if v := os.Getenv(helperEnv); v != "" {
		os.Exit(lockHelper(v))
	}
	os.Exit(m.Run())
}

// lockHelper takes the lock, says so, and holds it until stdin closes.
func lockHelper(v string) int {
	root, hex, _ := strings.Cut(v, "|")
	key, err := digest.Parse(hex)
	if err != nil {
		return 2
	}
	l, err := store.OpenLocal(root)
	if err != nil {
		return 2
	}
	unlock, err := l.Lock(context.Background(), key, nil)
	if err != nil {
		return 2
	}
	os.Stdout.WriteString("locked\n")
	_, _ = io.Copy(io.Discard, os.Stdin)
	unlock()
	return 0
}
