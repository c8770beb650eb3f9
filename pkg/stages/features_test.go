package stages

import (
	"encoding/json"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
)

func featTInput(t *testing.T, dict bool) string {
	return opsTWrite(t, t.TempDir(),
		opsTCol{name: "customer_id", vals: []int64{1, 2, 3, 4}},
		opsTCol{name: "a", vals: []float64{1, 2, 0, 4}, null: []int{2}},
		opsTCol{name: "b", vals: []int8{2, 0, 1, 4}},
		opsTCol{name: "cat", vals: []string{"x", "y", "x", ""}, null: []int{3}, dict: dict},
		opsTCol{name: "region", vals: []string{"r1", "r1", "r2", "r2"}, dict: true},
		opsTCol{name: "day", vals: []int32{19723, 19782, 0, 19722}, null: []int{2}, date: true}, // 2024-01-01, 2024-02-29, null, 2023-12-31
		opsTCol{name: "sday", vals: []string{"2024-01-01", "2024-02-29", "", "2023-12-31"}, null: []int{2}},
		opsTCol{name: "same", vals: []float32{5, 5, 5, 5}},
		opsTCol{name: "churned", vals: []int8{0, 1, 0, 1}},
	)
}

func featTRun(t *testing.T, in string, params map[string]any) (*opsTTable, *featStats, string) {
	t.Helper()
	outs, log, err := opsTRun(t, NewFeatures(), in, params, "table", "stats")
	if err != nil {
		t.Fatalf("features: %v\n%s", err, log)
	}
	b, err := os.ReadFile(outs["stats"])
	if err != nil {
		t.Fatal(err)
	}
	var st featStats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("stats: %v\n%s", err, b)
	}
	return opsTRead(t, outs["table"]), &st, log
}

func featTOps(ops ...map[string]any) map[string]any {
	l := make([]any, len(ops))
	for i, o := range ops {
		l[i] = o
	}
	return map[string]any{"ops": l}
}

func TestFeaturesRowOps(t *testing.T) {
	in := featTInput(t, false)
	got, _, _ := featTRun(t, in, featTOps(
		map[string]any{"name": "ratio", "expr": "a / b"},
		map[string]any{"name": "mix", "expr": "(a + 1) * 2 - b"},
		map[string]any{"name": "three", "expr": "3"},
		map[string]any{"name": "neg", "expr": "-a / -2 + `b` * 0.5"},
		map[string]any{"name": "fn", "expr": "sqrt(abs(b - 4)) + log(exp(1))"},
		map[string]any{"name": "l", "log1p": "a"},
		map[string]any{"sqrt": "a"},
		map[string]any{"name": "bad_log", "expr": "log1p(b - 3)"},
		map[string]any{"name": "bucket", "bucketize": "a", "bounds": []float64{2, 3}},
		map[string]any{"name": "chain", "expr": "ratio * 2"},
	))
	ln := math.Log
	opsTNear(t, "ratio", got.nums["ratio"], []float64{0.5, nan, nan, 1}, 0) // b = 0 → null; a null → null
	opsTNear(t, "mix", got.nums["mix"], []float64{2, 6, nan, 6}, 0)
	opsTNear(t, "three", got.nums["three"], []float64{3, 3, 3, 3}, 0)
	opsTNear(t, "neg", got.nums["neg"], []float64{1.5, 1, nan, 4}, 0)
	opsTNear(t, "fn", got.nums["fn"], []float64{math.Sqrt(2) + 1, 3, math.Sqrt(3) + 1, 1}, 1e-6)
	opsTNear(t, "l", got.nums["l"], []float64{ln(2), ln(3), nan, ln(5)}, 1e-6)
	opsTNear(t, "a_sqrt", got.nums["a_sqrt"], []float64{1, math.Sqrt2, nan, 2}, 1e-6)
	opsTNear(t, "bad_log", got.nums["bad_log"], []float64{nan, nan, nan, ln(2)}, 1e-6) // log1p(-1) = -inf, log1p(-3) = NaN: null
	opsTNear(t, "bucket", got.nums["bucket"], []float64{0, 1, nan, 2}, 0)
	opsTNear(t, "chain", got.nums["chain"], []float64{1, nan, nan, 2}, 0)
	for _, c := range []string{"ratio", "l", "a_sqrt"} {
		if got.types[c].ID() != arrow.FLOAT32 {
			t.Errorf("%s: %v, want float32", c, got.types[c])
		}
	}
	if got.types["bucket"].ID() != arrow.INT8 {
		t.Errorf("bucket: %v", got.types["bucket"])
	}
	// Default keep: the id and the label, first.
	if !slices.Equal(got.names[:2], []string{"customer_id", "churned"}) || got.types["churned"].ID() != arrow.INT8 {
		t.Errorf("columns %v", got.names)
	}
	if slices.Contains(got.names, "a") {
		t.Errorf("input column a passed through: %v", got.names)
	}
}

