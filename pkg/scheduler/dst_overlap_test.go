package scheduler

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/orch-dev/orch/pkg/history"
)

// A per-second schedule loaded (first schedule, schedule changed, restart
// with the cursor at now) inside the hour a DST fall-back repeats ticks again
// once the repeated hour is over (it used to give up: Next returned zero).
func TestDSTFallbackPerSecondFromInsideTheRepeatedHour(t *testing.T) {
	sc := schedule(t, `{cron: "* * * * * *", timezone: Europe/Berlin}`)
	berlin, _ := time.LoadLocation("Europe/Berlin")
	// 2026-10-25: 03:00 CEST -> 02:00 CET. 02:15 CET is the second occurrence.
	second := time.Date(2026, 10, 25, 1, 15, 0, 0, time.UTC) // = 02:15:00 CET
	t.Logf("now %s", second.In(berlin))
	if n := sc.Next(second); n.IsZero() {
		t.Errorf("Next(%s) = zero: the schedule never fires again", second.In(berlin))
	}

	// Same through the scheduler: serve starts (first schedule) at 02:15 CET.
	synctest.Test(t, func(t *testing.T) {
		db := newDB(t)
		t0 := time.Now()
		clk := func() time.Time { return second.Add(time.Since(t0)) }
		r := &runner{dur: 10 * time.Millisecond}
		b := start(t, db, sc, r, clk)
		time.Sleep(2 * time.Hour) // well past the DST hour
		synctest.Wait()
		b.stop()
		time.Sleep(time.Second)
		synctest.Wait()
		if len(r.reqs) == 0 {
			t.Errorf("per-second schedule started at %s: no run in 2 hours", second.In(berlin))
		} else {
			t.Logf("%d runs, first tick %s", len(r.reqs), r.reqs[0].Tick.In(berlin))
		}
	})
}

// overlap: cancel cancels the oldest active run, not all of them
// (pipeline.OverlapCancel).
func TestOverlapCancelCancelsOnlyTheOldest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newDB(t)
		r := &runner{dur: 10 * time.Second}
		b := start(t, db, schedule(t, `{cron: "*/2 * * * * *", overlap: cancel, max_active_runs: 2}`), r, clock())
		time.Sleep(4500 * time.Millisecond) // ticks at 2s and 4s: two runs active
		synctest.Wait()
		time.Sleep(2 * time.Second) // tick at 6s: should cancel only the oldest (2s)
		synctest.Wait()
		b.stop()
		time.Sleep(20 * time.Second)
		synctest.Wait()
		r.mu.Lock()
		defer r.mu.Unlock()
		cancelled := 0
		for _, st := range r.statuses {
			if st == history.RunCancelled {
				cancelled++
			}
		}
		t.Logf("ticks %s statuses %v", func() string { r.mu.Unlock(); defer r.mu.Lock(); return r.ticks() }(), r.statuses)
		if cancelled != 1 {
			t.Errorf("tick at 6s cancelled %d runs, want 1 (the oldest)", cancelled)
		}
	})
}
