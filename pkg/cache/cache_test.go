package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
)

type env struct {
	dir   string // scratch space: stage output dirs, restore targets
	local *store.Local
	memo  *Memo
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	l, err := store.OpenLocal(filepath.Join(dir, ".orch", "cache"))
	if err != nil {
		t.Fatal(err)
	}
	// Let the test clean up read-only directories.
	t.Cleanup(func() { _ = removeAll(dir) })
	return &env{dir: dir, local: l, memo: LoadMemo(filepath.Join(dir, ".orch", "memo"))}
}

// cache returns a new Cache over the local store, as a new process would
// have: nothing verified yet.
func (e *env) cache() *Cache { return New(e.local, e.local, e.memo) }

func (e *env) path(p string) string { return filepath.Join(e.dir, filepath.FromSlash(p)) }

func collect(t *testing.T, c *Cache, src string) (Output, []digest.Digest) {
	t.Helper()
	out, blobs, err := c.Collect(t.Context(), src)
	if err != nil {
		t.Fatalf("Collect(%s): %v", src, err)
	}
	return out, blobs
}

func restore(t *testing.T, c *Cache, out Output, dst string) {
	t.Helper()
	if err := c.Restore(t.Context(), out, dst); err != nil {
		t.Fatalf("Restore(%s): %v", dst, err)
	}
}

// snapshot describes a directory: each entry's path with "/" for
// directories, its mode and content for files.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case rel == ".":
		case fi.IsDir():
			m[rel+"/"] = ""
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			m[rel] = fi.Mode().Perm().String() + " " + string(b)
		default:
			m[rel] = fi.Mode().String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCollectRestoreFile(t *testing.T) {
	e := newEnv(t)
	c := e.cache()
	src := e.path("stage/out/model.bin")
	writeAt(t, src, "weights", past)
	out, blobs := collect(t, c, src)
	want := digest.String("weights")
	if out.Digest != want || out.Size != 7 || out.Dir {
		t.Errorf("Collect = %+v, want digest %s size 7", out, want.Short())
	}
	if len(blobs) != 1 || blobs[0] != want {
		t.Errorf("Collect blobs = %v, want [%s]", blobs, want.Short())
	}
	if _, err := os.Lstat(src); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("source still there after Collect: %v", err)
	}
	if n, err := e.local.StatBlob(t.Context(), want); err != nil || n != 7 {
		t.Errorf("blob not in the local store: %d, %v", n, err)
	}

	dst := e.path(".orch/out/p/train/model")
	if c.Linked(out, dst) {
		t.Errorf("Linked before Restore")
	}
	for i := range 2 { // the second time over the first
		c := e.cache()
		restore(t, c, out, dst)
		fi, err := os.Lstat(dst)
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(dst); string(b) != "weights" {
			t.Errorf("restore #%d: content %q", i+1, b)
		}
		if fi.Mode().Perm() != 0o444 {
			t.Errorf("restore #%d: mode %v, want read-only 0444", i+1, fi.Mode().Perm())
		}
		if !c.Linked(out, dst) {
			t.Errorf("restore #%d: Linked = false after Restore", i+1)
		}
	}

	// A copy with the same bytes is not linked; a directory output never is.
	cp := e.path("copy")
	writeAt(t, cp, "weights", past)
	if c.Linked(out, cp) {
		t.Errorf("Linked = true for a copy")
	}
	if c.Linked(Output{Digest: out.Digest, Size: 7, Dir: true}, dst) {
		t.Errorf("Linked = true for a directory output")
	}
	if c.Linked(out, e.path("missing")) {
		t.Errorf("Linked = true for a missing path")
	}

	// Restore replaces what is there, even a read-only directory.
	mkdirTree(t, e.path("busy"), map[string]string{"x/y": "y"})
	_ = os.Chmod(e.path("busy/x"), 0o555)
	restore(t, e.cache(), out, e.path("busy"))
	if b, _ := os.ReadFile(e.path("busy")); string(b) != "weights" {
		t.Errorf("Restore over a directory: %q", b)
	}
}

