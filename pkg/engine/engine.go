// Package engine plans and runs pipelines against the cache.
//
// Words:
//   - Plan: for every selected stage, HIT (a record exists for its key),
//     MISS (it must run; with the reasons), or WAIT (its key depends on the
//     output of a MISS upstream and is known only after that runs).
//   - Run: the walk that restores HITs and executes MISSes, in parallel,
//     writing blobs first and the record last.
//   - State directory: WORKSPACE/.orch: cache/ (the local store, unless
//     another is configured), out/ (links to every stage's latest outputs),
//     tmp/ (attempt directories), memo (file digests), history.db (runs).
package engine

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/fsx"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
	"github.com/orch-dev/orch/pkg/store"
)

// Options configure an Engine.
type Options struct {
	// Root is the workspace root (absolute).
	Root string
	// CacheDir is the local store directory; "" means ROOT/.orch/cache.
	CacheDir string
	// Store, if set, is the store to use in front of which Local sits
	// (a tiered store); nil means the local store alone.
	Store func(local *store.Local) (store.Store, error)
	// StateDir replaces ROOT/.orch (`orch worker` keeps its own).
	StateDir string
	// Worker is how a Slurm job runs `orch worker` (slurm.go).
	Worker Worker
}

// Worker is how the Slurm executor's jobs run orch on a compute node.
type Worker struct {
	// Bin is the orch binary on the nodes.
	Bin string
	// CacheDir is the worker's --cache-dir ("": this engine's local
	// store, for a workspace on a shared file system).
	CacheDir string
	// Args are more global flags for the worker (--remote, --kill-grace).
	Args []string
}

// Engine plans and runs pipelines in one workspace.
type Engine struct {
	Root     string
	StateDir string
	Local    *store.Local
	Cache    *cache.Cache
	Memo     *cache.Memo
	History  *history.DB

	// Now is the clock; tests replace it.
	Now func() time.Time
	// LookupEnv reads the environment; tests replace it.
	LookupEnv func(string) (string, bool)
	// Backoff is the delay before the first retry; it doubles per retry.
	Backoff time.Duration
	// Lease configures leases on a shared remote cache (lease.go).
	Lease   LeaseOptions
	leaseID leaseIdentity
	// Worker configures the Slurm executor's jobs.
	Worker Worker
}

// Open prepares the state directory of the workspace at opts.Root.
func Open(opts Options) (*Engine, error) {
	state := filepath.Join(opts.Root, ".orch")
	if opts.StateDir != "" {
		state = opts.StateDir
	}
	if err := fsx.MkdirTop(state, 0o755); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	dir := opts.CacheDir
	if dir == "" {
		dir = filepath.Join(state, "cache")
	}
	local, err := store.OpenLocal(dir)
	if err != nil {
		return nil, err
	}
	var s store.Store = local
	if opts.Store != nil {
		if s, err = opts.Store(local); err != nil {
			return nil, err
		}
	}
	memo := cache.LoadMemo(filepath.Join(state, "memo"))
	return &Engine{
		Root:      opts.Root,
		StateDir:  state,
		Local:     local,
		Cache:     cache.New(s, local, memo),
		Memo:      memo,
		History:   history.Open(filepath.Join(state, "history.db")),
		Now:       time.Now,
		LookupEnv: os.LookupEnv,
		Backoff:   500 * time.Millisecond,
		Worker:    opts.Worker,
	}, nil
}

// Close saves the memo.
func (e *Engine) Close() error { return e.Memo.Save() }

// OutDir is where the latest outputs of a pipeline's stage are linked.
func (e *Engine) OutDir(p, stage string) string {
	return filepath.Join(e.StateDir, "out", p, stage)
}

