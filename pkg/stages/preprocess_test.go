package stages

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// ppTInput is a small churn-like table: id 2 appears twice, total_charges
// has a null and an outlier.
func ppTInput(t *testing.T) string {
	return opsTWrite(t, t.TempDir(),
		opsTCol{name: "customer_id", vals: []int64{1, 2, 2, 3, 4}},
		opsTCol{name: "tenure_months", vals: []int64{1, 2, 3, 4, 5}},
		opsTCol{name: "total_charges", vals: []float64{10, 0, 30, 40, 1000}, null: []int{1}},
		opsTCol{name: "plan", vals: []string{"a", "b", "", "a", "c"}, null: []int{2}, dict: true},
	)
}

func ppTRun(t *testing.T, in string, params map[string]any) (*opsTTable, string) {
	t.Helper()
	outs, log, err := opsTRun(t, NewPreprocess(), in, params, "table")
	if err != nil {
		t.Fatalf("preprocess: %v\n%s", err, log)
	}
	return opsTRead(t, outs["table"]), log
}

func TestPreprocessDedupeFillClip(t *testing.T) {
	in := ppTInput(t)
	// keep first: rows 0, 1, 3, 4. total_charges 10, null, 40, 1000: the
	// median of 10, 40, 1000 is 40. Quantiles of 10, 40, 40, 1000 (numpy
	// linear): q=0.25 → virtual index 0.75 → 40 - 30*0.25 = 32.5; q=0.75 →
	// 2.25 → 40 + 960*0.25 = 280.
	got, log := ppTRun(t, in, map[string]any{
		"dedupe": map[string]any{"key": "customer_id", "keep": "first"},
		"fill":   map[string]any{"total_charges": "median"},
		"clip":   map[string]any{"columns": []string{"total_charges"}, "quantiles": []float64{0.25, 0.75}},
	})
	opsTNear(t, "customer_id", got.nums["customer_id"], []float64{1, 2, 3, 4}, 0)
	opsTNear(t, "total_charges", got.nums["total_charges"], []float64{32.5, 40, 40, 280}, 0)
	if !slices.Equal(got.strs["plan"], []string{"a", "b", "a", "c"}) {
		t.Errorf("plan %v", got.strs["plan"])
	}
	if got.types["plan"].ID() != arrow.DICTIONARY || got.types["total_charges"].ID() != arrow.FLOAT64 {
		t.Errorf("types changed: %v", got.types)
	}
	if !strings.Contains(log, "5 rows in, 4 out") || !strings.Contains(log, "filled 1 total_charges with 40") {
		t.Errorf("log: %s", log)
	}

	// keep last: rows 0, 2, 3, 4; median of 10, 30, 40, 1000 is 35.
	got, _ = ppTRun(t, in, map[string]any{
		"dedupe": map[string]any{"key": "customer_id", "keep": "last"},
		"fill":   map[string]any{"total_charges": "median"},
	})
	opsTNear(t, "keep last total", got.nums["total_charges"], []float64{10, 30, 40, 1000}, 0)
	opsTNear(t, "keep last tenure", got.nums["tenure_months"], []float64{1, 3, 4, 5}, 0)

	// keep none: id 2 goes entirely; the fill is computed without it.
	got, _ = ppTRun(t, in, map[string]any{
		"dedupe": map[string]any{"key": "customer_id", "keep": "none"},
		"fill":   map[string]any{"total_charges": "mean"},
	})
	opsTNear(t, "keep none id", got.nums["customer_id"], []float64{1, 3, 4}, 0)
	opsTNear(t, "keep none total", got.nums["total_charges"], []float64{10, 40, 1000}, 0)
}

func TestPreprocessFilterBeforeDedupe(t *testing.T) {
	in := ppTInput(t)
	// Row 1 (id 2, tenure 2) fails the filter, so row 2 (id 2) is the first
	// id 2 left and is kept. Row 0 fails too.
	got, _ := ppTRun(t, in, map[string]any{
		"filter": []any{"tenure_months >= 3"},
		"dedupe": map[string]any{"key": "customer_id"},
	})
	opsTNear(t, "tenure", got.nums["tenure_months"], []float64{3, 4, 5}, 0)
}

