package engine

// The Slurm executor: a MISS becomes a batch job that runs `orch worker`
// on a compute node. The worker restores the stage's inputs from the
// shared cache, runs it, and writes its outputs and record there; this
// process only submits, watches, and then restores the record like a HIT.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/dag"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/slurm"
)

// EvSlurm reports a Slurm job's state: submitted, or changed.
const EvSlurm = "slurm"

// WorkerSpec is what a Slurm job's `orch worker` needs to run one stage:
// the pipeline as loaded here, the stage, the key it must have, and the
// outputs of its upstream stages (by content, from the cache).
type WorkerSpec struct {
	Pipeline string                             `json:"pipeline"` // the YAML file, absolute
	Root     string                             `json:"root"`     // the workspace, absolute
	Params   map[string]string                  `json:"params,omitempty"`
	Stage    string                             `json:"stage"`
	Key      string                             `json:"key"`
	Upstream map[string]map[string]cache.Output `json:"upstream,omitempty"`
}

// Encode returns the spec as one shell-safe word (base64 of its JSON).
func (s *WorkerSpec) Encode() string {
	b, _ := json.Marshal(s)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeWorkerSpec reads what Encode wrote.
func DecodeWorkerSpec(word string) (*WorkerSpec, error) {
	b, err := base64.RawURLEncoding.DecodeString(word)
	if err != nil {
		return nil, fmt.Errorf("worker spec: %w", err)
	}
	s := &WorkerSpec{}
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("worker spec: %w", err)
	}
	if s.Pipeline == "" || s.Root == "" || s.Stage == "" || s.Key == "" {
		return nil, errors.New("worker spec: pipeline, root, stage and key are required")
	}
	return s, nil
}

// slurmExec submits a run's Slurm stages and watches all their jobs with
// one squeue per poll.
type slurmExec struct {
	r      *runner
	client slurm.Client
	cfg    pipeline.Slurm

	mu        sync.Mutex
	jobs      map[string]*slurmJob // submitted and not yet ended, by ID
	polling   bool
	cancelled bool // the run was interrupted: its jobs were scancelled
}

type slurmJob struct {
	id, stage string
	state     string
	cancelled bool            // scancel was sent
	done      chan slurm.Info // receives the final state, once
	// stuck is when the job was first seen PENDING for a reason that
	// does not resolve on its own (slurm.Stuck); zero otherwise.
	stuck time.Time
}

func newSlurmExec(r *runner) *slurmExec {
	cfg := r.p.Slurm
	if cfg.Poll <= 0 {
		cfg = pipeline.DefaultSlurm
	}
	return &slurmExec{r: r, cfg: cfg, jobs: map[string]*slurmJob{}}
}

