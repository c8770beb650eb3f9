package engine

// The local executor: a MISS runs in this process's machine, in an attempt
// directory under .orch/tmp, with its inputs materialized from the cache
// and its outputs collected into it. The same code runs a Slurm job's
// stage on the compute node (`orch worker`, runner.worker set).

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/dag"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/fsx"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
	"github.com/orch-dev/orch/pkg/stages/table"
	"github.com/orch-dev/orch/pkg/store"
)

// execute runs a MISS with retries, then stores its outputs and record.
func (r *runner) execute(ctx context.Context, st *pipeline.Stage, sr *history.StageRun, pre *cache.Preimage, key digest.Digest) error {
	ad, err := r.takeDir()
	if err != nil {
		return r.fail(sr, err)
	}
	dir := ad.path
	inputs, recomputed, err := r.materialize(ctx, st, ad)
	if err != nil {
		if ctx.Err() != nil {
			return r.interrupted(sr, ctx)
		}
		return r.fail(sr, fmt.Errorf("materialize inputs: %w", err))
	}
	if recomputed {
		// An upstream was re-run because its cached output was corrupt. If
		// it wrote other bytes this time, this stage has another key now.
		if now, _, err := r.e.Preimage(r.p, st, r.upstream); err == nil && now.Key() != key {
			return r.stage(ctx, st.Name)
		}
	}

	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return r.interrupted(sr, ctx)
	}
	free, err := r.limits.acquire(ctx, st.Resources)
	if err != nil {
		<-r.slots
		return r.interrupted(sr, ctx)
	}
	// The slot is held while the command runs, not while its outputs are
	// collected and its directory removed: that file-system work would
	// otherwise keep the next command waiting.
	holding := true
	release := func() {
		if holding {
			holding = false
			free()
			<-r.slots
		}
	}
	defer release()
	if r.stopping.Load() {
		return dag.ErrNotStarted
	}
	logPath := filepath.Join(dir, "log")
	// A reused directory may hold the empty log of the stage before (putDir
	// made sure it is a plain file of one link): it is truncated and
	// written again, not unlinked and created.
	logf, err := fsx.Open(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return r.fail(sr, err)
	}
	defer logf.Close()

	r.executed.Add(1)
	r.emit(Event{Type: EvStart, Stage: st.Name, Key: key, Reason: sr.Reason})
	started := r.e.Now()
	sr.Started = started
	var outDir string
	var runErr error
	var th *table.Handoff // the attempt's tables in memory (handoff.go)
	defer func() { th.Release() }()
	for attempt := 0; attempt <= st.Retries; attempt++ {
		sr.Attempts = attempt + 1
		if attempt > 0 {
			delay := r.e.Backoff << (attempt - 1)
			r.emit(Event{Type: EvRetry, Stage: st.Name, Attempt: attempt + 1, Reason: fmt.Sprintf("%v; retrying in %s", runErr, delay)})
			fmt.Fprintf(logf, "orch: attempt %d failed: %v; retrying in %s\n", attempt, runErr, delay)
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return r.interrupted(sr, ctx)
			}
		}
		n := strconv.Itoa(attempt + 1)
		outDir = filepath.Join(dir, "out"+n)
		th.Release()
		th = r.handoff.task(st, r.upstream, inputs, outDir)
		runErr = r.attempt(ctx, st, inputs, th, outDir, filepath.Join(dir, "scratch"+n), logf)
		if runErr == nil {
			break
		}
		if ctx.Err() != nil {
			return r.interrupted(sr, ctx)
		}
	}
	sr.Duration = r.e.Now().Sub(started)
	if runErr != nil && !r.opts.KeepGoing {
		// Before the slot goes: a stage waiting for it must see the stop.
		r.stopping.Store(true)
	}
	release()
	logInfo, logErr := logf.Stat()
	logf.Close()
	if runErr != nil && logErr == nil && logInfo.Size() > 0 {
		if b := readTail(logPath, 64<<10); len(b) > 0 {
			runErr = fmt.Errorf("%w\n%s", runErr, tail(b, 15))
		}
	}
	emptyLog := logErr == nil && logInfo.Size() == 0
	switch {
	case emptyLog:
		// Most commands print nothing: all their logs are one blob,
		// stored once per run, and the file is not hashed.
		if d, err := r.emptyLog(ctx); err == nil {
			sr.Log = d.String()
		}
	default:
		// The log becomes a blob by rename, not by a second copy.
		if logDigest, _, err := digest.File(logPath); err == nil && r.e.Local.AdoptFile(logDigest, logPath) == nil {
			sr.Log = logDigest.String()
		}
	}
	if runErr != nil {
		return r.fail(sr, runErr)
	}

	// Collect outputs: blobs first.
	outs := map[string]cache.Output{}
	var blobs []digest.Digest
	for _, o := range st.Outputs {
		src := filepath.Join(outDir, filepath.FromSlash(o.Path))
		out, bs, err := r.e.Cache.Collect(ctx, src)
		if errors.Is(err, fs.ErrNotExist) {
			if _, lerr := os.Lstat(src); lerr != nil {
				return r.fail(sr, fmt.Errorf("output %q was not written at {{outputs.%s}} (%s)", o.Name, o.Name, src))
			}
		}
		if err != nil {
			return r.fail(sr, fmt.Errorf("output %q: %w", o.Name, err))
		}
		outs[o.Name], blobs = out, append(blobs, bs...)
	}
	// Inputs must not have changed while the stage ran.
	after, _, err := r.e.Preimage(r.p, st, r.upstream)
	if err != nil {
		return r.fail(sr, fmt.Errorf("re-check inputs: %w", err))
	}
	cacheable := st.Cache || r.worker // a worker's record is how its outputs travel
	if after.Key() != key && r.worker {
		return r.fail(sr, fmt.Errorf("inputs changed while the stage ran (%s)", strings.Join(cache.Diff(st.Name, pre, after), "; ")))
	}
	if after.Key() != key {
		cacheable = false
		msg := "inputs changed while the stage ran (" + strings.Join(cache.Diff(st.Name, pre, after), "; ") + "); its result is used but not cached"
		sr.Error = msg
		r.emit(Event{Type: EvWarn, Stage: st.Name, Reason: msg})
	}
	var logD digest.Digest
	if sr.Log != "" {
		logD, _ = digest.Parse(sr.Log)
		blobs = append(blobs, logD)
	}
	if cacheable {
		rec := &cache.Record{
			Key: key, Pipeline: r.p.Name, Stage: st.Name, Preimage: *pre, Outputs: outs,
			Log: logD, Started: started, Duration: sr.Duration,
		}
		if err := r.e.Cache.Save(ctx, rec, blobs); err != nil {
			return r.fail(sr, fmt.Errorf("save record: %w", err))
		}
	} else {
		sr.Key = "" // no record to point at
	}
	for name, out := range outs {
		if r.worker {
			break // the orchestrator links the outputs into its workspace
		}
		if err := r.e.Cache.Restore(ctx, out, filepath.Join(r.e.OutDir(r.p.Name, st.Name), name)); err != nil {
			return r.fail(sr, fmt.Errorf("link output %q: %w", name, err))
		}
	}
	r.handoff.collect(ctx, st, th, outs, outDir, r.e.OutDir(r.p.Name, st.Name), func(msg string) { r.emit(Event{Type: EvWarn, Stage: st.Name, Reason: msg}) })
	r.mu.Lock()
	r.outputs[st.Name] = outs
	r.mu.Unlock()
	// Emptied now, overlapping other stages, and reused by the next one. A
	// failed stage's directory stays as it is until the run ends.
	r.putDir(ad, sr.Attempts, emptyLog)
	sr.Status = history.Ran
	r.emit(Event{Type: EvRan, Stage: st.Name, Key: key, Duration: sr.Duration, Bytes: outputBytes(outs), Log: logD})
	return nil
}

