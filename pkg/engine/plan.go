package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/store"
)

// Plan statuses.
const (
	Hit  = "HIT"
	Miss = "MISS"
	Wait = "WAIT"
)

// Selection says which stages a plan or run covers and which are forced.
type Selection struct {
	// Targets limit the run to these stages and everything upstream; none
	// means every stage.
	Targets  []string
	Force    []string
	ForceAll bool
}

// StagePlan is the plan for one stage.
type StagePlan struct {
	Stage   string   `json:"stage"`
	Status  string   `json:"status"`
	Reasons []string `json:"reasons,omitempty"`
	// Key is set for HIT and MISS.
	Key digest.Digest `json:"key,omitzero"`
	// WaitsFor names the MISS/WAIT upstream stages a WAIT depends on.
	WaitsFor []string `json:"waits_for,omitempty"`
	// LastDuration is the duration of the record this stage would restore
	// (HIT) or of its last record (MISS, WAIT).
	LastDuration time.Duration `json:"last_duration_ns"`

	pre    *cache.Preimage
	record *cache.Record
	err    error
}

// Plan is what a run would do.
type Plan struct {
	Pipeline string       `json:"pipeline"`
	Stages   []*StagePlan `json:"stages"`
}

// Counts returns how many stages are HIT, MISS and WAIT.
func (pl *Plan) Counts() (hit, miss, wait int) {
	for _, s := range pl.Stages {
		switch s.Status {
		case Hit:
			hit++
		case Miss:
			miss++
		default:
			wait++
		}
	}
	return
}

// Select validates a selection against p and returns the selected stages.
func Select(p *pipeline.Pipeline, sel Selection) (map[string]bool, error) {
	var bad []string
	for _, names := range [][]string{sel.Targets, sel.Force} {
		for _, n := range names {
			if _, ok := p.Stages[n]; !ok {
				bad = append(bad, fmt.Sprintf("%q", n))
			}
		}
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("pipeline %s has no stage %s (stages: %s)", p.Name, strings.Join(bad, ", "), strings.Join(p.Names(), ", "))
	}
	if len(sel.Targets) == 0 {
		all := map[string]bool{}
		for _, n := range p.Names() {
			all[n] = true
		}
		return all, nil
	}
	return p.Graph.Upstream(sel.Targets...), nil
}

func forced(sel Selection, stage string) bool {
	if sel.ForceAll {
		return true
	}
	for _, f := range sel.Force {
		if f == stage {
			return true
		}
	}
	return false
}

