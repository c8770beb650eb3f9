package scheduler

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
)

// countNext counts the calls of Schedule.Next until the test ends.
func countNext(t *testing.T) *int {
	n := new(int)
	orig := next
	next = func(sc *pipeline.Schedule, t time.Time) time.Time { *n++; return orig(sc, t) }
	t.Cleanup(func() { next = orig })
	return n
}

// After a week down, a per-second schedule has 604,800 missed ticks.
// Resuming looks only at those it may run: with catchup none or latest the
// newest, with a catchup_window the ticks inside it; it does not walk the
// week (it used to).
func TestResumeAfterAWeekDoesNotWalkEveryTick(t *testing.T) {
	for _, tc := range []struct {
		spec     string
		queue    string // the ticks queued, as offsets from now
		maxCalls int
	}{
		{`{cron: "* * * * * *", catchup: none}`, "0s:skip(missed (catchup: none))", 100},
		{`{cron: "* * * * * *", catchup: latest}`, "0s:catchup", 100},
		{`{cron: "* * * * * *", catchup: latest, catchup_window: 1m}`, "0s:catchup", 100},
		{`{cron: "* * * * * *", catchup: all, catchup_window: 3s}`, "-3s:catchup -2s:catchup -1s:catchup 0s:catchup", 100},
		{`{cron: "0 0 * * * *", catchup: all, catchup_window: 90m}`, "-1h0m0s:catchup 0s:catchup", 100},
		{`{cron: "* * * * * *", catchup: all, catchup_window: 1m}`, "", 200},
		{`{cron: "0 0 1 1 *", catchup: latest, catchup_window: 1h}`, "-11h0m0s:skip(missed, older than catchup_window 1h0m0s)", 100},
		{`{cron: "30 * * * * *", catchup: latest}`, "-30s:catchup", 100},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			db := newDB(t)
			sc := schedule(t, tc.spec)
			now := time.Date(2026, 1, 1, 11, 0, 0, 0, time.UTC)
			if err := db.SkipTick("p", history.Tick{Time: now.Add(-7 * 24 * time.Hour), Schedule: sc.ID()}); err != nil {
				t.Fatal(err)
			}
			calls := countNext(t)
			s := New(Options{Ticks: db, Now: func() time.Time { return now }})
			j := &job{Job: Job{Pipeline: "p", Schedule: sc}}
			s.resume(j, now)
			if *calls > tc.maxCalls {
				t.Errorf("resume called Schedule.Next %d times, want at most %d", *calls, tc.maxCalls)
			}
			var got []string
			for _, q := range j.queue {
				s := q.tick.Sub(now).String() + ":" + q.trigger
				if q.skip != "" {
					s += "skip(" + q.skip + ")"
				}
				got = append(got, s)
			}
			if tc.queue == "" { // the minute's 61 ticks
				if len(j.queue) != 61 || !j.queue[0].tick.Equal(now.Add(-time.Minute)) || !j.queue[60].tick.Equal(now) {
					t.Errorf("queued %d ticks: %s ... ", len(got), strings.Join(got[:min(3, len(got))], " "))
				}
			} else if g := strings.Join(got, " "); g != tc.queue {
				t.Errorf("queued %q, want %q", g, tc.queue)
			}
		})
	}
}

// latest finds the newest tick in (after, now] for sparse and dense
// schedules alike, as walking every tick would.
func TestLatest(t *testing.T) {
	now := time.Date(2026, 3, 29, 12, 34, 56, 0, time.UTC)
	for _, spec := range []string{`{cron: "* * * * * *"}`, `{cron: "*/7 * * * * *"}`, `{cron: "0 30 2 * * *", timezone: Europe/Berlin}`,
		`{cron: "0 0 29 2 *"}`, `{cron: "* * * 1 * *"}`, `{cron: "0 0 12 * * 1-5"}`} {
		sc := schedule(t, spec)
		for _, back := range []time.Duration{0, time.Second, 5 * time.Second, time.Hour, 50 * time.Hour, 400 * 24 * time.Hour, 5 * 366 * 24 * time.Hour} {
			after := now.Add(-back)
			var want time.Time
			n := 0
			for t := sc.Next(after); !t.IsZero() && !t.After(now) && n < 20000; t = sc.Next(t) {
				want, n = t, n+1
			}
			if n == 20000 {
				continue // too many ticks to walk for the expected value
			}
			if got := latest(sc, after, now); !got.Equal(want) {
				t.Errorf("%s: latest after %s = %s, want %s", spec, after, got, want)
			}
		}
	}
}

