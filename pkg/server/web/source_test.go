package web

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
)

// engineSource is a Source over a real workspace, the way orch serve builds
// one: pipelines loaded from their YAML files (a file that stops parsing
// reports its load error), runs from the engine's history database, logs
// from its cache, and the live state of a run in progress from the engine's
// events.
type engineSource struct {
	t     *testing.T
	root  string
	e     *engine.Engine
	files []string
	// sched is the schedule shown for a pipeline (serve computes it from
	// the YAML; the page only renders it).
	sched map[string]Pipeline

	mu   sync.Mutex
	live map[string]map[string]string // pipeline → stage → status, while a run is in progress
}

func newEngineSource(t *testing.T) *engineSource {
	t.Helper()
	root := t.TempDir()
	e, err := engine.Open(engine.Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return &engineSource{t: t, root: root, e: e, sched: map[string]Pipeline{}, live: map[string]map[string]string{}}
}

// write adds a pipeline file to the workspace.
func (s *engineSource) write(name, yaml string) string {
	s.t.Helper()
	path := filepath.Join(s.root, name)
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		s.t.Fatal(err)
	}
	s.files = append(s.files, path)
	return path
}

func (s *engineSource) load(path string, params map[string]string) (*pipeline.Pipeline, error) {
	reg := stages.NewRegistry()
	reg.Register("exec", stages.NewExec(time.Second))
	return pipeline.Load(path, pipeline.Options{Root: s.root, Params: params, Kinds: reg})
}

// run runs the pipeline in path with params and returns its history entry;
// the run's outcome (a failed stage included) is the test's to check.
func (s *engineSource) run(ctx context.Context, path string, params map[string]string) *history.Run {
	s.t.Helper()
	p, err := s.load(path, params)
	if err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.live[p.Name] = map[string]string{}
	s.mu.Unlock()
	res, err := s.e.Run(ctx, p, engine.RunOptions{Jobs: 2, KeepGoing: true, Trigger: "test", Events: func(ev engine.Event) {
		st := map[string]string{engine.EvStart: history.Running, engine.EvHit: history.Hit, engine.EvRan: history.Ran,
			engine.EvFailed: history.Failed, engine.EvSkipped: history.Skipped}[ev.Type]
		if st == "" {
			return
		}
		s.mu.Lock()
		s.live[p.Name][ev.Stage] = st
		s.mu.Unlock()
	}})
	s.mu.Lock()
	delete(s.live, p.Name)
	s.mu.Unlock()
	if err != nil {
		s.t.Fatal(err)
	}
	return res.Run
}

func (s *engineSource) Pipelines() []Pipeline {
	var out []Pipeline
	for _, f := range s.files {
		p, err := s.load(f, nil)
		if err != nil {
			// As in serve: a file that never loaded has no name.
			out = append(out, Pipeline{File: f, Error: err.Error()})
			continue
		}
		v := s.sched[p.Name]
		v.Name, v.File = p.Name, p.File
		for _, n := range p.Graph.Order() {
			v.Stages = append(v.Stages, Stage{Name: n, Kind: p.Stages[n].KindName, Deps: p.Graph.Deps(n)})
		}
		if runs, err := s.Runs(p.Name, "", 1); err == nil && len(runs) > 0 {
			v.LastRun = runs[0]
		}
		out = append(out, v)
	}
	return out
}

func (s *engineSource) Runs(pipeline, status string, limit int) ([]*history.Run, error) {
	if limit <= 0 {
		limit = 50
	}
	all, err := s.e.History.Runs(pipeline, 0)
	if err != nil {
		return nil, err
	}
	var out []*history.Run
	for _, r := range all {
		if status == "" || r.Status == status {
			out = append(out, s.overlay(r))
		}
		if len(out) == limit {
			break
		}
	}
	return out, nil
}

