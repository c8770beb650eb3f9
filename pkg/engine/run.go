package engine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/dag"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/store"
)

// ErrInterrupted is returned by Run when its context was cancelled.
var ErrInterrupted = errors.New("interrupted")

// RunOptions control a run.
type RunOptions struct {
	Selection
	Jobs      int
	KeepGoing bool
	// Events receives progress; it is called from many goroutines.
	Events func(Event)
	// Trigger is recorded in the history ("cli", "schedule", ...).
	Trigger string
	// Begin, if set, stores the new run instead of History.PutRun (serve
	// records the scheduler tick in the same transaction). An error stops
	// the run before any stage starts; Run returns it.
	Begin func(*history.Run) error
	// Sync flushes the cache's file system to stable storage (one
	// syncfs(2)) before Run returns, so that a power cut right after the
	// run cannot lose its cache entries. Without it the kernel writes them
	// back in its own time, as for make's outputs, and a crash can lose
	// the newest entries: a record that did not reach the disk whole does
	// not parse or hash to its key, a blob cut short fails the size check
	// of an output already linked in the workspace, and every blob that
	// is restored is verified; each is a reported miss and the stage
	// re-runs. (A blob of the right size with lost contents, possible on
	// file systems without data ordering, is found when it is next
	// restored or by orch verify; a crash during a run could leave that
	// with or without this flush.)
	// At the end of a 1,000-stage first run the flush took 40–80 ms of
	// otherwise idle wall time here, more on a busy file system.
	Sync bool
}

// Event types.
const (
	EvStart   = "start"   // a MISS starts executing
	EvHit     = "hit"     // restored from the cache
	EvRan     = "ran"     // executed successfully
	EvFailed  = "failed"  // failed for good
	EvSkipped = "skipped" // not started
	EvRetry   = "retry"   // an attempt failed; another follows
	EvWaiting = "waiting" // another process is computing the same key
	EvWarn    = "warn"    // something the user should know
)

// Event is one progress report.
type Event struct {
	Type     string
	Stage    string
	Key      digest.Digest
	Reason   string // MISS reasons, skip cause, warning, error
	Duration time.Duration
	Attempt  int
	Time     time.Time
	// Bytes is the size of the outputs restored (EvHit) or stored in the
	// cache (EvRan).
	Bytes int64
	// Job and State are the Slurm job and its state (Slurm executor).
	Job, State string
	// Log is the digest of the stage's captured log (EvHit, EvRan,
	// EvFailed), zero if there is none: a run in progress can show the log
	// of a stage that has finished.
	Log digest.Digest
}

// Result is the outcome of a run.
type Result struct {
	Run *history.Run
	// Err is the first root-cause failure (nil on success).
	Err error
}

// Counts returns hits, ran, failed and skipped stages.
func (r *Result) Counts() (hit, ran, failed, skipped int) {
	for _, s := range r.Run.Stages {
		switch s.Status {
		case history.Hit:
			hit++
		case history.Ran:
			ran++
		case history.Failed:
			failed++
		default:
			skipped++
		}
	}
	return
}

type runner struct {
	e     *Engine
	p     *pipeline.Pipeline
	opts  RunOptions
	run   *history.Run
	dir   string // attempt directories
	slots chan struct{}
	heads history.HeadSet

	executed atomic.Int32 // stages that executed (and so wrote blobs)
	stopping atomic.Bool  // a stage failed and the run does not keep going

	limits *limits // cpus and memory of the local machine
	// worker is set in `orch worker`: one stage, its record always written,
	// its outputs not linked into the workspace.
	worker    bool
	slurmOnce sync.Once
	slurm     *slurmExec

	recomputeMu sync.Mutex
	recomputed  map[string]*recomputation // upstream stages re-run for a corrupt output

	dirsMu   sync.Mutex // attempt directories (takeDir, putDir)
	freeDirs []*attemptDir
	nDirs    int

	emptyOnce sync.Once // emptyLog
	emptyD    digest.Digest
	emptyErr  error

	handoff *handoffs // tables kept in memory between built-in stages

	mu      sync.Mutex
	outputs map[string]map[string]cache.Output
	stages  map[string]*history.StageRun
}

// emptyLog stores the empty blob, the log of every command that prints
// nothing, once per run, and returns its digest.
func (r *runner) emptyLog(ctx context.Context) (digest.Digest, error) {
	r.emptyOnce.Do(func() { r.emptyD, r.emptyErr = r.e.Cache.PutBytes(ctx, nil) })
	return r.emptyD, r.emptyErr
}

func (r *runner) emit(ev Event) {
	ev.Time = r.e.Now()
	if r.opts.Events != nil {
		r.opts.Events(ev)
	}
}