// logBuffer is a text log the test reads.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func newLog() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// The history cannot be read when serve restarts (here: its file is
// damaged for a while). The schedule does not start over from now, which
// would skip the missed ticks for good: it waits, logs the error, reads
// the history again with backoff, and then catches up per its policy.
func TestLastTickErrorIsRetriedNotFirstSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "history.db")
		db := history.Open(path)
		sc := schedule(t, `{cron: "* * * * * *", catchup: all, overlap: queue}`)
		clk := clock()
		r := &runner{}
		b := start(t, db, sc, r, clk)
		time.Sleep(3500 * time.Millisecond)
		synctest.Wait()
		b.stop()
		time.Sleep(7 * time.Second) // down; then the history is unreadable
		good, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("not a bbolt file"), 0o644); err != nil {
			t.Fatal(err)
		}
		log, logs := newLog()
		r.db, r.now = db, clk
		ctx, cancel := context.WithCancel(context.Background())
		s := New(Options{Runner: r, Ticks: db, Now: clk, Log: log})
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(ctx) }()
		if err := s.SetJobs(ctx, []Job{{Pipeline: "p", Schedule: sc}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second) // at 12.5s the history is readable again
		synctest.Wait()
		if err := os.WriteFile(path, good, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		cancel()
		<-done
		want := "1s 2s 3s"
		for i := 4; i <= 13; i++ {
			want += fmt.Sprintf(" %ds(catchup)", i)
		}
		if got := r.ticks(); !strings.HasPrefix(got, want+" ") {
			t.Errorf("ticks\n got %q\nwant %q then on time", got, want)
		}
		if l := logs.String(); !strings.Contains(l, "cannot read the last processed tick from the history") || !strings.Contains(l, "not a bbolt file") && !strings.Contains(l, "invalid") {
			t.Errorf("no error logged for the unreadable history:\n%s", l)
		}
	})
}

// Ticks queued for a slot (overlap: queue) when the scheduler stops are
// not dropped silently: the log names them, and says what the next start
// does with them.
func TestStopLogsQueuedTicks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := newDB(t)
		log, logs := newLog()
		r := &runner{db: db, dur: 2500 * time.Millisecond}
		clk := clock()
		r.now = clk
		ctx, cancel := context.WithCancel(context.Background())
		s := New(Options{Runner: r, Ticks: db, Now: clk, Log: log})
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(ctx) }()
		if err := s.SetJobs(ctx, []Job{{Pipeline: "p", Schedule: schedule(t, `{cron: "* * * * * *", overlap: queue, catchup: latest}`)}}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5500 * time.Millisecond) // 1s and 2s started; 3s, 4s, 5s queued
		synctest.Wait()
		cancel()
		<-done
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got := r.ticks(); got != "1s 2s" {
			t.Fatalf("ticks %q", got)
		}
		ts := func(d time.Duration) string { return base.Add(d).Format(time.RFC3339) }
		want := fmt.Sprintf(`level=WARN msg="stopping with ticks queued (overlap: queue) and not started; the next start treats them as missed (catchup: latest)" pipeline=p count=3 ticks="%s %s %s"`,
			ts(3*time.Second), ts(4*time.Second), ts(5*time.Second))
		if l := logs.String(); !strings.Contains(l, want) {
			t.Errorf("log lacks\n%s\n\n%s", want, l)
		}
	})
}

// A pipeline whose last tick cannot be read, removed while a manual run of
// it is active, waits for the run to end and is not resumed (not even when
// the history is readable again).
func TestUnreadableLastTickThenRemoved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "history.db")
		if err := os.WriteFile(path, []byte("not a bbolt file"), 0o644); err != nil {
			t.Fatal(err)
		}
		clk := clock()
		r := &runner{db: newDB(t), now: clk, dur: 10 * time.Second}
		ctx, cancel := context.WithCancel(context.Background())
		s := New(Options{Runner: r, Ticks: history.Open(path), Now: clk})
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Run(ctx) }()
		sc := schedule(t, `{cron: "* * * * * *"}`)
		if err := s.SetJobs(ctx, []Job{{Pipeline: "p", Schedule: sc}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Trigger(ctx, "p", nil); err != nil {
			t.Fatal(err)
		}
		// p goes; q's ticks wake the scheduler every second meanwhile.
		if err := s.SetJobs(ctx, []Job{{Pipeline: "q", Schedule: sc}}); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path); err != nil { // readable (empty) again
			t.Fatal(err)
		}
		time.Sleep(15 * time.Second)
		synctest.Wait()
		cancel()
		<-done
		time.Sleep(11 * time.Second) // the last runs of q end
		synctest.Wait()
		var runs []string
		for _, q := range r.reqs {
			if q.Pipeline == "p" {
				runs = append(runs, q.Trigger)
			}
		}
		if fmt.Sprint(runs) != "[manual]" {
			t.Errorf("runs of p: %v; want the manual run only", runs)
		}
	})
}
