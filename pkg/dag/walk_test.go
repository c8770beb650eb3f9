package dag_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/orch-dev/orch/pkg/dag"
)

// recorder logs "start X" and "end X" events and tracks concurrency.
type recorder struct {
	mu      sync.Mutex
	events  []string
	running int
	max     int
	calls   map[string]int
}

func (r *recorder) begin(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.calls == nil {
		r.calls = map[string]int{}
	}
	r.calls[id]++
	r.events = append(r.events, "start "+id)
	r.running++
	r.max = max(r.max, r.running)
}

func (r *recorder) end(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, "end "+id)
	r.running--
}

func (r *recorder) started() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, e := range r.events {
		if id, ok := strings.CutPrefix(e, "start "); ok {
			s = append(s, id)
		}
	}
	sort.Strings(s)
	return s
}

// fn returns a Walk function that records, then runs body (if any) for id.
func (r *recorder) fn(body func(ctx context.Context, id string) error) func(context.Context, string) error {
	return func(ctx context.Context, id string) error {
		r.begin(id)
		defer r.end(id)
		if body != nil {
			return body(ctx, id)
		}
		return nil
	}
}

// checkDepsFirst asserts that every node started after all its selected
// dependencies ended, and that no node ran twice.
func checkDepsFirst(t *testing.T, g *dag.Graph, sel map[string]bool, r *recorder) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	pos := map[string]int{}
	for i, e := range r.events {
		if _, dup := pos[e]; dup {
			t.Errorf("event %q twice", e)
		}
		pos[e] = i
	}
	for _, n := range g.Nodes() {
		s, ok := pos["start "+n]
		if !ok {
			continue
		}
		for _, d := range g.Deps(n) {
			if sel != nil && !sel[d] {
				continue
			}
			e, ok := pos["end "+d]
			if !ok || e > s {
				t.Errorf("%s started before its dependency %s ended: %v", n, d, r.events)
			}
		}
	}
}

