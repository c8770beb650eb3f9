package history

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A reader that finds the file a first writer has just created, still
// empty, sees an empty history rather than an error (bbolt, opening a
// zero-length file read-only, tries to initialize it: EBADF).
func TestReadEmptyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "history.db")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	db := Open(path)
	runs, err := db.Runs("p", 10)
	if err != nil || len(runs) != 0 {
		t.Fatalf("Runs on an empty file: %v, %v; want none, no error", runs, err)
	}
	if _, err := db.Heads("p"); err != nil {
		t.Fatalf("Heads on an empty file: %v", err)
	}
	if err := db.PutRun(&Run{ID: NewID(time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)), Pipeline: "p"}); err != nil {
		t.Fatalf("a write after it: %v", err)
	}
	if runs, err := db.Runs("p", 10); err != nil || len(runs) != 1 {
		t.Fatalf("Runs after a write: %v, %v", runs, err)
	}
}