// Plan computes what a run would do, running nothing and reading no file
// whose stat is unchanged since it was last hashed.
func (e *Engine) Plan(ctx context.Context, p *pipeline.Pipeline, sel Selection) (*Plan, error) {
	chosen, err := Select(p, sel)
	if err != nil {
		return nil, err
	}
	heads, err := e.History.Heads(p.Name)
	if err != nil {
		return nil, err
	}
	// Stages are planned by the same parallel walk as a run: a stage as
	// soon as its upstream stages are planned, so records are read on all
	// cores. mu guards known and status.
	var mu sync.Mutex
	known := map[string]map[string]cache.Output{}
	status := map[string]*StagePlan{}
	p.Graph.Walk(ctx, chosen, true, func(ctx context.Context, name string) error {
		sp, outs := e.planStage(ctx, p, name, sel, func() []history.Head { return heads.Of(name) }, func(up string) (map[string]cache.Output, bool) {
			mu.Lock()
			defer mu.Unlock()
			o, ok := known[up]
			return o, ok
		}, func(up string) *StagePlan {
			mu.Lock()
			defer mu.Unlock()
			return status[up]
		})
		mu.Lock()
		status[name] = sp
		if outs != nil {
			known[name] = outs
		}
		mu.Unlock()
		return sp.err
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pl := &Plan{Pipeline: p.Name}
	for _, name := range p.Graph.Order() {
		if !chosen[name] {
			continue
		}
		sp := status[name]
		if sp == nil {
			continue // below a stage whose plan failed
		}
		if sp.err != nil {
			return nil, sp.err
		}
		pl.Stages = append(pl.Stages, sp)
	}
	return pl, nil
}

// planStage plans one stage whose upstream stages are planned; it returns
// the outputs the stage will have (for a HIT) so stages below know their keys.
func (e *Engine) planStage(ctx context.Context, p *pipeline.Pipeline, name string, sel Selection, heads func() []history.Head,
	upstream func(string) (map[string]cache.Output, bool), planOf func(string) *StagePlan) (*StagePlan, map[string]cache.Output) {
	st := p.Stages[name]
	sp := &StagePlan{Stage: name}
	pre, waiting, err := e.Preimage(p, st, upstream)
	if err != nil {
		sp.err = fmt.Errorf("stage %q: %w", name, err)
		return sp, nil
	}
	for _, n := range st.Needs {
		if up := planOf(n); up != nil && up.Status != Hit {
			waiting = append(waiting, n)
		}
	}
	// The last record is read only to explain a MISS or WAIT: a HIT's
	// duration comes from the record it hits.
	var last *cache.Record
	loadLast := func() {
		if last = e.lastRecord(ctx, heads()); last != nil {
			sp.LastDuration = last.Duration
		}
	}
	if len(waiting) > 0 {
		loadLast()
		sp.Status, sp.WaitsFor = Wait, dedupe(waiting)
		if last != nil {
			if lp, err := last.Pre(); err == nil {
				sp.Reasons = partialDiff(name, lp, pre)
			}
		}
		return sp, nil
	}
	sp.pre, sp.Key = pre, pre.Key()
	switch {
	case forced(sel, name):
		sp.Status, sp.Reasons = Miss, []string{"forced"}
		loadLast()
	case !st.Cache:
		sp.Status, sp.Reasons = Miss, []string{"cache: false (always runs)"}
		loadLast()
	default:
		rec, why := e.usable(ctx, sp.Key)
		if rec != nil {
			sp.Status, sp.record, sp.LastDuration = Hit, rec, rec.Duration
			return sp, rec.Outputs
		}
		sp.Status = Miss
		loadLast()
		switch {
		case why != "":
			sp.Reasons = []string{why}
		case last == nil && len(heads()) == 0:
			sp.Reasons = []string{"never run"}
		case last == nil:
			sp.Reasons = []string{"last record is no longer in the cache"}
		default:
			if lp, err := last.Pre(); err == nil {
				sp.Reasons = cache.Diff(name, lp, pre)
			}
			if len(sp.Reasons) == 0 {
				sp.Reasons = []string{"record missing from the cache"}
			}
		}
	}
	return sp, nil
}

// usable returns the record for key if it and the blobs it names are
// present; otherwise a reason when something is wrong (not just absent).
// Presence is checked by stat; content is verified on restore.
func (e *Engine) usable(ctx context.Context, key digest.Digest) (*cache.Record, string) {
	rec, err := e.Cache.Lookup(ctx, key)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, ""
		}
		return nil, fmt.Sprintf("cached record unusable: %v", err)
	}
	for _, name := range sortedOutputNames(rec) {
		o := rec.Outputs[name]
		if _, err := e.Cache.Store.StatBlob(ctx, o.Digest); err != nil {
			return nil, fmt.Sprintf("cached output %s missing from the cache", name)
		}
	}
	return rec, ""
}

// lastRecord returns the newest head record that is still in the cache.
func (e *Engine) lastRecord(ctx context.Context, hs []history.Head) *cache.Record {
	for i, h := range hs {
		if i >= 3 {
			break
		}
		k, err := digest.Parse(h.Key)
		if err != nil {
			continue
		}
		if r, err := e.Cache.Lookup(ctx, k); err == nil {
			return r
		}
	}
	return nil
}

// partialDiff explains a WAIT: differences in everything but the inputs
// whose digests are not known yet.
func partialDiff(stage string, old, cur *cache.Preimage) []string {
	o := *old
	o.Inputs = map[string]cache.Input{}
	for k, v := range old.Inputs {
		if _, known := cur.Inputs[k]; known {
			o.Inputs[k] = v
		}
	}
	return cache.Diff(stage, &o, cur)
}
