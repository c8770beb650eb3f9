package cache

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"github.com/orch-dev/orch/pkg/digest"
)

// mkdirTree creates files under root from spec: "path": content, a path
// ending in "/" is an empty directory, a content starting with "->" is a
// symlink to the rest, a path ending in "*" is an executable file.
func mkdirTree(t *testing.T, root string, spec map[string]string) string {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for p, c := range spec {
		full := filepath.Join(root, filepath.FromSlash(strings.TrimSuffix(p, "*")))
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, full); err != nil {
				t.Fatal(err)
			}
			continue
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, "*") {
			mode = 0o755
		}
		if err := os.WriteFile(full, []byte(c), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil { // umask
			t.Fatal(err)
		}
	}
	return root
}

func treeOf(t *testing.T, dir string) *Tree {
	t.Helper()
	tr, _, err := LoadMemo("").Tree(dir)
	if err != nil {
		t.Fatalf("Tree(%s): %v", dir, err)
	}
	return tr
}

func TestTreeEntries(t *testing.T) {
	dir := mkdirTree(t, t.TempDir(), map[string]string{
		"b.txt":           "bee",
		"a/":              "",
		"a/x/run.sh*":     "#!/bin/sh\n",
		"a/x/data.bin":    "data",
		"a/empty/":        "",
		"a.txt":           "ay",
		"z/deep/er/f.txt": "f",
	})
	tr, files, err := LoadMemo("").Tree(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := []TreeEntry{
		{Path: "a", Dir: true},
		{Path: "a/empty", Dir: true},
		{Path: "a/x", Dir: true},
		{Path: "a/x/data.bin", Digest: digest.String("data"), Size: 4},
		{Path: "a/x/run.sh", Digest: digest.String("#!/bin/sh\n"), Size: 10, Exec: true},
		{Path: "a.txt", Digest: digest.String("ay"), Size: 2},
		{Path: "b.txt", Digest: digest.String("bee"), Size: 3},
		{Path: "z", Dir: true},
		{Path: "z/deep", Dir: true},
		{Path: "z/deep/er", Dir: true},
		{Path: "z/deep/er/f.txt", Digest: digest.String("f"), Size: 1},
	}
	if !reflect.DeepEqual(tr.Entries, want) {
		t.Errorf("entries:\n got %+v\nwant %+v", tr.Entries, want)
	}
	if tr.Size() != 20 {
		t.Errorf("Size() = %d, want 20", tr.Size())
	}
	if len(files) != len(tr.Entries) {
		t.Fatalf("%d files for %d entries", len(files), len(tr.Entries))
	}
	for i, e := range tr.Entries {
		want := ""
		if !e.Dir {
			want = filepath.Join(dir, filepath.FromSlash(e.Path))
		}
		if files[i] != want {
			t.Errorf("files[%d] = %q, want %q", i, files[i], want)
		}
	}
	// Path gives the tree digest and size for a directory.
	pd, n, err := LoadMemo("").Path(dir)
	if err != nil || pd != tr.Digest() || n != 20 {
		t.Errorf("Path(dir) = %s, %d, %v; want %s, 20", pd.Short(), n, err, tr.Digest().Short())
	}
	// Encoding round trip.
	back, err := DecodeTree(tr.Encode())
	if err != nil || !reflect.DeepEqual(back, tr) {
		t.Errorf("DecodeTree(Encode()) = %+v, %v", back, err)
	}
}

func TestTreeDigest(t *testing.T) {
	base := map[string]string{
		"a.txt":     "alpha",
		"sub/b.txt": "beta",
		"sub/c.sh*": "echo",
		"empty/":    "",
	}
	with := func(change func(m map[string]string)) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		change(m)
		return m
	}
	root := t.TempDir()
	baseD := treeOf(t, mkdirTree(t, filepath.Join(root, "base"), base)).Digest()

	// Same content elsewhere, with other mtimes: same digest.
	other := mkdirTree(t, filepath.Join(root, "elsewhere", "deeper"), base)
	if err := os.Chtimes(filepath.Join(other, "a.txt"), past, past); err != nil {
		t.Fatal(err)
	}
	if got := treeOf(t, other).Digest(); got != baseD {
		t.Errorf("same content in another place: digest %s, want %s", got.Short(), baseD.Short())
	}

	// Empty directories: all alike, and unlike a directory holding an empty one.
	e1 := treeOf(t, mkdirTree(t, filepath.Join(root, "e1"), nil))
	e2 := treeOf(t, mkdirTree(t, filepath.Join(root, "e2"), nil))
	if e1.Digest() != e2.Digest() || len(e1.Entries) != 0 || e1.Size() != 0 {
		t.Errorf("empty directories: %s %s, %d entries", e1.Digest().Short(), e2.Digest().Short(), len(e1.Entries))
	}

	changes := []struct {
		name string
		spec map[string]string
	}{
		{"content", with(func(m map[string]string) { m["a.txt"] = "ALPHA" })},
		{"renamed", with(func(m map[string]string) { m["A.txt"] = m["a.txt"]; delete(m, "a.txt") })},
		{"moved into a sub-directory", with(func(m map[string]string) { m["sub/a.txt"] = m["a.txt"]; delete(m, "a.txt") })},
		{"exec bit set", with(func(m map[string]string) { m["a.txt*"] = m["a.txt"]; delete(m, "a.txt") })},
		{"exec bit cleared", with(func(m map[string]string) { m["sub/c.sh"] = m["sub/c.sh*"]; delete(m, "sub/c.sh*") })},
		{"empty dir added", with(func(m map[string]string) { m["sub/new/"] = "" })},
		{"empty dir removed", with(func(m map[string]string) { delete(m, "empty/") })},
		{"empty file added", with(func(m map[string]string) { m["empty/f"] = "" })},
		{"file added", with(func(m map[string]string) { m["d.txt"] = "delta" })},
		{"file removed", with(func(m map[string]string) { delete(m, "sub/b.txt") })},
		{"empty only", map[string]string{"x/": ""}},
		{"empty", nil},
	}
	seen := map[digest.Digest]string{baseD: "base"}
	for i, c := range changes {
		got := treeOf(t, mkdirTree(t, filepath.Join(root, "c", string(rune('a'+i))), c.spec)).Digest()
		if prev, dup := seen[got]; dup {
			t.Errorf("%s: same digest as %s", c.name, prev)
		}
		seen[got] = c.name
	}
}