func (r *runner) interrupted(sr *history.StageRun, ctx context.Context) error {
	sr.Status = history.Cancelled
	sr.Error = "interrupted"
	return context.Cause(ctx)
}

// materialize makes each input available at an absolute path: workspace
// inputs in place, upstream outputs in dir/in/ as read-only copies
// (reflinks where possible), so a command cannot write into the cache; for
// orch's built-in kinds, which never write their inputs, as links to the
// blobs. An
// upstream output whose cached blob turns out corrupt or missing is
// recomputed by re-running that upstream stage; recomputed reports it.
func (r *runner) materialize(ctx context.Context, st *pipeline.Stage, ad *attemptDir) (paths map[string]string, recomputed bool, err error) {
	paths = map[string]string{}
	ad.wanted, ad.inFiles, ad.inLinks, ad.inDirs = ad.wanted[:0], ad.inFiles[:0], ad.inLinks[:0], ad.inDirs[:0]
	for _, in := range st.Inputs {
		if in.IsRef() {
			ad.wanted = append(ad.wanted, in.Name)
		}
	}
	for _, in := range st.Inputs {
		if !in.IsRef() {
			paths[in.Name] = r.e.inputPath(r.p, in)
			continue
		}
		dst := filepath.Join(ad.path, "in", in.Name)
		for try := 0; ; try++ {
			outs, _ := r.upstream(in.Stage)
			var err error
			if out := outs[in.Output]; builtinLocal(st) && !out.Dir {
				// orch's own kinds never write their inputs: a link to
				// the blob, not a copy of its bytes (335 MB for the
				// churn pipeline at 3M rows, all of it written back to
				// disk for nothing).
				if reuse := ad.reuse(dst); reuse != "" {
					_ = os.Remove(reuse)
				}
				err = r.e.Cache.Restore(ctx, out, dst)
			} else {
				err = r.e.Cache.CopyOver(ctx, out, dst, ad.reuse(dst))
			}
			if err == nil {
				break
			}
			_ = cache.RemoveAll(dst)
			if try > 0 || r.worker || !(errors.Is(err, store.ErrCorrupt) || errors.Is(err, store.ErrNotFound)) {
				return nil, recomputed, fmt.Errorf("input %q (%s): %w", in.Name, in.Source, err)
			}
			r.emit(Event{Type: EvWarn, Stage: in.Stage, Reason: fmt.Sprintf("cached output %s unusable (%v); re-running %s", in.Output, err, in.Stage)})
			if err := r.recompute(ctx, in.Stage); err != nil {
				return nil, recomputed, fmt.Errorf("input %q: re-running %s: %w", in.Name, in.Stage, err)
			}
			recomputed = true
		}
		paths[in.Name] = dst
		outs, _ := r.upstream(in.Stage)
		switch {
		case outs[in.Output].Dir:
			ad.inDirs = append(ad.inDirs, in.Name)
		case builtinLocal(st):
			ad.inLinks = append(ad.inLinks, in.Name)
		default:
			ad.inFiles = append(ad.inFiles, in.Name)
		}
	}
	// Files the stage before left that this one does not use go.
	for _, f := range ad.spare {
		_ = os.Remove(filepath.Join(ad.path, "in", f))
	}
	ad.spare = ad.spare[:0]
	return paths, recomputed, nil
}