func (x *slurmExec) execute(ctx context.Context, r *runner, st *pipeline.Stage, sr *history.StageRun, pre *cache.Preimage, key digest.Digest) error {
	dir := filepath.Join(r.dir, st.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r.fail(sr, err)
	}
	script, err := x.script(st, key)
	if err != nil {
		return r.fail(sr, err)
	}
	if r.stopping.Load() {
		return dag.ErrNotStarted
	}
	// Counted as for a local stage: with --sync the run ends with one
	// syncfs of the cache, which this process writes to too (a failed
	// job's output adopted as the log, a record read from a remote).
	r.executed.Add(1)
	r.emit(Event{Type: EvStart, Stage: st.Name, Key: key, Reason: sr.Reason})
	started := r.e.Now()
	sr.Started = started
	mem := st.Resources.Memory
	resubmits, failures := 0, 0
	for {
		id, err := x.submit(ctx, st, x.options(st, mem, dir), script)
		if err != nil {
			if ctx.Err() != nil {
				return r.interrupted(sr, ctx)
			}
			return r.fail(sr, err)
		}
		sr.Attempts++
		sr.Job, sr.SlurmState = id, slurm.Pending
		r.emit(Event{Type: EvSlurm, Stage: st.Name, Key: key, Job: id, State: slurm.Pending, Reason: "submitted"})
		info := x.wait(ctx, id, st.Name)
		sr.SlurmState = info.State
		sr.Duration = r.e.Now().Sub(started)
		if ctx.Err() != nil {
			return r.interrupted(sr, ctx)
		}
		logPath := filepath.Join(dir, "job-"+id+".log")
		what := fmt.Sprintf("job %s %s", id, describe(info))
		retry := func(why string) {
			r.emit(Event{Type: EvRetry, Stage: st.Name, Attempt: sr.Attempts + 1, Job: id, State: info.State, Reason: why})
		}
		switch info.State {
		case slurm.Completed, "UNKNOWN":
			// A job the controller forgot (squeue down for longer than
			// MinJobAge) may well have run: its record says so.
			rec, err := r.e.Cache.Lookup(ctx, key)
			if err != nil && info.State != slurm.Completed {
				break
			}
			if err != nil {
				return r.fail(sr, fmt.Errorf("%s but its record is not in the cache (%v): does the worker share this cache (--cache-dir or --remote)?%s", what, err, logTail(logPath)))
			}
			// The orchestrating process never downloads what only other
			// jobs read: outputs are linked where the local store has them
			// (a cache directory shared with the nodes), left in the shared
			// cache otherwise; a later run (all HIT) restores them.
			if !r.restore(ctx, st, sr, rec, true) {
				return r.fail(sr, errors.New(sr.Reason))
			}
			sr.Status, sr.Log, sr.Reason = history.Ran, rec.Log.String(), ""
			if rec.Log.IsZero() {
				sr.Log = ""
			}
			r.emit(Event{Type: EvRan, Stage: st.Name, Key: key, Duration: sr.Duration, Bytes: outputBytes(rec.Outputs), Log: rec.Log, Job: id, State: info.State})
			return nil
		case slurm.OutOfMemory:
			if next := x.grow(mem); next > mem && resubmits < x.cfg.Resubmits {
				resubmits++
				retry(fmt.Sprintf("%s with --mem=%s; resubmitting with --mem=%s", what, memArg(mem), memArg(next)))
				mem = next
				continue
			}
		case slurm.NodeFail, slurm.Preempted, slurm.BootFail:
			if resubmits < x.cfg.Resubmits {
				resubmits++
				retry(what + "; not the stage's fault: resubmitting")
				continue
			}
		case slurm.Failed, slurm.Timeout, slurm.Deadline:
			if msg := refusal(info, logPath); msg != "" {
				// Running it again would be refused again: fail now.
				return r.fail(sr, fmt.Errorf("job %s: the worker refused to run the stage: %s", id, msg))
			}
			if failures < st.Retries {
				failures++
				delay := r.e.Backoff << (failures - 1)
				retry(fmt.Sprintf("%s; retrying in %s", what, delay))
				select {
				case <-time.After(delay):
				case <-ctx.Done():
					return r.interrupted(sr, ctx)
				}
				continue
			}
		}
		// Failed for good: the job's output becomes the stage's log.
		if d, _, err := digest.File(logPath); err == nil && r.e.Local.AdoptFile(d, logPath) == nil {
			sr.Log = d.String()
			return r.fail(sr, fmt.Errorf("%s%s", what, tailOf(r.e, d)))
		}
		return r.fail(sr, errors.New(what))
	}
}

// describe says how a job ended: "FAILED (exit 3)", "OUT_OF_MEMORY".
func describe(in slurm.Info) string {
	switch {
	case in.State == slurm.Failed && in.Signal != 0:
		return fmt.Sprintf("%s (signal %d)", in.State, in.Signal)
	case in.State == slurm.Failed:
		return fmt.Sprintf("%s (exit %d)", in.State, in.Exit)
	case in.Reason != "" && in.Reason != "None" && in.State != slurm.Completed:
		return fmt.Sprintf("%s (%s)", in.State, in.Reason)
	}
	return in.State
}

// grow is the memory to ask after OUT_OF_MEMORY: mem × memory_factor, at
// most max_memory; mem itself when it cannot grow.
func (x *slurmExec) grow(mem int64) int64 {
	if mem <= 0 || x.cfg.MemoryFactor <= 1 {
		return mem
	}
	f := float64(mem) * x.cfg.MemoryFactor // in float: no overflow
	if x.cfg.MaxMemory > 0 {
		f = min(f, float64(max(x.cfg.MaxMemory, mem)))
	}
	if f >= math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(f)
}

// memArg is a size as sbatch --mem reads it: whole megabytes, rounded up.
func memArg(b int64) string { return fmt.Sprintf("%dM", (b+1<<20-1)>>20) }

// options are the sbatch options for st.
func (x *slurmExec) options(st *pipeline.Stage, mem int64, dir string) []string {
	res := st.Resources
	opts := []string{
		"--job-name=orch." + x.r.p.Name + "." + st.Name,
		"--output=" + strings.ReplaceAll(dir, "%", "%%") + "/job-%j.log", // sbatch expands %
		"--chdir=" + x.r.p.Root,
		"--no-requeue", // orch resubmits, knowing why
	}
	if res.CPUs > 0 {
		opts = append(opts, fmt.Sprintf("--cpus-per-task=%d", res.CPUs))
	}
	if mem > 0 {
		opts = append(opts, "--mem="+memArg(mem))
	}
	if res.GPUs > 0 {
		opts = append(opts, fmt.Sprintf("--gres=gpu:%d", res.GPUs))
	}
	limit := res.Time
	if limit == 0 && st.Timeout > 0 {
		limit = st.Timeout + time.Minute // the worker enforces the stage's timeout; Slurm is the backstop
	}
	if limit > 0 {
		opts = append(opts, fmt.Sprintf("--time=%d", int((limit+time.Minute-1)/time.Minute)))
	}
	if res.Partition != "" {
		opts = append(opts, "--partition="+res.Partition)
	}
	return append(opts, res.Sbatch...)
}