func TestFeaturesOnehot(t *testing.T) {
	for _, dict := range []bool{false, true} {
		in := featTInput(t, dict)
		got, st, _ := featTRun(t, in, map[string]any{"keep": []string{}, "ops": []any{
			map[string]any{"onehot": "cat"},
			map[string]any{"onehot": "cat", "top_k": 1, "other": true, "prefix": "top"},
			map[string]any{"onehot": "cat", "categories": []string{"y", "z"}, "other": true, "prefix": "given"},
			map[string]any{"onehot": "b", "top_k": 2},
		}})
		want := []string{"cat_x", "cat_y", "top_x", "top_other", "given_y", "given_z", "given_other", "b_0", "b_1"}
		if !slices.Equal(got.names, want) {
			t.Fatalf("dict=%v: columns %v, want %v", dict, got.names, want)
		}
		opsTNear(t, "cat_x", got.nums["cat_x"], []float64{1, 0, 1, 0}, 0) // null: all zero
		opsTNear(t, "cat_y", got.nums["cat_y"], []float64{0, 1, 0, 0}, 0)
		opsTNear(t, "top_x", got.nums["top_x"], []float64{1, 0, 1, 0}, 0)
		opsTNear(t, "top_other", got.nums["top_other"], []float64{0, 1, 0, 0}, 0)
		opsTNear(t, "given_y", got.nums["given_y"], []float64{0, 1, 0, 0}, 0)
		opsTNear(t, "given_z", got.nums["given_z"], []float64{0, 0, 0, 0}, 0)
		opsTNear(t, "given_other", got.nums["given_other"], []float64{1, 0, 1, 0}, 0) // x is not a given category
		// b: 2, 0, 1, 4 all once; top 2 by count, ties by value: 0 and 1.
		opsTNear(t, "b_0", got.nums["b_0"], []float64{0, 1, 0, 0}, 0)
		if !slices.Equal(st.Ops[3].Categories, []string{"0", "1"}) {
			t.Errorf("b categories %v", st.Ops[3].Categories)
		}
		if !slices.Equal(st.Ops[0].Outputs, []string{"cat_x", "cat_y"}) || !slices.Equal(st.Ops[1].Categories, []string{"x"}) || !st.Ops[1].Other {
			t.Errorf("stats %+v", st.Ops[:2])
		}
	}
}

func TestFeaturesOnehotTopKTies(t *testing.T) {
	in := opsTWrite(t, t.TempDir(), opsTCol{name: "c", vals: []string{"b", "c", "a", "c", "b", "d"}})
	got, _, _ := featTRun(t, in, map[string]any{"keep": []string{}, "ops": []any{
		map[string]any{"onehot": "c", "top_k": 2, "other": true},
	}})
	// counts b 2, c 2, a 1, d 1: top 2 are b and c, written in value order.
	if !slices.Equal(got.names, []string{"c_b", "c_c", "c_other"}) {
		t.Fatalf("columns %v", got.names)
	}
	opsTNear(t, "c_other", got.nums["c_other"], []float64{0, 0, 1, 0, 0, 1}, 0)
}

