package scheduler

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
)

// base is the wall-clock time at the start of each bubble; the fake clock
// of testing/synctest drives it.
var base = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// runner starts runs recorded in a real history: the run and its tick in
// one transaction (history.StartRun), then the run "works" for dur of fake
// time (or until cancelled) and is finished. hang makes runs never finish,
// as when the process dies between "run started" and "run finished".
type runner struct {
	db  *history.DB
	now func() time.Time
	dur time.Duration
	// hang: runs never finish (until release is closed, at the end of
	// the test, so the bubble's goroutines can exit).
	hang    bool
	release chan struct{}

	mu       sync.Mutex
	reqs     []Request
	statuses map[string]string
}

func (r *runner) Start(ctx context.Context, req Request) (string, <-chan struct{}, error) {
	now := r.now()
	run := &history.Run{ID: history.NewID(now), Pipeline: req.Pipeline, Status: history.RunRunning,
		Started: now, Trigger: req.Trigger, Params: req.Params, Host: "test", PID: 1}
	var tick *history.Tick
	if !req.Tick.IsZero() {
		tick = &history.Tick{Time: req.Tick, Schedule: req.Schedule}
	}
	if err := r.db.StartRun(run, tick); err != nil {
		return "", nil, err
	}
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	done := make(chan struct{})
	if r.hang {
		go func() {
			<-r.release
			close(done)
		}()
		return run.ID, done, nil
	}
	go func() {
		defer close(done)
		select {
		case <-time.After(r.dur):
			run.Status = history.RunSucceeded
		case <-ctx.Done():
			run.Status = history.RunCancelled
		}
		run.Ended = r.now()
		_ = r.db.FinishRun(run)
		r.mu.Lock()
		if r.statuses == nil {
			r.statuses = map[string]string{}
		}
		r.statuses[run.ID] = run.Status
		r.mu.Unlock()
	}()
	return run.ID, done, nil
}

// ticks lists the ticks of the started runs, as offsets from base.
func (r *runner) ticks() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, q := range r.reqs {
		s := q.Tick.Sub(base).String()
		if q.Trigger != "schedule" {
			s += "(" + q.Trigger + ")"
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

func schedule(t *testing.T, yaml string) *pipeline.Schedule {
	t.Helper()
	r := stages.NewRegistry()
	r.Register("exec", stages.NewExec(0))
	p, err := pipeline.Parse("p.yaml", []byte("name: p\nparams: {day: x}\nschedule: "+yaml+"\nstages: {a: {run: \"true\"}}\n"),
		pipeline.Options{Root: t.TempDir(), Kinds: r})
	if err != nil {
		t.Fatal(err)
	}
	return p.Schedule
}

// bubble runs a scheduler over db inside the current synctest bubble,
// with clock base+elapsed, until stop is called.
type bubble struct {
	s      *Scheduler
	r      *runner
	cancel context.CancelFunc
	done   chan struct{}
}

func start(t *testing.T, db *history.DB, sc *pipeline.Schedule, r *runner, clock func() time.Time) *bubble {
	t.Helper()
	r.db, r.now = db, clock
	ctx, cancel := context.WithCancel(context.Background())
	s := New(Options{Runner: r, Ticks: db, Now: clock})
	b := &bubble{s: s, r: r, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(b.done)
		_ = s.Run(ctx)
	}()
	if err := s.SetJobs(ctx, []Job{{Pipeline: "p", Schedule: sc}}); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *bubble) stop() {
	b.cancel()
	<-b.done
}

// runFor runs a scheduler with runner r on a fresh history for d of fake
// time, then stops it.
func runFor(t *testing.T, spec string, r *runner, d time.Duration) (*bubble, *history.DB) {
	t.Helper()
	db := newDB(t)
	b := start(t, db, schedule(t, spec), r, clock())
	time.Sleep(d)
	synctest.Wait()
	b.stop()
	return b, db
}

func newDB(t *testing.T) *history.DB {
	return history.Open(filepath.Join(t.TempDir(), "history.db"))
}

// clock returns base plus the fake time elapsed in the bubble.
func clock() func() time.Time {
	t0 := time.Now()
	return func() time.Time { return base.Add(time.Since(t0)) }
}

func TestEverySecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, db := runFor(t, `{cron: "* * * * * *", params: {day: "{{tick.date}} {{tick.time}}"}}`, &runner{dur: 100 * time.Millisecond}, 5500*time.Millisecond)
		if got := b.r.ticks(); got != "1s 2s 3s 4s 5s" {
			t.Errorf("ticks %q", got)
		}
		if p := b.r.reqs[0].Params["day"]; p != "2026-06-01 12:00:01" {
			t.Errorf("tick params %q", p)
		}
		last, _, _ := db.LastTick("p")
		if !last.Time.Equal(base.Add(5 * time.Second)) {
			t.Errorf("last tick %s", last.Time)
		}
	})
}