func statuses(res map[string]dag.Result) string {
	var s []string
	for id, r := range res {
		x := id + "=" + r.Status.String()
		if r.Cause != "" {
			x += "(" + r.Cause + ")"
		}
		s = append(s, x)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

// pipeline is the shape of a small ML pipeline.
func pipeline(t *testing.T) *dag.Graph {
	return mustCheck(t, build("ingest clean stats features split train validate deploy report",
		"ingest>clean", "clean>stats", "clean>features", "features>split", "split>train",
		"stats>train", "train>validate", "validate>deploy", "validate>report", "stats>report"))
}

func TestWalkRunsEveryNodeAfterItsDeps(t *testing.T) {
	g := pipeline(t)
	var r recorder
	res := g.Walk(t.Context(), nil, false, r.fn(nil))
	checkDepsFirst(t, g, nil, &r)
	if len(res) != len(g.Nodes()) {
		t.Errorf("%d results for %d nodes", len(res), len(g.Nodes()))
	}
	for _, n := range g.Nodes() {
		if res[n].Status != dag.Done || r.calls[n] != 1 {
			t.Errorf("%s: %v, called %d times", n, res[n].Status, r.calls[n])
		}
	}
	if r.running != 0 {
		t.Errorf("Walk returned with %d calls still running", r.running)
	}
}

// Many times under -race, with goroutines finishing in every order.
func TestWalkOrderStress(t *testing.T) {
	g := pipeline(t)
	for i := range 50 {
		var r recorder
		res := g.Walk(t.Context(), nil, true, r.fn(func(_ context.Context, id string) error {
			if i%7 == 0 && id == "stats" {
				return errors.New("boom")
			}
			return nil
		}))
		checkDepsFirst(t, g, nil, &r)
		if r.running != 0 {
			t.Fatalf("Walk returned with %d calls running", r.running)
		}
		if len(res) != len(g.Nodes()) {
			t.Fatalf("%d results", len(res))
		}
	}
}

func TestWalkSelection(t *testing.T) {
	g := pipeline(t)
	sel := g.Upstream("train")
	var r recorder
	res := g.Walk(t.Context(), sel, false, r.fn(nil))
	checkDepsFirst(t, g, sel, &r)
	if got := strings.Join(r.started(), " "); got != "clean features ingest split stats train" {
		t.Errorf("started %q, want the upstream closure of train", got)
	}
	if len(res) != len(sel) {
		t.Errorf("results for %s, want only the selection", statuses(res))
	}
	// Unselected dependencies are not waited for.
	sel = map[string]bool{"train": true, "validate": true}
	r = recorder{}
	res = g.Walk(t.Context(), sel, false, r.fn(nil))
	checkDepsFirst(t, g, sel, &r)
	if statuses(res) != "train=done validate=done" {
		t.Errorf("Walk of {train, validate}: %s", statuses(res))
	}
}

func TestWalkFailureSkipsDescendants(t *testing.T) {
	g := pipeline(t)
	boom := errors.New("features: out of memory")
	var r recorder
	res := g.Walk(t.Context(), nil, true, r.fn(func(_ context.Context, id string) error {
		if id == "features" {
			return boom
		}
		return nil
	}))
	checkDepsFirst(t, g, nil, &r)
	if res["features"].Status != dag.Failed || !errors.Is(res["features"].Err, boom) {
		t.Errorf("features: %+v, want Failed with its error", res["features"])
	}
	for _, n := range []string{"split", "train", "validate", "deploy", "report"} {
		if res[n].Status != dag.Skipped || res[n].Cause != "features" {
			t.Errorf("%s: %v cause %q, want skipped because of features", n, res[n].Status, res[n].Cause)
		}
		if r.calls[n] != 0 {
			t.Errorf("%s ran although features failed", n)
		}
	}
	for _, n := range []string{"ingest", "clean", "stats"} {
		if res[n].Status != dag.Done {
			t.Errorf("%s: %v, want done (keepGoing)", n, res[n].Status)
		}
	}
	if res["stats"].Cause != "" || res["stats"].Err != nil {
		t.Errorf("stats: %+v", res["stats"])
	}
}

// With keepGoing, nodes that do not depend on a failure still start after it.
func TestWalkKeepGoing(t *testing.T) {
	// a fails at once; b finishes only after a's failure is known to the
	// walk; c depends on b, d on a.
	g := mustCheck(t, build("a b c d", "b>c", "a>d"))
	synctest.Test(t, func(t *testing.T) {
		var r recorder
		res := g.Walk(t.Context(), nil, true, r.fn(func(_ context.Context, id string) error {
			switch id {
			case "a":
				return errors.New("a failed")
			case "b":
				// Every other goroutine is blocked: a has returned and the
				// walk has taken in its failure.
				synctest.Wait()
			}
			return nil
		}))
		if got := statuses(res); got != "a=failed b=done c=done d=skipped(a)" {
			t.Errorf("keepGoing: %s", got)
		}
	})
}

// Without keepGoing nothing new starts once a failure is known.
func TestWalkStopsAfterFailure(t *testing.T) {
	g := mustCheck(t, build("a b c d", "b>c", "c>d"))
	synctest.Test(t, func(t *testing.T) {
		var r recorder
		res := g.Walk(t.Context(), nil, false, r.fn(func(_ context.Context, id string) error {
			switch id {
			case "a":
				return errors.New("a failed")
			case "b":
				synctest.Wait() // a's failure is in
			}
			return nil
		}))
		if got := statuses(res); got != "a=failed b=done c=skipped d=skipped" {
			t.Errorf("stop after failure: %s", got)
		}
		if r.calls["c"] != 0 || r.calls["d"] != 0 {
			t.Errorf("started after the failure: %v", r.started())
		}
	})
}

// Running nodes are not interrupted by a failure; Walk waits for them.
func TestWalkWaitsForRunning(t *testing.T) {
	g := mustCheck(t, build("a b c"))
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var r recorder
		var res map[string]dag.Result
		done := make(chan struct{})
		go func() {
			defer close(done)
			res = g.Walk(t.Context(), nil, false, r.fn(func(_ context.Context, id string) error {
				if id == "a" {
					return errors.New("a failed")
				}
				<-release
				return nil
			}))
		}()
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("Walk returned while b and c were still running")
		default:
		}
		close(release)
		<-done
		if got := statuses(res); got != "a=failed b=done c=done" {
			t.Errorf("%s", got)
		}
	})
}

