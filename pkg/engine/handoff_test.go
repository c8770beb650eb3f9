package engine

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// hoWrite writes a one-column table of n rows at path through th, as a
// built-in kind's table Writer does.
func hoWrite(t *testing.T, th *table.Handoff, path string, n int) {
	t.Helper()
	sc := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int64}}, nil)
	b := array.NewInt64Builder(memory.DefaultAllocator)
	defer b.Release()
	for i := range n {
		b.Append(int64(i))
	}
	col := b.NewArray()
	defer col.Release()
	rec := array.NewRecordBatch(sc, []arrow.Array{col}, int64(n))
	defer rec.Release()
	w, err := table.CreateWith(path, sc, table.Options{Handoff: th})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// A table is kept for the built-in stages of the run that read it, given
// to them by the digest of the output they read, and dropped when the last
// of them is done; a command stage's reads count for nothing, and a stage
// whose input has other bytes is given nothing.
func TestHandoffLifetime(t *testing.T) {
	ref := func(name, stage string) pipeline.Input {
		return pipeline.Input{Name: name, Source: stage + ".table", Stage: stage, Output: "table"}
	}
	out := []pipeline.Output{{Name: "table", Path: "table"}}
	p := &pipeline.Pipeline{Stages: map[string]*pipeline.Stage{
		"a":   {Name: "a", Outputs: out},
		"b":   {Name: "b", Inputs: []pipeline.Input{ref("table", "a")}, Outputs: out},
		"c":   {Name: "c", Inputs: []pipeline.Input{ref("table", "a")}},
		"cmd": {Name: "cmd", Run: "cat {{inputs.t}}", Inputs: []pipeline.Input{ref("t", "b")}},
		// a built-in kind run as a Slurm job: another process
		"job": {Name: "job", Inputs: []pipeline.Input{ref("table", "b")}, Executor: pipeline.ExecSlurm},
	}}
	all := map[string]bool{"a": true, "b": true, "c": true, "cmd": true, "job": true}
	h := newHandoffs(p, all, false)
	if h == nil || h.users["a/table"] != 2 || h.users["b/table"] != 0 {
		t.Fatalf("users: %v", h.users)
	}
	if newHandoffs(p, all, true) != nil {
		t.Error("a worker hands tables over")
	}
	if newHandoffs(p, map[string]bool{"b": true, "c": true}, false) != nil {
		t.Error("tables kept for an upstream that does not run")
	}

	dir := t.TempDir()
	for _, s := range []string{"a", "b", "c"} {
		if err := os.MkdirAll(filepath.Join(dir, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	outs := map[string]map[string]cache.Output{}
	upstream := func(s string) (map[string]cache.Output, bool) { o, ok := outs[s]; return o, ok }

	// a writes its table; it is kept under the digest of the file.
	th := h.task(p.Stages["a"], upstream, nil, filepath.Join(dir, "a"))
	if th == nil {
		t.Fatal("a: no handoff")
	}
	hoWrite(t, th, filepath.Join(dir, "a", "table"), 1000)
	d, _, err := digest.File(filepath.Join(dir, "a", "table"))
	if err != nil {
		t.Fatal(err)
	}
	outs["a"] = map[string]cache.Output{"table": {Digest: d}}
	h.collect(t.Context(), p.Stages["a"], th, outs["a"], filepath.Join(dir, "a"), "", func(msg string) { t.Error(msg) })
	if kt := h.tables[d]; kt == nil || kt.users != 2 || kt.mem.NumRows() != 1000 {
		t.Fatalf("a's table not kept for two readers: %+v", kt)
	}

	// b reads it from memory, and does not keep its own output (only a
	// command reads it).
	in := filepath.Join(dir, "b", "in", "table")
	th = h.task(p.Stages["b"], upstream, map[string]string{"table": in}, filepath.Join(dir, "b"))
	if th == nil {
		t.Fatal("b: no handoff")
	}
	if m := table.Given(table.WithHandoff(t.Context(), th), in); m == nil || m.NumRows() != 1000 {
		t.Fatal("b is not given a's table")
	}
	h.done(p.Stages["b"], upstream)
	if h.tables[d] == nil {
		t.Fatal("a's table dropped while c still needs it")
	}

	// A file of other bytes under a's name (a re-run, say) gets nothing.
	outs["a"] = map[string]cache.Output{"table": {Digest: digest.String("other bytes")}}
	if th := h.task(p.Stages["c"], upstream, map[string]string{"table": in}, filepath.Join(dir, "c")); th != nil {
		t.Error("c is given a table for other bytes")
	}
	outs["a"] = map[string]cache.Output{"table": {Digest: d}}

	h.done(p.Stages["c"], upstream)
	h.done(p.Stages["cmd"], upstream)
	if len(h.tables) != 0 || h.bytes != 0 {
		t.Errorf("tables still kept after their last reader: %d (%d bytes)", len(h.tables), h.bytes)
	}
}