func TestOverlap(t *testing.T) {
	for _, tc := range []struct {
		policy string
		want   string
		// statuses of the runs, in start order
		wantStatus string
	}{
		// Runs take 2.5 s on a per-second schedule, one at a time.
		{"skip", "1s 4s 7s", "succeeded succeeded succeeded"},
		{"queue", "1s 2s 3s", "succeeded succeeded succeeded"},
		{"cancel", "1s 2s 3s 4s 5s 6s 7s", "cancelled cancelled cancelled cancelled cancelled cancelled succeeded"},
	} {
		t.Run(tc.policy, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b, db := runFor(t, `{cron: "* * * * * *", overlap: `+tc.policy+`}`, &runner{dur: 2500 * time.Millisecond}, 7500*time.Millisecond)
				// Let the last run end (the scheduler is gone; its context is not).
				time.Sleep(3 * time.Second)
				synctest.Wait()
				if got := b.r.ticks(); got != tc.want {
					t.Errorf("ticks %q, want %q", got, tc.want)
				}
				runs, _ := db.Runs("p", 0)
				var st []string
				for _, r := range slices.Backward(runs) {
					st = append(st, r.Status)
				}
				if tc.policy == "cancel" {
					st = st[:min(len(st), 7)]
				}
				if got := strings.Join(st, " "); got != tc.wantStatus {
					t.Errorf("statuses %q, want %q", got, tc.wantStatus)
				}
			})
		})
	}
}

func TestMaxActiveRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := runFor(t, `{cron: "* * * * * *", overlap: skip, max_active_runs: 2}`, &runner{dur: 2500 * time.Millisecond}, 6500*time.Millisecond)
		// 1s and 2s run; 3s is skipped (two active); 4s starts when 1s ended
		// at 3.5s; 5s when 2s ended at 4.5s; 6s skipped.
		if got := b.r.ticks(); got != "1s 2s 4s 5s" {
			t.Errorf("ticks %q", got)
		}
		time.Sleep(3 * time.Second)
	})
}

// Serve is down from 3.5s to 10.5s: ticks 4s..10s are missed. What runs on
// restart depends on catchup and catchup_window; nothing runs twice.
func TestCatchup(t *testing.T) {
	for _, tc := range []struct {
		spec, want string
	}{
		{`{cron: "* * * * * *", catchup: none}`, "1s 2s 3s 11s 12s"},
		{`{cron: "* * * * * *", catchup: latest}`, "1s 2s 3s 10s(catchup) 11s 12s"},
		{`{cron: "* * * * * *", catchup: all, overlap: queue}`, "1s 2s 3s 4s(catchup) 5s(catchup) 6s(catchup) 7s(catchup) 8s(catchup) 9s(catchup) 10s(catchup) 11s 12s"},
		{`{cron: "* * * * * *", catchup: all, catchup_window: 3s, overlap: queue}`, "1s 2s 3s 8s(catchup) 9s(catchup) 10s(catchup) 11s 12s"},
		{`{cron: "* * * * * *", catchup: all, catchup_window: 400ms}`, "1s 2s 3s 11s 12s"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				db := newDB(t)
				sc := schedule(t, tc.spec)
				clk := clock()
				r := &runner{}
				b := start(t, db, sc, r, clk)
				time.Sleep(3500 * time.Millisecond)
				synctest.Wait()
				b.stop()
				time.Sleep(7 * time.Second) // down
				b = start(t, db, sc, r, clk)
				time.Sleep(2 * time.Second)
				synctest.Wait()
				b.stop()
				if got := r.ticks(); got != tc.want {
					t.Errorf("ticks\n got %q\nwant %q", got, tc.want)
				}
			})
		})
	}
}

