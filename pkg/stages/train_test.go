package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// mlCol is one column of a test table: vals is a []float32, []float64,
// []int64, []int32, []int8, []bool or []string; valid (optional) marks nulls.
type mlCol struct {
	name  string
	vals  any
	valid []bool
}

// mlWriteTable writes a Parquet table file with table.Create.
func mlWriteTable(t *testing.T, path string, cols ...mlCol) {
	t.Helper()
	var fields []arrow.Field
	for _, c := range cols {
		var dt arrow.DataType
		switch c.vals.(type) {
		case []float32:
			dt = arrow.PrimitiveTypes.Float32
		case []float64:
			dt = arrow.PrimitiveTypes.Float64
		case []int64:
			dt = arrow.PrimitiveTypes.Int64
		case []int32:
			dt = arrow.PrimitiveTypes.Int32
		case []int8:
			dt = arrow.PrimitiveTypes.Int8
		case []bool:
			dt = arrow.FixedWidthTypes.Boolean
		case []string:
			dt = arrow.BinaryTypes.String
		default:
			t.Fatalf("column %s: type %T", c.name, c.vals)
		}
		fields = append(fields, arrow.Field{Name: c.name, Type: dt, Nullable: c.valid != nil})
	}
	schema := arrow.NewSchema(fields, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i, c := range cols {
		switch v := c.vals.(type) {
		case []float32:
			b.Field(i).(*array.Float32Builder).AppendValues(v, c.valid)
		case []float64:
			b.Field(i).(*array.Float64Builder).AppendValues(v, c.valid)
		case []int64:
			b.Field(i).(*array.Int64Builder).AppendValues(v, c.valid)
		case []int32:
			b.Field(i).(*array.Int32Builder).AppendValues(v, c.valid)
		case []int8:
			b.Field(i).(*array.Int8Builder).AppendValues(v, c.valid)
		case []bool:
			b.Field(i).(*array.BooleanBuilder).AppendValues(v, c.valid)
		case []string:
			b.Field(i).(*array.StringBuilder).AppendValues(v, c.valid)
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	mlWriteRecord(t, path, rec, table.Options{})
}

// mlWriteRecord writes rec as a Parquet table file with table.CreateWith.
func mlWriteRecord(t *testing.T, path string, rec arrow.RecordBatch, opt table.Options) {
	t.Helper()
	w, err := table.CreateWith(path, rec.Schema(), opt)
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

func mlParams(kv map[string]any) map[string]Param {
	out := map[string]Param{}
	for k, v := range kv {
		b, _ := json.Marshal(v)
		out[k] = Param{Text: string(b), Value: v}
	}
	return out
}

// mlTrain runs the train kind and returns the model path and the log.
func mlTrain(t *testing.T, tablePath string, params map[string]any, extra map[string]string) (string, string, error) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "model.json")
	in := map[string]string{"table": tablePath}
	for k, v := range extra {
		in[k] = v
	}
	var log bytes.Buffer
	err := NewTrain().Run(context.Background(), &Task{Pipeline: "p", Stage: "train", Dir: dir, Params: mlParams(params),
		Inputs: in, Outputs: map[string]string{"model": out}, Scratch: t.TempDir(), Log: &log})
	return out, log.String(), err
}

func mlMustTrain(t *testing.T, tablePath string, params map[string]any) (*Model, []byte) {
	t.Helper()
	p, log, err := mlTrain(t, tablePath, params, nil)
	if err != nil {
		t.Fatalf("train: %v\n%s", err, log)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ReadModel(p)
	if err != nil {
		t.Fatal(err)
	}
	return m, b
}

// The logistic regression on a tiny dataset matches scikit-learn's
// LogisticRegression (newton-cg, tol 1e-12) with C = 1/l2 to 1e-6 on every
// coefficient and the intercept.
func TestLogisticMatchesSklearn(t *testing.T) {
	for _, want := range mlFixtureSklearn {
		cols := make([][]float32, len(mlFixtureX))
		for j := range cols {
			cols[j] = slices.Clone(mlFixtureX[j])
		}
		fit, err := mlFitLogistic(context.Background(), cols, nil, mlFixtureY, mlLogisticConfig{L2: want.l2, MaxIter: 100, Tol: 1e-10})
		if err != nil {
			t.Fatal(err)
		}
		if !fit.converged {
			t.Errorf("l2 %v: not converged after %d steps", want.l2, fit.iterations)
		}
		mlNear(t, fmt.Sprintf("l2 %v intercept", want.l2), fit.weights.Intercept, want.intercept, 1e-6)
		for j, w := range want.coef {
			mlNear(t, fmt.Sprintf("l2 %v coef[%d]", want.l2, j), fit.weights.Coef[j], w, 1e-6)
		}
	}
}

// The sub-sampled Hessian used above HessianRows rows reaches the
// optimum (the gradient is always exact), with the loss, computed in the
// last pass only, that of the fitted weights. A 1000-row sample's Hessian
// is close enough for every full-data step to be proven a descent from its
// slopes; a 50-row one's is not, and some steps are searched on the loss.
func TestLogisticSubsampledHessian(t *testing.T) {
	n := 20_123
	r := rand.New(rand.NewPCG(5, 6))
	cols := [][]float32{make([]float32, n), make([]float32, n), make([]float32, n)}
	y := make([]uint8, n)
	for i := range n {
		a, b, c := float32(r.NormFloat64()), float32(r.NormFloat64()), float32(r.IntN(2))
		cols[0][i], cols[1][i], cols[2][i] = a, b, c
		z := -0.5 + 1.5*float64(a) - 0.8*float64(b) + 0.7*float64(c)
		if r.Float64() < 1/(1+math.Exp(-z)) {
			y[i] = 1
		}
	}
	full, err := mlFitLogistic(context.Background(), cols, nil, y, mlLogisticConfig{L2: 1, MaxIter: 100, Tol: 1e-10, HessianRows: n})
	if err != nil {
		t.Fatal(err)
	}
	for _, hrows := range []int{1000, 50} {
		fit, err := mlFitLogistic(context.Background(), cols, nil, y, mlLogisticConfig{L2: 1, MaxIter: 100, Tol: 1e-10, HessianRows: hrows})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("Hessian rows %d: %d steps, %d searched", hrows, fit.iterations, fit.searches)
		if (fit.searches == 0) != (hrows == 1000) {
			t.Errorf("Hessian rows %d: %d steps searched on the loss", hrows, fit.searches)
		}
		// At the optimum the gradient Σ (p−y)·x + l2·w vanishes.
		g := make([]float64, 4)
		loss := 0.0
		for i := range n {
			z := fit.weights.Intercept
			for j := range cols {
				z += fit.weights.Coef[j] * float64(cols[j][i])
			}
			loss += mlLogLossOfMargin(z, y[i])
			res := mlSigmoid(z) - float64(y[i])
			for j := range cols {
				g[j] += res * float64(cols[j][i])
			}
			g[3] += res
		}
		for j := range cols {
			g[j] += fit.weights.Coef[j]
		}
		for j, v := range g {
			if math.Abs(v) > 1e-6*float64(n) {
				t.Errorf("Hessian rows %d: gradient[%d] = %g at the fitted weights", hrows, j, v)
			}
		}
		mlNear(t, fmt.Sprintf("Hessian rows %d: train loss", hrows), fit.loss, loss/float64(n), 1e-13)
		if !fit.converged {
			t.Errorf("Hessian rows %d: not converged in %d steps", hrows, fit.iterations)
		}
		mlNear(t, "intercept vs full Newton", fit.weights.Intercept, full.weights.Intercept, 1e-6)
		for j := range cols {
			mlNear(t, fmt.Sprintf("coef[%d] vs full Newton", j), fit.weights.Coef[j], full.weights.Coef[j], 1e-6)
		}
	}
}

// mlStepRatio is 1/2 for a quadratic, e.g. 1/(1−1/e) − 1 at a margin
// change of 1 (by hand: ∫(1−t)e^−t / ∫e^−t = e^−1 / (1−e^−1)), and tends
// to 1; mlMaxAbs ignores signs.
func TestStepRatioAndMaxAbs(t *testing.T) {
	mlNear(t, "ratio(0)", mlStepRatio(0), 0.5, 1e-15)
	mlNear(t, "ratio(1)", mlStepRatio(1), math.Exp(-1)/(1-math.Exp(-1)), 1e-15)
	mlNear(t, "ratio(1e-3) series vs formula", mlStepRatio(1e-3), -1/math.Expm1(-1e-3)-1/1e-3, 1e-12)
	mlNear(t, "ratio(1e3)", mlStepRatio(1e3), 1-1e-3, 1e-15)
	if got := mlMaxAbs([]float32{0.5, -3.25, 2, float32(math.Copysign(0, -1))}); got != 3.25 {
		t.Errorf("max |x| %v, want 3.25", got)
	}
	if got := mlMaxAbs(nil); got != 0 {
		t.Errorf("max |x| of nothing %v", got)
	}
}

// 0/1 columns given as lists of their ones (as mlLoadRows gives boolean
// features) fit exactly as the same columns given whole, with the Hessian
// on a sample and on all rows.
func TestLogisticListedColumns(t *testing.T) {
	cols, y := mlChurnLike(5000)
	listed := slices.Clone(cols)
	ones := make([][]int32, len(cols))
	for j := 13; j < len(cols); j += 2 { // some 0/1 columns, one all zero
		for i, v := range cols[j] {
			if v == 1 {
				ones[j] = append(ones[j], int32(i))
			}
		}
		if ones[j] == nil {
			t.Fatalf("column %d holds no ones", j)
		}
		listed[j] = nil
	}
	zero := make([]float32, len(y))
	cols = append(cols, zero)
	listed = append(listed, nil)
	ones = append(ones, []int32{})
	for _, hrows := range []int{700, 0} {
		cfg := mlLogisticConfig{L2: 1, MaxIter: 100, Tol: 1e-8, HessianRows: hrows}
		want, err := mlFitLogistic(context.Background(), cols, nil, y, cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := mlFitLogistic(context.Background(), listed, ones, y, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got.weights.Intercept != want.weights.Intercept || !slices.Equal(got.weights.Coef, want.weights.Coef) || got.loss != want.loss || got.iterations != want.iterations {
			t.Errorf("Hessian rows %d: listed columns fit %+v, whole ones %+v", hrows, got, want)
		}
	}
	// mlStrided makes a listed column dense, every third row
	sc, sy := mlStrided([][]float32{nil}, [][]int32{{0, 2, 3, 7, 9}}, []uint8{0, 1, 0, 1, 0, 1, 0, 1, 0, 1}, 3)
	if !slices.Equal(sc[0], []float32{1, 1, 0, 1}) || !slices.Equal(sy, []uint8{0, 1, 0, 1}) {
		t.Errorf("strided: %v %v", sc[0], sy)
	}
	if got := mlChunkStarts([]int32{1, 5, mlLrChunk, 3*mlLrChunk + 1}, 4, mlLrChunk); !slices.Equal(got, []int32{0, 2, 3, 3, 4}) {
		t.Errorf("chunk starts %v", got)
	}
}

// mlXOR is a table whose label is the XOR of the signs of x1 and x2 (5%
// of labels flipped), plus a noise column and a constant one: logistic
// regression cannot learn it, trees can.
func mlXOR(t *testing.T, n int, seed uint64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	ids := make([]int64, n)
	x1, x2, x3 := make([]float32, n), make([]float64, n), make([]int32, n)
	y := make([]int8, n)
	for i := range n {
		ids[i] = int64(10_000 + i)
		x1[i] = float32(r.Float64()*2 - 1)
		x2[i] = r.Float64()*2 - 1
		x3[i] = int32(r.IntN(5))
		if (x1[i] > 0) != (x2[i] > 0) {
			y[i] = 1
		}
		if r.Float64() < 0.05 {
			y[i] = 1 - y[i]
		}
	}
	p := filepath.Join(t.TempDir(), "xor.parquet")
	k := make([]int8, n)
	for i := range k {
		k[i] = 3
	}
	mlWriteTable(t, p, mlCol{name: "id", vals: ids}, mlCol{name: "x1", vals: x1}, mlCol{name: "x2", vals: x2}, mlCol{name: "x3", vals: x3}, mlCol{name: "k", vals: k}, mlCol{name: "y", vals: y})
	return p
}

// GBDT learns the XOR pattern that logistic regression cannot: on the
// holdout, the trees' AUC is near the 95% ceiling, the linear model's near ½.
func TestGBDTLearnsXOR(t *testing.T) {
	tbl := mlXOR(t, 4000, 1)
	lm, _ := mlMustTrain(t, tbl, map[string]any{"label": "y", "id": "id"})
	gm, _ := mlMustTrain(t, tbl, map[string]any{"label": "y", "id": "id", "model": "gbdt", "max_depth": 3, "rounds": 60, "learning_rate": 0.3})
	if lm.Features == nil || !slices.Equal(lm.Features, []string{"x1", "x2", "x3", "k"}) {
		t.Errorf("default features %v, want every numeric column but the label and id", lm.Features)
	}
	lr := mlValidate(t, lm, tbl, nil)
	gr := mlValidate(t, gm, tbl, nil)
	t.Logf("holdout AUC: logistic %.4f, gbdt %.4f", lr.AUC, gr.AUC)
	if lr.AUC > 0.6 {
		t.Errorf("logistic AUC %.3f on XOR, want about 0.5", lr.AUC)
	}
	if gr.AUC < 0.9 {
		t.Errorf("gbdt AUC %.3f on XOR, want > 0.9", gr.AUC)
	}
	tr := gm.Training
	if tr.Rounds < 1 || tr.Rounds > tr.Iterations || tr.Iterations > 60 || tr.ValidRows == 0 || tr.ValidLogLoss == nil {
		t.Errorf("gbdt training summary %+v", tr)
	}
	if tr.Rows+tr.ValidRows+tr.HoldoutRows != 4000 {
		t.Errorf("rows %d + valid %d + holdout %d != 4000", tr.Rows, tr.ValidRows, tr.HoldoutRows)
	}
	// thresholds are real feature values' midpoints, not bin numbers
	for _, tree := range gm.GBDT.Trees {
		for i, f := range tree.Feature {
			if f >= 0 && f < 2 && math.Abs(tree.Threshold[i]) > 1 {
				t.Fatalf("threshold %v outside the feature's range", tree.Threshold[i])
			}
		}
	}
}

// The same inputs and params give byte-identical model files, whatever the
// number of cores.
func TestTrainDeterministic(t *testing.T) {
	tbl := mlXOR(t, 3000, 2)
	for _, params := range []map[string]any{
		{"label": "y", "id": "id", "seed": 11},
		{"label": "y", "id": "id", "seed": 11, "model": "gbdt", "rounds": 25, "max_depth": 4},
	} {
		_, a := mlMustTrain(t, tbl, params)
		_, b := mlMustTrain(t, tbl, params)
		prev := runtime.GOMAXPROCS(1)
		_, c := mlMustTrain(t, tbl, params)
		runtime.GOMAXPROCS(prev)
		if !bytes.Equal(a, b) || !bytes.Equal(a, c) {
			t.Errorf("%v: model bytes differ between runs", params["model"])
		}
	}
	_, a := mlMustTrain(t, tbl, map[string]any{"label": "y", "id": "id", "seed": 1})
	_, b := mlMustTrain(t, tbl, map[string]any{"label": "y", "id": "id", "seed": 2})
	if bytes.Equal(a, b) {
		t.Error("seeds 1 and 2 gave the same model: the seed does not reach the split")
	}
}

// Shuffling the rows changes neither which rows are held out nor the fit.
func TestTrainSplitIndependentOfRowOrder(t *testing.T) {
	n := 2000
	r := rand.New(rand.NewPCG(9, 9))
	ids := make([]int64, n)
	x := make([]float32, n)
	y := make([]int8, n)
	for i := range n {
		ids[i] = int64(i * 13)
		x[i] = float32(r.NormFloat64())
		if r.Float64() < 1/(1+math.Exp(-2*float64(x[i]))) {
			y[i] = 1
		}
	}
	perm := r.Perm(n)
	ids2, x2, y2 := make([]int64, n), make([]float32, n), make([]int8, n)
	for i, j := range perm {
		ids2[i], x2[i], y2[i] = ids[j], x[j], y[j]
	}
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.parquet"), filepath.Join(dir, "b.parquet")
	mlWriteTable(t, a, mlCol{name: "id", vals: ids}, mlCol{name: "x", vals: x}, mlCol{name: "y", vals: y})
	mlWriteTable(t, b, mlCol{name: "y", vals: y2}, mlCol{name: "x", vals: x2}, mlCol{name: "id", vals: ids2})
	params := map[string]any{"label": "y", "id": "id", "holdout": 0.3}
	ma, _ := mlMustTrain(t, a, params)
	mb, _ := mlMustTrain(t, b, params)
	if ma.Training.Rows != mb.Training.Rows || ma.Training.Positives != mb.Training.Positives {
		t.Fatalf("training rows %d/%d vs %d/%d", ma.Training.Rows, ma.Training.Positives, mb.Training.Rows, mb.Training.Positives)
	}
	mlNear(t, "coef", mb.Logistic.Coef[0], ma.Logistic.Coef[0], 1e-9)
	mlNear(t, "intercept", mb.Logistic.Intercept, ma.Logistic.Intercept, 1e-9)
	ra, rb := mlValidate(t, ma, a, nil), mlValidate(t, ma, b, nil)
	if ra.Rows != rb.Rows || ra.Positives != rb.Positives || math.Abs(ra.AUC-rb.AUC) > 1e-12 {
		t.Errorf("holdout differs with row order: %d/%d auc %v vs %d/%d auc %v", ra.Rows, ra.Positives, ra.AUC, rb.Rows, rb.Positives, rb.AUC)
	}
}

func TestTrainStatsEmbedded(t *testing.T) {
	tbl := mlXOR(t, 500, 3)
	dir := t.TempDir()
	js := filepath.Join(dir, "stats.json")
	if err := os.WriteFile(js, []byte("{\n  \"x1\": {\"mean\": 0.5, \"std\": 2}\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, log, err := mlTrain(t, tbl, map[string]any{"label": "y", "id": "id"}, map[string]string{"stats": js})
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	m, err := ReadModel(p)
	if err != nil {
		t.Fatal(err)
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, m.Stats); err != nil || compact.String() != `{"x1":{"mean":0.5,"std":2}}` {
		t.Errorf("JSON stats embedded as %s", m.Stats)
	}
	pq := filepath.Join(dir, "stats.parquet")
	mlWriteTable(t, pq, mlCol{name: "column", vals: []string{"x1", "x2"}}, mlCol{name: "mean", vals: []float64{0.5, -1}})
	p, log, err = mlTrain(t, tbl, map[string]any{"label": "y", "id": "id"}, map[string]string{"stats": pq})
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	if m, err = ReadModel(p); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(m.Stats, &rows); err != nil || len(rows) != 2 || rows[1]["column"] != "x2" || rows[1]["mean"] != -1.0 {
		t.Errorf("Parquet stats embedded as %s (%v)", m.Stats, err)
	}
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, []byte("mean=1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := mlTrain(t, tbl, map[string]any{"label": "y", "id": "id"}, map[string]string{"stats": bad}); err == nil || !strings.Contains(err.Error(), "stats") {
		t.Errorf("unreadable stats: %v", err)
	}
}

// Bad input is a clear error naming the column (and row), never a panic.
func TestTrainBadInput(t *testing.T) {
	dir := t.TempDir()
	ids := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	yy := []int8{0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1}
	// bad values go in the last row that train reads (holdout rows are
	// validate's to check)
	buckets := mlBucketsOf(t, mlInt64s(ids...), 0)
	last := len(ids) - 1
	for buckets[last] < (Split{Holdout: 0.2}).holdoutCut() {
		last--
	}
	lastRow := fmt.Sprintf("row %d", last)
	nan := slices.Clone(x)
	nan[last] = float32(math.NaN())
	two := slices.Clone(yy)
	two[last] = 2
	nulls := make([]bool, len(ids))
	for i := range nulls {
		nulls[i] = i != last
	}
	cases := []struct {
		name   string
		cols   []mlCol
		params map[string]any
		want   []string
	}{
		{"one class", []mlCol{{name: "id", vals: ids}, {name: "x", vals: x}, {name: "y", vals: make([]int8, 12)}}, nil, []string{`label "y" has only one class (0)`}},
		{"empty", []mlCol{{name: "id", vals: []int64{}}, {name: "x", vals: []float32{}}, {name: "y", vals: []int8{}}}, nil, []string{"empty"}},
		{"null feature", []mlCol{{name: "id", vals: ids}, {name: "x", vals: x, valid: nulls}, {name: "y", vals: yy}}, nil, []string{`feature column "x"`, lastRow, "null"}},
		{"NaN feature", []mlCol{{name: "id", vals: ids}, {name: "x", vals: nan}, {name: "y", vals: yy}}, nil, []string{`feature column "x"`, lastRow, "finite"}},
		{"label 2", []mlCol{{name: "id", vals: ids}, {name: "x", vals: x}, {name: "y", vals: two}}, nil, []string{`label column "y"`, lastRow, "0 or 1"}},
		{"string label", []mlCol{{name: "id", vals: ids}, {name: "x", vals: x}, {name: "y", vals: []string{"a", "b", "a", "b", "a", "b", "a", "b", "a", "b", "a", "b"}}}, nil, []string{`label column "y"`, "0/1"}},
		{"missing label", []mlCol{{name: "id", vals: ids}, {name: "x", vals: x}}, nil, []string{`no label column "y"`}},
		{"missing feature", []mlCol{{name: "id", vals: ids}, {name: "x", vals: x}, {name: "y", vals: yy}}, map[string]any{"features": []any{"x", "z"}}, []string{`no feature column "z"`}},
		{"string feature", []mlCol{{name: "id", vals: ids}, {name: "x", vals: x}, {name: "s", vals: make([]string, 12)}, {name: "y", vals: yy}}, map[string]any{"features": []any{"s"}}, []string{`feature column "s" is utf8, not numeric`}},
		{"no numeric columns", []mlCol{{name: "id", vals: ids}, {name: "s", vals: make([]string, 12)}, {name: "y", vals: yy}}, nil, []string{"no numeric or boolean columns"}},
		{"float id", []mlCol{{name: "id", vals: []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}, {name: "x", vals: x}, {name: "y", vals: yy}}, nil, []string{`id column "id" is float64`}},
		{"gbdt one class", []mlCol{{name: "id", vals: ids}, {name: "x", vals: x}, {name: "y", vals: make([]int8, 12)}}, map[string]any{"model": "gbdt"}, []string{"only one class"}},
	}
	for i, c := range cases {
		p := filepath.Join(dir, fmt.Sprintf("t%d.parquet", i))
		mlWriteTable(t, p, c.cols...)
		params := map[string]any{"label": "y", "id": "id"}
		for k, v := range c.params {
			params[k] = v
		}
		_, _, err := mlTrain(t, p, params, nil)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not say %q", c.name, err, w)
			}
		}
	}
	if _, _, err := mlTrain(t, filepath.Join(dir, "missing.parquet"), map[string]any{"label": "y", "id": "id"}, nil); err == nil || !strings.Contains(err.Error(), "missing.parquet") {
		t.Errorf("missing table: %v", err)
	}
	// A boolean label and boolean features are fine.
	p := filepath.Join(dir, "bool.parquet")
	bl := []bool{false, true, false, true, false, true, false, true, false, true, false, true}
	mlWriteTable(t, p, mlCol{name: "id", vals: ids}, mlCol{name: "b", vals: slices.Clone(bl)}, mlCol{name: "x", vals: x}, mlCol{name: "y", vals: bl})
	if _, log, err := mlTrain(t, p, map[string]any{"label": "y", "id": "id", "l2": 10}, nil); err != nil {
		t.Errorf("boolean label: %v\n%s", err, log)
	}
}

func TestTrainCheck(t *testing.T) {
	cases := []struct {
		params  map[string]any
		inputs  []string
		outputs []string
		want    []string // Problem fields
	}{
		{map[string]any{"label": "y", "id": "id"}, []string{"table"}, nil, nil},
		{map[string]any{"label": "y", "id": "id", "model": "gbdt", "rounds": 10, "max_depth": 3, "early_stopping_rounds": 0}, []string{"table", "stats"}, []string{"model"}, nil},
		{map[string]any{}, []string{"table"}, nil, []string{"params.label", "params.id"}},
		{map[string]any{"label": "y", "id": "y"}, []string{"table"}, nil, []string{"params.id"}},
		{map[string]any{"label": "y", "id": "id", "lr": 0.1}, []string{"table"}, nil, []string{"params.lr"}},
		{map[string]any{"label": "y", "id": "id", "holdout": 1.5}, []string{"table"}, nil, []string{"params.holdout"}},
		{map[string]any{"label": "y", "id": "id", "holdout": "big"}, []string{"table"}, nil, []string{"params.holdout"}},
		{map[string]any{"label": "y", "id": "id", "model": "forest"}, []string{"table"}, nil, []string{"params.model"}},
		{map[string]any{"label": "y", "id": "id", "rounds": 10}, []string{"table"}, nil, []string{"params.rounds"}},
		{map[string]any{"label": "y", "id": "id", "model": "gbdt", "max_iter": 10}, []string{"table"}, nil, []string{"params.max_iter"}},
		{map[string]any{"label": "y", "id": "id", "l2": -1}, []string{"table"}, nil, []string{"params.l2"}},
		{map[string]any{"label": "y", "id": "id", "model": "gbdt", "max_bins": 300}, []string{"table"}, nil, []string{"params.max_bins"}},
		{map[string]any{"label": "y", "id": "id", "features": []any{}}, []string{"table"}, nil, []string{"params.features"}},
		{map[string]any{"label": "y", "id": "id", "model": "gbdt", "rounds": 0, "max_depth": 20, "valid_fraction": 1}, []string{"table"}, nil, []string{"params.rounds", "params.max_depth", "params.valid_fraction"}},
		{map[string]any{"label": "y", "id": "id"}, nil, nil, []string{"inputs"}},
		{map[string]any{"label": "y", "id": "id"}, []string{"table", "extra"}, nil, []string{"inputs"}},
		{map[string]any{"label": "y", "id": "id"}, []string{"table"}, []string{"weights"}, []string{"outputs"}},
	}
	for i, c := range cases {
		d := &Decl{Stage: "train", Params: mlParams(c.params), Inputs: c.inputs, Outputs: c.outputs}
		ps := NewTrain().Check(d)
		var got []string
		for _, p := range ps {
			got = append(got, p.Field)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("case %d %v: problems %v, want fields %v", i, c.params, ps, c.want)
		}
		if !slices.Equal(d.Outputs, []string{"model"}) {
			t.Errorf("case %d: outputs %v, want [model]", i, d.Outputs)
		}
	}
}

// mlChurnLike makes n rows shaped like the churn features: 13 standardized
// numeric columns, 2 binary ones and 31 one-hot columns in groups of 4, 20,
// 3 and 4, with a label from a logistic model of a few of them.
func mlChurnLike(n int) ([][]float32, []uint8) {
	r := rand.New(rand.NewPCG(42, 42))
	var cols [][]float32
	for range 15 {
		cols = append(cols, make([]float32, n))
	}
	groups := []int{4, 20, 3, 4}
	first := len(cols)
	for _, g := range groups {
		for range g {
			cols = append(cols, make([]float32, n))
		}
	}
	y := make([]uint8, n)
	for i := range n {
		z := -1.2
		for j := range 13 {
			v := float32(math.Round(r.NormFloat64()*100) / 100)
			cols[j][i] = v
			z += float64(v) * (0.3 - 0.05*float64(j))
		}
		for j := 13; j < 15; j++ {
			if r.Float64() < 0.3 {
				cols[j][i] = 1
				z += 0.2
			}
		}
		c := first
		for gi, g := range groups {
			k := r.IntN(g)
			cols[c+k][i] = 1
			if gi == 2 && k == 0 {
				z += 1.2
			}
			c += g
		}
		if r.Float64() < 1/(1+math.Exp(-z)) {
			y[i] = 1
		}
	}
	return cols, y
}

func BenchmarkLogistic200k(b *testing.B) {
	cols, y := mlChurnLike(200_000)
	b.ResetTimer()
	for range b.N {
		if _, err := mlFitLogistic(context.Background(), cols, nil, y, mlLogisticConfig{L2: 1, MaxIter: 100, Tol: 1e-6}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLogistic1M fits 1M churn-like rows: above the Hessian sample
// (mlLrHessianRows), the path the 3M-row churn pipeline takes.
func BenchmarkLogistic1M(b *testing.B) {
	cols, y := mlChurnLike(1 << 20)
	b.ResetTimer()
	for range b.N {
		fit, err := mlFitLogistic(context.Background(), cols, nil, y, mlLogisticConfig{L2: 1, MaxIter: 100, Tol: 1e-6})
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(fit.iterations), "steps/op")
	}
}

// BenchmarkLrResiduals turns a chunk of churn-like margins into
// residuals, with and without the loss (ns/row).
func BenchmarkLrResiduals(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	m, y := make([]float64, mlLrChunk), make([]uint8, mlLrChunk)
	for i := range m {
		m[i] = r.NormFloat64()*1.2 - 1.3
		if r.Float64() < mlSigmoid(m[i]) {
			y[i] = 1
		}
	}
	res, w := make([]float64, mlLrChunk), make([]float64, mlLrChunk)
	for _, loss := range []bool{true, false} {
		b.Run(fmt.Sprintf("loss=%v", loss), func(b *testing.B) {
			for range b.N {
				mlLrResiduals(m, y, res, w, false, loss)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(m)), "ns/row")
		})
	}
}

func BenchmarkGBDT200k(b *testing.B) {
	cols, y := mlChurnLike(200_000)
	cfg := mlGbdtConfig{Rounds: 20, LearningRate: 0.1, MaxDepth: 6, MinSamplesLeaf: 20, L2: 1, MaxBins: 255}
	b.ResetTimer()
	for range b.N {
		c := slices.Clone(cols) // fit drops the caller's columns
		if _, err := mlFitGBDT(context.Background(), c, y, nil, nil, cfg, nil, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// The trees' float thresholds send every row where training's bins did:
// scoring the early-stopping fold with Model.Predict gives the validation
// loss training recorded for the kept trees.
func TestGBDTThresholdsMatchBins(t *testing.T) {
	cols, y := mlChurnLike(12_000)
	nf := 10_000
	fit := make([][]float32, len(cols))
	valid := make([][]float32, len(cols))
	for j, c := range cols {
		fit[j], valid[j] = slices.Clone(c[:nf]), slices.Clone(c[nf:])
	}
	cfg := mlGbdtConfig{Rounds: 60, LearningRate: 0.5, MaxDepth: 5, MinSamplesLeaf: 5, L2: 0.1, MaxBins: 64, EarlyStopping: 3}
	res, err := mlFitGBDT(context.Background(), fit, y[:nf], valid, y[nf:], cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m := &Model{Type: "gbdt", GBDT: &res.model}
	p := make([]float64, len(y)-nf)
	m.Predict(valid, len(p), p)
	ll := 0.0
	for i, pi := range p {
		if y[nf+i] == 1 {
			ll -= math.Log(pi)
		} else {
			ll -= math.Log1p(-pi)
		}
	}
	mlNear(t, "valid logloss by Predict", ll/float64(len(p)), *res.validLoss, 1e-9)

	// the training loss is the kept trees' (after early stopping took the
	// last rounds back out of the scores)
	if !res.stopped || len(res.model.Trees) >= res.iterations {
		t.Fatalf("expected early stopping: %d trees of %d rounds", len(res.model.Trees), res.iterations)
	}
	train := make([][]float32, len(cols))
	for j, c := range cols {
		train[j] = c[:nf]
	}
	p = make([]float64, nf)
	m.Predict(train, nf, p)
	ll = 0
	for i, pi := range p {
		if y[i] == 1 {
			ll -= math.Log(pi)
		} else {
			ll -= math.Log1p(-pi)
		}
	}
	mlNear(t, "train logloss by Predict", ll/float64(nf), res.trainLoss, 1e-9)
}

func TestCountBelow(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for trial := range 2000 {
		n := 1 + r.IntN(300)
		e := make([]float64, n)
		for i := range e {
			e[i] = float64(r.IntN(1000)) / 10
		}
		slices.Sort(e)
		e = slices.Compact(e)
		for range 20 {
			x := float64(r.IntN(1100)-50) / 10
			if trial%3 == 0 && len(e) > 0 {
				x = e[r.IntN(len(e))]
			}
			want, _ := slices.BinarySearch(e, x)
			if got := mlCountBelow(e, x); got != want {
				t.Fatalf("mlCountBelow(%v, %v) = %d, want %d", e, x, got, want)
			}
		}
	}
}

func TestQuantileEdges(t *testing.T) {
	// few distinct values: one bin each, edges at the midpoints
	got := mlQuantileEdges([]float32{1, 1, 2, 2, 2, 4}, 255)
	if !slices.Equal(got, []float64{1.5, 3}) {
		t.Errorf("edges %v, want [1.5 3]", got)
	}
	if got := mlQuantileEdges([]float32{7, 7, 7}, 255); len(got) != 0 {
		t.Errorf("constant column: edges %v", got)
	}
	// many distinct values: at most maxBins-1 edges, bins of similar size
	s := make([]float32, 10_000)
	for i := range s {
		s[i] = float32(i)
	}
	e := mlQuantileEdges(s, 10)
	if len(e) != 9 {
		t.Fatalf("%d edges, want 9: %v", len(e), e)
	}
	b := &mlBinning{edges: [][]float64{e}}
	bins := b.apply([][]float32{s}, len(s), 1)[0]
	counts := make([]int, 10)
	for _, v := range bins {
		counts[v]++
	}
	for k, c := range counts {
		if c < 900 || c > 1100 {
			t.Errorf("bin %d holds %d of 10000 rows", k, c)
		}
	}
	// a heavy value does not make empty bins
	s = append(make([]float32, 9000), s[:1000]...)
	slices.Sort(s)
	e = mlQuantileEdges(s, 10)
	if !slices.IsSorted(e) || len(e) > 9 || len(slices.Compact(slices.Clone(e))) != len(e) {
		t.Errorf("edges with a heavy value: %v", e)
	}
}