// Preimage computes the pre-image of st. upstream gives the outputs of
// upstream stages that are known; inputs from stages not in it are listed in
// waiting, and the pre-image is then partial (not a valid key).
func (e *Engine) Preimage(p *pipeline.Pipeline, st *pipeline.Stage, upstream func(stage string) (map[string]cache.Output, bool)) (pre *cache.Preimage, waiting []string, err error) {
	pre = &cache.Preimage{
		Version:     cache.KeyVersion,
		Kind:        st.KindName,
		KindVersion: st.Kind.Version(),
		Command:     st.Run,
	}
	if len(st.Code) > 0 {
		pre.Code = map[string]digest.Digest{}
		for _, pat := range st.Code {
			matches, err := filepath.Glob(filepath.Join(p.Root, filepath.FromSlash(pat)))
			if err != nil {
				return nil, nil, fmt.Errorf("code %q: %w", pat, err)
			}
			if len(matches) == 0 && !strings.ContainsAny(pat, "*?[") {
				return nil, nil, fmt.Errorf("code %q: no such file in the workspace", pat)
			}
			for _, m := range matches {
				d, _, err := e.Memo.Path(m)
				if err != nil {
					return nil, nil, fmt.Errorf("code %q: %w", pat, err)
				}
				rel, _ := filepath.Rel(p.Root, m)
				pre.Code[filepath.ToSlash(rel)] = d
			}
		}
	}
	if len(st.Params) > 0 {
		pre.Params = make(map[string]string, len(st.Params))
		for k, v := range st.Params {
			pre.Params[k] = v.Text
		}
	}
	if len(st.Env) > 0 {
		pre.Env = make(map[string]string, len(st.Env))
		for _, name := range st.Env {
			v, ok := e.LookupEnv(name)
			pre.Env[name] = cache.EnvValue(v, ok)
		}
	}
	if len(st.Inputs) > 0 {
		pre.Inputs = make(map[string]cache.Input, len(st.Inputs))
	}
	for _, in := range st.Inputs {
		if in.IsRef() {
			outs, ok := upstream(in.Stage)
			if !ok {
				waiting = append(waiting, in.Stage)
				continue
			}
			o, ok := outs[in.Output]
			if !ok {
				return nil, nil, fmt.Errorf("input %q: stage %q recorded no output %q", in.Name, in.Stage, in.Output)
			}
			pre.Inputs[in.Name] = cache.Input{Source: in.Source, Digest: o.Digest}
			continue
		}
		d, _, err := e.Memo.Path(e.inputPath(p, in))
		if err != nil {
			return nil, nil, fmt.Errorf("input %q: %w", in.Name, err)
		}
		pre.Inputs[in.Name] = cache.Input{Source: in.Source, Digest: d}
	}
	for _, o := range st.Outputs {
		pre.Outputs = append(pre.Outputs, o.Name+"="+o.Path)
	}
	if v, ok := st.Kind.(stages.Volatile); ok && len(waiting) == 0 {
		ins := make(map[string]digest.Digest, len(pre.Inputs))
		for name, in := range pre.Inputs {
			ins[name] = in.Digest
		}
		state, err := v.State(stages.StateQuery{Root: p.Root, Pipeline: p.Name, Params: st.Params, Inputs: ins})
		if err != nil {
			return nil, nil, err
		}
		pre.State = state
	}
	sort.Strings(waiting)
	return pre, dedupe(waiting), nil
}

func (e *Engine) inputPath(p *pipeline.Pipeline, in pipeline.Input) string {
	if filepath.IsAbs(in.Path) {
		return in.Path
	}
	return filepath.Join(p.Root, in.Path)
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, x := range s {
		if i == 0 || s[i-1] != x {
			out = append(out, x)
		}
	}
	return out
}

// Jobs returns the default concurrency: the number of CPUs.
func Jobs() int { return runtime.NumCPU() }

// cleanStale removes attempt directories of runs whose process died: a run
// holds an flock on tmp/ID.lock, taken before tmp/ID/ exists and released
// after it is gone.
func (e *Engine) cleanStale() (reaped int) {
	tmp := filepath.Join(e.StateDir, "tmp")
	ents, err := os.ReadDir(tmp)
	if err != nil {
		return 0
	}
	for _, ent := range ents {
		if !ent.IsDir() {
			continue
		}
		dir := filepath.Join(tmp, ent.Name())
		f, err := os.Open(dir + ".lock")
		if errors.Is(err, os.ErrNotExist) {
			_ = cache.RemoveAll(dir)
			continue
		} else if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			reaped += reapOrphans(dir)
			_ = cache.RemoveAll(dir)
			_ = os.Remove(dir + ".lock")
		}
		f.Close()
	}
	return reaped
}

// reapOrphans kills what the commands of a dead orch's run left running: a
// SIGKILLed orch cannot stop its stages' process groups, so they outlive it.
// They are found by their environment, which holds ORCH_SCRATCH below the
// run's own directory (children inherit it): an unrelated process cannot
// match, whatever PIDs were reused. Each one is killed with its process
// group. It returns how many processes matched.
func reapOrphans(runDir string) int {
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	needle := []byte("\x00ORCH_SCRATCH=" + runDir + string(os.PathSeparator))
	self, own := os.Getpid(), unix.Getpgrp()
	n := 0
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", p.Name(), "environ"))
		if err != nil || !bytes.Contains(append([]byte{0}, env...), needle) {
			continue
		}
		n++
		if pgid, err := unix.Getpgid(pid); err == nil && pgid != own && pgid > 1 {
			_ = unix.Kill(-pgid, unix.SIGKILL)
		}
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	return n
}
