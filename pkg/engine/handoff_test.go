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

// hoRef is input name reading stage's output "table"; hoOut declares it.
func hoRef(name, stage string) pipeline.Input {
	return pipeline.Input{Name: name, Source: stage + ".table", Stage: stage, Output: "table"}
}

var hoOut = []pipeline.Output{{Name: "table", Path: "table"}}

// A table is kept for the built-in stages of the run that read it, given
// to them by the digest of the output they read, and dropped when the last
// of them is done; a command stage's reads count for nothing, and a stage
// whose input has other bytes is given nothing.
func TestHandoffLifetime(t *testing.T) {
	ref, out := hoRef, hoOut
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

// Readers of the same bytes through another output: e reads cp's copy of
// a's file (a command's output), so it is not counted among the table's
// readers and must not be given it (it decodes the file): given it, it
// could still be reading when b, the one counted reader, is done and the
// table is dropped (a panic in the reader, found in review). Two built-in
// outputs with the same bytes count the readers of both.
func TestHandoffSameBytesOtherOutput(t *testing.T) {
	ref, out := hoRef, hoOut
	p := &pipeline.Pipeline{Stages: map[string]*pipeline.Stage{
		"a":  {Name: "a", Outputs: out},
		"a2": {Name: "a2", Outputs: out}, // a built-in stage writing the same bytes
		"cp": {Name: "cp", Run: "cp", Inputs: []pipeline.Input{ref("t", "a")}, Outputs: out},
		"b":  {Name: "b", Inputs: []pipeline.Input{ref("table", "a")}},
		"b2": {Name: "b2", Inputs: []pipeline.Input{ref("table", "a2")}},
		"e":  {Name: "e", Inputs: []pipeline.Input{ref("table", "cp")}},
	}}
	all := map[string]bool{"a": true, "a2": true, "cp": true, "b": true, "b2": true, "e": true}
	h := newHandoffs(p, all, false)
	dir := t.TempDir()
	outs := map[string]map[string]cache.Output{}
	upstream := func(s string) (map[string]cache.Output, bool) { o, ok := outs[s]; return o, ok }
	write := func(st string) {
		t.Helper()
		d := filepath.Join(dir, st)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		th := h.task(p.Stages[st], upstream, nil, d)
		hoWrite(t, th, filepath.Join(d, "table"), 1000)
		dg, _, err := digest.File(filepath.Join(d, "table"))
		if err != nil {
			t.Fatal(err)
		}
		outs[st] = map[string]cache.Output{"table": {Digest: dg}}
		h.collect(t.Context(), p.Stages[st], th, outs[st], d, "", func(string) {})
	}
	write("a")
	outs["cp"] = outs["a"] // cp copied a's file: the same digest
	if th := h.task(p.Stages["e"], upstream, map[string]string{"table": filepath.Join(dir, "e-in")}, filepath.Join(dir, "e")); th != nil {
		t.Fatal("e, which reads cp's copy, was given a's table")
	}
	write("a2")
	if n := len(h.tables); n != 1 {
		t.Fatalf("%d tables kept for one content, want 1", n)
	}
	inB2 := filepath.Join(dir, "b2-in")
	thB2 := h.task(p.Stages["b2"], upstream, map[string]string{"table": inB2}, filepath.Join(dir, "b2"))
	if thB2 == nil {
		t.Fatal("b2 not given the table kept for its bytes")
	}
	r, err := table.Open(table.WithHandoff(t.Context(), thB2), inB2, nil) // b2 starts reading
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h.done(p.Stages["b"], upstream) // b is done first: b2 still reads
	if len(h.tables) != 1 {
		t.Fatal("the table was dropped while b2, a counted reader, still reads it")
	}
	rows := 0
	for {
		rec, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if rec == nil {
			break
		}
		rows += int(rec.NumRows())
	}
	if rows != 1000 {
		t.Fatalf("b2 read %d rows, want 1000", rows)
	}
	h.done(p.Stages["b2"], upstream)
	h.done(p.Stages["e"], upstream)
	if len(h.tables) != 0 || h.bytes != 0 {
		t.Fatalf("after every reader: %d tables, %d bytes kept", len(h.tables), h.bytes)
	}
}
