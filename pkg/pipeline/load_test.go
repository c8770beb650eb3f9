package pipeline

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/stages"
)

// churn is a realistic pipeline that uses every stage key.
const churn = `name: churn
version: 1
description: churn model
params:
  lr: 0.1
  epochs: 3
  split: raw
  cols: [a, b]
  shadow: false
stages:
  prepare:
    description: clean the raw data
    run: python scripts/prep.py --in {{inputs.raw}} --out {{outputs.table}}
    code: [scripts/prep.py]
    inputs:
      raw: data/${params.split}.csv
    outputs:
      table: table.parquet
  train:
    run: python scripts/train.py --lr ${params.lr} {{inputs.table}} {{outputs.model}} {{outputs.metrics}}
    code: scripts/*.py
    inputs:
      table: prepare.table
      labels: data/labels.csv
    outputs:
      model: model/
      metrics: metrics.json
    params:
      lr: ${params.lr}
      epochs: ${params.epochs}
      tag: "lr=${params.lr}"
      cols: ${params.cols}
      grid:
        - ${params.lr}
        - 0.01
      fixed: 7
    env: [SEED, CUDA_VISIBLE_DEVICES, HOME]
    timeout: 1h30m
    retries: 2
    cache: false
  report:
    run: echo done
    needs: [train]
`