type recomputation struct {
	once sync.Once
	err  error
}

// recompute re-executes stage up, a HIT whose cached output proved corrupt,
// once per run however many stages below it ask.
func (r *runner) recompute(ctx context.Context, up string) error {
	r.recomputeMu.Lock()
	rc, ok := r.recomputed[up]
	if !ok {
		rc = &recomputation{}
		r.recomputed[up] = rc
	}
	r.recomputeMu.Unlock()
	rc.once.Do(func() {
		st := r.p.Stages[up]
		sr := r.stageRun(up)
		pre, _, err := r.e.Preimage(r.p, st, r.upstream)
		if err != nil {
			rc.err = err
			return
		}
		key := pre.Key()
		unlock, err := r.e.Local.Lock(ctx, key, nil)
		if err != nil {
			rc.err = err
			return
		}
		defer unlock()
		sr.Reason = "cached output corrupt"
		rc.err = r.execute(ctx, st, sr, pre, key)
	})
	return rc.err
}

// attemptDir is a directory where stages run: in/ (inputs), outN/ and
// scratchN/ (attempt N's outputs and scratch space), log. Directories are
// reused from stage to stage because making and removing one costs a
// quarter of a millisecond each on an ext4 mounted with discard; the
// regular files an earlier stage's inputs left in in/ are reused too
// (Cache.CopyOver), because a run that unlinks thousands of files makes
// every later file creation slower on this VM's ext4.
type attemptDir struct {
	path string
	// spare are the names of regular files in in/, left by the last stage
	// that used the directory, for the next stage's inputs.
	spare []string
	// wanted are the input names of the stage being set up: a spare file
	// of one of these names is kept for it.
	wanted []string
	// inFiles, inLinks and inDirs are what materialize put into in/ for
	// the stage using the directory: copies of its file inputs, links to
	// the blobs of a built-in kind's file inputs, its directory inputs.
	inFiles, inLinks, inDirs []string
}