// script is the batch script: exec the worker with the stage's spec.
func (x *slurmExec) script(st *pipeline.Stage, key digest.Digest) (string, error) {
	r := x.r
	spec := &WorkerSpec{Pipeline: r.p.File, Root: r.p.Root, Stage: st.Name, Key: key.String(), Params: map[string]string{}}
	for k, v := range r.p.Overrides {
		spec.Params[k] = v
	}
	for _, in := range st.Inputs {
		if in.IsRef() {
			outs, _ := r.upstream(in.Stage)
			if spec.Upstream == nil {
				spec.Upstream = map[string]map[string]cache.Output{}
			}
			spec.Upstream[in.Stage] = outs
		}
	}
	bin := r.e.Worker.Bin
	if x.cfg.Worker != "" {
		bin = x.cfg.Worker
	}
	if v := os.Getenv("ORCH_SLURM_WORKER"); v != "" {
		bin = v
	}
	if bin == "" {
		return "", errors.New("slurm: no orch binary for the worker (set slurm.worker or ORCH_SLURM_WORKER)")
	}
	cacheDir := r.e.Worker.CacheDir
	if cacheDir == "" {
		cacheDir = r.e.Local.Root()
	}
	args := append([]string{bin, "--workspace", r.p.Root, "--cache-dir", cacheDir}, r.e.Worker.Args...)
	args = append(args, "worker", spec.Encode())
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	return fmt.Sprintf("#!/bin/sh\n# orch: pipeline %s, stage %s, key %s\nexec %s\n", r.p.Name, st.Name, key.Short(), strings.Join(args, " ")), nil
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// submit runs sbatch, retrying with backoff while the controller is busy.
func (x *slurmExec) submit(ctx context.Context, st *pipeline.Stage, opts []string, script string) (string, error) {
	for n := 1; ; n++ {
		x.mu.Lock()
		cancelled := x.cancelled
		x.mu.Unlock()
		if cancelled {
			return "", context.Cause(ctx)
		}
		// Not killed by Ctrl-C: a killed sbatch may leave a job the
		// controller accepted, which nothing would scancel. wait cancels it.
		sctx, scancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		id, err := x.client.Submit(sctx, opts, script)
		scancel()
		if err == nil || !errors.Is(err, slurm.ErrBusy) || n > 8 {
			if err != nil {
				return "", fmt.Errorf("submit: %w", err)
			}
			return id, nil
		}
		delay := slurm.Backoff(n)
		x.r.emit(Event{Type: EvWarn, Stage: st.Name, Reason: fmt.Sprintf("%v; submitting again in %s", err, delay)})
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return "", context.Cause(ctx)
		}
	}
}

// wait returns the final state of job id. If ctx ends first, every job of
// the run is cancelled (one scancel) and wait returns once this one ended
// (or after a bound).
func (x *slurmExec) wait(ctx context.Context, id, stage string) slurm.Info {
	j := &slurmJob{id: id, stage: stage, state: slurm.Pending, done: make(chan slurm.Info, 1)}
	x.mu.Lock()
	x.jobs[id] = j
	if !x.polling {
		x.polling = true
		go x.poll()
	}
	x.mu.Unlock()
	select {
	case in := <-j.done:
		return in
	case <-ctx.Done():
	}
	x.cancelAll()
	select {
	case in := <-j.done:
		return in
	case <-time.After(time.Minute):
		return slurm.Info{ID: id, State: slurm.Cancelled, Reason: "no final state within a minute of scancel"}
	}
}

// cancelAll scancels every job of the run not cancelled yet, in one
// scancel, and stops further submissions. A job whose sbatch was in flight
// meanwhile is cancelled by its own wait.
func (x *slurmExec) cancelAll() {
	x.mu.Lock()
	x.cancelled = true
	var ids []string
	for id, j := range x.jobs {
		if !j.cancelled {
			j.cancelled = true
			ids = append(ids, id)
		}
	}
	x.mu.Unlock()
	if len(ids) == 0 {
		return
	}
	x.scancel(ids)
}