func TestWalkCancel(t *testing.T) {
	g := mustCheck(t, build("a b c d", "a>b", "b>c", "a>d"))
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		var r recorder
		var seenCtx context.Context
		// b cancels only once d has started (b and d are ready together
		// after a; without the wait, whichever goroutine ran first decided
		// whether d started at all: a flake in CI).
		dStarted := make(chan struct{})
		res := g.Walk(ctx, nil, false, r.fn(func(fctx context.Context, id string) error {
			if id == "b" {
				<-dStarted
				seenCtx = fctx
				cancel()
			}
			if id == "d" {
				close(dStarted)
				synctest.Wait() // b has cancelled and been reported
			}
			return nil
		}))
		if got := statuses(res); got != "a=done b=done c=skipped d=done" {
			t.Errorf("cancel: %s", got)
		}
		if res["c"].Cause != "" {
			t.Errorf("c skipped by cancellation has cause %q, want \"\"", res["c"].Cause)
		}
		if seenCtx == nil || seenCtx.Err() == nil {
			t.Errorf("fn did not get the walk's ctx")
		}
	})
}

// A walk whose ctx has already ended starts nothing.
func TestWalkCancelledBeforeStart(t *testing.T) {
	g := mustCheck(t, build("a b c", "a>b"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	var r recorder
	res := g.Walk(ctx, nil, false, r.fn(nil))
	if len(r.started()) != 0 {
		t.Errorf("Walk with a cancelled ctx started %v", r.started())
	}
	if got := statuses(res); got != "a=skipped b=skipped c=skipped" {
		t.Errorf("Walk with a cancelled ctx: %s", got)
	}
}

// barrier blocks its callers until n have arrived. Inside a synctest bubble a
// Walk that runs fewer than n at once deadlocks, and synctest reports it.
type barrier struct {
	mu   sync.Mutex
	n    int
	in   int
	open chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, open: make(chan struct{})} }

func (b *barrier) wait() {
	b.mu.Lock()
	b.in++
	if b.in == b.n {
		close(b.open)
	}
	b.mu.Unlock()
	<-b.open
}

// Walk runs as many nodes at once as are ready: the concurrency reaches the
// width of the graph, and never exceeds it.
func TestWalkConcurrencyIsGraphWidth(t *testing.T) {
	cases := []struct {
		name  string
		g     func(t *testing.T) *dag.Graph
		width map[string]int // barrier group per node: nodes of a group meet
	}{
		{"diamond of 3", func(t *testing.T) *dag.Graph {
			return mustCheck(t, build("a b c d e", "a>b", "a>c", "a>d", "b>e", "c>e", "d>e"))
		}, map[string]int{"b": 3, "c": 3, "d": 3}},
		{"8 roots", func(t *testing.T) *dag.Graph {
			var ns []string
			for i := range 8 {
				ns = append(ns, fmt.Sprint("r", i))
			}
			return mustCheck(t, build(strings.Join(ns, " ")))
		}, map[string]int{"r0": 8, "r1": 8, "r2": 8, "r3": 8, "r4": 8, "r5": 8, "r6": 8, "r7": 8}},
		{"two layers of 6", func(t *testing.T) *dag.Graph {
			var ns, es []string
			for i := range 6 {
				ns = append(ns, fmt.Sprint("x", i), fmt.Sprint("y", i))
				es = append(es, fmt.Sprintf("x%d>y%d", i, i))
			}
			return mustCheck(t, build(strings.Join(ns, " "), es...))
		}, map[string]int{"x0": 6, "x1": 6, "x2": 6, "x3": 6, "x4": 6, "x5": 6}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := c.g(t)
			want := 0
			for _, w := range c.width {
				want = max(want, w)
			}
			synctest.Test(t, func(t *testing.T) {
				bar := newBarrier(want)
				var r recorder
				res := g.Walk(t.Context(), nil, false, r.fn(func(_ context.Context, id string) error {
					if c.width[id] > 0 {
						bar.wait()
					}
					return nil
				}))
				for id, x := range res {
					if x.Status != dag.Done {
						t.Errorf("%s: %v", id, x.Status)
					}
				}
				if r.max != want {
					t.Errorf("maximum concurrency %d, want the graph's width %d", r.max, want)
				}
				checkDepsFirst(t, g, nil, &r)
			})
		})
	}
}

func TestWalkEmpty(t *testing.T) {
	g := mustCheck(t, dag.New())
	if res := g.Walk(t.Context(), nil, false, func(context.Context, string) error { return nil }); len(res) != 0 {
		t.Errorf("Walk of an empty graph: %v", res)
	}
	g = pipeline(t)
	if res := g.Walk(t.Context(), map[string]bool{}, false, func(context.Context, string) error {
		t.Error("fn called for an empty selection")
		return nil
	}); len(res) != 0 {
		t.Errorf("Walk of an empty selection: %v", res)
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[dag.Status]string{dag.Done: "done", dag.Failed: "failed", dag.Skipped: "skipped"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}
