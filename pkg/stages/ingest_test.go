package stages

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// ingParams turns plain values into Params.
func ingParams(m map[string]any) map[string]Param {
	out := map[string]Param{}
	for k, v := range m {
		out[k] = Param{Text: fmt.Sprint(v), Value: v}
	}
	return out
}

type ingCase struct {
	kind   *Ingest
	dir    string
	params map[string]any
	inputs map[string]string // relative to dir
}

// run runs ingest and reads the table back.
func (c ingCase) run(t *testing.T) (arrow.Table, string, error) {
	t.Helper()
	k := c.kind
	if k == nil {
		k = NewIngest()
	}
	out := filepath.Join(t.TempDir(), "table.parquet")
	in := map[string]string{}
	for n, p := range c.inputs {
		in[n] = filepath.Join(c.dir, p)
	}
	var log bytes.Buffer
	task := &Task{Pipeline: "p", Stage: "ingest", Dir: c.dir, Params: ingParams(c.params), Inputs: in,
		Outputs: map[string]string{"table": out}, Scratch: t.TempDir(), Log: &log}
	if err := k.Run(t.Context(), task); err != nil {
		if _, statErr := os.Stat(out); statErr == nil {
			t.Errorf("a failed run left %s behind", out)
		}
		return nil, log.String(), err
	}
	tbl, err := table.ReadAll(t.Context(), out)
	if err != nil {
		t.Fatalf("read back: %v", err)
	}
	t.Cleanup(tbl.Release)
	return tbl, log.String(), nil
}

func (c ingCase) mustRun(t *testing.T) arrow.Table {
	t.Helper()
	tbl, log, err := c.run(t)
	if err != nil {
		t.Fatalf("ingest: %v\n%s", err, log)
	}
	return tbl
}