func TestCollectRestoreDir(t *testing.T) {
	e := newEnv(t)
	c := e.cache()
	src := mkdirTree(t, e.path("stage/out/model"), map[string]string{
		"weights.bin":      "weights",
		"config.json":      `{"lr":0.1}`,
		"bin/predict*":     "#!/bin/sh\necho hi\n",
		"sub/deeper/n.txt": "n",
		"empty/":           "",
		"dup1.txt":         "same",
		"dup2.txt":         "same",
		"latest":           "->weights.bin",
		"zero":             "",
	})
	before := treeOf(t, src)
	out, blobs := collect(t, c, src)
	if !out.Dir || out.Digest != before.Digest() || out.Size != before.Size() {
		t.Errorf("Collect = %+v, want dir with tree %s, size %d", out, before.Digest().Short(), before.Size())
	}
	// Every distinct file content and the tree blob, the tree last.
	wantBlobs := map[digest.Digest]bool{before.Digest(): true}
	for _, en := range before.Entries {
		if !en.Dir {
			wantBlobs[en.Digest] = true
		}
	}
	got := map[digest.Digest]bool{}
	for _, b := range blobs {
		if got[b] {
			t.Errorf("blob %s listed twice", b.Short())
		}
		got[b] = true
		if _, err := e.local.StatBlob(t.Context(), b); err != nil {
			t.Errorf("blob %s not stored: %v", b.Short(), err)
		}
	}
	if !mapsEqual(got, wantBlobs) {
		t.Errorf("Collect blobs %v, want %v", keys(got), keys(wantBlobs))
	}
	if len(blobs) > 0 && blobs[len(blobs)-1] != out.Digest {
		t.Errorf("the tree blob is not the last blob")
	}

	dst := e.path(".orch/out/p/train/model")
	for i := range 2 {
		c := e.cache()
		restore(t, c, out, dst)
		want := map[string]string{
			"weights.bin":      "-r--r--r-- weights",
			"config.json":      `-r--r--r-- {"lr":0.1}`,
			"bin/":             "",
			"bin/predict":      "-r-xr-xr-x #!/bin/sh\necho hi\n",
			"sub/":             "",
			"sub/deeper/":      "",
			"sub/deeper/n.txt": "-r--r--r-- n",
			"empty/":           "",
			"dup1.txt":         "-r--r--r-- same",
			"dup2.txt":         "-r--r--r-- same",
			"latest":           "-r--r--r-- weights",
			"zero":             "-r--r--r-- ",
		}
		if got := snapshot(t, dst); !mapsEqual(got, want) {
			t.Errorf("restore #%d:\n got %q\nwant %q", i+1, got, want)
		}
		if got := treeOf(t, dst).Digest(); got != out.Digest {
			t.Errorf("restore #%d: the restored directory hashes to %s, not to the output %s", i+1, got.Short(), out.Digest.Short())
		}
		if !c.Linked(out, dst) {
			t.Errorf("restore #%d: Linked = false after Restore", i+1)
		}
		if c.Linked(Output{Digest: digest.String("other tree"), Dir: true}, dst) {
			t.Errorf("restore #%d: Linked = true for another tree", i+1)
		}
		// Restore leaves nothing beside dst but its marker.
		ents, _ := os.ReadDir(filepath.Dir(dst))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if len(names) != 2 || names[1] != "model" {
			t.Errorf("restore #%d: beside dst: %q, want model and its marker", i+1, names)
		}
	}
	// Non-executable files are hard links to their blobs.
	a, _ := os.Stat(filepath.Join(dst, "weights.bin"))
	b, _ := os.Stat(e.local.BlobPath(digest.String("weights")))
	if !os.SameFile(a, b) {
		t.Errorf("restored file is not linked to its blob")
	}
	if err := e.cache().Check(t.Context(), out); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// Linked says dst holds out; a restored directory that lost or gained a file
// no longer does.
func TestLinkedDirNoticesChanges(t *testing.T) {
	e := newEnv(t)
	out, _ := collect(t, e.cache(), mkdirTree(t, e.path("d"), map[string]string{"a": "a", "b": "b"}))
	dst := e.path(".orch/out/p/s/d")
	restore(t, e.cache(), out, dst)
	if !e.cache().Linked(out, dst) {
		t.Fatal("Linked = false right after Restore")
	}
	if err := os.Remove(filepath.Join(dst, "a")); err != nil {
		t.Fatal(err)
	}
	if e.cache().Linked(out, dst) {
		t.Errorf("Linked = true for a restored directory whose file a was deleted")
	}
	restore(t, e.cache(), out, dst)
	if err := os.WriteFile(filepath.Join(dst, "extra"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if e.cache().Linked(out, dst) {
		t.Errorf("Linked = true for a restored directory with a file added")
	}
}

// Concurrent restores of one dst (two runs on one workspace) all succeed and
// leave a complete dst.
func TestRestoreConcurrentSameDst(t *testing.T) {
	e := newEnv(t)
	dirOut, _ := collect(t, e.cache(), mkdirTree(t, e.path("d"), map[string]string{"a": "a", "s/b": "b", "x*": "x"}))
	writeAt(t, e.path("f"), "file", past)
	fileOut, _ := collect(t, e.cache(), e.path("f"))
	for _, c := range []struct {
		name string
		out  Output
	}{{"dir", dirOut}, {"file", fileOut}} {
		t.Run(c.name, func(t *testing.T) {
			dst := e.path("out/" + c.name)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range 8 {
				wg.Go(func() {
					<-start
					for j := range 3 {
						if err := e.cache().Restore(t.Context(), c.out, dst); err != nil {
							t.Errorf("restorer %d, round %d: %v", i, j, err)
						}
					}
				})
			}
			close(start)
			wg.Wait()
			if !e.cache().Linked(c.out, dst) {
				t.Errorf("Linked = false after concurrent restores")
			}
			if c.out.Dir {
				if got := treeOf(t, dst).Digest(); got != c.out.Digest {
					t.Errorf("dst hashes to %s after concurrent restores, want %s", got.Short(), c.out.Digest.Short())
				}
			}
			ents, _ := os.ReadDir(filepath.Dir(dst))
			for _, en := range ents {
				if strings.Contains(en.Name(), ".restore-") {
					t.Errorf("left behind: %s", en.Name())
				}
			}
		})
	}
}

// Collect's doc: "src is gone afterwards". For a directory, too.
func TestCollectDirLeavesNoSource(t *testing.T) {
	e := newEnv(t)
	src := mkdirTree(t, e.path("stage/out/d"), map[string]string{
		"a":      "a",
		"sub/b":  "b",
		"dup":    "a",
		"link":   "->a",
		"empty/": "",
	})
	collect(t, e.cache(), src)
	if _, err := os.Lstat(src); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Collect of a directory left the source behind (%v): %q", err, snapshot(t, src))
	}
}

// Directory outputs whose file names are not UTF-8 restore under the same names.
func TestCollectRestoreNonUTF8Names(t *testing.T) {
	e := newEnv(t)
	names := []string{"caf\xe9.csv", "caf\xeb.csv"} // Latin-1, as old datasets have
	spec := map[string]string{}
	for i, n := range names {
		spec[n] = "content " + string(rune('a'+i))
	}
	src := mkdirTree(t, e.path("stage/out/d"), spec)
	out, _, err := e.cache().Collect(t.Context(), src)
	if err != nil {
		t.Fatalf("Collect: %v", err)
	}
	dst := e.path("restored")
	if err := e.cache().Restore(t.Context(), out, dst); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	for i, n := range names {
		b, err := os.ReadFile(filepath.Join(dst, n))
		if err != nil || string(b) != spec[n] {
			t.Errorf("restored %q: %q, %v; want %q (restored: %q)", n, b, err, spec[n], keys2(snapshot(t, dst)))
		}
		_ = i
	}
}

func TestCollectRejects(t *testing.T) {
	e := newEnv(t)
	c := e.cache()
	writeAt(t, e.path("real"), "x", past)
	if err := os.Symlink(e.path("real"), e.path("link")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Collect(t.Context(), e.path("link")); !errors.Is(err, ErrEscape) {
		t.Errorf("Collect of a symlink: %v, want ErrEscape", err)
	}
	if _, _, err := c.Collect(t.Context(), e.path("missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Collect of a missing output: %v, want fs.ErrNotExist", err)
	}
	if err := syscall.Mkfifo(e.path("fifo"), 0o644); err == nil {
		if _, _, err := c.Collect(t.Context(), e.path("fifo")); err == nil {
			t.Errorf("Collect of a FIFO: no error")
		}
	}
	// A directory with a link out of it: nothing is taken from it.
	spec := map[string]string{"a": "a", "b": "b", "z": "->" + e.path("real")}
	src := mkdirTree(t, e.path("stage/out/d"), spec)
	if _, _, err := c.Collect(t.Context(), src); !errors.Is(err, ErrEscape) {
		t.Errorf("Collect of a directory with a link out: %v, want ErrEscape", err)
	}
	if got := snapshot(t, src); len(got) != 3 {
		t.Errorf("a failed Collect took files from the source: %q", got)
	}
}

// corruptBlob rewrites blob d on disk with other bytes of the same length.
func corruptBlob(t *testing.T, l *store.Local, d digest.Digest) {
	t.Helper()
	p := l.BlobPath(d)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) == 0 {
		b = []byte{0}
	} else {
		b[0] ^= 0xff
	}
	_ = os.Chmod(p, 0o644)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(p, 0o444)
}

type corruptLog struct {
	mu   sync.Mutex
	seen map[digest.Digest]int
}

func (l *corruptLog) callback(t *testing.T) func(digest.Digest, error) {
	l.seen = map[digest.Digest]int{}
	return func(d digest.Digest, err error) {
		if !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Corrupt callback for %s with %v, not wrapping ErrCorrupt", d.Short(), err)
		}
		l.mu.Lock()
		l.seen[d]++
		l.mu.Unlock()
	}
}

func TestRestoreCorruptFileBlob(t *testing.T) {
	e := newEnv(t)
	writeAt(t, e.path("out"), "precious", past)
	out, _ := collect(t, e.cache(), e.path("out"))
	corruptBlob(t, e.local, out.Digest)

	c := e.cache()
	var log corruptLog
	c.Corrupt = log.callback(t)
	dst := e.path("dst")
	err := c.Restore(t.Context(), out, dst)
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("Restore of a corrupt blob: %v, want ErrCorrupt", err)
	}
	if _, err := os.Lstat(e.local.BlobPath(out.Digest)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("corrupt blob not evicted: %v", err)
	}
	if log.seen[out.Digest] != 1 || len(log.seen) != 1 {
		t.Errorf("Corrupt callback calls: %v, want once for %s", log.seen, out.Digest.Short())
	}
	if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Restore of a corrupt blob left something at dst: %v", err)
	}
	// Now it is a plain miss.
	if err := c.Restore(t.Context(), out, dst); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Restore after eviction: %v, want ErrNotFound", err)
	}
	if len(log.seen) != 1 || log.seen[out.Digest] != 1 {
		t.Errorf("Corrupt callback called again: %v", log.seen)
	}
	// ReadBlob verifies too.
	bd, err := c.PutBytes(t.Context(), []byte("log line\n"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := e.cache().ReadBlob(t.Context(), bd); err != nil || string(b) != "log line\n" {
		t.Errorf("ReadBlob = %q, %v", b, err)
	}
	corruptBlob(t, e.local, bd)
	if _, err := e.cache().ReadBlob(t.Context(), bd); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("ReadBlob of a corrupt blob: %v, want ErrCorrupt", err)
	}
}