func TestPreprocessFilters(t *testing.T) {
	in := ppTInput(t)
	cases := []struct {
		filter []any
		tenure []float64
	}{
		{[]any{"tenure_months > 1", "tenure_months != 4"}, []float64{2, 3, 5}},
		{[]any{"total_charges < 35"}, []float64{1, 3}}, // the null row fails
		{[]any{"total_charges is null"}, []float64{2}},
		{[]any{"total_charges is not null", "tenure_months <= 3"}, []float64{1, 3}},
		{[]any{"plan == 'a'"}, []float64{1, 4}},
		{[]any{"plan != a"}, []float64{2, 5}}, // the null plan fails !=
		{[]any{"plan in [b, c]"}, []float64{2, 5}},
		{[]any{"plan not in ['a']"}, []float64{2, 5}},
		{[]any{map[string]any{"column": "tenure_months", "op": "in", "value": []any{1, 5}}}, []float64{1, 5}},
		{[]any{map[string]any{"column": "plan", "op": "is_null"}}, []float64{3}},
		{[]any{"tenure_months == 1.5e1"}, []float64{}},
		{[]any{"tenure_months >= -1"}, []float64{1, 2, 3, 4, 5}},
	}
	for _, c := range cases {
		got, _ := ppTRun(t, in, map[string]any{"filter": c.filter})
		opsTNear(t, "filter "+strings.Join(strings.Fields(ppTString(c.filter)), " "), got.nums["tenure_months"], c.tenure, 0)
	}
}

func ppTString(v []any) string {
	var s []string
	for _, x := range v {
		if str, ok := x.(string); ok {
			s = append(s, str)
		} else {
			s = append(s, "{...}")
		}
	}
	return strings.Join(s, "; ")
}

func TestPreprocessFillKinds(t *testing.T) {
	in := opsTWrite(t, t.TempDir(),
		opsTCol{name: "f", vals: []float64{1, 0, 2, 2, math.NaN()}, null: []int{1}},
		opsTCol{name: "i", vals: []int32{1, 0, 2, 4, 0}, null: []int{1, 4}},
		opsTCol{name: "s", vals: []string{"x", "", "y", "y", ""}, null: []int{1, 4}},
		opsTCol{name: "d", vals: []string{"x", "", "y", "x", ""}, null: []int{1, 4}, dict: true},
		opsTCol{name: "b", vals: []bool{true, false, true, false, false}, null: []int{0}},
	)
	got, _ := ppTRun(t, in, map[string]any{"fill": map[string]any{
		"f": "mode",                             // 2 appears twice; NaN counts as missing
		"i": "mean",                             // mean of 1, 2, 4 = 7/3, rounded to 2 for an integer column
		"s": "mode",                             // y
		"d": map[string]any{"value": "unknown"}, // a constant
		"b": true,
	}})
	opsTNear(t, "f", got.nums["f"], []float64{1, 2, 2, 2, 2}, 0)
	opsTNear(t, "i", got.nums["i"], []float64{1, 2, 2, 4, 2}, 0)
	if !slices.Equal(got.strs["s"], []string{"x", "y", "y", "y", "y"}) {
		t.Errorf("s %v", got.strs["s"])
	}
	if !slices.Equal(got.strs["d"], []string{"x", "unknown", "y", "x", "unknown"}) || got.types["d"].ID() != arrow.DICTIONARY {
		t.Errorf("d %v %v", got.strs["d"], got.types["d"])
	}
	if !slices.Equal(got.strs["b"], []string{"true", "false", "true", "false", "false"}) {
		t.Errorf("b %v", got.strs["b"])
	}
	if got.types["i"].ID() != arrow.INT32 {
		t.Errorf("i became %v", got.types["i"])
	}

	// Mode ties go to the smallest value; median of an even count averages.
	in = opsTWrite(t, t.TempDir(),
		opsTCol{name: "f", vals: []float64{3, 1, 0, 4, 5}, null: []int{2}},
		opsTCol{name: "g", vals: []float64{3, 1, 0, 4, 2}, null: []int{2}},
	)
	got, _ = ppTRun(t, in, map[string]any{"fill": map[string]any{"f": "mode", "g": "median"}})
	opsTNear(t, "mode tie", got.nums["f"], []float64{3, 1, 1, 4, 5}, 0)
	opsTNear(t, "median even", got.nums["g"], []float64{3, 1, 2.5, 4, 2}, 0)
}

