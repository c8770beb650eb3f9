package stages

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// A boolean feature that is true in no training row (a one-hot category
// absent from the train split) trains and predicts like any other: its
// row list is empty, not missing, and with nothing to fit its coefficient
// stays 0.
func TestLogisticAllFalseBoolean(t *testing.T) {
	for _, n := range []int{1000, 100_000} {
		r := rand.New(rand.NewPCG(1, 2))
		x := make([]float32, n)
		flag := make([]bool, n)
		lab := make([]int8, n)
		id := make([]int64, n)
		for i := range n {
			x[i] = float32(r.NormFloat64())
			id[i] = int64(i)
			if r.Float64() < 1/(1+math.Exp(-2*float64(x[i]))) {
				lab[i] = 1
			}
		}
		p := filepath.Join(t.TempDir(), "t.parquet")
		mlWriteTable(t, p, mlCol{name: "x", vals: x}, mlCol{name: "flag", vals: flag}, mlCol{name: "y", vals: lab}, mlCol{name: "id", vals: id})
		m, _ := mlMustTrain(t, p, map[string]any{"label": "y", "id": "id", "model": "logistic"})
		if got := m.Logistic.Coef[1]; got != 0 {
			t.Errorf("n=%d: coefficient of an all-false feature %v, want 0", n, got)
		}
		if got := m.Logistic.Coef[0]; got < 1 {
			t.Errorf("n=%d: coefficient of x %v, want about 2", n, got)
		}
		// validate predicts the holdout, where the feature is all false too
		if rep := mlValidate(t, m, p, map[string]any{}); rep.AUC < 0.7 {
			t.Errorf("n=%d: holdout AUC %v, want above 0.7", n, rep.AUC)
		}
	}
}

// The residuals' inlined exp and log1p: a NaN margin gives a NaN loss (it
// used to index the log table at MinInt64), and margins far out in either
// direction (up to 1e300; (z+|z|)/2 overflows past 8.9e307) give the
// loss max(z, 0) + log1p(e^−|z|) − y·z.
func TestLrResidualsExtremeMargins(t *testing.T) {
	for _, z := range []float64{math.NaN(), -1e300, -720, -30, -1e-9, 0, 1e-9, 30, 720, 1e300} {
		for _, y := range []uint8{0, 1} {
			r, w := make([]float64, 1), make([]float64, 1)
			l := mlLrResiduals([]float64{z}, []uint8{y}, r, w, true, true)
			want := max(z, 0) + math.Log1p(math.Exp(-math.Abs(z))) - float64(y)*z
			switch {
			case math.IsNaN(z):
				if !math.IsNaN(l) {
					t.Errorf("z=NaN y=%d: loss %v, want NaN", y, l)
				}
			case math.Abs(l-want) > 1e-12*math.Max(1, math.Abs(want)):
				t.Errorf("z=%v y=%d: loss %v, want %v", z, y, l, want)
			}
		}
	}
}