func TestRestoreCorruptDirBlobs(t *testing.T) {
	e := newEnv(t)
	spec := map[string]string{"a": "aaa", "sub/b": "bbb", "c": "ccc"}
	out, _ := collect(t, e.cache(), mkdirTree(t, e.path("d"), spec))

	t.Run("file blob", func(t *testing.T) {
		bad := digest.String("bbb")
		corruptBlob(t, e.local, bad)
		c := e.cache()
		var log corruptLog
		c.Corrupt = log.callback(t)
		if err := c.Check(t.Context(), out); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Check: %v, want ErrCorrupt", err)
		}
		if log.seen[bad] != 1 {
			t.Errorf("Corrupt callback calls %v, want one for %s", log.seen, bad.Short())
		}
		// Put it back, corrupt it again, and restore this time.
		if err := e.local.PutBlob(t.Context(), bad, strings.NewReader("bbb")); err != nil {
			t.Fatal(err)
		}
		corruptBlob(t, e.local, bad)
		c = e.cache()
		c.Corrupt = log.callback(t)
		if err := c.Restore(t.Context(), out, e.path("dst1")); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Restore: %v, want ErrCorrupt", err)
		}
		if _, err := os.Lstat(e.local.BlobPath(bad)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("corrupt blob not evicted")
		}
		if log.seen[bad] != 1 {
			t.Errorf("Corrupt callback calls %v, want one for %s", log.seen, bad.Short())
		}
	})
	t.Run("tree blob", func(t *testing.T) {
		corruptBlob(t, e.local, out.Digest)
		c := e.cache()
		var log corruptLog
		c.Corrupt = log.callback(t)
		if err := c.Restore(t.Context(), out, e.path("dst2")); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Restore: %v, want ErrCorrupt", err)
		}
		if log.seen[out.Digest] != 1 {
			t.Errorf("Corrupt callback calls %v, want one for the tree", log.seen)
		}
	})
	t.Run("tree that does not parse", func(t *testing.T) {
		c := e.cache()
		td, err := c.PutBytes(t.Context(), []byte("not a tree"))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.cache().Restore(t.Context(), Output{Digest: td, Dir: true}, e.path("dst3")); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Restore of a tree blob that is not a tree: %v, want ErrCorrupt", err)
		}
	})
}

