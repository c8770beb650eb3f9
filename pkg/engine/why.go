package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/pipeline"
)

// Why explains one stage: its plan, the full pre-image diff against its last
// record, and the nearest other record of the stage still in the cache.
type Why struct {
	Plan *StagePlan
	// Last is the stage's newest record still in the cache (nil if none).
	Last *cache.Record
	// Diff lists every changed pre-image line, "- old" / "+ new".
	Diff []string
	// Nearest is the cached record of this stage, other than Last, whose
	// pre-image differs least from the current one; NearestReasons says how.
	Nearest        *cache.Record
	NearestReasons []string
}

// Why explains stage of p.
func (e *Engine) Why(ctx context.Context, p *pipeline.Pipeline, stage string) (*Why, error) {
	pl, err := e.Plan(ctx, p, Selection{Targets: []string{stage}})
	if err != nil {
		return nil, err
	}
	w := &Why{}
	for _, sp := range pl.Stages {
		if sp.Stage == stage {
			w.Plan = sp
		}
	}
	heads, err := e.History.Heads(p.Name)
	if err != nil {
		return nil, err
	}
	cur := w.Plan.pre
	if cur == nil { // WAIT: compare what is known
		cur, _, err = e.Preimage(p, p.Stages[stage], func(string) (map[string]cache.Output, bool) { return nil, false })
		if err != nil {
			return nil, err
		}
	}
	var records []*cache.Record
	for _, h := range heads.Of(stage) {
		k, err := digest.Parse(h.Key)
		if err != nil {
			continue
		}
		if r, err := e.Cache.Lookup(ctx, k); err == nil {
			records = append(records, r)
		}
	}
	for _, r := range records {
		if _, err := r.Pre(); err != nil {
			return nil, err
		}
	}
	if len(records) > 0 {
		w.Last = records[0]
		w.Diff = lineDiff(&w.Last.Preimage, cur, w.Plan.pre == nil)
	}
	best := -1
	for _, r := range records[min(1, len(records)):] {
		rs := cache.Diff(stage, &r.Preimage, cur)
		if w.Plan.pre == nil {
			rs = partialDiff(stage, &r.Preimage, cur)
		}
		if best < 0 || len(rs) < best {
			best, w.Nearest, w.NearestReasons = len(rs), r, rs
		}
	}
	return w, nil
}

// lineDiff renders two pre-images as indented JSON and lists the lines only
// one of them has, in order.
func lineDiff(old, cur *cache.Preimage, partial bool) []string {
	o := *old
	if partial {
		o.Inputs = map[string]cache.Input{}
		for k, v := range old.Inputs {
			if _, ok := cur.Inputs[k]; ok {
				o.Inputs[k] = v
			}
		}
	}
	a, b := flatten(&o), flatten(cur)
	var out []string
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		av, aok := a[k]
		bv, bok := b[k]
		switch {
		case aok && bok && av == bv:
		case aok && bok:
			out = append(out, fmt.Sprintf("- %s: %s", k, av), fmt.Sprintf("+ %s: %s", k, bv))
		case aok:
			out = append(out, fmt.Sprintf("- %s: %s", k, av))
		default:
			out = append(out, fmt.Sprintf("+ %s: %s", k, bv))
		}
	}
	return out
}

// flatten maps every leaf of p's JSON form to its dotted path.
func flatten(p *cache.Preimage) map[string]string {
	var v any
	_ = json.Unmarshal(p.Encode(), &v)
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch t := v.(type) {
		case map[string]any:
			for k, c := range t {
				walk(strings.TrimPrefix(prefix+"."+k, "."), c)
			}
		case []any:
			for i, c := range t {
				walk(fmt.Sprintf("%s[%d]", prefix, i), c)
			}
		default:
			b, _ := json.Marshal(t)
			out[prefix] = string(b)
		}
	}
	walk("", v)
	return out
}
