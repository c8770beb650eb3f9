package engine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadTailStartsOnALine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	var b strings.Builder
	for i := range 10000 {
		b.WriteString(strings.Repeat("x", i%50) + "\n")
	}
	b.WriteString("the last line\n")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	got := readTail(path, 4096)
	if len(got) > 4096 || !strings.HasSuffix(string(got), "the last line\n") || got[0] == '\n' {
		t.Errorf("readTail: %d bytes, ends %q", len(got), got[max(len(got)-20, 0):])
	}
	if whole := readTail(path, 1<<30); len(whole) != b.Len() {
		t.Errorf("readTail of a small file: %d bytes, want %d", len(whole), b.Len())
	}
	if readTail(filepath.Join(t.TempDir(), "none"), 10) != nil {
		t.Errorf("readTail of a missing file is not nil")
	}
}
