package pipeline

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/stages"
)

// snapFixture is a pipeline using every section a snapshot carries.
const snapFixture = `name: snap
description: every section
params:
  lr: 0.1
  cols: [a, b]
  opts: {depth: 3, name: x, on: true, none: null}
cache:
  remote: s3://bucket/prefix
  endpoint: http://127.0.0.1:9000
  path_style: true
schedule:
  cron: ["0 2 * * *", "@hourly"]
  timezone: Europe/Berlin
  catchup: all
  catchup_window: 72h
  overlap: queue
  max_active_runs: 2
  params: {lr: "{{tick.date}}"}
on_failure:
  command: echo failed
  timeout: 5s
executor: local
slurm:
  poll: 2s
  max_memory: 8G
stages:
  prep:
    run: python scripts/prep.py {{inputs.raw}} {{outputs.data}} ${params.lr}
    code: [scripts/prep.py, "scripts/*.py"]
    inputs: {raw: data/raw.csv, labels: data/labels.csv}
    outputs: {data: prep.csv}
    params: {lr: "${params.lr}", cols: "${params.cols}", nested: {k: [1, 2.5, "s"]}}
    env: [TZ, HOME]
    timeout: 10m
    retries: 2
    resources: {cpus: 2, memory: 512M, time: 1h, sbatch: ["--qos=high"]}
  train:
    run: python scripts/train.py {{inputs.data}} {{outputs.model}}
    inputs: {data: prep.data}
    outputs: {model: model.txt}
    cache: false
  report:
    run: echo done
    needs: [train]
    executor: slurm
`

// loadTwice writes src into a copy of the fixture workspace and loads it
// with a snapshot directory twice: the first load parses and saves, the
// second must come from the snapshot.
func loadTwice(t *testing.T, src string, params map[string]string) (parsed, snapped *Pipeline, ws, file string) {
	t.Helper()
	ws = copyWorkspace(t)
	file = filepath.Join(ws, "pipeline.yaml")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	o := Options{Root: ws, Params: params, Kinds: registry(), SnapshotDir: filepath.Join(ws, ".orch", "pipelines")}
	parsed, err := Load(file, o)
	if err != nil {
		t.Fatalf("first load: %v", err)
	}
	snaps, _ := filepath.Glob(filepath.Join(o.SnapshotDir, "*.snap"))
	if len(snaps) != 1 {
		t.Fatalf("snapshots after the first load: %v; want one", snaps)
	}
	key := snapshotKey(file, []byte(src), o, ws)
	snapped = loadSnapshot(snaps[0], key, o)
	if snapped == nil {
		t.Fatal("the snapshot the first load saved is not usable")
	}
	snapped.Overrides = o.Params
	return parsed, snapped, ws, file
}

