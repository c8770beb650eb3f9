package dag

import (
	"context"
	"errors"
)

// ErrNotStarted, returned (wrapped) by a Walk's fn, means the node decided
// not to start after all (the run is stopping); it is recorded as Skipped.
var ErrNotStarted = errors.New("not started")

// Status is how a node ended in a Walk.
type Status int

const (
	// Done: fn returned nil.
	Done Status = iota
	// Failed: fn returned an error.
	Failed
	// Skipped: never started, because an upstream node failed, the walk was
	// stopped after a failure, or ctx ended.
	Skipped
)

func (s Status) String() string {
	switch s {
	case Done:
		return "done"
	case Failed:
		return "failed"
	}
	return "skipped"
}

// Result is one node's outcome.
type Result struct {
	Status Status
	Err    error  // Failed: what fn returned
	Cause  string // Skipped: the failed upstream node, or "" if stopped/cancelled
}

// Walk calls fn for every node in sel (all nodes if sel is nil), each after
// all of its selected upstream nodes are Done, as many at once as are ready:
// fn limits its own concurrency, so a slot is held only while work runs.
// When a node fails, its descendants are skipped; without keepGoing nothing
// new starts after the first failure. Once ctx ends nothing new starts.
// Walk returns when every started fn has returned.
func (g *Graph) Walk(ctx context.Context, sel map[string]bool, keepGoing bool, fn func(ctx context.Context, id string) error) map[string]Result {
	in := func(n int) bool { return sel == nil || sel[g.nodes[n]] }
	waiting := make([]int, len(g.nodes))
	total := 0
	for n := range g.nodes {
		if !in(n) {
			continue
		}
		total++
		for _, d := range g.deps[n] {
			if in(d) {
				waiting[n]++
			}
		}
	}
	results := make(map[string]Result, total)
	// Each fn runs on a goroutine of its own, but a goroutine that finished
	// one node waits for the next (on its own channel, kept in idle) before
	// exiting: a new goroutine's stack grows again in every fn, which was a
	// seventh of a 1,000-stage plan's CPU.
	type report struct {
		n    int
		err  error
		next chan int
	}
	reports := make(chan report)
	var idle []chan int
	defer func() {
		for _, c := range idle {
			close(c)
		}
	}()
	worker := func(n int) {
		next := make(chan int, 1)
		for ok := true; ok; n, ok = <-next {
			err := fn(ctx, g.nodes[n])
			reports <- report{n, err, next}
		}
	}
	running := 0
	stopped := false
	start := func(n int) {
		running++
		if k := len(idle); k > 0 {
			idle[k-1] <- n
			idle = idle[:k-1]
			return
		}
		go worker(n)
	}
	// Start in topological order so that ready nodes begin in declaration order.
	for _, n := range g.order {
		if in(n) && waiting[n] == 0 && ctx.Err() == nil {
			start(n)
		}
	}
	var skip func(n int, cause string)
	skip = func(n int, cause string) {
		for _, m := range g.downs[n] {
			if !in(m) {
				continue
			}
			if _, ok := results[g.nodes[m]]; ok {
				continue
			}
			results[g.nodes[m]] = Result{Status: Skipped, Cause: cause}
			skip(m, cause)
		}
	}
	for running > 0 {
		r := <-reports
		running--
		idle = append(idle, r.next)
		id := g.nodes[r.n]
		if errors.Is(r.err, ErrNotStarted) {
			results[id] = Result{Status: Skipped}
			skip(r.n, "")
			continue
		}
		if r.err != nil {
			results[id] = Result{Status: Failed, Err: r.err}
			skip(r.n, id)
			if !keepGoing {
				stopped = true
			}
			continue
		}
		results[id] = Result{Status: Done}
		for _, m := range g.downs[r.n] {
			if !in(m) {
				continue
			}
			if waiting[m]--; waiting[m] == 0 && !stopped && ctx.Err() == nil {
				if _, decided := results[g.nodes[m]]; !decided {
					start(m)
				}
			}
		}
	}
	for n := range g.nodes {
		if in(n) {
			if _, ok := results[g.nodes[n]]; !ok {
				results[g.nodes[n]] = Result{Status: Skipped}
			}
		}
	}
	return results
}