// reuse returns a file of in/ for the input at dst to be written into: dst
// itself if it is spare, else any spare file, else "" (a new file).
func (ad *attemptDir) reuse(dst string) string {
	name := filepath.Base(dst)
	for i, f := range ad.spare {
		if f == name {
			ad.spare = append(ad.spare[:i], ad.spare[i+1:]...)
			return dst
		}
	}
	for i, f := range ad.spare {
		if !slices.Contains(ad.wanted, f) {
			ad.spare = append(ad.spare[:i], ad.spare[i+1:]...)
			return filepath.Join(filepath.Dir(dst), f)
		}
	}
	return ""
}

// takeDir returns an empty attempt directory: one a finished stage left
// (emptied by putDir), or a new one.
func (r *runner) takeDir() (*attemptDir, error) {
	r.dirsMu.Lock()
	if n := len(r.freeDirs); n > 0 {
		d := r.freeDirs[n-1]
		r.freeDirs = r.freeDirs[:n-1]
		r.dirsMu.Unlock()
		return d, nil
	}
	r.nDirs++
	d := &attemptDir{path: filepath.Join(r.dir, fmt.Sprintf("w%d", r.nDirs))}
	r.dirsMu.Unlock()
	return d, os.Mkdir(d.path, 0o755)
}

// putDir empties ad for the next stage, after a stage that made attempts
// attempts: the entries of its outN/ and scratchN/ directories go, the
// directories stay; the input files materialize put into in/ stay as spares
// for the next stage's inputs, its input directories and links go; an empty log stays
// (keepLog). in/ is not listed: a command that removed or replaced an input
// file there costs the next stage a fresh copy (CopyOver), and anything a
// command added there, or beside its own directories, is left for the end
// of the run. A directory that cannot be emptied is not reused (the run
// removes it).
func (r *runner) putDir(ad *attemptDir, attempts int, keepLog bool) {
	// A command may have replaced in/ by a symlink (and its outN/ and
	// scratchN/, which fsx.Names refuses to follow): removing or copying
	// through it would reach outside. Such a directory is not reused; the
	// end of the run removes it without following links.
	if !realDir(filepath.Join(ad.path, "in")) {
		return
	}
	for _, d := range ad.inDirs {
		if cache.RemoveAll(filepath.Join(ad.path, "in", d)) != nil {
			return
		}
	}
	// A link to a blob (a built-in kind's input): only the name goes, so a
	// later copy over it can never touch the blob.
	for _, l := range ad.inLinks {
		if err := os.Remove(filepath.Join(ad.path, "in", l)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return
		}
	}
	ad.spare = append(ad.spare[:0], ad.inFiles...)
	for i := 1; i <= attempts; i++ {
		n := strconv.Itoa(i)
		for _, sub := range [...]string{"out", "scratch"} {
			if err := emptyDir(filepath.Join(ad.path, sub+n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return
			}
		}
	}
	// The log is kept only as the empty plain file orch made: one a
	// command replaced by a link to another file would have the next
	// stage's log truncate that file.
	if logf := filepath.Join(ad.path, "log"); !keepLog || !plainFile(logf) {
		if err := os.Remove(logf); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return
		}
	}
	r.dirsMu.Lock()
	r.freeDirs = append(r.freeDirs, ad)
	r.dirsMu.Unlock()
}