func TestFeaturesStandardizeAndGroups(t *testing.T) {
	in := featTInput(t, false)
	got, st, log := featTRun(t, in, featTOps(
		map[string]any{"group_mean": "a", "by": "region", "name": "rm"},
		map[string]any{"group_sum": "a", "by": "region"},
		map[string]any{"group_count": "a", "by": "region", "name": "rc"},
		map[string]any{"standardize": []string{"a", "same", "rm"}},
	))
	opsTNear(t, "rm (standardized)", got.nums["rm"], []float64{-1, -1, 1, 1}, 1e-6) // 1.5, 1.5, 4, 4: mean 2.75, std 1.25
	opsTNear(t, "a_sum_by_region", got.nums["a_sum_by_region"], []float64{3, 3, 4, 4}, 0)
	opsTNear(t, "rc", got.nums["rc"], []float64{2, 2, 1, 1}, 0)
	// a: 1, 2, 4 → mean 7/3, std sqrt(14/9).
	m, s := 7.0/3, math.Sqrt(14.0/9)
	opsTNear(t, "a", got.nums["a"], []float64{(1 - m) / s, (2 - m) / s, nan, (4 - m) / s}, 1e-6)
	opsTNear(t, "same", got.nums["same"], []float64{0, 0, 0, 0}, 0) // std 0 → 0, not NaN
	// Output order: kept, then ops; standardize of rm replaced rm in place.
	want := []string{"customer_id", "churned", "rm", "a_sum_by_region", "rc", "a", "same"}
	if !slices.Equal(got.names, want) {
		t.Errorf("columns %v, want %v", got.names, want)
	}
	if !strings.Contains(log, "3 passes") {
		t.Errorf("log: %s", log)
	}
	sa := st.Ops[3]
	if sa.Op != "standardize" || sa.Column != "a" || math.Abs(*sa.Mean-m) > 1e-12 || math.Abs(*sa.Std-s) > 1e-12 || sa.Count != 3 {
		t.Errorf("stats a %+v", sa)
	}
	if g := st.Ops[0].Groups; len(g) != 2 || *g["r1"] != 1.5 || *g["r2"] != 4 {
		t.Errorf("groups %v", g)
	}
	if st.Ops[5].Column != "rm" || *st.Ops[5].Mean != 2.75 || *st.Ops[5].Std != 1.25 {
		t.Errorf("stats rm %+v", st.Ops[5])
	}
}

func TestFeaturesDates(t *testing.T) {
	in := featTInput(t, false)
	for _, col := range []string{"day", "sday"} {
		got, _, _ := featTRun(t, in, featTOps(
			map[string]any{"date_part": col, "part": "year", "name": "y"},
			map[string]any{"date_part": col, "part": "month", "name": "m"},
			map[string]any{"date_part": col, "part": "day", "name": "d"},
			map[string]any{"date_part": col, "part": "dow", "name": "w"},
			map[string]any{"date_part": col, "part": "dayofyear", "name": "doy"},
			map[string]any{"date_part": col, "part": "quarter", "name": "q"},
			map[string]any{"days_since": col, "ref": "2024-12-31", "name": "age"},
		))
		opsTNear(t, col+" year", got.nums["y"], []float64{2024, 2024, nan, 2023}, 0)
		opsTNear(t, col+" month", got.nums["m"], []float64{1, 2, nan, 12}, 0)
		opsTNear(t, col+" day", got.nums["d"], []float64{1, 29, nan, 31}, 0)
		opsTNear(t, col+" dow", got.nums["w"], []float64{0, 3, nan, 6}, 0) // Mon, Thu, Sun
		opsTNear(t, col+" doy", got.nums["doy"], []float64{1, 60, nan, 365}, 0)
		opsTNear(t, col+" quarter", got.nums["q"], []float64{1, 1, nan, 4}, 0)
		opsTNear(t, col+" age", got.nums["age"], []float64{365, 306, nan, 366}, 0)
		if got.types["y"].ID() != arrow.INT16 || got.types["m"].ID() != arrow.INT8 || got.types["age"].ID() != arrow.INT32 {
			t.Errorf("types %v", got.types)
		}
	}
	bad := opsTWrite(t, t.TempDir(), opsTCol{name: "s", vals: []string{"2024-01-01", "soon"}})
	_, _, err := opsTRun(t, NewFeatures(), bad, featTOps(map[string]any{"date_part": "s", "part": "year"}), "table", "stats")
	if err == nil || !strings.Contains(err.Error(), "row 2") || !strings.Contains(err.Error(), `"soon" is not a date`) {
		t.Errorf("bad date: %v", err)
	}
}