func TestPreprocessClip(t *testing.T) {
	in := opsTWrite(t, t.TempDir(),
		opsTCol{name: "x", vals: []float64{1, 2, 3, 4, 100}},
		opsTCol{name: "n", vals: []int16{1, 2, 3, 4, 100}},
		opsTCol{name: "same", vals: []float32{7, 7, 7, 7, 7}},
		opsTCol{name: "gap", vals: []float64{1, 0, 2, 3, 4}, null: []int{1}},
	)
	// IQR: q1 = 2, q3 = 4, iqr 2, k 1 → [0, 6].
	got, _ := ppTRun(t, in, map[string]any{"clip": map[string]any{"columns": []string{"x", "n", "same", "gap"}, "method": "iqr", "k": 1}})
	opsTNear(t, "iqr x", got.nums["x"], []float64{1, 2, 3, 4, 6}, 0)
	opsTNear(t, "iqr n", got.nums["n"], []float64{1, 2, 3, 4, 6}, 0)
	opsTNear(t, "same", got.nums["same"], []float64{7, 7, 7, 7, 7}, 0)
	// gap: values 1,2,3,4: q1 1.75, q3 3.25, iqr 1.5 → [0.25, 4.75]; null stays.
	opsTNear(t, "gap", got.nums["gap"], []float64{1, math.NaN(), 2, 3, 4}, 0)

	// Quantiles 0.1/0.9 of 1,2,3,4,100: 1.4 and 61.6. The integer column
	// keeps its type, its bounds rounded inward to 2 and 61.
	got, _ = ppTRun(t, in, map[string]any{"clip": map[string]any{"columns": []string{"x", "n"}, "quantiles": []float64{0.1, 0.9}}})
	opsTNear(t, "q x", got.nums["x"], []float64{1.4, 2, 3, 4, 61.6}, 1e-12)
	opsTNear(t, "q n", got.nums["n"], []float64{2, 2, 3, 4, 61}, 0)
	if got.types["n"].ID() != arrow.INT16 {
		t.Errorf("n became %v", got.types["n"])
	}
}

func TestPreprocessCast(t *testing.T) {
	in := opsTWrite(t, t.TempDir(),
		opsTCol{name: "a", vals: []float64{1.5, 2.25, 0}, null: []int{2}},
		opsTCol{name: "b", vals: []int64{1, 2, 127}},
		opsTCol{name: "c", vals: []string{"x", "y", "x"}},
		opsTCol{name: "d", vals: []int64{1, 0, 1}},
	)
	got, _ := ppTRun(t, in, map[string]any{"cast": map[string]any{"a": "float32", "b": "int8", "c": "category", "d": "bool"}})
	want := map[string]arrow.Type{"a": arrow.FLOAT32, "b": arrow.INT8, "c": arrow.DICTIONARY, "d": arrow.BOOL}
	for col, id := range want {
		if got.types[col].ID() != id {
			t.Errorf("%s: type %v, want %v", col, got.types[col], id)
		}
	}
	opsTNear(t, "a", got.nums["a"], []float64{1.5, 2.25, math.NaN()}, 0)
	if !slices.Equal(got.strs["c"], []string{"x", "y", "x"}) {
		t.Errorf("c %v", got.strs["c"])
	}

	// A value that does not fit is an error naming the column and row.
	in = opsTWrite(t, t.TempDir(), opsTCol{name: "b", vals: []int64{1, 2, 300, 4}})
	outs, _, err := opsTRun(t, NewPreprocess(), in, map[string]any{"cast": map[string]any{"b": "int8"}}, "table")
	if err == nil || !strings.Contains(err.Error(), `cast b to int8`) || !strings.Contains(err.Error(), "row 3") || !strings.Contains(err.Error(), "300") {
		t.Errorf("overflow: %v", err)
	}
	// ...and the failed stage leaves no table a reader would take for a
	// whole one (no footer over the rows written so far).
	if r, err := table.Open(t.Context(), outs["table"], nil); err == nil {
		r.Close()
		t.Errorf("the output of a failed preprocess opens as a table")
	}
	// With a filter before it, the row named is still the input row.
	_, _, err = opsTRun(t, NewPreprocess(), in, map[string]any{"filter": []any{"b > 1"}, "cast": map[string]any{"b": "int8"}}, "table")
	if err == nil || !strings.Contains(err.Error(), "row 3") {
		t.Errorf("overflow after filter: %v", err)
	}
	in = opsTWrite(t, t.TempDir(), opsTCol{name: "s", vals: []string{"1", "x"}})
	_, _, err = opsTRun(t, NewPreprocess(), in, map[string]any{"cast": map[string]any{"s": "int32"}}, "table")
	if err == nil || !strings.Contains(err.Error(), "row 2") {
		t.Errorf("unparsable: %v", err)
	}
}

