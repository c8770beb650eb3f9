package stages_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// Each built-in kind of pipelines/churn.yaml, run once decoding its input
// files and once given the tables the stage before kept in memory
// (table.Handoff, as the engine does within one run), writes the same
// bytes; and each table a kind keeps reads exactly as its file decodes
// (table.Verify). Given in memory, an input's file is not even there: the
// kind must not read it.
func TestHandoffSameOutputs(t *testing.T) {
	r := stages.NewRegistry()
	stages.RegisterBuiltins(r)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// 150,000 rows: three batches of table.BatchRows and a half.
	p, err := pipeline.Load(filepath.Join(root, "pipelines", "churn.yaml"), pipeline.Options{Root: root, Params: map[string]string{"rows": "150000"}, Kinds: r})
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	files := map[string]string{}    // "stage.output" → its file (decoded run)
	kept := map[string]*table.Mem{} // "stage.output" → its table in memory
	for _, name := range []string{"ingest", "preprocess", "features", "train", "validate"} {
		st := p.Stages[name]
		run := func(mode string, h *table.Handoff) map[string]string {
			dir := filepath.Join(work, mode, name)
			if err := os.MkdirAll(filepath.Join(dir, "in"), 0o755); err != nil {
				t.Fatal(err)
			}
			task := &stages.Task{Pipeline: p.Name, Stage: name, Dir: work, Params: st.Params, Scratch: dir,
				Inputs: map[string]string{}, Outputs: map[string]string{}, Log: &bytes.Buffer{}}
			for _, in := range st.Inputs {
				src := in.Stage + "." + in.Output
				task.Inputs[in.Name] = files[src]
				if m := kept[src]; h != nil && m != nil {
					// a path with no file: only the table in memory
					task.Inputs[in.Name] = filepath.Join(dir, "in", in.Name)
					h.Give(task.Inputs[in.Name], m)
				}
			}
			for _, o := range st.Outputs {
				task.Outputs[o.Name] = filepath.Join(dir, o.Name)
				if h != nil {
					h.Keep(task.Outputs[o.Name])
				}
			}
			ctx := context.Background()
			if h != nil {
				ctx = table.WithHandoff(ctx, h)
			}
			if err := st.Kind.Run(ctx, task); err != nil {
				t.Fatalf("%s (%s): %v", name, mode, err)
			}
			return task.Outputs
		}
		decoded := run("decoded", nil)
		h := table.NewHandoff(1 << 30)
		given := run("given", h)
		for _, o := range st.Outputs {
			a, err := os.ReadFile(decoded[o.Name])
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(given[o.Name])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("%s.%s: the bytes written with tables in memory differ from those written decoding the files", name, o.Name)
			}
			files[name+"."+o.Name] = decoded[o.Name]
			if m := h.Kept(given[o.Name]); m != nil {
				t.Cleanup(m.Release)
				if err := table.Verify(t.Context(), decoded[o.Name], m); err != nil {
					t.Errorf("%s.%s: %v", name, o.Name, err)
				}
				kept[name+"."+o.Name] = m
			}
		}
	}
	for _, want := range []string{"ingest.table", "preprocess.table", "features.table"} {
		if kept[want] == nil {
			t.Errorf("%s was not kept in memory", want)
		}
	}
}