func TestFeaturesLagRolling(t *testing.T) {
	in := opsTWrite(t, t.TempDir(),
		opsTCol{name: "cust", vals: []string{"p", "q", "p", "p", "q", "r"}, null: []int{5}},
		opsTCol{name: "t", vals: []int32{19003, 19001, 19001, 19002, 19002, 19000}, date: true},
		opsTCol{name: "v", vals: []float64{10, 20, 30, 40, 50, 60}},
	)
	// Group p by t: rows 2 (30), 3 (40), 0 (10); group q: rows 1 (20), 4
	// (50); row 5 has no key.
	got, _, _ := featTRun(t, in, featTOps(
		map[string]any{"lag": "v", "by": "cust", "order": "t"},
		map[string]any{"lag": "v", "by": "cust", "order": "t", "n": 2, "name": "lag2"},
		map[string]any{"rolling_mean": "v", "by": "cust", "order": "t", "window": 2},
		map[string]any{"rolling_mean": "v", "by": "cust", "order": "t", "window": 2, "min_periods": 1, "name": "rm1"},
		map[string]any{"lag": "v", "name": "prev"}, // no by, no order: the table order
		map[string]any{"standardize": "v_lag1"},
	))
	lag := []float64{40, nan, nan, 30, 20, nan}
	mean, std := 30.0, math.Sqrt(200.0/3) // of 40, 30, 20
	var z []float64
	for _, v := range lag {
		z = append(z, (v-mean)/std)
	}
	opsTNear(t, "v_lag1 (standardized)", got.nums["v_lag1"], z, 1e-6)
	opsTNear(t, "lag2", got.nums["lag2"], []float64{30, nan, nan, nan, nan, nan}, 0)
	opsTNear(t, "rolling", got.nums["v_rolling_mean2"], []float64{25, nan, nan, 35, 35, nan}, 0)
	opsTNear(t, "rm1", got.nums["rm1"], []float64{25, 20, 30, 35, 35, nan}, 0)
	opsTNear(t, "prev", got.nums["prev"], []float64{nan, 10, 20, 30, 40, 50}, 0)
}

func TestFeaturesEdgeTables(t *testing.T) {
	ops := map[string]any{"ops": []any{
		map[string]any{"name": "r", "expr": "x / 2"},
		map[string]any{"standardize": []string{"r", "x"}},
		map[string]any{"onehot": "c"},
		map[string]any{"group_mean": "x", "by": "c", "name": "g"},
	}}
	// Empty: empty output; stats without NaN.
	in := opsTWrite(t, t.TempDir(), opsTCol{name: "x", vals: []float64{}}, opsTCol{name: "c", vals: []string{}})
	got, st, _ := featTRun(t, in, ops)
	if got.rows != 0 || !slices.Equal(got.names, []string{"r", "x", "g"}) {
		t.Errorf("empty: %d rows, %v", got.rows, got.names)
	}
	if st.Ops[1].Mean != nil || st.Ops[1].Std != nil {
		t.Errorf("empty stats %+v", st.Ops[1])
	}
	// One row: std 0 → 0.
	in = opsTWrite(t, t.TempDir(), opsTCol{name: "x", vals: []float64{3}}, opsTCol{name: "c", vals: []string{"k"}})
	got, _, _ = featTRun(t, in, ops)
	opsTNear(t, "one row r", got.nums["r"], []float64{0}, 0)
	opsTNear(t, "one row c_k", got.nums["c_k"], []float64{1}, 0)
	opsTNear(t, "one row g", got.nums["g"], []float64{0}, 0) // x is the standardized x by then
	// All null: standardize gives null, group mean null.
	in = opsTWrite(t, t.TempDir(), opsTCol{name: "x", vals: []float64{0, 0}, null: []int{0, 1}}, opsTCol{name: "c", vals: []string{"k", "k"}})
	got, _, _ = featTRun(t, in, ops)
	opsTNear(t, "all null x", got.nums["x"], []float64{nan, nan}, 0)
	opsTNear(t, "all null g", got.nums["g"], []float64{nan, nan}, 0)
}

