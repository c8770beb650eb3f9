package cache

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
)

// past is a modification time long before any test runs, outside the racy
// window of every hash a test takes.
var past = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

// writeAt writes content to path and sets its mtime to mt.
func writeAt(t *testing.T, path, content string, mt time.Time) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mt, mt); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustFile(t *testing.T, m *Memo, p string) digest.Digest {
	t.Helper()
	got, n, err := m.File(p)
	if err != nil {
		t.Fatalf("File(%s): %v", p, err)
	}
	b, _ := os.ReadFile(p)
	if n != int64(len(b)) {
		t.Errorf("File(%s): size %d, want %d", p, n, len(b))
	}
	return got
}

func ctime(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return statKey(fi).Ctime
}

func TestMemoUnchangedFileNotReread(t *testing.T) {
	dir := t.TempDir()
	p := writeAt(t, filepath.Join(dir, "data.csv"), "a,b\n1,2\n", past)
	m := LoadMemo(filepath.Join(dir, "memo"))
	if got := mustFile(t, m, p); got != digest.String("a,b\n1,2\n") {
		t.Fatalf("File digest %s, want BLAKE3 of the content", got.Short())
	}
	if m.Hashed() != 1 {
		t.Fatalf("Hashed() = %d after the first File, want 1", m.Hashed())
	}
	for range 3 {
		mustFile(t, m, p)
		if _, _, err := m.Path(p); err != nil {
			t.Fatal(err)
		}
	}
	if m.Hashed() != 1 {
		t.Errorf("Hashed() = %d after asking again for an unchanged file, want 1 (no re-read)", m.Hashed())
	}
}

// A file written just now is within the racy window: the memo does not trust
// its stat and reads it again, until the hash is taken well after the write.
func TestMemoFreshFileIsRacy(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "fresh")
	if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	m := LoadMemo("")
	m.now = func() time.Time { return fi.ModTime().Add(time.Second) }
	mustFile(t, m, p)
	mustFile(t, m, p)
	if m.Hashed() != 2 {
		t.Errorf("Hashed() = %d: a file hashed 1 s after its mtime was trusted, want re-read (2)", m.Hashed())
	}
	m.now = func() time.Time { return fi.ModTime().Add(time.Minute) }
	mustFile(t, m, p) // re-read, now outside the window
	mustFile(t, m, p) // trusted
	if m.Hashed() != 3 {
		t.Errorf("Hashed() = %d, want 3", m.Hashed())
	}
}

func TestMemoChangedContent(t *testing.T) {
	dir := t.TempDir()
	p := writeAt(t, filepath.Join(dir, "f"), "version 1", past)
	m := LoadMemo("")
	d1 := mustFile(t, m, p)

	// Same size, mtime put back: the ctime still moved. (On a file system
	// with coarse timestamps, rewrite until it has.)
	before := ctime(t, p)
	for writeAt(t, p, "version 2", past); ctime(t, p) == before; writeAt(t, p, "version 2", past) {
		time.Sleep(time.Millisecond)
	}
	if d2 := mustFile(t, m, p); d2 == d1 || d2 != digest.String("version 2") {
		t.Errorf("same size and mtime, new content: digest %s, want %s", d2.Short(), digest.String("version 2").Short())
	}
	// Other size.
	writeAt(t, p, "version three", past)
	if d3 := mustFile(t, m, p); d3 != digest.String("version three") {
		t.Errorf("new size: digest %s, want the new content's", d3.Short())
	}
	// Replaced by rename: a new inode with the same size and mtime.
	tmp := writeAt(t, filepath.Join(dir, "tmp"), "version four!", past)
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
	if d4 := mustFile(t, m, p); d4 != digest.String("version four!") {
		t.Errorf("replaced by rename: digest %s, want the new content's", d4.Short())
	}
	if m.Hashed() != 4 {
		t.Errorf("Hashed() = %d, want 4", m.Hashed())
	}
}

// The racy window, alone: a file modified right after it was hashed, on a
// file system where its whole stat (ctime included) stayed the same.
func TestMemoRacyWindow(t *testing.T) {
	dir := t.TempDir()
	mt := past
	p := writeAt(t, filepath.Join(dir, "f"), "AAAA", mt)

	// pretendUnchanged rewrites p with content and makes the memo entry's
	// stat match the new file exactly, keeping the old digest and HashedAt.
	pretendUnchanged := func(m *Memo, content string) {
		writeAt(t, p, content, mt)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		old := m.entries[p]
		e := statKey(fi)
		e.Digest, e.HashedAt = old.Digest, old.HashedAt
		m.entries[p] = e
	}

	for _, c := range []struct {
		hashedAfter time.Duration
		trusted     bool
	}{
		{0, false},
		{time.Second, false},
		{racyWindow, false}, // the bound itself is racy
		{racyWindow + time.Millisecond, true},
		{time.Hour, true},
	} {
		t.Run(fmt.Sprint(c.hashedAfter), func(t *testing.T) {
			writeAt(t, p, "AAAA", mt)
			m := LoadMemo("")
			m.now = func() time.Time { return mt.Add(c.hashedAfter) }
			if got := mustFile(t, m, p); got != digest.String("AAAA") {
				t.Fatal("first hash wrong")
			}
			pretendUnchanged(m, "BBBB")
			got := mustFile(t, m, p)
			switch {
			case c.trusted && got != digest.String("AAAA"):
				// The control: outside the window the stat is trusted, so the
				// stale digest comes back. This is what the window guards.
				t.Errorf("hashed %v after the write: the memo re-read a file whose stat did not change", c.hashedAfter)
			case !c.trusted && got != digest.String("BBBB"):
				t.Errorf("hashed %v after the write, modified with the same stat: got the stale digest, want a re-read", c.hashedAfter)
			}
		})
	}
}

func TestMemoSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "memo")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	a := writeAt(t, filepath.Join(dir, "a"), "alpha", past)
	b := writeAt(t, filepath.Join(dir, "b"), "beta", past)

	m := LoadMemo(path)
	da, db := mustFile(t, m, a), mustFile(t, m, b)
	if err := m.Save(); err != nil {
		t.Fatalf("Save: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("Save wrote nothing: %v", err)
	}

	m2 := LoadMemo(path)
	if mustFile(t, m2, a) != da || mustFile(t, m2, b) != db {
		t.Error("loaded memo gives other digests")
	}
	if m2.Hashed() != 0 {
		t.Errorf("loaded memo read %d files, want 0", m2.Hashed())
	}
	// Nothing changed: Save writes nothing.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := m2.Save(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Save of an unchanged memo wrote the file (%v)", err)
	}
	// A memo without a path saves nowhere.
	m3 := LoadMemo("")
	mustFile(t, m3, a)
	if err := m3.Save(); err != nil {
		t.Errorf("Save of a memo without a path: %v", err)
	}
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 0 {
		t.Errorf("temp files left next to the memo: %v", ents)
	}
}

func TestMemoCorruptFileIsEmpty(t *testing.T) {
	dir := t.TempDir()
	a := writeAt(t, filepath.Join(dir, "a"), "alpha", past)
	good := filepath.Join(dir, "good")
	m := LoadMemo(good)
	mustFile(t, m, a)
	if err := m.Save(); err != nil {
		t.Fatal(err)
	}
	valid, _ := os.ReadFile(good)

	for name, content := range map[string][]byte{
		"garbage":   []byte("this is not a gob stream \x00\xff"),
		"truncated": valid[:len(valid)/2],
		"empty":     {},
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, content, 0o644); err != nil {
				t.Fatal(err)
			}
			m := LoadMemo(path)
			if got := mustFile(t, m, a); got != digest.String("alpha") {
				t.Errorf("digest %s from a corrupt memo", got.Short())
			}
			if m.Hashed() != 1 {
				t.Errorf("Hashed() = %d: a corrupt memo was trusted", m.Hashed())
			}
			// And it can be saved over.
			if err := m.Save(); err != nil {
				t.Errorf("Save over a corrupt memo: %v", err)
			}
			if m2 := LoadMemo(path); mustFile(t, m2, a) != digest.String("alpha") || m2.Hashed() != 0 {
				t.Errorf("memo saved over a corrupt one is not used")
			}
		})
	}
}

// A memo written by another version of the encoding is ignored, even when its
// entries would match the stat.
func TestMemoOtherVersionIgnored(t *testing.T) {
	dir := t.TempDir()
	a := writeAt(t, filepath.Join(dir, "a"), "alpha", past)
	m := LoadMemo(filepath.Join(dir, "memo"))
	mustFile(t, m, a)
	e := m.entries[a]
	e.Digest = digest.String("a lie")
	m.entries[a] = e
	// Write it as another version.
	f, err := os.Create(filepath.Join(dir, "memo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := gob.NewEncoder(f).Encode(memoFile{Version: memoVersion + 1, Entries: m.entries}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	m2 := LoadMemo(filepath.Join(dir, "memo"))
	if got := mustFile(t, m2, a); got != digest.String("alpha") {
		t.Errorf("entries of a memo of version %d were used", memoVersion+1)
	}
}

func TestMemoErrors(t *testing.T) {
	dir := t.TempDir()
	m := LoadMemo("")
	if _, _, err := m.File(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("File of a missing path: %v, want fs.ErrNotExist", err)
	}
	if _, _, err := m.File(dir); err == nil {
		t.Errorf("File of a directory: no error")
	}
	if _, _, err := m.Path(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Path of a missing path: %v, want fs.ErrNotExist", err)
	}
}

func TestMemoConcurrent(t *testing.T) {
	dir := t.TempDir()
	var files []string
	for i := range 16 {
		files = append(files, writeAt(t, filepath.Join(dir, fmt.Sprint(i)), fmt.Sprint("content ", i), past))
	}
	m := LoadMemo(filepath.Join(dir, "memo"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i, f := range files {
				got, _, err := m.File(f)
				if err != nil || got != digest.String(fmt.Sprint("content ", i)) {
					t.Errorf("File(%s) = %s, %v", f, got.Short(), err)
				}
			}
			_ = m.Save()
		})
	}
	wg.Wait()
	if n := m.Hashed(); n < len(files) || n > 8*len(files) {
		t.Errorf("Hashed() = %d", n)
	}
	if m2 := LoadMemo(filepath.Join(dir, "memo")); len(m2.entries) != len(files) {
		t.Errorf("saved memo has %d entries, want %d", len(m2.entries), len(files))
	}
}