func (c ingCase) mustFail(t *testing.T, wants ...string) string {
	t.Helper()
	_, _, err := c.run(t)
	if err == nil {
		t.Fatalf("ingest succeeded, want an error containing %q", wants)
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	return err.Error()
}

func ingWrite(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func csvCase(t *testing.T, content string, params map[string]any) ingCase {
	t.Helper()
	dir := t.TempDir()
	ingWrite(t, dir, "data/in.csv", content)
	return ingCase{dir: dir, params: params, inputs: map[string]string{"src": "data/in.csv"}}
}

// ingCol returns column name of tbl as one array (tables here are small).
func ingCol(t *testing.T, tbl arrow.Table, name string) arrow.Array {
	t.Helper()
	idx := tbl.Schema().FieldIndices(name)
	if len(idx) == 0 {
		t.Fatalf("no column %q in %v", name, tbl.Schema())
	}
	ch := tbl.Column(idx[0]).Data()
	if len(ch.Chunks()) == 1 {
		return ch.Chunk(0)
	}
	a, err := array.Concatenate(ch.Chunks(), memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Release)
	return a
}

// ingStrings renders a column's values ("null" for nulls) for comparison.
func ingStrings(t *testing.T, tbl arrow.Table, name string) []string {
	t.Helper()
	a := ingCol(t, tbl, name)
	out := make([]string, a.Len())
	for i := range out {
		if a.IsNull(i) {
			out[i] = "null"
			continue
		}
		switch x := a.(type) {
		case *array.Dictionary:
			out[i] = x.Dictionary().(*array.String).Value(x.GetValueIndex(i))
		case *array.Date32:
			out[i] = x.Value(i).ToTime().Format("2006-01-02")
		case *array.Float32:
			out[i] = fmt.Sprint(x.Value(i))
		default:
			out[i] = x.ValueStr(i)
		}
	}
	return out
}

func ingTypeOf(t *testing.T, tbl arrow.Table, name string) string {
	t.Helper()
	idx := tbl.Schema().FieldIndices(name)
	if len(idx) == 0 {
		t.Fatalf("no column %q in %v", name, tbl.Schema())
	}
	return ingTypeName(tbl.Schema().Field(idx[0]).Type)
}

func ingEqual(t *testing.T, what string, got, want []string) {
	t.Helper()
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func TestIngestCheck(t *testing.T) {
	for _, tc := range []struct {
		name    string
		params  map[string]any
		inputs  []string
		outputs []string
		want    []string // Problem fields, in order
	}{
		{name: "input", inputs: []string{"src"}},
		{name: "source", params: map[string]any{"source": "data/*.csv"}},
		{name: "synthetic", params: map[string]any{"synthetic": "churn", "rows": 1000, "seed": 7}},
		{name: "all params", inputs: []string{"src"}, params: map[string]any{"format": "csv", "schema": map[string]any{"id": "int32", "plan": "category"},
			"narrow": false, "sample": map[string]any{"fraction": 0.5, "seed": 3}, "partitions": map[string]any{"dt": map[string]any{">=": "2026-11-01"}, "region": []any{"eu", "us"}},
			"delimiter": ";", "null_values": []any{"", "NA"}}},
		{name: "declared table output", inputs: []string{"src"}, outputs: []string{"table"}},
		{name: "nothing to read", want: []string{"inputs"}},
		{name: "unknown input", inputs: []string{"src", "other"}, want: []string{"inputs"}},
		{name: "other output", inputs: []string{"src"}, outputs: []string{"data"}, want: []string{"outputs"}},
		{name: "both", inputs: []string{"src"}, params: map[string]any{"source": "x.csv"}, want: []string{"params.source"}},
		{name: "source outside", params: map[string]any{"source": "../x.csv"}, want: []string{"params.source"}},
		{name: "unknown param", inputs: []string{"src"}, params: map[string]any{"sep": ";"}, want: []string{"params.sep"}},
		{name: "param type", inputs: []string{"src"}, params: map[string]any{"narrow": "yes"}, want: []string{"params.narrow"}},
		{name: "bad synthetic", params: map[string]any{"synthetic": "titanic"}, want: []string{"params.synthetic"}},
		{name: "synthetic with input", inputs: []string{"src"}, params: map[string]any{"synthetic": "churn"}, want: []string{"inputs"}},
		{name: "synthetic with schema", params: map[string]any{"synthetic": "churn", "schema": map[string]any{"a": "int8"}}, want: []string{"params.schema"}},
		{name: "synthetic rows", params: map[string]any{"synthetic": "churn", "rows": 0}, want: []string{"params.rows"}},
		{name: "rows without synthetic", inputs: []string{"src"}, params: map[string]any{"rows": 10}, want: []string{"params.rows"}},
		{name: "seed without synthetic", inputs: []string{"src"}, params: map[string]any{"seed": 10}, want: []string{"params.seed"}},
		{name: "format", inputs: []string{"src"}, params: map[string]any{"format": "xlsx"}, want: []string{"params.format"}},
		{name: "schema type", inputs: []string{"src"}, params: map[string]any{"schema": map[string]any{"id": "uint8"}}, want: []string{"params.schema"}},
		{name: "sample empty", inputs: []string{"src"}, params: map[string]any{"sample": map[string]any{"seed": 1}}, want: []string{"params.sample"}},
		{name: "sample both", inputs: []string{"src"}, params: map[string]any{"sample": map[string]any{"rows": 5, "fraction": 0.5}}, want: []string{"params.sample"}},
		{name: "sample fraction", inputs: []string{"src"}, params: map[string]any{"sample": map[string]any{"fraction": 1.5}}, want: []string{"params.sample"}},
		{name: "sample rows", inputs: []string{"src"}, params: map[string]any{"sample": map[string]any{"rows": 0}}, want: []string{"params.sample"}},
		{name: "partition op", inputs: []string{"src"}, params: map[string]any{"partitions": map[string]any{"dt": map[string]any{"~": "x"}}}, want: []string{"params.partitions"}},
		{name: "partition list", inputs: []string{"src"}, params: map[string]any{"partitions": map[string]any{"dt": []any{}}}, want: []string{"params.partitions"}},
		{name: "delimiter", inputs: []string{"src"}, params: map[string]any{"delimiter": "ab"}, want: []string{"params.delimiter"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Decl{Stage: "ingest", Params: ingParams(tc.params), Inputs: tc.inputs, Outputs: tc.outputs}
			ps := NewIngest().Check(d)
			var got []string
			for _, p := range ps {
				got = append(got, p.Field)
				if p.Msg == "" {
					t.Errorf("problem %s has no message", p.Field)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("problems %v, want fields %v", ps, tc.want)
			}
			if len(d.Outputs) != 1 || d.Outputs[0] != "table" {
				t.Errorf("outputs %v, want [table]", d.Outputs)
			}
		})
	}
}

// Types are inferred per column and narrowed; values and nulls survive.
func TestIngestCSVInference(t *testing.T) {
	c := csvCase(t, "id,amount,when,flag,name,mixed,empty,big,precise\n"+
		"1,1.5,2024-01-31,true,a,1,,9007199254740993,0.1\n"+
		"2,,2024-02-29,false,b,x,,1,0.25\n"+
		"300,2.25,,TRUE,a,2,,2,123456.789\n"+
		"-4,1e3,2023-12-01,,c,3.5,,3,-7\n", nil)
	tbl := c.mustRun(t)
	for col, want := range map[string]string{
		"id": "int16", "amount": "float32", "when": "date32", "flag": "bool", "name": "utf8",
		"mixed": "utf8", "empty": "utf8", "big": "int64", "precise": "float64",
	} {
		if got := ingTypeOf(t, tbl, col); got != want {
			t.Errorf("column %s: type %s, want %s", col, got, want)
		}
	}
	ingEqual(t, "id", ingStrings(t, tbl, "id"), []string{"1", "2", "300", "-4"})
	ingEqual(t, "amount", ingStrings(t, tbl, "amount"), []string{"1.5", "null", "2.25", "1000"})
	ingEqual(t, "when", ingStrings(t, tbl, "when"), []string{"2024-01-31", "2024-02-29", "null", "2023-12-01"})
	ingEqual(t, "flag", ingStrings(t, tbl, "flag"), []string{"true", "false", "true", "null"})
	ingEqual(t, "name", ingStrings(t, tbl, "name"), []string{"a", "b", "a", "c"})
	ingEqual(t, "mixed", ingStrings(t, tbl, "mixed"), []string{"1", "x", "2", "3.5"})
	ingEqual(t, "empty", ingStrings(t, tbl, "empty"), []string{"null", "null", "null", "null"})
	ingEqual(t, "big", ingStrings(t, tbl, "big"), []string{"9007199254740993", "1", "2", "3"})
	if v := ingCol(t, tbl, "precise").(*array.Float64).Value(2); v != 123456.789 {
		t.Errorf("precise[2] = %v", v)
	}
	for _, f := range tbl.Schema().Fields() {
		if !f.Nullable {
			t.Errorf("field %s is not nullable", f.Name)
		}
	}
}

// Low-cardinality strings become dictionaries; narrow: false keeps wide types.
func TestIngestNarrow(t *testing.T) {
	var b strings.Builder
	b.WriteString("plan,n,x\n")
	plans := []string{"basic", "premium", "family"}
	for i := range 40 {
		fmt.Fprintf(&b, "%s,%d,%d.5\n", plans[i%3], i, i)
	}
	tbl := csvCase(t, b.String(), nil).mustRun(t)
	for col, want := range map[string]string{"plan": "category(int8)", "n": "int8", "x": "float32"} {
		if got := ingTypeOf(t, tbl, col); got != want {
			t.Errorf("narrow: column %s: %s, want %s", col, got, want)
		}
	}
	got := ingStrings(t, tbl, "plan")
	ingEqual(t, "plan", got[:4], []string{"basic", "premium", "family", "basic"})
	if d := ingCol(t, tbl, "plan").(*array.Dictionary).Dictionary(); d.Len() != 3 {
		t.Errorf("dictionary has %d values, want 3", d.Len())
	}

	tbl = csvCase(t, b.String(), map[string]any{"narrow": false}).mustRun(t)
	for col, want := range map[string]string{"plan": "utf8", "n": "int64", "x": "float64"} {
		if got := ingTypeOf(t, tbl, col); got != want {
			t.Errorf("narrow false: column %s: %s, want %s", col, got, want)
		}
	}
}

// One row, all-equal columns, and float32-faithfulness at the edges.
func TestIngestEdgeValues(t *testing.T) {
	tbl := csvCase(t, "a,b,c\n7,7,x\n", nil).mustRun(t)
	if tbl.NumRows() != 1 || ingTypeOf(t, tbl, "a") != "int8" || ingTypeOf(t, tbl, "c") != "utf8" {
		t.Errorf("one row: %v rows, schema %v", tbl.NumRows(), tbl.Schema())
	}
	tbl = csvCase(t, "f,g,h,i\n16777216,0.1234567,1.00000001,nan\n16777217,1e-40,2,inf\n", nil).mustRun(t)
	for col, want := range map[string]string{"f": "int32", "g": "float32", "h": "float64", "i": "float32"} {
		if got := ingTypeOf(t, tbl, col); got != want {
			t.Errorf("column %s: %s, want %s", col, got, want)
		}
	}
	i := ingCol(t, tbl, "i").(*array.Float32)
	if !math.IsNaN(float64(i.Value(0))) || !math.IsInf(float64(i.Value(1)), 1) {
		t.Errorf("nan/inf: %v", i)
	}
	// 16777217 is not a float32, so a float column holding it stays float64.
	tbl = csvCase(t, "f\n16777217\n0.5\n", nil).mustRun(t)
	if got := ingTypeOf(t, tbl, "f"); got != "float64" {
		t.Errorf("f: %s, want float64", got)
	}
	ingEqual(t, "f", ingStrings(t, tbl, "f"), []string{"1.6777217e+07", "0.5"})
}

func TestIngestDeclaredSchema(t *testing.T) {
	content := "id,amount,name,when,ok\n1,1.5,a,2024-01-01,yes\n2,2.5,b,2024-01-02,0\n3,,a,,\n"
	tbl := csvCase(t, content, map[string]any{"schema": map[string]any{
		"id": "int64", "amount": "float64", "name": "category", "when": "string", "ok": "bool"}}).mustRun(t)
	for col, want := range map[string]string{"id": "int64", "amount": "float64", "name": "category(int8)", "when": "utf8", "ok": "bool"} {
		if got := ingTypeOf(t, tbl, col); got != want {
			t.Errorf("column %s: %s, want %s", col, got, want)
		}
	}
	ingEqual(t, "when", ingStrings(t, tbl, "when"), []string{"2024-01-01", "2024-01-02", "null"})
	ingEqual(t, "ok", ingStrings(t, tbl, "ok"), []string{"true", "false", "null"})

	tbl = csvCase(t, "x\n1.25\n", map[string]any{"schema": map[string]any{"x": "float32"}}).mustRun(t)
	if got := ingTypeOf(t, tbl, "x"); got != "float32" {
		t.Errorf("x: %s", got)
	}

	// Values that do not fit: the error names the file, line, row and column.
	csvCase(t, "id,n\n1,5\n2,300\n", map[string]any{"schema": map[string]any{"n": "int8"}}).
		mustFail(t, "data/in.csv: line 3 (row 2)", `column "n" (declared int8)`, "300 does not fit int8")
	csvCase(t, "id,d\n1,2024-01-01\n2,yesterday\n", map[string]any{"schema": map[string]any{"d": "date"}}).
		mustFail(t, "line 3 (row 2)", `column "d"`, `"yesterday" is not a date`)
	csvCase(t, "id\nabc\n", map[string]any{"schema": map[string]any{"id": "int32"}}).
		mustFail(t, "line 2 (row 1)", `"abc" is not an int32`)
	csvCase(t, "id\n1.5\n", map[string]any{"schema": map[string]any{"id": "int32"}}).
		mustFail(t, `"1.5" is not an int32`)
	csvCase(t, "id\n99999999999999999999\n", map[string]any{"schema": map[string]any{"id": "int64"}}).
		mustFail(t, "does not fit int64")
	csvCase(t, "id\n1\n", map[string]any{"schema": map[string]any{"nope": "int32"}}).
		mustFail(t, `param schema names column "nope"`, "columns: id")
}

func TestIngestMalformedCSV(t *testing.T) {
	csvCase(t, "a,b,c\n1,2,3\n4,5\n", nil).mustFail(t, "data/in.csv: line 3 (row 2)", "the record has 2 fields, the header has 3")
	csvCase(t, "a,b,c\n1,2,3\n4,5,6,7\n", nil).mustFail(t, "line 3 (row 2)", "4 fields")
	csvCase(t, "a,b\n1,\"x\n2,3\n", nil).mustFail(t, "line 2", "unterminated quoted field")
	csvCase(t, "a,b\n1,\"x\"y\n", nil).mustFail(t, "line 2", "after the closing quote")
	csvCase(t, "", nil).mustFail(t, "data/in.csv", "empty")
	csvCase(t, "a,b\n", nil).mustFail(t, "data/in.csv: no data rows")
	csvCase(t, "a,a\n1,2\n", nil).mustFail(t, `names column "a" twice`)
	// A quoted newline moves the line count on.
	csvCase(t, "a,b\n\"x\ny\",1\n2\n", nil).mustFail(t, "line 4 (row 2)")
}

func TestIngestCSVQuotingAndLineEnds(t *testing.T) {
	tbl := csvCase(t, "name,note,n\r\n\"Smith, J\",\"said \"\"hi\"\"\nthen left\",1\r\n\r\nplain,,2\r\n\"\",x,3", nil).mustRun(t)
	ingEqual(t, "name", ingStrings(t, tbl, "name"), []string{"Smith, J", "plain", "null"})
	ingEqual(t, "note", ingStrings(t, tbl, "note"), []string{"said \"hi\"\nthen left", "null", "x"})
	ingEqual(t, "n", ingStrings(t, tbl, "n"), []string{"1", "2", "3"})
	if ingTypeOf(t, tbl, "n") != "int8" {
		t.Errorf("n: %s", ingTypeOf(t, tbl, "n"))
	}
}

func TestIngestDelimiterAndNulls(t *testing.T) {
	tbl0 := csvCase(t, "\ufeffid,name\n1,a\n", nil).mustRun(t)
	ingEqual(t, "byte order mark", ingStrings(t, tbl0, "id"), []string{"1"})
	dir := t.TempDir()
	ingWrite(t, dir, "a.tsv", "x\ty\n1\tNA\n2\t3\n")
	tbl := ingCase{dir: dir, inputs: map[string]string{"src": "a.tsv"}, params: map[string]any{"null_values": []any{"", "NA"}}}.mustRun(t)
	ingEqual(t, "y", ingStrings(t, tbl, "y"), []string{"null", "3"})
	if ingTypeOf(t, tbl, "y") != "int8" {
		t.Errorf("y: %s", ingTypeOf(t, tbl, "y"))
	}
	tbl = csvCase(t, "x;y\n1;a\n", map[string]any{"delimiter": ";"}).mustRun(t)
	ingEqual(t, "y", ingStrings(t, tbl, "y"), []string{"a"})
	// Without "" among the null values an empty field is an empty string.
	tbl = csvCase(t, "x,y\n1,\n2,b\n", map[string]any{"null_values": []any{"NA"}}).mustRun(t)
	ingEqual(t, "y", ingStrings(t, tbl, "y"), []string{"", "b"})
}

func TestIngestMissingSource(t *testing.T) {
	dir := t.TempDir()
	ingCase{dir: dir, params: map[string]any{"source": "data/none.csv"}}.mustFail(t, "data/none.csv: no such file or directory")
	ingCase{dir: dir, params: map[string]any{"source": "data/*.csv"}}.mustFail(t, `source "data/*.csv" matches no files`)
	ingWrite(t, dir, "data/x.txt", "a\n1\n")
	ingCase{dir: dir, params: map[string]any{"source": "data/x.txt"}}.mustFail(t, "cannot tell the format")
	tbl := ingCase{dir: dir, params: map[string]any{"source": "data/x.txt", "format": "csv"}}.mustRun(t)
	if tbl.NumRows() != 1 {
		t.Errorf("rows %d", tbl.NumRows())
	}
	// An upstream output has no extension: the content tells.
	ingWrite(t, dir, "in/src", "a,b\n1,2\n")
	if tbl := (ingCase{dir: dir, inputs: map[string]string{"src": "in/src"}}).mustRun(t); tbl.NumCols() != 2 {
		t.Errorf("sniffed CSV: %v", tbl.Schema())
	}
	ingWrite(t, dir, "in2/src", "{\"a\": 1}\n")
	if tbl := (ingCase{dir: dir, inputs: map[string]string{"src": "in2/src"}}).mustRun(t); tbl.NumCols() != 1 {
		t.Errorf("sniffed JSON lines: %v", tbl.Schema())
	}
	pq, err := os.ReadFile("testdata/ingest/duckdb.parquet")
	if err != nil {
		t.Fatal(err)
	}
	ingWrite(t, dir, "in3/src", string(pq))
	if tbl := (ingCase{dir: dir, inputs: map[string]string{"src": "in3/src"}}).mustRun(t); tbl.NumRows() != 300 {
		t.Errorf("sniffed Parquet: %d rows", tbl.NumRows())
	}
	ingCase{dir: dir, params: map[string]any{"source": "data"}}.mustFail(t, "no data files")
}

// Many small blocks parsed by several workers give the same table as one
// block: columns whose kind changes late (int, then text) are re-read.
func TestIngestBlocksAgree(t *testing.T) {
	var b strings.Builder
	b.WriteString("id,code,v,late,note,w\n")
	for i := range 3000 {
		late := fmt.Sprint(i % 50)
		if i == 2900 {
			late = "n/a"
		}
		note := ""
		if i%7 == 0 {
			note = fmt.Sprintf("\"multi\nline %d\"", i)
		}
		code := fmt.Sprintf("c%d", i%5)
		if i == 1500 {
			code = "" // a null in a dictionary column
		}
		w := "1.1" // float32-faithful until the last rows, so early blocks narrow
		if i == 2990 {
			w = "0.123456789"
		}
		fmt.Fprintf(&b, "%d,%s,%d.25,%s,%s,%s\n", 100000+i, code, i, late, note, w)
	}
	dir := t.TempDir()
	ingWrite(t, dir, "in.csv", b.String())
	one := ingCase{dir: dir, inputs: map[string]string{"src": "in.csv"}}.mustRun(t)
	many := ingCase{kind: &Ingest{Workers: 4, blockSize: 1 << 10}, dir: dir, inputs: map[string]string{"src": "in.csv"}}.mustRun(t)
	if !one.Schema().Equal(many.Schema()) {
		t.Fatalf("schemas differ:\n%v\n%v", one.Schema(), many.Schema())
	}
	if ingTypeOf(t, many, "late") != "category(int8)" || ingTypeOf(t, many, "code") != "category(int8)" || ingTypeOf(t, many, "id") != "int32" {
		t.Errorf("schema %v", many.Schema())
	}
	for _, f := range one.Schema().Fields() {
		ingEqual(t, f.Name, ingStrings(t, many, f.Name), ingStrings(t, one, f.Name))
	}
	late := ingStrings(t, many, "late")
	if late[2900] != "n/a" || late[2899] != "49" || late[1] != "1" {
		t.Errorf("late: %q %q %q", late[1], late[2899], late[2900])
	}
	if w := ingCol(t, many, "w").(*array.Float64); w.Value(0) != 1.1 || w.Value(2990) != 0.123456789 {
		t.Errorf("w: %v, %v: a float64 column lost precision", w.Value(0), w.Value(2990))
	}
	if ingStrings(t, many, "code")[1500] != "null" {
		t.Error("the null in code was lost")
	}
	// An error in a late block names the right line and row.
	bad := strings.Replace(b.String(), "102500,", "102500,x,y,", 1)
	ingWrite(t, dir, "bad.csv", bad)
	line := strings.Count(bad[:strings.Index(bad, "102500,")], "\n") + 1
	ingCase{kind: &Ingest{Workers: 3, blockSize: 1 << 10}, dir: dir, inputs: map[string]string{"src": "bad.csv"}}.
		mustFail(t, fmt.Sprintf("bad.csv: line %d (row 2501)", line), "8 fields")
}

func TestIngestSample(t *testing.T) {
	var b strings.Builder
	b.WriteString("id\n")
	for i := range 2000 {
		fmt.Fprintf(&b, "%d\n", i)
	}
	dir := t.TempDir()
	ingWrite(t, dir, "in.csv", b.String())
	run := func(sample map[string]any, k *Ingest) []string {
		return ingStrings(t, ingCase{kind: k, dir: dir, inputs: map[string]string{"src": "in.csv"}, params: map[string]any{"sample": sample}}.mustRun(t), "id")
	}
	a := run(map[string]any{"fraction": 0.1, "seed": 7}, nil)
	if len(a) < 140 || len(a) > 260 {
		t.Errorf("fraction 0.1 of 2000 kept %d rows", len(a))
	}
	ingEqual(t, "same seed, other parallelism", run(map[string]any{"fraction": 0.1, "seed": 7}, &Ingest{Workers: 3, blockSize: 256}), a)
	if c := run(map[string]any{"fraction": 0.1, "seed": 8}, nil); strings.Join(c, ",") == strings.Join(a, ",") {
		t.Error("another seed kept the same rows")
	}
	// A larger fraction keeps a superset, in file order.
	big := run(map[string]any{"fraction": 0.3, "seed": 7}, nil)
	in := map[string]bool{}
	for _, v := range big {
		in[v] = true
	}
	for _, v := range a {
		if !in[v] {
			t.Fatalf("row %s of the 0.1 sample is not in the 0.3 sample", v)
		}
	}
	r := run(map[string]any{"rows": 100, "seed": 1}, nil)
	if len(r) != 100 {
		t.Errorf("rows 100 kept %d", len(r))
	}
	ingEqual(t, "rows sample again", run(map[string]any{"rows": 100, "seed": 1}, &Ingest{Workers: 2, blockSize: 512}), r)
	for i := 1; i < len(r); i++ {
		if len(r[i]) < len(r[i-1]) || (len(r[i]) == len(r[i-1]) && r[i] < r[i-1]) {
			t.Fatalf("sample out of file order: %s after %s", r[i], r[i-1])
		}
	}
	if all := run(map[string]any{"rows": 5000}, nil); len(all) != 2000 {
		t.Errorf("rows beyond the table kept %d", len(all))
	}
	csvCase(t, "id\n1\n", map[string]any{"sample": map[string]any{"fraction": 1e-9}}).mustFail(t, "sample kept none")
}

func TestIngestHivePartitions(t *testing.T) {
	dir := t.TempDir()
	ingWrite(t, dir, "events/dt=2026-10-31/region=eu/part-0.csv", "id,v\n1,a\n")
	ingWrite(t, dir, "events/dt=2026-11-01/region=eu/part-0.csv", "id,v\n2,b\n3,c\n")
	ingWrite(t, dir, "events/dt=2026-11-01/region=us/part-0.csv", "id,v\n4,d\n")
	ingWrite(t, dir, "events/dt=2026-11-02/region=us/part-0.csv", "id,v\n5,e\n")
	ingWrite(t, dir, "events/dt=2026-11-02/region=us/_SUCCESS", "")
	ingWrite(t, dir, "events/dt=2026-11-02/region=us/.part-0.csv.crc", "junk")
	// A directory the filter skips is never opened: its file is malformed.
	ingWrite(t, dir, "events/dt=2026-10-30/region=eu/part-0.csv", "id,v\n1,2,3\n\"")

	all := ingCase{dir: dir, inputs: map[string]string{"src": "events"}, params: map[string]any{"partitions": map[string]any{"dt": map[string]any{">": "2026-10-30"}}}}.mustRun(t)
	ingEqual(t, "id", ingStrings(t, all, "id"), []string{"1", "2", "3", "4", "5"})
	ingEqual(t, "dt", ingStrings(t, all, "dt"), []string{"2026-10-31", "2026-11-01", "2026-11-01", "2026-11-01", "2026-11-02"})
	ingEqual(t, "region", ingStrings(t, all, "region"), []string{"eu", "eu", "eu", "us", "us"})
	if ingTypeOf(t, all, "dt") != "date32" {
		t.Errorf("dt: %s", ingTypeOf(t, all, "dt"))
	}
	if names := all.Schema().Fields(); names[len(names)-2].Name != "dt" || names[len(names)-1].Name != "region" {
		t.Errorf("partition columns not last: %v", all.Schema())
	}

	tbl := ingCase{dir: dir, inputs: map[string]string{"src": "events"}, params: map[string]any{"partitions": map[string]any{
		"dt": map[string]any{">=": "2026-11-01"}, "region": []any{"us"}}}}.mustRun(t)
	ingEqual(t, "filtered id", ingStrings(t, tbl, "id"), []string{"4", "5"})

	ingCase{dir: dir, inputs: map[string]string{"src": "events"}}.mustFail(t, "events/dt=2026-10-30/region=eu/part-0.csv: line 2")
	ingCase{dir: dir, inputs: map[string]string{"src": "events"}, params: map[string]any{"partitions": map[string]any{"day": "x"}}}.mustFail(t, `filters on "day"`)
	ingCase{dir: dir, inputs: map[string]string{"src": "events"}, params: map[string]any{"partitions": map[string]any{"dt": "2030-01-01"}}}.mustFail(t, "match the partition filter")
	// The source param takes a glob too.
	tbl = ingCase{dir: dir, params: map[string]any{"source": "events/dt=2026-11-0*/region=*/part-0.csv"}}.mustRun(t)
	ingEqual(t, "glob id", ingStrings(t, tbl, "id"), []string{"2", "3", "4", "5"})
}

func TestIngestJSONLines(t *testing.T) {
	c := csvCase(t, "", nil)
	ingWrite(t, c.dir, "data/in.jsonl", `{"id": 1, "name": "a\"b", "score": 1.5, "ok": true, "tags": ["x", {"y": 1}], "when": "2024-01-02"}`+"\n"+
		"\n"+
		`{"id": 2, "name": "\u00e9\ud83d\ude00", "ok": false, "extra": null, "when": "2024-01-03"}`+"\n"+
		`{"name": "c", "id": 3, "score": 2, "ok": null, "when": null, "zip": 12345}`+"\n"+
		`{"id": 4, "zip": "AB-1"}`)
	c.inputs = map[string]string{"src": "data/in.jsonl"}
	tbl := c.mustRun(t)
	for col, want := range map[string]string{"id": "int8", "name": "utf8", "score": "float32", "ok": "bool", "tags": "category(int8)", "when": "date32", "extra": "utf8", "zip": "utf8"} {
		if got := ingTypeOf(t, tbl, col); got != want {
			t.Errorf("column %s: %s, want %s", col, got, want)
		}
	}
	ingEqual(t, "name", ingStrings(t, tbl, "name"), []string{`a"b`, "é😀", "c", "null"})
	ingEqual(t, "score", ingStrings(t, tbl, "score"), []string{"1.5", "null", "2", "null"})
	ingEqual(t, "ok", ingStrings(t, tbl, "ok"), []string{"true", "false", "null", "null"})
	ingEqual(t, "tags", ingStrings(t, tbl, "tags"), []string{`["x", {"y": 1}]`, "null", "null", "null"})
	ingEqual(t, "zip", ingStrings(t, tbl, "zip"), []string{"null", "null", "12345", "AB-1"})

	ingWrite(t, c.dir, "data/bad.jsonl", "{\"id\": 1}\n{\"id\": 2,}\n")
	c.inputs = map[string]string{"src": "data/bad.jsonl"}
	c.mustFail(t, "data/bad.jsonl: line 2 (row 2)", "expected a key string")
	ingWrite(t, c.dir, "data/bad2.jsonl", "{\"id\": 1}\n[1]\n")
	c.inputs = map[string]string{"src": "data/bad2.jsonl"}
	c.mustFail(t, "line 2", "expected a JSON object")
	ingWrite(t, c.dir, "data/bad3.jsonl", "{\"id\": 1}\n{\"id\": \"x\"}\n")
	c.inputs = map[string]string{"src": "data/bad3.jsonl"}
	c.params = map[string]any{"schema": map[string]any{"id": "int16"}}
	c.mustFail(t, "line 2 (row 2)", `column "id" (declared int16)`, `"x" is not an int16`)
}

// Parquet sources: types come from the file, then narrowing applies; the
// declared schema converts.
func TestIngestParquetSource(t *testing.T) {
	dir := t.TempDir()
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int64},
		{Name: "x", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
		{Name: "plan", Type: arrow.BinaryTypes.String},
		{Name: "cat", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}},
		{Name: "ts", Type: arrow.FixedWidthTypes.Timestamp_us},
	}, nil)
	bld := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer bld.Release()
	n := 40
	for i := range n {
		bld.Field(0).(*array.Int64Builder).Append(int64(1000 + i))
		if i == 3 {
			bld.Field(1).(*array.Float64Builder).AppendNull()
		} else {
			bld.Field(1).(*array.Float64Builder).Append(float64(i) + 0.25)
		}
		bld.Field(2).(*array.StringBuilder).Append([]string{"basic", "premium"}[i%2])
		if err := bld.Field(3).(*array.BinaryDictionaryBuilder).AppendString([]string{"u", "v", "w"}[i%3]); err != nil {
			t.Fatal(err)
		}
		bld.Field(4).(*array.TimestampBuilder).Append(arrow.Timestamp(int64(i) * 1e6))
	}
	rec := bld.NewRecordBatch()
	defer rec.Release()
	for _, name := range []string{"d/part-0.parquet", "d/part-1.parquet"} {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		w, err := table.Create(p, schema)
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
	tbl := ingCase{dir: dir, inputs: map[string]string{"src": "d"}}.mustRun(t)
	if tbl.NumRows() != int64(2*n) {
		t.Errorf("rows %d", tbl.NumRows())
	}
	for col, want := range map[string]string{"id": "int16", "x": "float32", "plan": "category(int8)", "cat": "category(int8)", "ts": "timestamp[us, tz=UTC]"} {
		if got := ingTypeOf(t, tbl, col); got != want && !(col == "ts" && strings.HasPrefix(got, "timestamp")) {
			t.Errorf("column %s: %s, want %s", col, got, want)
		}
	}
	xs := ingStrings(t, tbl, "x")
	ingEqual(t, "x", xs[:5], []string{"0.25", "1.25", "2.25", "null", "4.25"})
	ingEqual(t, "cat", ingStrings(t, tbl, "cat")[:4], []string{"u", "v", "w", "u"})

	tbl = ingCase{dir: dir, inputs: map[string]string{"src": "d/part-0.parquet"}, params: map[string]any{"schema": map[string]any{"id": "int32", "plan": "string", "x": "float64"}}}.mustRun(t)
	for col, want := range map[string]string{"id": "int32", "plan": "utf8", "x": "float64"} {
		if got := ingTypeOf(t, tbl, col); got != want {
			t.Errorf("declared: column %s: %s, want %s", col, got, want)
		}
	}
	ingCase{dir: dir, inputs: map[string]string{"src": "d/part-0.parquet"}, params: map[string]any{"schema": map[string]any{"id": "int8"}}}.
		mustFail(t, "d/part-0.parquet: row 1", `column "id" (declared int8)`, "1000 does not fit int8")
	ingWrite(t, dir, "bad.parquet", "PAR1 this is not parquet")
	ingCase{dir: dir, inputs: map[string]string{"src": "bad.parquet"}}.mustFail(t, "bad.parquet: not a readable Parquet file")
}

// Parquet files written by other tools (DuckDB and Polars; pyarrow is not
// packaged here) read, with their types narrowed.
func TestIngestForeignParquet(t *testing.T) {
	dir, err := filepath.Abs("testdata/ingest")
	if err != nil {
		t.Fatal(err)
	}
	for file, types := range map[string]map[string]string{
		"duckdb.parquet": {"customer_id": "int32", "tenure_months": "int8", "plan": "category(int8)", "region": "category(int8)",
			"monthly_charges": "float32", "signup_date": "date32", "churned": "int8", "last_login_days_ago": "int8"},
		"polars.parquet": {"customer_id": "int32", "tenure_months": "int8", "plan": "category(int8)", "region": "category(int8)",
			"monthly_charges": "float32", "signup_date": "utf8", "churned": "int8"},
	} {
		t.Run(file, func(t *testing.T) {
			tbl := ingCase{dir: dir, inputs: map[string]string{"src": file}}.mustRun(t)
			if tbl.NumRows() != 300 || tbl.NumCols() != 20 {
				t.Fatalf("%d rows, %d columns", tbl.NumRows(), tbl.NumCols())
			}
			for col, want := range types {
				if got := ingTypeOf(t, tbl, col); got != want {
					t.Errorf("column %s: %s, want %s", col, got, want)
				}
			}
			ingEqual(t, "plan", ingStrings(t, tbl, "plan")[:3], []string{"Basic", "Standard", "Standard"})
			ingEqual(t, "region", ingStrings(t, tbl, "region")[:3], []string{"region_11", "region_12", "region_09"})
			ingEqual(t, "monthly_charges", ingStrings(t, tbl, "monthly_charges")[:3], []string{"22.31", "61.11", "51.51"})
			nulls := 0
			for _, v := range ingStrings(t, tbl, "total_charges") {
				if v == "null" {
					nulls++
				}
			}
			if nulls != 3 {
				t.Errorf("total_charges has %d nulls, want 3", nulls)
			}
		})
	}
}

func TestIngestCancelled(t *testing.T) {
	c := csvCase(t, "a\n1\n", nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	out := filepath.Join(t.TempDir(), "t.parquet")
	err := NewIngest().Run(ctx, &Task{Dir: c.dir, Inputs: map[string]string{"src": filepath.Join(c.dir, "data/in.csv")}, Outputs: map[string]string{"table": out}, Log: &bytes.Buffer{}})
	if err == nil {
		t.Fatal("a cancelled run succeeded")
	}
}

// ingRemap of a slice of codes (an offset, with and without nulls) maps
// exactly the sliced rows: the new indices start at 0, and only a validity
// bitmap taken over from the codes keeps their offset.
func TestIngRemapSliced(t *testing.T) {
	dt := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}
	sb := array.NewStringBuilder(memory.DefaultAllocator)
	defer sb.Release()
	sb.AppendValues([]string{"x", "y", "z"}, nil)
	dict := sb.NewArray()
	defer dict.Release()
	remap := []int32{2, 0, 1} // code c becomes index remap[c]
	for _, nulls := range []bool{false, true} {
		b := array.NewInt32Builder(memory.DefaultAllocator)
		b.AppendValues([]int32{0, 1, 2, 0, 1, 2, 0, 1}, nil)
		if nulls {
			b.AppendNull()
		}
		all := b.NewArray()
		b.Release()
		codes := array.NewSlice(all, 2, int64(all.Len()))
		got := ingRemap(codes, remap, dt, dict).(*array.Dictionary)
		var strs []string
		for i := range got.Len() {
			if got.IsNull(i) {
				strs = append(strs, "-")
				continue
			}
			strs = append(strs, got.Dictionary().(*array.String).Value(got.GetValueIndex(i)))
		}
		want := []string{"y", "z", "x", "y", "z", "x"}
		if nulls {
			want = append(want, "-")
		}
		if !slices.Equal(strs, want) {
			t.Errorf("nulls %v: %v, want %v", nulls, strs, want)
		}
		got.Release()
		codes.Release()
		all.Release()
	}
}