// A tree blob is content, and content can be crafted: its paths must not
// lead Restore out of the destination.
func TestRestoreTreeEscape(t *testing.T) {
	e := newEnv(t)
	c := e.cache()
	fd, err := c.PutBytes(t.Context(), []byte("pwned"))
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range []string{"../escape.txt", "a/../../escape.txt", "..", "../dst-sibling/x"} {
		tr := &Tree{Version: treeVersion, Entries: []TreeEntry{{Path: p, Digest: fd, Size: 5}}}
		td, err := c.PutBytes(t.Context(), tr.Encode())
		if err != nil {
			t.Fatal(err)
		}
		dst := e.path("restore/dst")
		err = e.cache().Restore(t.Context(), Output{Digest: td, Size: 5, Dir: true}, dst)
		if !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("#%d Restore of a tree with entry %q: %v, want ErrCorrupt", i, p, err)
		}
		for _, leak := range []string{"restore/escape.txt", "escape.txt", "restore/dst-sibling/x"} {
			if _, err := os.Lstat(e.path(leak)); err == nil {
				t.Errorf("#%d Restore of a tree with entry %q wrote %s outside dst", i, p, leak)
			}
		}
	}
}

// Save puts every blob into the store before the record, and only those the
// store lacks.
func TestSaveWritesRecordAfterBlobs(t *testing.T) {
	e := newEnv(t)
	remote := newMemStore()
	c := New(remote, e.local, e.memo)
	dirOut, dirBlobs := collect(t, c, mkdirTree(t, e.path("out/d"), map[string]string{"a": "a", "b/c": "c"}))
	writeAt(t, e.path("out/f"), "file", past)
	fileOut, fileBlobs := collect(t, c, e.path("out/f"))
	logD, err := c.PutBytes(t.Context(), []byte("the log"))
	if err != nil {
		t.Fatal(err)
	}
	blobs := append(append(append([]digest.Digest{}, dirBlobs...), fileBlobs...), logD)

	pre := basePreimage()
	rec := &Record{Key: pre.Key(), Pipeline: "p", Stage: "s", Preimage: *pre,
		Outputs: map[string]Output{"d": dirOut, "f": fileOut}, Log: logD}
	var missingAtRecord []string
	remote.onPutRecord = func(key digest.Digest, data []byte) {
		for _, b := range blobs {
			if !remote.has(b) {
				missingAtRecord = append(missingAtRecord, b.Short())
			}
		}
	}
	if err := c.Save(t.Context(), rec, blobs); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if len(missingAtRecord) > 0 {
		t.Errorf("record written while blobs %v were not in the store", missingAtRecord)
	}
	ops := remote.ops()
	if len(ops) == 0 || !strings.HasPrefix(ops[len(ops)-1], "PutRecord ") {
		t.Errorf("the record is not the last write: %v", ops)
	}
	if got, err := GetRecord(t.Context(), remote, rec.Key); err != nil || got.Outputs["d"] != dirOut {
		t.Errorf("GetRecord from the store after Save: %v, %v", got, err)
	}

	// Saved again: the blobs are there, nothing is uploaded.
	before := len(remote.ops())
	if err := c.Save(t.Context(), rec, blobs); err != nil {
		t.Fatal(err)
	}
	for _, op := range remote.ops()[before:] {
		if strings.HasPrefix(op, "PutBlob ") {
			t.Errorf("second Save uploaded again: %s", op)
		}
	}

	// A blob that fails to upload: no record.
	remote2 := newMemStore()
	boom := errors.New("upload failed")
	remote2.failPut[fileOut.Digest] = boom
	c2 := New(remote2, e.local, e.memo)
	if err := c2.Save(t.Context(), rec, blobs); !errors.Is(err, boom) {
		t.Errorf("Save with a failing upload: %v, want it", err)
	}
	for _, op := range remote2.ops() {
		if strings.HasPrefix(op, "PutRecord ") {
			t.Errorf("record written although a blob failed to upload")
		}
	}

	// With the local store as the store, Save writes the record there.
	c3 := e.cache()
	if err := c3.Save(t.Context(), rec, blobs); err != nil {
		t.Fatal(err)
	}
	if got, err := c3.Lookup(t.Context(), rec.Key); err != nil || got.Log != logD {
		t.Errorf("Lookup after a local Save: %v, %v", got, err)
	}
}