// scancel cancels jobs with one scancel, again while the controller is
// busy; a failure is a warning.
func (x *slurmExec) scancel(ids []string) {
	sort.Strings(ids)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	for n := 1; n <= 5; n++ {
		if err = x.client.Cancel(ctx, ids); err == nil || !errors.Is(err, slurm.ErrBusy) {
			break
		}
		time.Sleep(slurm.Backoff(n))
	}
	if err != nil {
		x.r.emit(Event{Type: EvWarn, Reason: fmt.Sprintf("scancel %s: %v", strings.Join(ids, " "), err)})
	}
}

// poll watches the run's jobs, one squeue --json per interval, until none
// is left; a job squeue no longer lists gets one scontrol show job.
func (x *slurmExec) poll() {
	failing := false
	for {
		time.Sleep(x.cfg.Poll)
		x.mu.Lock()
		if len(x.jobs) == 0 {
			x.polling = false
			x.mu.Unlock()
			return
		}
		x.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		queue, err := x.client.Queue(ctx)
		cancel()
		if err != nil {
			if !failing {
				x.r.emit(Event{Type: EvWarn, Reason: fmt.Sprintf("%v; polling again", err)})
			}
			failing = true
			continue
		}
		failing = false
		x.mu.Lock()
		jobs := make([]*slurmJob, 0, len(x.jobs))
		for _, j := range x.jobs {
			jobs = append(jobs, j)
		}
		x.mu.Unlock()
		for _, j := range jobs {
			in, listed := queue[j.id]
			if !listed {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				shown, known, err := x.client.Show(ctx, j.id)
				cancel()
				switch {
				case err != nil:
					continue
				case !known:
					in = slurm.Info{ID: j.id, State: "UNKNOWN", Reason: "the controller no longer knows the job"}
				default:
					in = shown
				}
			}
			if !slurm.Terminal(in.State) && in.State != "UNKNOWN" {
				if in.State != j.state {
					j.state = in.State
					x.r.emit(Event{Type: EvSlurm, Stage: j.stage, Job: j.id, State: in.State, Reason: in.Reason})
				}
				if !x.stuck(j, in) {
					continue
				}
				in = slurm.Info{ID: j.id, State: slurm.Cancelled, Reason: fmt.Sprintf("pending for more than slurm.pending_timeout %s with Reason=%s, which does not resolve on its own; orch cancelled it", x.cfg.PendingTimeout, in.Reason)}
			}
			x.mu.Lock()
			delete(x.jobs, j.id)
			x.mu.Unlock()
			j.done <- in
		}
	}
}

// refusal is the worker's message when job info ended because the worker
// refused to run the stage (RefusedError): its exit status and the last
// line of its output say so. "" otherwise.
func refusal(info slurm.Info, logPath string) string {
	if info.State != slurm.Failed || info.Exit != RefusedExit || info.Signal != 0 {
		return ""
	}
	f, err := os.Open(logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 8<<10) // the end of the output: the stage's may be long
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	n, _ := f.ReadAt(b, max(fi.Size()-int64(len(b)), 0))
	lines := strings.Split(strings.TrimRight(string(b[:n]), "\n"), "\n")
	msg, ok := strings.CutPrefix(lines[len(lines)-1], RefusedMark)
	if !ok {
		return ""
	}
	return msg
}

// stuck reports whether job j, not ended, has been PENDING for a reason
// that does not resolve on its own for longer than slurm.pending_timeout;
// then it has scancelled it.
func (x *slurmExec) stuck(j *slurmJob, in slurm.Info) bool {
	if in.State != slurm.Pending || !slurm.Stuck(in.Reason) || x.cfg.PendingTimeout <= 0 {
		j.stuck = time.Time{}
		return false
	}
	if j.stuck.IsZero() {
		j.stuck = time.Now()
		x.r.emit(Event{Type: EvWarn, Stage: j.stage, Job: j.id, Reason: fmt.Sprintf("job %s is PENDING with Reason=%s, which does not resolve on its own; cancelling it in %s (slurm.pending_timeout) unless it starts", j.id, in.Reason, x.cfg.PendingTimeout)})
		return false
	}
	if time.Since(j.stuck) < x.cfg.PendingTimeout {
		return false
	}
	x.mu.Lock()
	j.cancelled = true
	x.mu.Unlock()
	x.scancel([]string{j.id})
	return true
}

// logTail is the end of a job's output file, for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	return "\n" + tail(b, 15)
}

// tailOf is the end of a blob (a captured log), for an error message.
func tailOf(e *Engine, d digest.Digest) string {
	return logTail(e.Local.BlobPath(d))
}