func copyWorkspace(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(wsDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(wsDir, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// samePipeline compares two loaded pipelines field by field: the graph by
// its nodes, edges and order, kinds by name, the zone by name.
func samePipeline(t *testing.T, a, b *Pipeline) {
	t.Helper()
	if !reflect.DeepEqual(a.Graph.Nodes(), b.Graph.Nodes()) || !reflect.DeepEqual(a.Graph.Order(), b.Graph.Order()) {
		t.Errorf("graph nodes/order differ: %v %v / %v %v", a.Graph.Nodes(), a.Graph.Order(), b.Graph.Nodes(), b.Graph.Order())
	}
	for _, n := range a.Graph.Nodes() {
		if !reflect.DeepEqual(a.Graph.Deps(n), b.Graph.Deps(n)) || !reflect.DeepEqual(a.Graph.Dependents(n), b.Graph.Dependents(n)) {
			t.Errorf("edges of %s differ", n)
		}
	}
	for name, sa := range a.Stages {
		sb := b.Stages[name]
		if sb == nil || sa.Kind != sb.Kind {
			t.Errorf("stage %s: kind %v / %v", name, sa.Kind, sb)
			continue
		}
		ca, cb := *sa, *sb
		ca.Kind, cb.Kind = nil, nil
		if !reflect.DeepEqual(ca, cb) {
			t.Errorf("stage %s differs:\n parsed  %#v\n snapped %#v", name, ca, cb)
		}
	}
	ca, cb := *a, *b
	ca.Graph, cb.Graph, ca.Stages, cb.Stages = nil, nil, nil, nil
	if a.Schedule != nil && b.Schedule != nil {
		if a.Schedule.Location.String() != b.Schedule.Location.String() {
			t.Errorf("schedule zone %v / %v", a.Schedule.Location, b.Schedule.Location)
		}
		sa, sb := *a.Schedule, *b.Schedule
		sa.Location, sb.Location = nil, nil
		if !reflect.DeepEqual(sa, sb) {
			t.Errorf("schedule differs:\n parsed  %#v\n snapped %#v", sa, sb)
		}
		ca.Schedule, cb.Schedule = nil, nil
	}
	if !reflect.DeepEqual(ca, cb) {
		t.Errorf("pipeline differs:\n parsed  %#v\n snapped %#v", ca, cb)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	parsed, snapped, _, _ := loadTwice(t, snapFixture, map[string]string{"lr": "0.05"})
	samePipeline(t, parsed, snapped)
	if got := snapped.Stages["prep"].Params["lr"].Text; got != "0.05" {
		t.Errorf("prep.lr = %q; want the -p value 0.05", got)
	}
	from := time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC) // across the Berlin DST change
	if a, b := parsed.Schedule.NextN(from, 30), snapped.Schedule.NextN(from, 30); !reflect.DeepEqual(a, b) {
		t.Errorf("next ticks differ:\n parsed  %v\n snapped %v", a, b)
	}
}

// TestSnapshotPipelines round-trips the repository's own pipelines.
func TestSnapshotPipelines(t *testing.T) {
	files, _ := filepath.Glob("../../pipelines/*.yaml")
	if len(files) == 0 {
		t.Fatal("no pipelines found")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			r := stages.NewRegistry()
			r.Register("exec", stages.NewExec(0))
			stages.RegisterBuiltins(r)
			root, _ := filepath.Abs("../..")
			dir := t.TempDir()
			o := Options{Root: root, Kinds: r, SnapshotDir: dir}
			abs, _ := filepath.Abs(f)
			parsed, err := Load(abs, o)
			if err != nil {
				t.Fatal(err)
			}
			snapped := loadSnapshot(snapshotPath(dir, abs), snapshotKey(abs, src, o, root), o)
			if snapped == nil {
				t.Fatal("no usable snapshot")
			}
			snapped.Overrides = o.Params
			samePipeline(t, parsed, snapped)
		})
	}
}

// A snapshot is not used once a file the loader checked has changed: the
// next load reports the error a parse reports.
func TestSnapshotFactsChecked(t *testing.T) {
	_, _, ws, file := loadTwice(t, snapFixture, nil)
	o := Options{Root: ws, Kinds: registry(), SnapshotDir: filepath.Join(ws, ".orch", "pipelines")}
	if err := os.Remove(filepath.Join(ws, "data", "labels.csv")); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file, o)
	if err == nil || !strings.Contains(err.Error(), `input "labels": data/labels.csv does not exist`) {
		t.Fatalf("load after removing an input: %v; want the missing-input error", err)
	}
	if err := os.WriteFile(filepath.Join(ws, "data", "labels.csv"), []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(ws, "scripts", "prep.py")); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file, o); err == nil || !strings.Contains(err.Error(), `code "scripts/prep.py"`) {
		t.Fatalf("load after removing a code file: %v; want the code error", err)
	}
}

// Other -p values, other bytes or a damaged snapshot file mean a parse.
func TestSnapshotNotReused(t *testing.T) {
	_, _, ws, file := loadTwice(t, snapFixture, nil)
	dir := filepath.Join(ws, ".orch", "pipelines")
	o := Options{Root: ws, Kinds: registry(), SnapshotDir: dir}
	p, err := Load(file, Options{Root: ws, Kinds: registry(), SnapshotDir: dir, Params: map[string]string{"lr": "0.5"}})
	if err != nil || p.Stages["prep"].Params["lr"].Text != "0.5" {
		t.Fatalf("load with -p lr=0.5: %v, lr %q", err, p.Stages["prep"].Params["lr"].Text)
	}
	if _, err := Load(file, Options{Root: ws, Kinds: registry(), SnapshotDir: dir, Params: map[string]string{"nope": "1"}}); err == nil {
		t.Fatal("an unknown -p param loaded from a snapshot")
	}
	edited := strings.Replace(snapFixture, "retries: 2", "retries: 3", 1)
	if err := os.WriteFile(file, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := Load(file, o); err != nil || p.Stages["prep"].Retries != 3 {
		t.Fatalf("load after an edit: %v", err)
	}
	snaps, _ := filepath.Glob(filepath.Join(dir, "*.snap"))
	if len(snaps) != 1 {
		t.Fatalf("snapshots: %v; want one per pipeline file", snaps)
	}
	b, err := os.ReadFile(snaps[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, damage := range []func([]byte) []byte{
		func(b []byte) []byte { return b[:len(b)/2] },
		func(b []byte) []byte { c := append([]byte(nil), b...); c[len(c)-10] ^= 0xff; return c },
		func(b []byte) []byte { return nil },
	} {
		if err := os.WriteFile(snaps[0], damage(b), 0o644); err != nil {
			t.Fatal(err)
		}
		if p, err := Load(file, o); err != nil || p.Stages["prep"].Retries != 3 {
			t.Fatalf("load with a damaged snapshot: %v", err)
		}
	}
	bad := strings.Replace(edited, "retries: 3", "retries: many", 1)
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file, o); err == nil || !strings.Contains(err.Error(), "retries must be a whole number") {
		t.Fatalf("load of a broken edit: %v", err)
	}
}