func TestFeaturesKeep(t *testing.T) {
	in := featTInput(t, true)
	got, st, _ := featTRun(t, in, map[string]any{"keep": []string{"region", "customer_id"}, "ops": []any{map[string]any{"name": "r", "expr": "a"}}})
	if !slices.Equal(got.names, []string{"region", "customer_id", "r"}) || got.types["region"].ID() != arrow.DICTIONARY {
		t.Errorf("columns %v %v", got.names, got.types)
	}
	if !slices.Equal(st.Keep, []string{"region", "customer_id"}) || len(st.Columns) != 3 || st.Columns[2].Type != "float32" {
		t.Errorf("stats keep %v columns %v", st.Keep, st.Columns)
	}
	// Default keep without the label in the input: only what exists.
	in = opsTWrite(t, t.TempDir(), opsTCol{name: "customer_id", vals: []int64{1}}, opsTCol{name: "x", vals: []float64{2}})
	got, _, _ = featTRun(t, in, featTOps(map[string]any{"name": "y", "expr": "x"}))
	if !slices.Equal(got.names, []string{"customer_id", "y"}) {
		t.Errorf("default keep: %v", got.names)
	}
}

func TestFeaturesRunErrors(t *testing.T) {
	in := featTInput(t, false)
	cases := []struct {
		params map[string]any
		want   string
	}{
		{featTOps(map[string]any{"name": "r", "expr": "a / ghost"}), `ops[0] (expr r): reads: no column "ghost"`},
		{featTOps(map[string]any{"name": "r", "expr": "cat * 2"}), `column "cat" has type utf8; expressions need numbers`},
		{featTOps(map[string]any{"log1p": "region"}), "it needs numbers"},
		{featTOps(map[string]any{"date_part": "a", "part": "year"}), "it needs dates"},
		{featTOps(map[string]any{"group_mean": "a", "by": "a"}), "cannot be a key"},
		{featTOps(map[string]any{"onehot": "a"}), "cannot be a key"},
		{map[string]any{"keep": []string{"nope"}, "ops": []any{map[string]any{"sqrt": "a"}}}, `keep: no column "nope"`},
		{featTOps(map[string]any{"onehot": "cat"}, map[string]any{"name": "cat_x", "expr": "a"}), `output column "cat_x" comes from both`},
		{featTOps(map[string]any{"onehot": "b", "categories": []string{"one"}}), "the column holds integers"},
	}
	for _, c := range cases {
		_, _, err := opsTRun(t, NewFeatures(), in, c.params, "table", "stats")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.params, err, c.want)
		}
	}
}