func TestParseValid(t *testing.T) {
	ws := wsAbs(t)
	tests := []struct {
		name   string
		src    string
		params map[string]string
		check  func(t *testing.T, p *Pipeline)
	}{
		{
			name: "churn pipeline",
			src:  churn,
			check: func(t *testing.T, p *Pipeline) {
				if p.Name != "churn" {
					t.Errorf("Name = %q", p.Name)
				}
				if p.Root != ws {
					t.Errorf("Root = %q; want %q", p.Root, ws)
				}
				if want, _ := filepath.Abs("pipeline.yaml"); p.File != want {
					t.Errorf("File = %q; want %q", p.File, want)
				}
				eq(t, "Names", p.Names(), []string{"prepare", "train", "report"})
				eq(t, "Order", p.Graph.Order(), []string{"prepare", "train", "report"})
				prep := p.Stages["prepare"]
				eq(t, "prepare.Inputs", prep.Inputs, []Input{{Name: "raw", Source: "data/raw.csv", Path: "data/raw.csv"}})
				eq(t, "prepare.Outputs", prep.Outputs, []Output{{Name: "table", Path: "table.parquet"}})
				eq(t, "prepare.Code", prep.Code, []string{"scripts/prep.py"})
				tr := p.Stages["train"]
				eq(t, "train.Run", tr.Run, "python scripts/train.py --lr 0.1 {{inputs.table}} {{outputs.model}} {{outputs.metrics}}")
				eq(t, "train.Code", tr.Code, []string{"scripts/*.py"})
				eq(t, "train.Inputs", tr.Inputs, []Input{
					{Name: "labels", Source: "data/labels.csv", Path: "data/labels.csv"},
					{Name: "table", Source: "prepare.table", Stage: "prepare", Output: "table"},
				})
				// Outputs are sorted by name and cleaned ("model/" → "model").
				eq(t, "train.Outputs", tr.Outputs, []Output{{Name: "metrics", Path: "metrics.json"}, {Name: "model", Path: "model"}})
				eq(t, "train.Env", tr.Env, []string{"CUDA_VISIBLE_DEVICES", "HOME", "SEED"})
				eq(t, "train.Timeout", tr.Timeout, 90*time.Minute)
				eq(t, "train.Retries", tr.Retries, 2)
				eq(t, "train.Cache", tr.Cache, false)
				eq(t, "train.Params", tr.Params, map[string]stages.Param{
					"lr":     {Text: "0.1", Value: 0.1},
					"epochs": {Text: "3", Value: 3},
					"tag":    {Text: "lr=0.1", Value: "lr=0.1"},
					"cols":   {Text: `["a","b"]`, Value: []any{"a", "b"}},
					"grid":   {Text: `[0.1,0.01]`, Value: []any{0.1, 0.01}},
					"fixed":  {Text: "7", Value: 7},
				})
				rep := p.Stages["report"]
				eq(t, "report.Needs", rep.Needs, []string{"train"})
				eq(t, "report.Cache", rep.Cache, true) // default
				eq(t, "report.Timeout", rep.Timeout, time.Duration(0))
				eq(t, "report.Retries", rep.Retries, 0)
				eq(t, "deps(train)", p.Graph.Deps("train"), []string{"prepare"})
				eq(t, "deps(report)", p.Graph.Deps("report"), []string{"train"})
				eq(t, "pipeline params", p.Params, map[string]stages.Param{
					"lr":     {Text: "0.1", Value: 0.1},
					"epochs": {Text: "3", Value: 3},
					"split":  {Text: "raw", Value: "raw"},
					"cols":   {Text: `["a","b"]`, Value: []any{"a", "b"}},
					"shadow": {Text: "false", Value: false},
				})
				for _, n := range p.Names() {
					st := p.Stages[n]
					if st.KindName != "exec" || st.Kind == nil {
						t.Errorf("stage %s: kind %q %v; want exec (the default with run:)", n, st.KindName, st.Kind)
					}
				}
			},
		},
		{
			name: "declaration order kept, graph order topological",
			// Declared downstream first; names chosen so alphabetical order
			// is neither declaration nor topological order.
			src: `name: order
stages:
  zeta:
    run: cat {{inputs.m}}
    inputs: {m: mid.out}
  mid:
    run: cat {{inputs.a}} > {{outputs.out}}
    inputs: {a: alpha.out}
    outputs: {out: o}
  beta:
    run: "true"
  alpha:
    run: echo > {{outputs.out}}
    outputs: {out: o}
`,
			check: func(t *testing.T, p *Pipeline) {
				eq(t, "Names", p.Names(), []string{"zeta", "mid", "beta", "alpha"})
				// beta is ready first and declared before alpha.
				eq(t, "Order", p.Graph.Order(), []string{"beta", "alpha", "mid", "zeta"})
				checkTopo(t, p)
			},
		},
		{
			name: "needs adds an order-only edge",
			src: `name: needs
stages:
  publish:
    run: "true"
    needs: [train, check]
  check:
    run: "true"
    needs: train
  train:
    run: "true"
`,
			check: func(t *testing.T, p *Pipeline) {
				eq(t, "publish.Needs", p.Stages["publish"].Needs, []string{"train", "check"})
				eq(t, "check.Needs", p.Stages["check"].Needs, []string{"train"})
				eq(t, "deps(publish)", p.Graph.Deps("publish"), []string{"check", "train"})
				eq(t, "Order", p.Graph.Order(), []string{"train", "check", "publish"})
				if len(p.Stages["publish"].Inputs) != 0 {
					t.Errorf("needs created inputs: %v", p.Stages["publish"].Inputs)
				}
			},
		},
		{
			// The part before the first dot decides: "data/raw.csv" has
			// "data/raw" there, which is not a stage, so it is a workspace
			// path even though a stage is called "data". "data.raw" is the
			// stage's output.
			name: "data/raw.csv is a path even with a stage named data",
			src: `name: edge
stages:
  data:
    run: echo > {{outputs.raw}}
    outputs: {raw: raw.csv}
  use:
    run: cat {{inputs.file}} {{inputs.ref}}
    inputs:
      file: data/raw.csv
      ref: data.raw
`,
			check: func(t *testing.T, p *Pipeline) {
				eq(t, "use.Inputs", p.Stages["use"].Inputs, []Input{
					{Name: "file", Source: "data/raw.csv", Path: "data/raw.csv"},
					{Name: "ref", Source: "data.raw", Stage: "data", Output: "raw"},
				})
				if !p.Stages["use"].Inputs[1].IsRef() || p.Stages["use"].Inputs[0].IsRef() {
					t.Errorf("IsRef wrong: %+v", p.Stages["use"].Inputs)
				}
				eq(t, "deps(use)", p.Graph.Deps("use"), []string{"data"})
			},
		},
		{
			// testdata/ws/prep.csv exists, but "prep" names a stage, so
			// "prep.csv" is that stage's output "csv": stage names win over
			// the file system. "./prep.csv" (nothing before the first dot)
			// is how to read the file.
			name: "stage name wins over an existing file; ./ forces a path",
			src: `name: edge
stages:
  prep:
    run: echo > {{outputs.csv}}
    outputs: {csv: out.csv}
  use:
    run: cat {{inputs.ref}} {{inputs.file}}
    inputs:
      ref: prep.csv
      file: ./prep.csv
`,
			check: func(t *testing.T, p *Pipeline) {
				eq(t, "use.Inputs", p.Stages["use"].Inputs, []Input{
					{Name: "file", Source: "./prep.csv", Path: "prep.csv"},
					{Name: "ref", Source: "prep.csv", Stage: "prep", Output: "csv"},
				})
			},
		},
		{
			name: "dotted file name with no such stage is a path",
			src: `name: edge
stages:
  data:
    run: "true"
  use:
    run: "true"
    inputs: {f: scripts/train.py, dir: data, abs: ` + filepath.Join(ws, "data", "raw.csv") + `}
`,
			check: func(t *testing.T, p *Pipeline) {
				eq(t, "use.Inputs", p.Stages["use"].Inputs, []Input{
					// An absolute path stays absolute.
					{Name: "abs", Source: filepath.Join(ws, "data", "raw.csv"), Path: filepath.Join(ws, "data", "raw.csv")},
					// "data" has no dot: a directory, not the stage.
					{Name: "dir", Source: "data", Path: "data"},
					{Name: "f", Source: "scripts/train.py", Path: "scripts/train.py"},
				})
				if len(p.Graph.Deps("use")) != 0 {
					t.Errorf("paths created edges: %v", p.Graph.Deps("use"))
				}
			},
		},
		{
			name: "interpolation in run, params, inputs, code",
			src: `name: interp
params:
  n: 3
  f: 0.5
  flag: true
  s: hello world
  nothing: null
  file: labels
  script: train
  obj: {k: v, n: 1}
stages:
  s:
    run: echo ${params.n} ${ params.s } ${params.obj} ${params.nothing}. {{params.whole_n}}
    code: ["scripts/${params.script}.py"]
    inputs: {in: "data/${params.file}.csv"}
    params:
      whole_n: ${params.n}
      whole_f: "${params.f}"
      whole_b: ${params.flag}
      whole_null: ${params.nothing}
      whole_obj: ${params.obj}
      embedded_n: n=${params.n}
      embedded_two: ${params.n}x${params.f}
      nested: {a: "${params.flag}", b: [x, "${params.s}!"]}
`,
			check: func(t *testing.T, p *Pipeline) {
				st := p.Stages["s"]
				eq(t, "Run", st.Run, `echo 3 hello world {"k":"v","n":1} null. {{params.whole_n}}`)
				eq(t, "Code", st.Code, []string{"scripts/train.py"})
				eq(t, "Inputs", st.Inputs, []Input{{Name: "in", Source: "data/labels.csv", Path: "data/labels.csv"}})
				eq(t, "Params", st.Params, map[string]stages.Param{
					// A whole-value reference keeps the param's type.
					"whole_n":    {Text: "3", Value: 3},
					"whole_f":    {Text: "0.5", Value: 0.5},
					"whole_b":    {Text: "true", Value: true},
					"whole_null": {Text: "null", Value: nil},
					"whole_obj":  {Text: `{"k":"v","n":1}`, Value: map[string]any{"k": "v", "n": 1}},
					// Embedded references make text.
					"embedded_n":   {Text: "n=3", Value: "n=3"},
					"embedded_two": {Text: "3x0.5", Value: "3x0.5"},
					"nested":       {Text: `{"a":true,"b":["x","hello world!"]}`, Value: map[string]any{"a": true, "b": []any{"x", "hello world!"}}},
				})
			},
		},
		{
			name:   "-p overrides replace pipeline params and flow into stages",
			params: map[string]string{"lr": "0.05", "epochs": "10", "name": "v2", "on": "true", "list": "[1, 2]"},
			src: `name: over
params:
  lr: 0.1
  epochs: 3
  name: v1
  on: false
  list: [9]
  untouched: keep
stages:
  train:
    run: train --lr ${params.lr} --name ${params.name} --list ${params.list}
    params:
      lr: ${params.lr}
      epochs: ${params.epochs}
      on: ${params.on}
      label: ${params.name}-${params.untouched}
      list: ${params.list}
`,
			check: func(t *testing.T, p *Pipeline) {
				eq(t, "pipeline params", p.Params, map[string]stages.Param{
					"lr":     {Text: "0.05", Value: 0.05},
					"epochs": {Text: "10", Value: 10},
					"name":   {Text: "v2", Value: "v2"},
					"on":     {Text: "true", Value: true},
					// -p values are scalars: a list-looking value stays text.
					"list":      {Text: "[1, 2]", Value: "[1, 2]"},
					"untouched": {Text: "keep", Value: "keep"},
				})
				st := p.Stages["train"]
				eq(t, "Run", st.Run, "train --lr 0.05 --name v2 --list [1, 2]")
				eq(t, "stage params", st.Params, map[string]stages.Param{
					"lr":     {Text: "0.05", Value: 0.05},
					"epochs": {Text: "10", Value: 10},
					"on":     {Text: "true", Value: true},
					"label":  {Text: "v2-keep", Value: "v2-keep"},
					"list":   {Text: "[1, 2]", Value: "[1, 2]"},
				})
			},
		},
		{
			name: "kind defaults to exec; explicit exec kind",
			src: `name: kinds
stages:
  implicit:
    run: "true"
  explicit:
    kind: exec
    run: "true"
`,
			check: func(t *testing.T, p *Pipeline) {
				for _, n := range []string{"implicit", "explicit"} {
					st := p.Stages[n]
					if st.KindName != "exec" {
						t.Errorf("%s: KindName %q; want exec", n, st.KindName)
					}
					if _, ok := st.Kind.(*stages.Exec); !ok {
						t.Errorf("%s: Kind %T; want *stages.Exec", n, st.Kind)
					}
				}
			},
		},
		{
			name: "timeout retries cache forms",
			src: `name: knobs
stages:
  a: {run: "true", timeout: 90s, retries: 0, cache: true}
  b: {run: "true", timeout: 1m30s, retries: 100, cache: False}
  c: {run: "true", timeout: 250ms, retries: "3"}
`,
			check: func(t *testing.T, p *Pipeline) {
				for _, w := range []struct {
					st      string
					timeout time.Duration
					retries int
					cache   bool
				}{
					{"a", 90 * time.Second, 0, true},
					{"b", 90 * time.Second, 100, false},
					{"c", 250 * time.Millisecond, 3, true},
				} {
					st := p.Stages[w.st]
					if st.Timeout != w.timeout || st.Retries != w.retries || st.Cache != w.cache {
						t.Errorf("%s: timeout %v retries %d cache %v; want %v %d %v", w.st, st.Timeout, st.Retries, st.Cache, w.timeout, w.retries, w.cache)
					}
				}
			},
		},
		{
			name: "env single string and list, sorted",
			src: `name: env
stages:
  a: {run: "true", env: SEED}
  b: {run: "true", env: [Z_VAR, A_VAR, _M]}
  c: {run: "true", env: []}
`,
			check: func(t *testing.T, p *Pipeline) {
				eq(t, "a.Env", p.Stages["a"].Env, []string{"SEED"})
				eq(t, "b.Env", p.Stages["b"].Env, []string{"A_VAR", "Z_VAR", "_M"})
				if len(p.Stages["c"].Env) != 0 {
					t.Errorf("c.Env = %v", p.Stages["c"].Env)
				}
			},
		},
		{
			name: "anchors and aliases",
			src: `name: anchors
params:
  base: &base {lr: 0.1, depth: 4}
stages:
  a: &stage
    run: echo {{params.lr}}
    params: *base
  b: *stage
`,
			check: func(t *testing.T, p *Pipeline) {
				for _, n := range []string{"a", "b"} {
					eq(t, n+".Params", p.Stages[n].Params, map[string]stages.Param{
						"lr":    {Text: "0.1", Value: 0.1},
						"depth": {Text: "4", Value: 4},
					})
				}
			},
		},
		{
			name: "optional top-level keys; names with digits, dashes, underscores",
			src: `name: 0-pipe_line
stages:
  Stage_1-b:
    run: "true"
`,
			check: func(t *testing.T, p *Pipeline) {
				eq(t, "Name", p.Name, "0-pipe_line")
				eq(t, "Names", p.Names(), []string{"Stage_1-b"})
			},
		},
		{
			name: "CRLF line endings and a BOM-free document start",
			src:  "---\r\nname: crlf\r\nstages:\r\n  a:\r\n    run: echo hi\r\n",
			check: func(t *testing.T, p *Pipeline) {
				eq(t, "Run", p.Stages["a"].Run, "echo hi")
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := parse(t, tc.src, tc.params)
			checkInvariants(t, p)
			tc.check(t, p)
		})
	}
}