// Run executes p: HITs are restored, MISSes run, at most opts.Jobs at once.
func (e *Engine) Run(ctx context.Context, p *pipeline.Pipeline, opts RunOptions) (*Result, error) {
	chosen, err := Select(p, opts.Selection)
	if err != nil {
		return nil, err
	}
	if opts.Jobs < 1 {
		opts.Jobs = Jobs()
	}
	heads, err := e.History.Heads(p.Name)
	if err != nil {
		return nil, err
	}
	if n := e.cleanStale(); n > 0 {
		opts.emitWarn(fmt.Sprintf("killed %d process(es) that the stages of a dead orch process left running", n))
	}
	host, _ := os.Hostname()
	if ids, err := e.History.MarkAbandoned(host, processAlive, e.Now()); err == nil {
		for _, id := range ids {
			opts.emitWarn(fmt.Sprintf("run %s was left running by an orch process that died; marked failed", id))
		}
	}
	now := e.Now()
	run := &history.Run{
		ID: history.NewID(now), Pipeline: p.Name, File: p.File, Status: history.RunRunning,
		Started: now, Trigger: opts.Trigger, Params: map[string]string{}, Host: host, PID: os.Getpid(),
	}
	for k, v := range p.Params {
		run.Params[k] = v.Text
	}
	r := &runner{
		e: e, p: p, opts: opts, run: run, slots: make(chan struct{}, opts.Jobs), heads: heads,
		outputs: map[string]map[string]cache.Output{}, stages: map[string]*history.StageRun{},
		recomputed: map[string]*recomputation{}, limits: newLimits(),
		handoff: newHandoffs(p, chosen, false),
	}
	defer r.handoff.release()
	tmp := filepath.Join(e.StateDir, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(tmp, run.ID+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		return nil, err
	}
	r.dir = filepath.Join(tmp, run.ID)
	if err := os.Mkdir(r.dir, 0o755); err != nil {
		lock.Close()
		return nil, err
	}
	defer func() {
		_ = cache.RemoveAll(r.dir)
		_ = os.Remove(lock.Name())
		lock.Close()
	}()
	for _, n := range p.Graph.Order() {
		if chosen[n] {
			r.stages[n] = &history.StageRun{Name: n, Status: history.Skipped}
			run.Stages = append(run.Stages, history.StageRun{Name: n})
		}
	}
	// The run is stored as running before any stage starts: a run whose
	// orch process dies (SIGKILL) is then found and marked failed by the
	// next one (kill.txtar). Storing it beside the first stages instead
	// saved 0.14 s once in a fresh workspace (bbolt's creation fsync) but
	// lost that record when orch was killed early.
	begin := e.History.PutRun
	if opts.Begin != nil {
		begin = opts.Begin
	}
	if err := begin(run); err != nil {
		return nil, err
	}

	results := p.Graph.Walk(ctx, chosen, opts.KeepGoing, func(ctx context.Context, name string) error {
		defer r.handoff.done(p.Stages[name], r.upstream)
		return r.stage(ctx, name)
	})

	res := &Result{Run: run}
	for i := range run.Stages {
		name := run.Stages[i].Name
		sr := r.stages[name]
		wr := results[name]
		if wr.Status == dag.Skipped {
			sr.Status = history.Skipped
			switch {
			case wr.Cause != "":
				sr.Reason = "upstream " + wr.Cause + " failed"
			case ctx.Err() != nil:
				sr.Reason = "run interrupted"
			default:
				sr.Reason = "run stopped after a failure"
			}
			r.emit(Event{Type: EvSkipped, Stage: name, Reason: sr.Reason})
		}
		if wr.Status == dag.Failed && res.Err == nil {
			res.Err = fmt.Errorf("stage %q: %w", name, wr.Err)
		}
		run.Stages[i] = *sr
		if sr.Status == history.Hit {
			run.Saved += sr.Duration
		}
	}
	run.Ended = e.Now()
	switch {
	case ctx.Err() != nil:
		run.Status = history.RunCancelled
		res.Err = ErrInterrupted
	case res.Err != nil:
		run.Status = history.RunFailed
		run.Error = res.Err.Error()
	default:
		run.Status = history.RunSucceeded
	}
	// Durability point, when asked for: one syncfs for every blob and
	// record of the run. Nothing to flush when no stage executed (hits
	// only link).
	if opts.Sync && r.executed.Load() > 0 {
		if err := e.Local.Sync(); err != nil {
			r.emit(Event{Type: EvWarn, Reason: fmt.Sprintf("sync cache: %v", err)})
		}
	}
	if err := e.History.FinishRun(run); err != nil {
		return res, err
	}
	return res, nil
}

// stage is the walk's per-stage function.
func (r *runner) stage(ctx context.Context, name string) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if r.stopping.Load() {
		return dag.ErrNotStarted
	}
	st := r.p.Stages[name]
	sr := r.stageRun(name)
	pre, _, err := r.e.Preimage(r.p, st, r.upstream)
	if err != nil {
		return r.fail(sr, err)
	}
	key := pre.Key()
	sr.Key = key.String()
	force := forced(r.opts.Selection, name)

	if !force && st.Cache {
		if ok := r.tryHit(ctx, st, sr, key); ok {
			return nil
		}
		// Identical work in another process (or stage) runs once: take the
		// key's lock, then look again.
		unlock, err := r.e.Local.Lock(ctx, key, func() {
			r.emit(Event{Type: EvWaiting, Stage: name, Key: key, Reason: "another orch process is computing this stage; waiting to restore its result"})
		})
		if err != nil {
			return r.fail(sr, err)
		}
		defer unlock()
		if ok := r.tryHit(ctx, st, sr, key); ok {
			return nil
		}
		// Across machines sharing a remote cache: take the key's lease, or
		// wait for the holder's record (lease.go).
		release, hit, err := r.lease(ctx, st, sr, key)
		if err != nil {
			return r.interrupted(sr, ctx)
		}
		defer release()
		if hit {
			return nil
		}
	}
	sr.Reason = r.reason(ctx, name, st, pre, force)
	return r.executor(st).execute(ctx, r, st, sr, pre, key)
}

