package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
)

// RefusedError is a worker's refusal to run a stage because running it
// again on the same node cannot succeed (its key differs there). `orch
// worker` prints it as the last line of the job's output, after
// RefusedMark, and exits with RefusedExit; the orchestrator then fails the
// stage at once with that message instead of retrying.
type RefusedError struct{ Err error }

func (e *RefusedError) Error() string { return e.Err.Error() }
func (e *RefusedError) Unwrap() error { return e.Err }

const (
	// RefusedMark starts the line of the job's output that says why the
	// worker refused.
	RefusedMark = "orch worker refused: "
	// RefusedExit is the worker's exit status when it refuses.
	RefusedExit = 3
)

// Work runs one stage of p for a Slurm job (`orch worker`): it restores
// the stage's inputs from the cache, runs it once, verifies and stores
// its outputs, and writes its record last, whether or not the stage is
// cacheable (the record is how the outputs reach the orchestrator). It
// refuses to run when the stage's key here is not spec.Key: the node sees
// another workspace than the orchestrator did.
func (e *Engine) Work(ctx context.Context, p *pipeline.Pipeline, spec *WorkerSpec, events func(Event)) error {
	st0, ok := p.Stages[spec.Stage]
	if !ok {
		return fmt.Errorf("pipeline %s has no stage %q", p.Name, spec.Stage)
	}
	key, err := digest.Parse(spec.Key)
	if err != nil {
		return fmt.Errorf("worker spec: key: %w", err)
	}
	st := *st0
	st.Retries = 0 // the orchestrator resubmits
	r := &runner{
		e: e, p: p, opts: RunOptions{Jobs: 1, Events: events}, slots: make(chan struct{}, 1),
		outputs: map[string]map[string]cache.Output{}, stages: map[string]*history.StageRun{},
		recomputed: map[string]*recomputation{}, worker: true,
	}
	for name, outs := range spec.Upstream {
		r.outputs[name] = outs
	}
	r.dir = filepath.Join(e.StateDir, "tmp", "work")
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	defer func() { _ = cache.RemoveAll(r.dir) }()
	pre, waiting, err := e.Preimage(p, &st, r.upstream)
	if err != nil {
		return fmt.Errorf("stage %q: %w", st.Name, err)
	}
	if len(waiting) > 0 {
		return fmt.Errorf("stage %q: the worker spec lacks the outputs of %v", st.Name, waiting)
	}
	if got := pre.Key(); got != key {
		return &RefusedError{fmt.Errorf("stage %q has key %s on this node, %s where it was submitted: the workspace (code, inputs, declared env) differs here", st.Name, got.Short(), key.Short())}
	}
	sr := &history.StageRun{Name: st.Name}
	r.stages[st.Name] = sr
	if err := r.execute(ctx, &st, sr, pre, key); err != nil {
		return err
	}
	return e.Local.Sync()
}