// realDir reports whether path is a directory itself, not a symlink to
// one; a path that does not exist counts (nothing to follow).
func realDir(path string) bool {
	var st syscall.Stat_t
	err := syscall.Lstat(path, &st)
	return errors.Is(err, syscall.ENOENT) || err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR
}

// plainFile reports whether path is an empty regular file of one link.
func plainFile(path string) bool {
	var st syscall.Stat_t
	return syscall.Lstat(path, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG && st.Nlink == 1 && st.Size == 0
}

// emptyDir removes what dir holds, keeping dir; it does not follow a
// symlink at dir (an error: the directory is not reused).
func emptyDir(dir string) error {
	names, err := fsx.Names(dir)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := cache.RemoveAll(filepath.Join(dir, n)); err != nil {
			return err
		}
	}
	return nil
}

// attempt runs one attempt with fresh, empty output and scratch directories
// (siblings, not nested: every mkdir counts at 1000 stages).
func (r *runner) attempt(ctx context.Context, st *pipeline.Stage, inputs map[string]string, th *table.Handoff, outRoot, scratch string, logf *os.File) error {
	for _, d := range []string{outRoot, scratch} {
		// A reused attempt directory has them already, emptied (putDir).
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	t := &stages.Task{
		Pipeline: r.p.Name, Stage: st.Name, Dir: r.p.Root, Command: st.Run, Params: st.Params,
		Inputs: inputs, Outputs: map[string]string{}, Scratch: scratch, Log: logf,
	}
	env := os.Environ()
	env = append(env, "ORCH_PIPELINE="+r.p.Name, "ORCH_STAGE="+st.Name, "ORCH_SCRATCH="+scratch, "ORCH_WORKSPACE="+r.p.Root)
	for _, o := range st.Outputs {
		p := filepath.Join(outRoot, filepath.FromSlash(o.Path))
		if strings.Contains(o.Path, "/") {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
		}
		t.Outputs[o.Name] = p
		env = append(env, "ORCH_OUTPUT_"+stages.EnvName(o.Name)+"="+p)
	}
	for name, p := range inputs {
		env = append(env, "ORCH_INPUT_"+stages.EnvName(name)+"="+p)
	}
	for name, v := range st.Params {
		env = append(env, "ORCH_PARAM_"+stages.EnvName(name)+"="+v.Text)
	}
	t.Env = env
	actx := ctx
	if th != nil {
		actx = table.WithHandoff(actx, th)
	}
	if st.Timeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeoutCause(ctx, st.Timeout, fmt.Errorf("timed out after %s", st.Timeout))
		defer cancel()
	}
	// The stage's name labels its samples in a CPU profile
	// (ORCH_CPUPROFILE; go tool pprof -tagfocus stage=NAME), in every
	// goroutine it starts.
	var err error
	pprof.Do(actx, pprof.Labels("stage", st.Name), func(actx context.Context) { err = st.Kind.Run(actx, t) })
	if err == nil && actx.Err() != nil {
		err = context.Cause(actx)
	}
	return err
}

// readTail returns at most the last limit bytes of the file at path: a failed
// stage's error shows the end of its log, however large the log is.
func readTail(path string, limit int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil
	}
	off := max(fi.Size()-limit, 0)
	b := make([]byte, fi.Size()-off)
	n, _ := f.ReadAt(b, off)
	b = b[:n]
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:] // from a line's start
		}
	}
	return b
}

func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  | " + strings.Join(lines, "\n  | ")
}