// Restore from a remote store fetches into the local store and verifies.
func TestRestoreFromRemote(t *testing.T) {
	src := newEnv(t)
	remote := newMemStore()
	c := New(remote, src.local, src.memo)
	dirOut, dirBlobs := collect(t, c, mkdirTree(t, src.path("out/d"), map[string]string{"a": "a", "b/c": "c", "x*": "x"}))
	writeAt(t, src.path("out/f"), "file", past)
	fileOut, fileBlobs := collect(t, c, src.path("out/f"))
	pre := basePreimage()
	rec := &Record{Key: pre.Key(), Preimage: *pre, Outputs: map[string]Output{"d": dirOut, "f": fileOut}}
	if err := c.Save(t.Context(), rec, append(dirBlobs, fileBlobs...)); err != nil {
		t.Fatal(err)
	}

	// Another machine: an empty local store, the same remote.
	e := newEnv(t)
	c2 := New(remote, e.local, e.memo)
	got, err := c2.Lookup(t.Context(), rec.Key)
	if err != nil {
		t.Fatal(err)
	}
	restore(t, c2, got.Outputs["d"], e.path("d"))
	restore(t, c2, got.Outputs["f"], e.path("f"))
	want := map[string]string{"a": "-r--r--r-- a", "b/": "", "b/c": "-r--r--r-- c", "x": "-r-xr-xr-x x"}
	if s := snapshot(t, e.path("d")); !mapsEqual(s, want) {
		t.Errorf("restored from remote: %q, want %q", s, want)
	}
	if b, _ := os.ReadFile(e.path("f")); string(b) != "file" {
		t.Errorf("restored file: %q", b)
	}
	if !c2.Linked(fileOut, e.path("f")) {
		t.Errorf("file restored from remote is not linked to the local blob")
	}
	for _, d := range append(dirBlobs, fileBlobs...) {
		if _, err := e.local.StatBlob(t.Context(), d); err != nil {
			t.Errorf("blob %s not fetched into the local store: %v", d.Short(), err)
		}
	}

	// A corrupt remote blob fails the restore and stays out of the local store.
	e3 := newEnv(t)
	remote.corrupt(fileOut.Digest, []byte("fil3"))
	c3 := New(remote, e3.local, e3.memo)
	if err := c3.Restore(t.Context(), fileOut, e3.path("f")); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("Restore of a corrupt remote blob: %v, want ErrCorrupt", err)
	}
	if _, err := e3.local.StatBlob(t.Context(), fileOut.Digest); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("corrupt remote blob landed in the local store: %v", err)
	}
	// A blob missing everywhere is a miss.
	if err := c3.Restore(t.Context(), Output{Digest: digest.String("never stored")}, e3.path("g")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Restore of a blob stored nowhere: %v, want ErrNotFound", err)
	}
}