// overlay puts the live stage states onto a run in progress.
func (s *engineSource) overlay(r *history.Run) *history.Run {
	if r.Status != history.RunRunning {
		return r
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range r.Stages {
		if st, ok := s.live[r.Pipeline][r.Stages[i].Name]; ok {
			r.Stages[i].Status = st
		}
	}
	return r
}

func (s *engineSource) Run(id string) (*history.Run, error) {
	r, err := s.e.History.Run(id)
	if err != nil {
		return nil, err
	}
	return s.overlay(r), nil
}

func (s *engineSource) Log(runID, stage string) ([]byte, error) {
	r, err := s.Run(runID)
	if err != nil {
		return nil, err
	}
	for _, st := range r.Stages {
		if st.Name != stage {
			continue
		}
		if st.Log == "" {
			return nil, fmt.Errorf("run %s stage %s: %w: no log captured", r.ID, stage, history.ErrNotFound)
		}
		d, err := digest.Parse(st.Log)
		if err != nil {
			return nil, err
		}
		return s.e.Cache.ReadBlob(context.Background(), d)
	}
	return nil, fmt.Errorf("run %s: %w: no stage %q", r.ID, history.ErrNotFound, stage)
}

// nightly is the test pipeline: a long edge (extract → report), a diamond
// (extract → clean, features → train), and a stage whose mode param makes
// it fail with markup in its log and error.
const nightly = `name: nightly
params:
  mode: ok
  v: 1
stages:
  extract:
    outputs: {out: raw.txt}
    run: |
      echo "rows <1> & more" > {{outputs.out}}
      echo "extracted <b>rows</b>"
  clean:
    inputs: {raw: extract.out}
    outputs: {out: clean.txt}
    run: tr a-z A-Z < {{inputs.raw}} > {{outputs.out}}
  features:
    inputs: {raw: extract.out}
    params: {mode: "${params.mode}"}
    outputs: {out: f.txt}
    run: |
      echo "mode {{params.mode}} <script>alert(1)</script>"
      if [ "{{params.mode}}" = fail ]; then echo "boom: <bad> feature" >&2; exit 3; fi
      cp {{inputs.raw}} {{outputs.out}}
  stats:
    inputs: {c: clean.out}
    params: {v: "${params.v}"}
    outputs: {out: s.txt}
    run: |
      echo "v={{params.v}}" > {{outputs.out}}
  train:
    inputs: {f: features.out, c: clean.out}
    outputs: {model: m.txt}
    run: cat {{inputs.f}} {{inputs.c}} > {{outputs.model}}
  report:
    inputs: {m: train.model, s: stats.out}
    needs: [extract]
    outputs: {out: report.txt}
    run: cat {{inputs.m}} {{inputs.s}} > {{outputs.out}}
`

// fixture is a workspace with three real runs of nightly (all ran; all
// HIT; then HIT, ran, failed and skipped stages in one failed run) and a
// second pipeline file that does not parse.
type fixture struct {
	src                  *engineSource
	ran, hit, failed     *history.Run
	nightlyFile, badFile string
}

var errFixture = errors.New("fixture")

func newFixture(t *testing.T) *fixture {
	t.Helper()
	src := newEngineSource(t)
	f := &fixture{src: src}
	f.nightlyFile = src.write("nightly.yaml", nightly)
	f.badFile = src.write("broken.yaml", "name: broken\nstages:\n  a:\n    run: true\n    inputs: {x: nowhere.out}\n")
	next := time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)
	src.sched["nightly"] = Pipeline{Description: "Nightly <features> & model", Schedule: []string{"0 2 * * *"}, Timezone: "UTC",
		Next: []time.Time{next, next.Add(24 * time.Hour), next.Add(48 * time.Hour)}}
	ctx := t.Context()
	f.ran = src.run(ctx, f.nightlyFile, nil)
	f.hit = src.run(ctx, f.nightlyFile, nil)
	f.failed = src.run(ctx, f.nightlyFile, map[string]string{"mode": "fail", "v": "2"})
	want := map[*history.Run]string{f.ran: history.RunSucceeded, f.hit: history.RunSucceeded, f.failed: history.RunFailed}
	for r, st := range want {
		if r.Status != st {
			t.Fatalf("%v: run %s is %s, want %s: %s", errFixture, r.ID, r.Status, st, r.Error)
		}
	}
	return f
}

// stageStatuses returns stage → status of a run.
func statusesOf(r *history.Run) map[string]string {
	m := map[string]string{}
	for _, s := range r.Stages {
		m[s.Name] = s.Status
	}
	return m
}

// gatedRun starts a real run of pipeline "slow" (first → wait → after)
// whose stage wait blocks until finish is called, and returns once the
// engine reports wait running: first has run, after is pending. finish opens
// the gate and returns the finished run. Cancelling ctx cancels the run.
func gatedRun(ctx context.Context, t *testing.T, src *engineSource) (id string, finish func() *history.Run) {
	t.Helper()
	gate := filepath.Join(t.TempDir(), "gate")
	file := src.write("slow.yaml", `name: slow
stages:
  first:
    outputs: {o: o.txt}
    run: echo first > {{outputs.o}}
  wait:
    inputs: {i: first.o}
    outputs: {o: o.txt}
    run: while [ ! -e `+gate+` ]; do sleep 0.02; done; cp {{inputs.i}} {{outputs.o}}
  after:
    inputs: {i: wait.o}
    outputs: {o: o.txt}
    run: cp {{inputs.i}} {{outputs.o}}
`)
	done := make(chan *history.Run, 1)
	go func() { done <- src.run(ctx, file, nil) }()
	for {
		runs, err := src.Runs("slow", "", 1)
		if err != nil {
			t.Fatal(err)
		}
		if len(runs) == 1 && statusesOf(runs[0])["wait"] == history.Running {
			id = runs[0].ID
			break
		}
		select {
		case r := <-done:
			t.Fatalf("run ended before the gate opened: %s", r.Status)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return id, func() *history.Run {
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return <-done
	}
}
