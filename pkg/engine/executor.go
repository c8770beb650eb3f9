package engine

import (
	"context"
	"runtime"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
)

// An executor runs a MISS whose key is known: on success the stage's
// outputs are in r.outputs and linked into the workspace, and (unless the
// stage is not cacheable) its record is in the cache, written blobs first.
// It sets sr's status, duration, attempts and log.
type executor interface {
	execute(ctx context.Context, r *runner, st *pipeline.Stage, sr *history.StageRun, pre *cache.Preimage, key digest.Digest) error
}

// localExecutor runs stages in this process's machine (local.go).
type localExecutor struct{}

func (localExecutor) execute(ctx context.Context, r *runner, st *pipeline.Stage, sr *history.StageRun, pre *cache.Preimage, key digest.Digest) error {
	return r.execute(ctx, st, sr, pre, key)
}

// executor returns where st runs.
func (r *runner) executor(st *pipeline.Stage) executor {
	if st.Executor == pipeline.ExecSlurm && !r.worker {
		r.slurmOnce.Do(func() { r.slurm = newSlurmExec(r) })
		return r.slurm
	}
	return localExecutor{}
}

// limits are the local machine's CPUs and memory, taken by running stages
// as their resources: ask; -j alone limits stages that ask nothing. A
// stage asking more than the machine has takes all of it, and runs alone.
type limits struct {
	cpus, memMB int64
	cpu, mem    *semaphore.Weighted
}

func newLimits() *limits {
	l := &limits{cpus: int64(runtime.NumCPU())}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		l.memMB = int64(si.Totalram) * int64(si.Unit) >> 20
	}
	l.cpu = semaphore.NewWeighted(l.cpus)
	if l.memMB > 0 {
		l.mem = semaphore.NewWeighted(l.memMB)
	}
	return l
}

// acquire takes what res asks for, waiting until it is free, and returns
// the function that gives it back. A nil *limits limits nothing.
func (l *limits) acquire(ctx context.Context, res pipeline.Resources) (free func(), err error) {
	if l == nil {
		return func() {}, nil
	}
	cpus := min(int64(res.CPUs), l.cpus)
	if cpus > 0 {
		if err := l.cpu.Acquire(ctx, cpus); err != nil {
			return nil, err
		}
	}
	mem := int64(0)
	if l.mem != nil && res.Memory > 0 {
		mem = min(max(res.Memory>>20, 1), l.memMB)
		if err := l.mem.Acquire(ctx, mem); err != nil {
			if cpus > 0 {
				l.cpu.Release(cpus)
			}
			return nil, err
		}
	}
	return func() {
		if mem > 0 {
			l.mem.Release(mem)
		}
		if cpus > 0 {
			l.cpu.Release(cpus)
		}
	}, nil
}