func TestCheckMissingBlob(t *testing.T) {
	e := newEnv(t)
	out, _ := collect(t, e.cache(), mkdirTree(t, e.path("d"), map[string]string{"a": "a", "b": "b"}))
	if err := e.local.DeleteBlob(t.Context(), digest.String("b")); err != nil {
		t.Fatal(err)
	}
	if err := e.cache().Check(t.Context(), out); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Check with a missing blob: %v, want ErrNotFound", err)
	}
	if err := e.cache().Restore(t.Context(), out, e.path("dst")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Restore with a missing blob: %v, want ErrNotFound", err)
	}
}

func TestRecordJSONIsReadable(t *testing.T) {
	// Records are documents people read (jq, `orch why`): two JSON lines,
	// the header and the pre-image, digests printed as hex.
	s := newMemStore()
	r := sampleRecord()
	if err := PutRecord(t.Context(), s, r); err != nil {
		t.Fatal(err)
	}
	b, _ := s.GetRecord(t.Context(), r.Key)
	dec := json.NewDecoder(bytes.NewReader(b))
	var m, pre map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&pre); err != nil {
		t.Fatal(err)
	}
	if m["key"] != r.Key.String() || !bytes.Contains(b, []byte(r.Log.String())) {
		t.Errorf("record JSON does not show digests as hex: %s", b)
	}
	if pre["command"] != r.Preimage.Command || bytes.Count(b, []byte("\n")) != 2 {
		t.Errorf("second line is not the pre-image: %s", b)
	}
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func keys(m map[digest.Digest]bool) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k.Short())
	}
	sort.Strings(ks)
	return ks
}

