package history

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// A tick is recorded with its run in one transaction; the same tick (or an
// older one) is refused afterwards, also when several goroutines race for
// it: exactly one wins.
func TestStartRunTickOnce(t *testing.T) {
	db := Open(filepath.Join(t.TempDir(), "history.db"))
	tick := time.Date(2026, 5, 1, 2, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	var mu sync.Mutex
	won, done := 0, 0
	for i := range 8 {
		wg.Go(func() {
			r := &Run{ID: NewID(tick.Add(time.Duration(i))), Pipeline: "p", Status: RunRunning, Started: tick}
			err := db.StartRun(r, &Tick{Time: tick, Schedule: "s"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, ErrTickDone):
				done++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if won != 1 || done != 7 {
		t.Fatalf("won %d, refused %d; want 1 and 7", won, done)
	}
	runs, err := db.ListRuns("p", RunRunning, 0)
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs %v, %v; want exactly one", runs, err)
	}
	last, ok, err := db.LastTick("p")
	if err != nil || !ok || !last.Time.Equal(tick) || last.RunID != runs[0].ID {
		t.Fatalf("LastTick = %+v %v %v; want %s run %s", last, ok, err, tick, runs[0].ID)
	}
	if err := db.SkipTick("p", Tick{Time: tick.Add(-time.Hour)}); !errors.Is(err, ErrTickDone) {
		t.Errorf("SkipTick of an older tick: %v", err)
	}
	if err := db.SkipTick("p", Tick{Time: tick.Add(time.Hour), Skipped: "overlap"}); err != nil {
		t.Fatal(err)
	}
	if last, _, _ := db.LastTick("p"); last.RunID != "" || last.Skipped != "overlap" {
		t.Errorf("after skip: %+v", last)
	}
	if _, ok, _ := db.LastTick("other"); ok {
		t.Error("LastTick of an unknown pipeline is set")
	}
}

func TestListRunsFilter(t *testing.T) {
	db := Open(filepath.Join(t.TempDir(), "history.db"))
	now := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	for i, st := range []string{RunSucceeded, RunFailed, RunSucceeded, RunFailed} {
		p := []string{"a", "b"}[i%2]
		if err := db.PutRun(&Run{ID: NewID(now.Add(time.Duration(i) * time.Second)), Pipeline: p, Status: st}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		p, s string
		n    int
	}{{"", "", 4}, {"a", "", 2}, {"", RunFailed, 2}, {"a", RunFailed, 0}, {"b", RunFailed, 2}} {
		if rs, err := db.ListRuns(tc.p, tc.s, 0); err != nil || len(rs) != tc.n {
			t.Errorf("ListRuns(%q, %q) = %d runs, %v; want %d", tc.p, tc.s, len(rs), err, tc.n)
		}
	}
}

func TestLiveOverlay(t *testing.T) {
	l := NewLive()
	r := &Run{ID: "r1", Status: RunRunning, Stages: []StageRun{{Name: "a"}, {Name: "b"}}}
	l.Begin(r)
	l.Update("r1", "a", func(s *StageRun) { s.Status = Running })
	if got := l.Overlay(r); got.Stages[0].Status != Running || r.Stages[0].Status != "" {
		t.Errorf("overlay %+v, stored %+v", got.Stages, r.Stages)
	}
	l.End("r1")
	if got := l.Overlay(r); got != r {
		t.Error("an ended run is still overlaid")
	}
}
