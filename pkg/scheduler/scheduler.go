package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
)

// Request asks a Runner for one run.
type Request struct {
	Pipeline string
	// Tick is the scheduler tick the run is for; zero for a manual run.
	Tick time.Time
	// Schedule identifies the schedule of Tick (pipeline.Schedule.ID).
	Schedule string
	// Params override pipeline params: the schedule's params expanded for
	// the tick, then a manual trigger's overrides.
	Params map[string]string
	// Trigger is recorded with the run: "schedule", "catchup", "manual".
	Trigger string
}

// Runner starts runs.
type Runner interface {
	// Start creates the run and starts it, returning once the run record
	// exists. When req.Tick is set, the tick is recorded as processed in
	// the same transaction; if it (or a later tick) was processed already
	// Start returns an error wrapping history.ErrTickDone and runs nothing.
	// done is closed when the run has ended. Cancelling ctx cancels the run.
	Start(ctx context.Context, req Request) (id string, done <-chan struct{}, err error)
}

// Ticks is the durable record of processed ticks (history.DB).
type Ticks interface {
	LastTick(pipeline string) (history.Tick, bool, error)
	SkipTick(pipeline string, t history.Tick) error
}

// Job is one pipeline the scheduler knows; Schedule nil means it runs
// only when triggered.
type Job struct {
	Pipeline string
	Schedule *pipeline.Schedule
}

// Options configure a Scheduler.
type Options struct {
	Runner Runner
	Ticks  Ticks
	// Now is the clock (default time.Now).
	Now func() time.Time
	// RunContext is the parent of every run's context: cancelling it
	// cancels all runs (default: context.Background()).
	RunContext context.Context
	Log        *slog.Logger
	// OnTick, if set, is called for every tick processed (run or skipped).
	OnTick func(pipeline string, tick time.Time)
}

var (
	// ErrUnknownPipeline is returned by Trigger for a pipeline not loaded.
	ErrUnknownPipeline = errors.New("no such pipeline")
	// ErrStopped is returned once the scheduler has stopped.
	ErrStopped = errors.New("scheduler stopped")
)

// next is pipeline.Schedule.Next; tests count its calls.
var next = (*pipeline.Schedule).Next

// maxDue bounds how many due ticks of one pipeline are looked at in one
// pass (a per-second schedule after a week down); older ones are skipped.
const maxDue = 10000

// Scheduler runs jobs on their schedules.
type Scheduler struct {
	opts     Options
	jobs     map[string]*job
	byID     map[string]*active
	setc     chan []Job
	trigc    chan trigger
	cancelc  chan cancelReq
	donec    chan string
	nextc    chan nextReq
	quit     chan struct{} // closed when Run returns
	runCtx   context.Context
	tickSeen func(string, time.Time)
}

type job struct {
	Job
	cursor time.Time // the last tick seen: processed, or queued
	// retry, when set, is when to read the durable last tick again: the
	// last read failed, and the job takes no ticks until one succeeds.
	retry    time.Time
	failures int       // consecutive failed reads
	queue    []queued  // ticks waiting, oldest first
	active   []*active // runs in progress, oldest first
	// removed: no longer loaded; kept only until its runs end.
	removed bool
}

type queued struct {
	tick    time.Time
	trigger string
	skip    string // not run: why
}

type active struct {
	id         string
	pipeline   string
	cancel     context.CancelFunc
	cancelling bool // cancelled for a newer tick (overlap: cancel)
}

type trigger struct {
	pipeline string
	params   map[string]string
	reply    chan triggerReply
}

type triggerReply struct {
	id  string
	err error
}

type cancelReq struct {
	id    string
	reply chan bool
}

type nextReq struct {
	pipeline string
	reply    chan time.Time
}

// New returns a Scheduler; Run starts it.
func New(opts Options) *Scheduler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RunContext == nil {
		opts.RunContext = context.Background()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{
		opts: opts, jobs: map[string]*job{}, byID: map[string]*active{},
		setc: make(chan []Job), trigc: make(chan trigger), cancelc: make(chan cancelReq),
		donec: make(chan string), nextc: make(chan nextReq), quit: make(chan struct{}),
		runCtx: opts.RunContext, tickSeen: opts.OnTick,
	}
	if s.tickSeen == nil {
		s.tickSeen = func(string, time.Time) {}
	}
	return s
}