func TestFeaturesCheck(t *testing.T) {
	cases := []struct {
		params map[string]any
		want   string
	}{
		{map[string]any{}, "give a list of feature ops"},
		{featTOps(map[string]any{"name": "x"}), "no op key"},
		{featTOps(map[string]any{"log1p": "a", "sqrt": "a"}), "one op per entry"},
		{featTOps(map[string]any{"expr": "a +"}), "ends where a value was expected"},
		{featTOps(map[string]any{"expr": "a + b"}), "expr needs a name"},
		{featTOps(map[string]any{"name": "x", "expr": "foo(a)"}), `unknown function "foo"`},
		{featTOps(map[string]any{"name": "x", "expr": "(a"}), "missing )"},
		{featTOps(map[string]any{"bucketize": "a", "bounds": []float64{3, 1}}), "bounds must increase strictly"},
		{featTOps(map[string]any{"bucketize": "a"}), "needs bounds"},
		{featTOps(map[string]any{"date_part": "d", "part": "week"}), `part "week"`},
		{featTOps(map[string]any{"days_since": "d", "ref": "yesterday"}), "needs ref"},
		{featTOps(map[string]any{"onehot": "c", "top_k": 0}), "top_k must be at least 1"},
		{featTOps(map[string]any{"onehot": "c", "top_k": 2, "categories": []string{"a"}}), "not both"},
		{featTOps(map[string]any{"log1p": "a", "bounds": []float64{1}}), `log1p does not take "bounds"`},
		{featTOps(map[string]any{"rolling_mean": "a"}), "needs window"},
		{featTOps(map[string]any{"rolling_mean": "a", "window": 2, "min_periods": 3}), "min_periods must be between 1 and window"},
		{featTOps(map[string]any{"lag": "a", "n": 0}), "n must be at least 1"},
		{featTOps(map[string]any{"group_sum": "a"}), "needs by"},
		{featTOps(map[string]any{"name": "x", "expr": "a"}, map[string]any{"name": "x", "sqrt": "a"}), `output "x" is already an earlier op's output`},
		{map[string]any{"keep": []string{"a"}, "ops": []any{map[string]any{"standardize": "a"}}}, `output "a" is already a kept column`},
		{featTOps(map[string]any{"standardize": []any{1}}), "is not a column name"},
		{featTOps(map[string]any{"sqrt": "a", "name": 3}), "name: expected"},
		{map[string]any{"ops": []any{"sqrt a"}}, "each op is a mapping"},
		{map[string]any{"ops": []any{map[string]any{"sqrt": "a"}}, "kep": 1}, `unknown param "kep"`},
	}
	for _, c := range cases {
		d := &Decl{Stage: "feat", Params: opsTParams(t, c.params), Inputs: []string{"table"}}
		ps := NewFeatures().Check(d)
		found := false
		for _, p := range ps {
			if strings.HasPrefix(p.Field, "params") && strings.Contains(p.Msg, c.want) {
				found = true
			}
		}
		if !found {
			t.Errorf("%v: problems %v, want %q", c.params, ps, c.want)
		}
	}
	d := &Decl{Stage: "feat", Params: opsTParams(t, featTOps(map[string]any{"sqrt": "a"})), Inputs: []string{"table", "extra"}, Outputs: []string{"table"}}
	ps := NewFeatures().Check(d)
	if len(ps) != 1 || !strings.Contains(ps[0].Msg, `unknown input "extra"`) || !slices.Equal(d.Outputs, []string{"table", "stats"}) {
		t.Errorf("io: %v, outputs %v", ps, d.Outputs)
	}
}