// TestLoad reads a file from disk: File is absolute and the result matches
// Parse of the same bytes.
func TestLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "churn.yaml")
	if err := os.WriteFile(file, []byte(churn), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := Load(file, opts(nil))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if p.File != file {
		t.Errorf("File = %q; want %q", p.File, file)
	}
	q := parse(t, churn, nil)
	q.File = p.File
	if !reflect.DeepEqual(stagesOf(p), stagesOf(q)) {
		t.Errorf("Load and Parse disagree")
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/no-such.yaml", opts(nil))
	if err == nil {
		t.Fatal("Load of a missing file succeeded")
	}
	want := "testdata/no-such.yaml: cannot read pipeline: no such file or directory"
	if err.Error() != want {
		t.Errorf("got %q\nwant %q", err.Error(), want)
	}
}

func TestParseNoKinds(t *testing.T) {
	_, err := Parse("p.yaml", []byte(churn), Options{Root: wsDir})
	if err == nil || err.Error() != "p.yaml: no stage kinds registered" {
		t.Errorf("got %v", err)
	}
}

// TestParseRootDefaultsToCwd: Root "" is the current directory, here the
// package directory, where testdata/ws/data/raw.csv exists.
func TestParseRootDefaultsToCwd(t *testing.T) {
	src := "name: cwd\nstages:\n  a:\n    run: \"true\"\n    inputs: {x: testdata/ws/data/raw.csv}\n"
	p, err := Parse("p.yaml", []byte(src), Options{Kinds: registry()})
	if err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	if p.Root != wd {
		t.Errorf("Root = %q; want %q", p.Root, wd)
	}
}

func stagesOf(p *Pipeline) map[string]Stage {
	m := map[string]Stage{}
	for n, st := range p.Stages {
		c := *st
		c.Kind = nil
		m[n] = c
	}
	return m
}

// checkInvariants holds for every successfully loaded pipeline.
func checkInvariants(t testing.TB, p *Pipeline) {
	t.Helper()
	if len(p.Names()) != len(p.Stages) {
		t.Errorf("Names %v but %d stages", p.Names(), len(p.Stages))
	}
	for _, n := range p.Names() {
		st, ok := p.Stages[n]
		if !ok {
			t.Errorf("Names has %q but Stages does not", n)
			continue
		}
		if st.Name != n {
			t.Errorf("stage %q has Name %q", n, st.Name)
		}
		if st.Kind == nil || st.KindName == "" {
			t.Errorf("stage %q has no kind", n)
		}
	}
	checkTopo(t, p)
}

// checkTopo checks that Graph.Order lists every stage once, after every
// stage it reads from or needs.
func checkTopo(t testing.TB, p *Pipeline) {
	t.Helper()
	order := p.Graph.Order()
	pos := map[string]int{}
	for i, n := range order {
		if _, dup := pos[n]; dup {
			t.Errorf("Order lists %q twice: %v", n, order)
		}
		pos[n] = i
	}
	if len(order) != len(p.Stages) {
		t.Errorf("Order %v has %d stages; want %d", order, len(order), len(p.Stages))
	}
	for n, st := range p.Stages {
		if _, ok := pos[n]; !ok {
			t.Errorf("Order %v misses %q", order, n)
		}
		var ups []string
		for _, in := range st.Inputs {
			if in.IsRef() {
				ups = append(ups, in.Stage)
			}
		}
		ups = append(ups, st.Needs...)
		for _, u := range ups {
			if pos[u] >= pos[n] {
				t.Errorf("Order %v: %q comes before its upstream %q", order, n, u)
			}
		}
	}
}

func eq[T any](t *testing.T, what string, got, want T) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s:\n got %#v\nwant %#v", what, got, want)
	}
}