// SetJobs replaces the set of jobs (at start and on every reload). A job
// whose schedule is unchanged keeps its state; a new or changed one starts
// from its durable last tick, catching up per its policy.
func (s *Scheduler) SetJobs(ctx context.Context, jobs []Job) error {
	select {
	case s.setc <- jobs:
		return nil
	case <-s.quit:
		return ErrStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Trigger starts a manual run of pipeline now, with params overriding the
// schedule's (expanded for the current time), and returns its run ID.
// Manual runs do not wait for max_active_runs.
func (s *Scheduler) Trigger(ctx context.Context, pipeline string, params map[string]string) (string, error) {
	t := trigger{pipeline: pipeline, params: params, reply: make(chan triggerReply, 1)}
	select {
	case s.trigc <- t:
	case <-s.quit:
		return "", ErrStopped
	case <-ctx.Done():
		return "", ctx.Err()
	}
	select {
	case r := <-t.reply:
		return r.id, r.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Cancel cancels run id if this scheduler started it and it is active.
func (s *Scheduler) Cancel(ctx context.Context, id string) bool {
	c := cancelReq{id: id, reply: make(chan bool, 1)}
	select {
	case s.cancelc <- c:
	case <-s.quit:
		return false
	case <-ctx.Done():
		return false
	}
	select {
	case ok := <-c.reply:
		return ok
	case <-ctx.Done():
		return false
	}
}

// NextTick returns the next tick the scheduler will process for pipeline
// (zero if none).
func (s *Scheduler) NextTick(ctx context.Context, pipeline string) time.Time {
	n := nextReq{pipeline: pipeline, reply: make(chan time.Time, 1)}
	select {
	case s.nextc <- n:
	case <-s.quit:
		return time.Time{}
	case <-ctx.Done():
		return time.Time{}
	}
	select {
	case t := <-n.reply:
		return t
	case <-ctx.Done():
		return time.Time{}
	}
}

// Run is the coordinator. It returns when ctx ends; runs in progress go on
// (their contexts derive from Options.RunContext).
func (s *Scheduler) Run(ctx context.Context) error {
	defer close(s.quit)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := s.opts.Now()
		for _, j := range s.sorted() {
			if j.Schedule != nil && !j.retry.IsZero() && !now.Before(j.retry) {
				s.resume(j, now)
			}
			s.due(j, now)
			s.dispatch(j)
		}
		timer.Reset(s.wake(now))
		select {
		case <-ctx.Done():
			s.dropQueued()
			return nil
		case <-timer.C:
		case jobs := <-s.setc:
			s.set(jobs)
		case t := <-s.trigc:
			id, err := s.manual(t)
			t.reply <- triggerReply{id, err}
		case c := <-s.cancelc:
			a, ok := s.byID[c.id]
			if ok {
				a.cancel()
			}
			c.reply <- ok
		case id := <-s.donec:
			s.finished(id)
		case n := <-s.nextc:
			var t time.Time
			if j, ok := s.jobs[n.pipeline]; ok && j.Schedule != nil && j.retry.IsZero() {
				t = j.Schedule.Next(j.cursor)
			}
			n.reply <- t
		}
	}
}

func (s *Scheduler) sorted() []*job {
	out := make([]*job, 0, len(s.jobs))
	for _, j := range s.jobs {
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b *job) int { return strings.Compare(a.Pipeline, b.Pipeline) })
	return out
}

// wake is how long until the next tick of any job.
func (s *Scheduler) wake(now time.Time) time.Duration {
	d := time.Hour
	for _, j := range s.jobs {
		if j.Schedule == nil {
			continue
		}
		if !j.retry.IsZero() {
			d = min(d, j.retry.Sub(now))
			continue
		}
		if n := j.Schedule.Next(j.cursor); !n.IsZero() && n.Sub(now) < d {
			d = n.Sub(now)
		}
	}
	return max(d, 0)
}

func (s *Scheduler) set(jobs []Job) {
	now := s.opts.Now()
	keep := map[string]bool{}
	for _, nj := range jobs {
		keep[nj.Pipeline] = true
		j, ok := s.jobs[nj.Pipeline]
		if ok && sameTiming(j.Schedule, nj.Schedule) {
			j.Job, j.removed = nj, false // policies may have changed; timing did not
			continue
		}
		if !ok {
			j = &job{}
			s.jobs[nj.Pipeline] = j
		}
		j.Job, j.removed = nj, false
		j.queue, j.retry, j.failures = nil, time.Time{}, 0
		if nj.Schedule != nil {
			s.resume(j, now)
		}
	}
	for name, j := range s.jobs {
		if !keep[name] && len(j.active) == 0 {
			delete(s.jobs, name)
		} else if !keep[name] {
			j.Schedule, j.queue, j.removed = nil, nil, true // finishes its runs, takes no ticks
			j.retry, j.failures = time.Time{}, 0
		}
	}
}

func sameTiming(a, b *pipeline.Schedule) bool {
	return a != nil && b != nil && a.ID() == b.ID()
}

// resume sets j's cursor from its durable last tick and handles the ticks
// missed since then per the catch-up policy. If the last tick cannot be
// read, j takes no ticks and resume is tried again later (with backoff):
// treating it as "never scheduled" would skip what catch-up should run.
func (s *Scheduler) resume(j *job, now time.Time) {
	sc := j.Schedule
	log := s.opts.Log.With("pipeline", j.Pipeline)
	last, ok, err := s.opts.Ticks.LastTick(j.Pipeline)
	if err != nil {
		j.failures++
		wait := min(time.Second<<min(j.failures-1, 6), time.Minute)
		j.retry = now.Add(wait)
		log.Error("cannot read the last processed tick from the history; the schedule waits, trying again", "in", wait.String(), "attempt", j.failures, "err", err)
		return
	}
	if j.failures > 0 {
		log.Info("read the last processed tick; the schedule resumes", "after_attempts", j.failures)
	}
	j.retry, j.failures = time.Time{}, 0
	if !ok || last.Schedule != sc.ID() {
		why := "first schedule"
		if ok {
			why = "schedule changed"
		}
		// Ticks from now on; nothing before is caught up.
		j.cursor = now
		if !ok || last.Time.Before(now) {
			s.skip(j, history.Tick{Time: now, Schedule: sc.ID(), Skipped: why})
		} else {
			j.cursor = last.Time
		}
		log.Info("scheduled", "schedule", sc.Cron, "timezone", sc.Timezone, "from", j.cursor.Format(time.RFC3339), "why", why)
		return
	}
	j.cursor = last.Time
	s.tickSeen(j.Pipeline, last.Time) // the durable last tick, for /metrics after a restart
	first := next(sc, last.Time)
	if first.IsZero() || first.After(now) {
		return
	}
	newest := latest(sc, last.Time, now)
	// Only the ticks in the catch-up window may run, and with catchup none
	// or latest only the newest matters: the walk starts there, not at the
	// last tick (a per-second schedule after a week down has 600k ticks).
	from := last.Time
	if w := sc.CatchupWindow; w > 0 && now.Add(-w).After(from) {
		from = now.Add(-w - time.Nanosecond) // a tick at now-w is in the window
	}
	var keep []time.Time
	if sc.Catchup == pipeline.CatchupAll {
		for t := next(sc, from); !t.IsZero() && !t.After(now); t = next(sc, t) {
			keep = append(keep, t)
			if len(keep) > maxDue {
				keep = keep[1:]
			}
		}
	} else if newest.After(from) {
		keep = []time.Time{newest}
	}
	switch {
	case len(keep) == 0:
		j.queue = append(j.queue, queued{tick: newest, skip: fmt.Sprintf("missed, older than catchup_window %s", sc.CatchupWindow)})
	case sc.Catchup == pipeline.CatchupNone:
		j.queue = append(j.queue, queued{tick: newest, skip: "missed (catchup: none)"})
	case sc.Catchup == pipeline.CatchupLatest:
		j.queue = append(j.queue, queued{tick: newest, trigger: "catchup"})
	default:
		for _, t := range keep {
			j.queue = append(j.queue, queued{tick: t, trigger: "catchup"})
		}
	}
	j.cursor = newest
	runs := len(keep) // caught up
	if sc.Catchup == pipeline.CatchupNone {
		runs = 0
	}
	log.Info("missed ticks", "count", runs, "catchup", sc.Catchup, // count: those caught up
		"first", first.Format(time.RFC3339), "last", newest.Format(time.RFC3339))
}

// latest is sc's newest tick in (after, now]; zero if there is none. It
// looks back from now in doubling steps, then bisects: O(log) calls of
// Next however many ticks there are.
func latest(sc *pipeline.Schedule, after, now time.Time) time.Time {
	has := func(lo, hi time.Time) bool { // a tick in (lo, hi]
		t := next(sc, lo)
		return !t.IsZero() && !t.After(hi)
	}
	// Invariant: a tick in (lo, hi], none in (hi, now].
	lo, hi := after, now
	for d := time.Second; now.Add(-d).After(after); d *= 2 {
		if has(now.Add(-d), hi) {
			lo = now.Add(-d)
			break
		}
		hi = now.Add(-d)
	}
	if !has(lo, hi) {
		return time.Time{}
	}
	// Ticks are whole seconds apart: below a second one tick is left.
	for hi.Sub(lo) > time.Second {
		mid := lo.Add(hi.Sub(lo) / 2)
		if has(mid, hi) {
			lo = mid
		} else {
			hi = mid
		}
	}
	var t time.Time
	for n := next(sc, lo); !n.IsZero() && !n.After(hi); n = next(sc, n) {
		t = n
	}
	return t
}

// dropQueued logs, as the scheduler stops, the ticks queued for a free
// slot (overlap: queue) that it did not start. Nothing records them: the
// history's last tick is the last one processed, so on the next start they
// are missed ticks, caught up (or not) per the schedule's catchup.
func (s *Scheduler) dropQueued() {
	for _, j := range s.sorted() {
		var ticks []string
		for _, q := range j.queue {
			if q.skip == "" {
				ticks = append(ticks, q.tick.Format(time.RFC3339))
			}
		}
		if len(ticks) == 0 || j.Schedule == nil {
			continue
		}
		s.opts.Log.Warn("stopping with ticks queued (overlap: queue) and not started; the next start treats them as missed (catchup: "+j.Schedule.Catchup+")",
			"pipeline", j.Pipeline, "count", len(ticks), "ticks", strings.Join(ticks, " "))
	}
}

// due handles the ticks of j that fell due by now.
func (s *Scheduler) due(j *job, now time.Time) {
	sc := j.Schedule
	if sc == nil || !j.retry.IsZero() {
		return
	}
	n := 0
	for t := sc.Next(j.cursor); !t.IsZero() && !t.After(now) && n < maxDue; t = sc.Next(t) {
		j.cursor, n = t, n+1
		busy := len(j.active) >= sc.MaxActiveRuns || slices.ContainsFunc(j.queue, func(q queued) bool { return q.skip == "" })
		if !busy {
			j.queue = append(j.queue, queued{tick: t, trigger: "schedule"})
			continue
		}
		switch sc.Overlap {
		case pipeline.OverlapSkip:
			j.queue = append(j.queue, queued{tick: t, skip: fmt.Sprintf("overlap: skip (%d run(s) active)", len(j.active))})
		case pipeline.OverlapQueue:
			j.queue = append(j.queue, queued{tick: t, trigger: "schedule"})
		case pipeline.OverlapCancel:
			// The oldest active run not already being cancelled makes room.
			j.queue = append(j.queue, queued{tick: t, trigger: "schedule"})
			for _, a := range j.active {
				if a.cancelling {
					continue
				}
				s.opts.Log.Info("cancelling run for a newer tick (overlap: cancel)", "pipeline", j.Pipeline, "run", a.id, "tick", t.Format(time.RFC3339))
				a.cancelling = true
				a.cancel()
				break
			}
		}
	}
}

// dispatch processes j's queue in order: skips are recorded (consecutive
// ones coalesced into the last), runs start while slots are free.
func (s *Scheduler) dispatch(j *job) {
	for len(j.queue) > 0 {
		q := j.queue[0]
		if q.skip != "" {
			if len(j.queue) > 1 && j.queue[1].skip != "" {
				j.queue = j.queue[1:] // the next skip records past this one
				s.tickSeen(j.Pipeline, q.tick)
				continue
			}
			s.skip(j, history.Tick{Time: q.tick, Schedule: j.Schedule.ID(), Skipped: q.skip})
			s.tickSeen(j.Pipeline, q.tick)
			j.queue = j.queue[1:]
			continue
		}
		if j.Schedule == nil || len(j.active) >= j.Schedule.MaxActiveRuns {
			return
		}
		j.queue = j.queue[1:]
		s.start(j, q)
	}
}

func (s *Scheduler) skip(j *job, t history.Tick) {
	if err := s.opts.Ticks.SkipTick(j.Pipeline, t); err != nil && !errors.Is(err, history.ErrTickDone) {
		s.opts.Log.Error("record skipped tick", "pipeline", j.Pipeline, "tick", t.Time.Format(time.RFC3339), "err", err)
		return
	}
	if t.Skipped != "first schedule" && t.Skipped != "schedule changed" {
		s.opts.Log.Info("tick skipped", "pipeline", j.Pipeline, "tick", t.Time.Format(time.RFC3339), "why", t.Skipped)
	}
}

func (s *Scheduler) start(j *job, q queued) {
	sc := j.Schedule
	log := s.opts.Log.With("pipeline", j.Pipeline, "tick", q.tick.Format(time.RFC3339))
	s.tickSeen(j.Pipeline, q.tick)
	req := Request{Pipeline: j.Pipeline, Tick: q.tick, Schedule: sc.ID(), Params: sc.TickParams(q.tick), Trigger: q.trigger}
	id, err := s.launch(j, req)
	switch {
	case errors.Is(err, history.ErrTickDone):
		log.Info("tick already processed (by another orch serve?); not running it again")
	case err != nil:
		log.Error("run could not start; tick skipped", "err", err)
		s.skip(j, history.Tick{Time: q.tick, Schedule: sc.ID(), Skipped: "could not start: " + err.Error()})
	default:
		log.Info("run started", "run", id, "trigger", q.trigger)
	}
}

func (s *Scheduler) launch(j *job, req Request) (string, error) {
	ctx, cancel := context.WithCancel(s.runCtx)
	id, done, err := s.opts.Runner.Start(ctx, req)
	if err != nil {
		cancel()
		return "", err
	}
	a := &active{id: id, pipeline: j.Pipeline, cancel: cancel}
	j.active = append(j.active, a)
	s.byID[id] = a
	go func() {
		<-done
		cancel()
		select {
		case s.donec <- id:
		case <-s.quit:
		}
	}()
	return id, nil
}

func (s *Scheduler) manual(t trigger) (string, error) {
	j, ok := s.jobs[t.pipeline]
	if !ok || j.removed {
		return "", fmt.Errorf("%w %q", ErrUnknownPipeline, t.pipeline)
	}
	req := Request{Pipeline: t.pipeline, Trigger: "manual", Params: map[string]string{}}
	if j.Schedule != nil {
		req.Params = j.Schedule.TickParams(s.opts.Now())
		if req.Params == nil {
			req.Params = map[string]string{}
		}
	}
	for k, v := range t.params {
		req.Params[k] = v
	}
	return s.launch(j, req)
}

func (s *Scheduler) finished(id string) {
	a, ok := s.byID[id]
	if !ok {
		return
	}
	delete(s.byID, id)
	j := s.jobs[a.pipeline]
	if j == nil {
		return
	}
	j.active = slices.DeleteFunc(j.active, func(x *active) bool { return x.id == id })
	if j.removed && len(j.active) == 0 {
		delete(s.jobs, a.pipeline)
	}
}