func TestPreprocessEdgeTables(t *testing.T) {
	params := map[string]any{
		"dedupe": map[string]any{"key": "id"},
		"fill":   map[string]any{"x": "median"},
		"clip":   map[string]any{"columns": []string{"x"}},
		"filter": []any{"x > -100"},
		"cast":   map[string]any{"x": "float32"},
	}
	// Empty table: an empty output with the cast schema.
	in := opsTWrite(t, t.TempDir(), opsTCol{name: "id", vals: []int64{}}, opsTCol{name: "x", vals: []float64{}})
	got, _ := ppTRun(t, in, params)
	if got.rows != 0 || got.types["x"].ID() != arrow.FLOAT32 {
		t.Errorf("empty: %d rows, x %v", got.rows, got.types["x"])
	}
	// One row.
	in = opsTWrite(t, t.TempDir(), opsTCol{name: "id", vals: []int64{7}}, opsTCol{name: "x", vals: []float64{3}})
	got, _ = ppTRun(t, in, params)
	opsTNear(t, "one row", got.nums["x"], []float64{3}, 0)
	// Null keys are one key (as pandas' drop_duplicates).
	in = opsTWrite(t, t.TempDir(), opsTCol{name: "id", vals: []int64{0, 1, 0}, null: []int{0, 2}}, opsTCol{name: "x", vals: []float64{1, 2, 3}})
	got, _ = ppTRun(t, in, map[string]any{"dedupe": map[string]any{"key": "id"}})
	opsTNear(t, "null keys", got.nums["x"], []float64{1, 2}, 0)
	// Only missing values: no median to fill with.
	in = opsTWrite(t, t.TempDir(), opsTCol{name: "id", vals: []int64{1, 2}}, opsTCol{name: "x", vals: []float64{0, 0}, null: []int{0, 1}})
	_, _, err := opsTRun(t, NewPreprocess(), in, map[string]any{"fill": map[string]any{"x": "median"}}, "table")
	if err == nil || !strings.Contains(err.Error(), "only missing values") {
		t.Errorf("all-null fill: %v", err)
	}
	// No params at all: a copy.
	got, _ = ppTRun(t, in, map[string]any{})
	if got.rows != 2 {
		t.Errorf("copy: %d rows", got.rows)
	}
}

func TestPreprocessMultiKeyDedupe(t *testing.T) {
	in := opsTWrite(t, t.TempDir(),
		opsTCol{name: "a", vals: []int64{1, 1, 2, 1}},
		opsTCol{name: "b", vals: []string{"x", "y", "x", "x"}},
		opsTCol{name: "v", vals: []int8{1, 2, 3, 4}},
	)
	got, _ := ppTRun(t, in, map[string]any{"dedupe": map[string]any{"key": []string{"a", "b"}}})
	opsTNear(t, "multi key", got.nums["v"], []float64{1, 2, 3}, 0)
}

func TestPreprocessRunErrors(t *testing.T) {
	in := ppTInput(t)
	cases := []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{"dedupe": map[string]any{"key": "nope"}}, `dedupe key: no column "nope"`},
		{map[string]any{"fill": map[string]any{"plan": "median"}}, "fill plan: column holds strings"},
		{map[string]any{"fill": map[string]any{"tenure_months": "zero"}}, `fill it with median, mean, mode or a number, not "zero"`},
		{map[string]any{"clip": map[string]any{"columns": []string{"plan"}}}, "only numeric columns can be clipped"},
		{map[string]any{"filter": []any{"plan > 3"}}, `column "plan" holds strings`},
		{map[string]any{"filter": []any{"tenure_months == 'x'"}}, `column "tenure_months" is numeric`},
		{map[string]any{"filter": []any{"ghost == 1"}}, `filter: no column "ghost"`},
		{map[string]any{"cast": map[string]any{"plan": "date32"}}, "cannot cast"},
	}
	for _, c := range cases {
		_, _, err := opsTRun(t, NewPreprocess(), in, c.params, "table")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.params, err, c.want)
		}
	}
	_, _, err := opsTRun(t, NewPreprocess(), "/nonexistent.parquet", map[string]any{}, "table")
	if err == nil || !strings.Contains(err.Error(), "nonexistent.parquet") {
		t.Errorf("missing file: %v", err)
	}
}