// TestParseCacheRemote: the top-level cache section names the remote and
// its settings; a relative directory is relative to the workspace.
func TestParseCacheRemote(t *testing.T) {
	p := parse(t, `name: team
cache:
  remote: s3://orch-cache/team/churn?region=eu-west-1
  endpoint: http://minio:9000
  path_style: true
  concurrency: 8
  part_size: 16MiB
stages:
  a: {run: "true"}
`, nil)
	r := p.Cache.Remote
	if r == nil || r.S3 == nil {
		t.Fatalf("Cache.Remote = %+v; want an s3 remote", r)
	}
	c := r.S3
	if c.Bucket != "orch-cache" || c.Prefix != "team/churn" || c.Region != "eu-west-1" || c.Endpoint != "http://minio:9000" ||
		c.PathStyle == nil || !*c.PathStyle || c.Concurrency != 8 || c.PartSize != 16<<20 {
		t.Errorf("S3 config = %+v", c)
	}
	if r.String() != "s3://orch-cache/team/churn" {
		t.Errorf("String() = %q", r.String())
	}

	p = parse(t, "name: dir\ncache: {remote: shared/cache}\nstages:\n  a: {run: \"true\"}\n", nil)
	if want := filepath.Join(wsAbs(t), "shared/cache"); p.Cache.Remote == nil || p.Cache.Remote.Dir != want {
		t.Errorf("directory remote = %+v; want %s", p.Cache.Remote, want)
	}
	p = parse(t, "name: none\ncache:\nstages:\n  a: {run: \"true\"}\n", nil)
	if p.Cache.Remote != nil {
		t.Errorf("empty cache section: Remote = %+v", p.Cache.Remote)
	}
}