func TestTreeSymlinks(t *testing.T) {
	root := t.TempDir()
	outside := filepath.Join(root, "outside.txt")
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("inside is followed", func(t *testing.T) {
		dir := mkdirTree(t, filepath.Join(root, "in"), map[string]string{
			"data.csv":     "1,2",
			"alias.csv":    "->data.csv",
			"sub/up.csv":   "->../data.csv",
			"..dots":       "dots",
			"dotlink":      "->..dots",
			"sub/abs.csv":  "->" + filepath.Join(root, "in", "data.csv"),
			"tool.sh*":     "run",
			"sub/tool.lnk": "->../tool.sh",
			"sub/back.csv": "->../../in/data.csv", // out and back in
		})
		tr, files, err := LoadMemo("").Tree(dir)
		if err != nil {
			t.Fatalf("Tree: %v", err)
		}
		copyDir := mkdirTree(t, filepath.Join(root, "copy"), map[string]string{
			"data.csv":      "1,2",
			"alias.csv":     "1,2",
			"sub/up.csv":    "1,2",
			"..dots":        "dots",
			"dotlink":       "dots",
			"sub/abs.csv":   "1,2",
			"tool.sh*":      "run",
			"sub/tool.lnk*": "run",
			"sub/back.csv":  "1,2",
		})
		if want := treeOf(t, copyDir); !reflect.DeepEqual(tr, want) {
			t.Errorf("symlinks inside are not followed like copies:\n got %+v\nwant %+v", tr.Entries, want.Entries)
		}
		for i, e := range tr.Entries {
			if e.Path == "alias.csv" && files[i] != filepath.Join(dir, "data.csv") {
				t.Errorf("file of alias.csv = %q, want its target", files[i])
			}
		}
	})

	for _, c := range []struct {
		name   string
		spec   map[string]string
		escape bool
	}{
		{"relative link out", map[string]string{"f": "->../../outside.txt"}, true},
		{"absolute link out", map[string]string{"f": "->" + outside}, true},
		{"deep link out", map[string]string{"a/b/f": "->../../../../outside.txt"}, true},
		{"link to the parent", map[string]string{"up": "->.."}, true},
		{"link to /", map[string]string{"root": "->/"}, true},
		{"link to a directory inside", map[string]string{"sub/x": "x", "dl": "->sub"}, false},
		{"dangling link", map[string]string{"f": "->nowhere"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := mkdirTree(t, filepath.Join(root, "bad", strings.ReplaceAll(c.name, " ", "_")), c.spec)
			_, _, err := LoadMemo("").Tree(dir)
			if err == nil {
				t.Fatalf("Tree: no error")
			}
			if errors.Is(err, ErrEscape) != c.escape {
				t.Errorf("Tree: %v; wraps ErrEscape = %v, want %v", err, errors.Is(err, ErrEscape), c.escape)
			}
		})
	}

	t.Run("root is a symlink", func(t *testing.T) {
		dir := mkdirTree(t, filepath.Join(root, "real"), map[string]string{"a": "a", "b/c": "c"})
		link := filepath.Join(root, "link")
		if err := os.Symlink(dir, link); err != nil {
			t.Fatal(err)
		}
		if treeOf(t, link).Digest() != treeOf(t, dir).Digest() {
			t.Errorf("a symlinked root gives another digest")
		}
	})
}

func TestTreeRejectsSpecialFiles(t *testing.T) {
	dir := mkdirTree(t, t.TempDir(), map[string]string{"a": "a"})
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	if _, _, err := LoadMemo("").Tree(dir); err == nil {
		t.Errorf("Tree of a directory holding a FIFO: no error")
	}
}

func TestDecodeTreeErrors(t *testing.T) {
	for _, b := range []string{"", "not json", `{"v":2,"entries":[]}`, `{"entries":[]}`, `[1,2]`} {
		if _, err := DecodeTree([]byte(b)); err == nil {
			t.Errorf("DecodeTree(%q): no error", b)
		}
	}
}