// The passes of a run read the input once when it fits featCacheBytes;
// the table and statistics are the same as when every pass streams the
// file, and a source whose batches outgrow its budget while being read
// drops them and still delivers every row.
func TestFeaturesReadOnce(t *testing.T) {
	in := featTSynthChurn(t, 150_000) // three batches
	once, stOnce, _ := featTRun(t, in, featTParityFeat)
	saved := featCacheBytes
	featCacheBytes = 0
	streamed, stStreamed, _ := featTRun(t, in, featTParityFeat)
	featCacheBytes = saved
	opsTSame(t, once, streamed)
	ja, _ := json.Marshal(stOnce)
	jb, _ := json.Marshal(stStreamed)
	if string(ja) != string(jb) {
		t.Errorf("stats differ:\n%s\nstreamed:\n%s", ja, jb)
	}

	plan, src := featTSource(t, in)
	if src.all == nil {
		t.Fatal("a 150000-row input is not kept")
	}
	src.budget = 1 << 20 // less than one batch
	rows := 0
	err := plan.scanInput(t.Context(), src, []string{"customer_id"}, nil, false, func(b *featBatch) error {
		rows += b.n
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rows != 150_000 || src.done || src.batches != nil || src.all != nil {
		t.Errorf("over budget: %d rows, done %v, %d batches kept, all %v", rows, src.done, len(src.batches), src.all)
	}
}

// A fitting pass keeps the outputs of the ops it computes (charge_per_month
// here, an input of a standardize it fits) when the batches are kept, and
// the next pass takes them instead of computing them again; the last pass
// lets them go.
func TestFeaturesKeepsOpOutputs(t *testing.T) {
	in := featTSynthChurn(t, 150_000) // three batches
	plan, src := featTSource(t, in)
	defer src.drop()
	op := slices.IndexFunc(plan.ops, func(o *featOp) bool { return o.name == "charge_per_month" })
	cols := plan.inputs([]int{op}, nil)
	var first []arrow.Array
	err := plan.scanInput(t.Context(), src, cols, []int{op}, false, func(b *featBatch) error {
		first = append(first, b.out[op])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(src.batches) != 3 || len(src.outs) != 3 {
		t.Fatalf("%d batches, outputs of %d kept", len(src.batches), len(src.outs))
	}
	k := 0
	err = plan.scanInput(t.Context(), src, cols, []int{op}, true, func(b *featBatch) error {
		if b.out[op] != first[k] {
			t.Errorf("batch %d: charge_per_month computed again", k)
		}
		k++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if k != 3 || src.outs != nil || src.batches != nil {
		t.Errorf("%d batches; after the last pass %d outputs and %d batches kept", k, len(src.outs), len(src.batches))
	}
}

// Standardizing input columns without nulls (int8, int64, float32) gives
// float32((v - mean) / std), the same as through float64 copies.
func TestFeaturesStandardizeNoNulls(t *testing.T) {
	in := opsTWrite(t, t.TempDir(),
		opsTCol{name: "b", vals: []int8{2, 0, 1, 4}},
		opsTCol{name: "id", vals: []int64{1, 2, 3, 4}},
		opsTCol{name: "f", vals: []float32{0.5, 1.5, 2.5, 3.5}},
	)
	got, _, _ := featTRun(t, in, map[string]any{"keep": []string{}, "ops": []any{
		map[string]any{"standardize": []string{"b", "id", "f"}},
	}})
	// b: mean 1.75, variance (0.0625+3.0625+0.5625+5.0625)/4 = 2.1875.
	// id: mean 2.5, variance 1.25. f: mean 2, variance 1.25.
	sb, si := math.Sqrt(2.1875), math.Sqrt(1.25)
	f32 := func(v float64) float64 { return float64(float32(v)) }
	opsTNear(t, "b", got.nums["b"], []float64{f32(0.25 / sb), f32(-1.75 / sb), f32(-0.75 / sb), f32(2.25 / sb)}, 0)
	opsTNear(t, "id", got.nums["id"], []float64{f32(-1.5 / si), f32(-0.5 / si), f32(0.5 / si), f32(1.5 / si)}, 0)
	opsTNear(t, "f", got.nums["f"], []float64{f32(-1.5 / si), f32(-0.5 / si), f32(0.5 / si), f32(1.5 / si)}, 0)

	// A NaN value (not a null) is left out of the moments and stays
	// missing: 1 and 3 have mean 2 and std 1.
	in = opsTWrite(t, t.TempDir(), opsTCol{name: "g", vals: []float32{1, float32(math.NaN()), 3}})
	got, st, _ := featTRun(t, in, map[string]any{"keep": []string{}, "ops": []any{map[string]any{"standardize": "g"}}})
	opsTNear(t, "g", got.nums["g"], []float64{-1, nan, 1}, 0)
	if s := st.Ops[0]; *s.Mean != 2 || *s.Std != 1 || s.Count != 2 {
		t.Errorf("stats %+v", s)
	}
}

// featTSource compiles and binds the parity features over the table at in,
// and returns the plan with a source for its three passes.
func featTSource(t *testing.T, in string) (*featPlan, *featSource) {
	t.Helper()
	plan, ps := featCompile(opsTParams(t, featTParityFeat))
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	sc, err := ppSchema(t.Context(), in)
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.bind(sc, in); err != nil {
		t.Fatal(err)
	}
	all := make([]int, len(plan.ops))
	for i := range all {
		all[i] = i
	}
	return plan, featSourceFor(in, sc, plan.inputs(all, plan.keep), 3)
}