func (r *runner) stageRun(name string) *history.StageRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stages[name]
}

func (r *runner) upstream(stage string) (map[string]cache.Output, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	o, ok := r.outputs[stage]
	return o, ok
}

// stageLog is the digest of sr's captured log, zero if none.
func stageLog(sr *history.StageRun) digest.Digest {
	d, _ := digest.Parse(sr.Log)
	return d
}

func (r *runner) fail(sr *history.StageRun, err error) error {
	if !r.opts.KeepGoing {
		r.stopping.Store(true)
	}
	sr.Status = history.Failed
	sr.Error = err.Error()
	r.emit(Event{Type: EvFailed, Stage: sr.Name, Reason: err.Error(), Duration: sr.Duration, Log: stageLog(sr)})
	return err
}

func (r *runner) reason(ctx context.Context, name string, st *pipeline.Stage, pre *cache.Preimage, force bool) string {
	switch {
	case force:
		return "forced"
	case !st.Cache:
		return "cache: false (always runs)"
	}
	if sr := r.stageRun(name); sr.Reason != "" {
		return sr.Reason // set by a failed restore
	}
	last := r.e.lastRecord(ctx, r.heads.Of(name))
	if last == nil {
		if len(r.heads.Of(name)) == 0 {
			return "never run"
		}
		return "last record is no longer in the cache"
	}
	lp, err := last.Pre()
	if err != nil {
		return "last record unreadable"
	}
	rs := cache.Diff(name, lp, pre)
	if len(rs) == 0 {
		return "record missing from the cache"
	}
	return strings.Join(rs, "; ")
}

// tryHit restores the outputs of key's record, if there is one that is
// intact. A corrupt or missing blob makes it a miss, reported.
func (r *runner) tryHit(ctx context.Context, st *pipeline.Stage, sr *history.StageRun, key digest.Digest) bool {
	rec, err := r.e.Cache.Lookup(ctx, key)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) && !store.IsNotFound(err) {
			sr.Reason = fmt.Sprintf("cached record unusable (%v)", err)
			r.emit(Event{Type: EvWarn, Stage: st.Name, Reason: sr.Reason})
		}
		return false
	}
	if !r.restore(ctx, st, sr, rec, false) {
		return false
	}
	sr.Status, sr.Duration, sr.Log, sr.Reason = history.Hit, rec.Duration, rec.Log.String(), ""
	r.emit(Event{Type: EvHit, Stage: st.Name, Key: key, Duration: rec.Duration, Bytes: outputBytes(rec.Outputs), Log: rec.Log})
	return true
}

// restore links the outputs of rec into the workspace and makes them the
// stage's outputs in this run. A missing or corrupt output is reported and
// sets sr.Reason. With localOnly, outputs the local store lacks are not
// fetched from the remote (their stale links go): a Slurm job's outputs
// stay in the shared cache for the jobs that read them.
func (r *runner) restore(ctx context.Context, st *pipeline.Stage, sr *history.StageRun, rec *cache.Record, localOnly bool) bool {
	for _, o := range st.Outputs {
		out, ok := rec.Outputs[o.Name]
		if !ok {
			sr.Reason = fmt.Sprintf("cached record lacks output %s", o.Name)
			return false
		}
		dst := filepath.Join(r.e.OutDir(r.p.Name, st.Name), o.Name)
		if localOnly {
			if _, err := r.e.Local.StatBlob(ctx, out.Digest); err != nil {
				_ = cache.RemoveAll(dst)
				continue
			}
		}
		if r.e.Cache.Linked(out, dst) {
			continue
		}
		if err := r.e.Cache.Restore(ctx, out, dst); err != nil {
			sr.Reason = fmt.Sprintf("cached output %s unusable (%v); re-running", o.Name, err)
			r.emit(Event{Type: EvWarn, Stage: st.Name, Reason: sr.Reason})
			return false
		}
	}
	r.mu.Lock()
	r.outputs[st.Name] = rec.Outputs
	r.mu.Unlock()
	return true
}

func outputBytes(outs map[string]cache.Output) int64 {
	var n int64
	for _, o := range outs {
		n += o.Size
	}
	return n
}

func sortedOutputNames(rec *cache.Record) []string {
	names := make([]string, 0, len(rec.Outputs))
	for n := range rec.Outputs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (o RunOptions) emitWarn(msg string) {
	if o.Events != nil {
		o.Events(Event{Type: EvWarn, Reason: msg})
	}
}

// processAlive reports whether a process with this PID exists.
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