// The process dies between "run started" and "run finished": the run stays
// "running" in the history. The next start marks it failed (interrupted)
// and does not run its tick again; the ticks missed meanwhile follow
// catchup.
func TestCrashBetweenStartAndFinish(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newDB(t)
		sc := schedule(t, `{cron: "* * * * * *", catchup: latest}`)
		clk := clock()
		crashed := &runner{hang: true, release: make(chan struct{})}
		defer close(crashed.release)
		b := start(t, db, sc, crashed, clk)
		time.Sleep(1500 * time.Millisecond)
		synctest.Wait()
		b.stop() // the process is gone: its run never finishes
		if got := crashed.ticks(); got != "1s" {
			t.Fatalf("before the crash: %q", got)
		}
		time.Sleep(3 * time.Second)
		ids, err := db.MarkAbandoned("test", func(int) bool { return false }, clk())
		if err != nil || len(ids) != 1 {
			t.Fatalf("MarkAbandoned = %v, %v", ids, err)
		}
		r := &runner{}
		b = start(t, db, sc, r, clk)
		time.Sleep(1 * time.Second)
		synctest.Wait()
		b.stop()
		if got := r.ticks(); got != "4s(catchup) 5s" {
			t.Errorf("after restart: %q; want the newest missed tick, then on time, and never 1s again", got)
		}
		first, err := db.Run(ids[0])
		if err != nil || first.Status != history.RunFailed || !strings.Contains(first.Error, "interrupted") {
			t.Errorf("crashed run: %+v, %v", first, err)
		}
	})
}

// Two schedulers on one history (two serve processes) never run a tick
// twice: the tick is recorded with the run in one transaction.
func TestTwoSchedulersOneHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newDB(t)
		sc := schedule(t, `{cron: "* * * * * *"}`)
		clk := clock()
		r1, r2 := &runner{}, &runner{}
		b1 := start(t, db, sc, r1, clk)
		b2 := start(t, db, sc, r2, clk)
		time.Sleep(5500 * time.Millisecond)
		synctest.Wait()
		b1.stop()
		b2.stop()
		all := strings.Fields(r1.ticks() + " " + r2.ticks())
		slices.SortFunc(all, func(a, b string) int {
			da, _ := time.ParseDuration(a)
			db, _ := time.ParseDuration(b)
			return int(da - db)
		})
		if got := strings.Join(all, " "); got != "1s 2s 3s 4s 5s" {
			t.Errorf("ticks run by both: %q (r1 %q, r2 %q)", got, r1.ticks(), r2.ticks())
		}
	})
}

// A daily 02:30 Europe/Berlin job across both DST changes of 2026, on the
// fake clock: one run per day, the spring one at the jump (03:00 CEST).
func TestDSTDaily(t *testing.T) {
	for _, tc := range []struct {
		name  string
		start time.Time
		want  []string
	}{
		{"spring", time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC),
			[]string{"2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"}},
		{"fall", time.Date(2026, 10, 23, 12, 0, 0, 0, time.UTC),
			[]string{"2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				db := newDB(t)
				sc := schedule(t, `{cron: "30 2 * * *", timezone: Europe/Berlin}`)
				t0 := time.Now()
				clk := func() time.Time { return tc.start.Add(time.Since(t0)) }
				r := &runner{}
				b := start(t, db, sc, r, clk)
				time.Sleep(72 * time.Hour)
				synctest.Wait()
				b.stop()
				var got []string
				for _, q := range r.reqs {
					got = append(got, q.Tick.In(sc.Location).Format(time.RFC3339))
				}
				if fmt.Sprint(got) != fmt.Sprint(tc.want) {
					t.Errorf("ticks\n got %v\nwant %v", got, tc.want)
				}
			})
		})
	}
}

func TestTriggerAndCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newDB(t)
		sc := schedule(t, `{cron: "0 2 * * *", params: {day: "{{tick.date}}"}}`)
		r := &runner{dur: time.Hour}
		b := start(t, db, sc, r, clock())
		ctx := context.Background()
		id, err := b.s.Trigger(ctx, "p", map[string]string{"extra": "1"})
		if err != nil {
			t.Fatal(err)
		}
		if q := r.reqs[0]; q.Trigger != "manual" || q.Params["day"] != "2026-06-01" || q.Params["extra"] != "1" || !q.Tick.IsZero() {
			t.Errorf("manual request %+v", q)
		}
		if _, err := b.s.Trigger(ctx, "nope", nil); err == nil || !strings.Contains(err.Error(), `no such pipeline "nope"`) {
			t.Errorf("unknown pipeline: %v", err)
		}
		if !b.s.Cancel(ctx, id) {
			t.Error("Cancel of an active run returned false")
		}
		synctest.Wait()
		if b.s.Cancel(ctx, id) || b.s.Cancel(ctx, "nope") {
			t.Error("Cancel of a finished or unknown run returned true")
		}
		if n := b.s.NextTick(ctx, "p"); !n.Equal(time.Date(2026, 6, 2, 2, 0, 0, 0, time.UTC)) {
			t.Errorf("NextTick = %s", n)
		}
		b.stop()
		if r.statuses[id] != history.RunCancelled {
			t.Errorf("cancelled run: %q", r.statuses[id])
		}
	})
}