func keys2(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func TestReadBlobTail(t *testing.T) {
	e := newEnv(t)
	content := strings.Repeat("0123456789", 1000)
	d, err := e.cache().PutBytes(t.Context(), []byte(content))
	if err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int64{-1, 0, 5, 9999, 10000, 20000} {
		b, size, err := e.cache().ReadBlobTail(t.Context(), d, limit)
		want := content
		if limit >= 0 && limit < int64(len(content)) {
			want = content[len(content)-int(limit):]
		}
		if err != nil || size != int64(len(content)) || string(b) != want {
			t.Errorf("ReadBlobTail(limit %d) = %d bytes, size %d, %v; want %d bytes", limit, len(b), size, err, len(want))
		}
	}
	if _, _, err := e.cache().ReadBlobTail(t.Context(), digest.String("absent"), 10); !store.IsNotFound(err) {
		t.Errorf("missing blob: %v, want not found", err)
	}
}

// An output whose digest orch's writer remembered while writing it is
// collected under that digest without reading it; ORCH_DIGEST=verify
// (verifyWritten) hashes it anyway and refuses a digest that is not the
// file's.
func TestCollectRemembered(t *testing.T) {
	e := newEnv(t)
	c := e.cache()
	stat := func(p string) digest.FileID {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return digest.FileIDOf(&st)
	}
	src := e.path("stage/out/table")
	writeAt(t, src, "columns", past)
	digest.Remember(stat(src), digest.String("columns"))
	if out, _ := collect(t, c, src); out.Digest != digest.String("columns") || out.Size != 7 {
		t.Errorf("Collect = %+v", out)
	}

	src = e.path("stage/out2/table")
	writeAt(t, src, "columns!", past)
	wrong := digest.String("something else")
	digest.Remember(stat(src), wrong)
	verifyWritten = true
	defer func() { verifyWritten = false }()
	if _, _, err := c.Collect(t.Context(), src); err == nil || !strings.Contains(err.Error(), "ORCH_DIGEST=verify") {
		t.Fatalf("Collect of a file remembered with a wrong digest, verifying: %v", err)
	}
	if _, err := e.local.StatBlob(t.Context(), wrong); err == nil {
		t.Error("the wrong digest entered the store")
	}
}