func TestPreprocessCheck(t *testing.T) {
	cases := []struct {
		params map[string]any
		field  string
		want   string
	}{
		{map[string]any{"dedup": 1}, "params.dedup", `unknown param "dedup"`},
		{map[string]any{"dedupe": map[string]any{"key": "id", "keep": "middle"}}, "params.dedupe", "want first, last or none"},
		{map[string]any{"dedupe": map[string]any{}}, "params.dedupe", "needs key"},
		{map[string]any{"clip": map[string]any{"columns": []string{"x"}, "quantiles": []float64{0.9, 0.1}}}, "params.clip", "low < high"},
		{map[string]any{"clip": map[string]any{"columns": []string{"x"}, "method": "zscore"}}, "params.clip", "want quantile or iqr"},
		{map[string]any{"clip": map[string]any{"method": "iqr"}}, "params.clip", "needs columns"},
		{map[string]any{"cast": map[string]any{"x": "float16"}}, "params.cast", `unknown type "float16"`},
		{map[string]any{"filter": []any{"x approx 3"}}, "params.filter", "unknown operator"},
		{map[string]any{"filter": []any{"x >= "}}, "params.filter", "one value after the operator"},
		{map[string]any{"filter": []any{map[string]any{"column": "x", "op": "~"}}}, "params.filter", "is not one of"},
		{map[string]any{"filter": []any{"x is maybe"}}, "params.filter", "null or not null"},
		{map[string]any{"fill": map[string]any{"x": []any{1}}}, "params.fill", "want median, mean, mode or a constant"},
		{map[string]any{"filter": "x > 1"}, "params.filter", "expected a list"},
	}
	for _, c := range cases {
		d := &Decl{Stage: "pre", Params: opsTParams(t, c.params), Inputs: []string{"table"}}
		ps := NewPreprocess().Check(d)
		found := false
		for _, p := range ps {
			if p.Field == c.field && strings.Contains(p.Msg, c.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%v: problems %v, want %s: %q", c.params, ps, c.field, c.want)
		}
	}
	d := &Decl{Stage: "pre", Params: opsTParams(t, map[string]any{}), Inputs: []string{"data"}, Outputs: []string{"out"}}
	ps := NewPreprocess().Check(d)
	if len(ps) != 3 || !slices.Equal(d.Outputs, []string{"table"}) {
		t.Errorf("io problems %v, outputs %v", ps, d.Outputs)
	}
	d = &Decl{Stage: "pre", Params: opsTParams(t, map[string]any{"filter": []any{"a >= 1"}, "dedupe": map[string]any{"key": "a"}}), Inputs: []string{"table"}}
	if ps := NewPreprocess().Check(d); len(ps) != 0 {
		t.Errorf("valid decl: %v", ps)
	}
}

func TestPreprocessDateFilterAndBool(t *testing.T) {
	in := opsTWrite(t, t.TempDir(),
		opsTCol{name: "d", vals: []int32{19723, 19782, 0, 19722}, null: []int{2}, date: true}, // 2024-01-01, 2024-02-29, null, 2023-12-31
		opsTCol{name: "flag", vals: []bool{true, false, true, true}},
		opsTCol{name: "v", vals: []int8{1, 2, 3, 4}},
	)
	got, _ := ppTRun(t, in, map[string]any{"filter": []any{"d >= '2024-01-01'"}})
	opsTNear(t, "date filter", got.nums["v"], []float64{1, 2}, 0)
	got, _ = ppTRun(t, in, map[string]any{"filter": []any{"flag == true", "d is not null"}})
	opsTNear(t, "bool filter", got.nums["v"], []float64{1, 4}, 0)
	_, _, err := opsTRun(t, NewPreprocess(), in, map[string]any{"filter": []any{"d > 5"}}, "table")
	if err == nil || !strings.Contains(err.Error(), "holds dates") {
		t.Errorf("date vs number: %v", err)
	}
}

// The last pass joins the columns the first pass kept with the others it
// decodes: the table is the same as when it decodes every column; a held
// set that outgrows its budget is dropped whole.
func TestPreprocessHoldsFirstPass(t *testing.T) {
	in := featTSynthChurn(t, 150_000) // three batches
	pre := map[string]any{}
	for k, v := range featTParityPre {
		if k != "cast" {
			pre[k] = v
		}
	}
	sc, err := ppSchema(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	if ppHoldFor(in, sc, []string{"customer_id", "total_charges"}, true) == nil {
		t.Fatal("two columns of 150000 rows are not held")
	}
	held, _ := ppTRun(t, in, pre)
	saved := ppHoldBytes
	ppHoldBytes = 0
	read, _ := ppTRun(t, in, pre)
	ppHoldBytes = saved
	opsTSame(t, held, read)

	r, err := table.Open(t.Context(), in, []string{"customer_id"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rec, err := r.Next()
	if err != nil || rec == nil {
		t.Fatal(rec, err)
	}
	h := &ppHeld{cols: []string{"customer_id"}, budget: 1 << 30}
	h.add(rec)
	h.budget = h.bytes + 1
	h.add(rec)
	if h.use() || h.batches != nil {
		t.Errorf("over budget: use %v, %d batches kept", h.use(), len(h.batches))
	}
}
