package stages

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func mlNear(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol || math.IsNaN(got) {
		t.Errorf("%s = %.12g, want %.12g (±%g)", what, got, want, tol)
	}
}

// AUC, average precision and log loss on tiny inputs, against values worked
// out by hand and confirmed with scikit-learn 1.2.1 (roc_auc_score,
// average_precision_score, log_loss).
func TestMetricsHandChecked(t *testing.T) {
	cases := []struct {
		y           []uint8
		p           []float64
		auc, ap, ll float64
	}{
		// sklearn's average_precision_score doc example.
		{y: []uint8{0, 0, 1, 1}, p: []float64{0.1, 0.4, 0.35, 0.8}, auc: 0.75, ap: 0.8333333333333333, ll: 0.47228795380917615},
		// Ties across classes: groups {.9: +,-} {.5: +,-,+} {.2: -} {.1: -,+}.
		// AUC = (1·0.5 + 1·2 + 1·3 + 1·3.5)/16; AP = ¼·½ + ½·⅗ + ¼·½.
		{y: []uint8{1, 0, 1, 0, 1, 0, 0, 1}, p: []float64{0.9, 0.9, 0.5, 0.5, 0.5, 0.2, 0.1, 0.1}, auc: 0.5625, ap: 0.55, ll: 0.8898095387872237},
	}
	for i, c := range cases {
		auc, ap := mlRankMetrics(c.p, c.y)
		mlNear(t, "auc", auc, c.auc, 1e-12)
		mlNear(t, "ap", ap, c.ap, 1e-12)
		mlNear(t, "logloss", mlLogLoss(c.p, c.y), c.ll, 1e-12)
		if t.Failed() {
			t.Fatalf("case %d", i)
		}
	}
	// All scores tied: AUC is exactly one half, AP the base rate.
	auc, ap := mlRankMetrics([]float64{0.3, 0.3, 0.3, 0.3}, []uint8{1, 0, 0, 0})
	mlNear(t, "auc all tied", auc, 0.5, 0)
	mlNear(t, "ap all tied", ap, 0.25, 1e-15)
	// Perfect and reversed rankings.
	auc, ap = mlRankMetrics([]float64{0.9, 0.8, 0.2, 0.1}, []uint8{1, 1, 0, 0})
	mlNear(t, "auc perfect", auc, 1, 0)
	mlNear(t, "ap perfect", ap, 1, 0)
	auc, _ = mlRankMetrics([]float64{0.1, 0.2, 0.8, 0.9}, []uint8{1, 1, 0, 0})
	mlNear(t, "auc reversed", auc, 0, 0)
	// Scores sort as floats: negatives below zero, −0 tied with +0.
	auc, _ = mlRankMetrics([]float64{-2, -1e-300, math.Copysign(0, -1), 0, 1e-300, 3}, []uint8{0, 0, 1, 0, 1, 1})
	mlNear(t, "auc signed", auc, (2.5+3+3)/9.0, 1e-15) // −0 above two negatives and tied with 0
	// Log loss clips probabilities of exactly 0 and 1.
	ll := mlLogLoss([]float64{1, 0}, []uint8{0, 1})
	mlNear(t, "logloss clipped", ll, (-math.Log1p(-(1-1e-15))-math.Log(1e-15))/2, 1e-12)
}

// The tie-aware AUC equals the brute-force pair count (a positive above a
// negative scores 1, a tie ½) on random inputs with many ties.
func TestAUCMatchesPairCount(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 200 {
		n := 2 + r.IntN(60)
		p := make([]float64, n)
		y := make([]uint8, n)
		for i := range p {
			p[i] = float64(r.IntN(6)) / 5 // six levels: ties everywhere
			if r.Float64() < 0.4 {
				y[i] = 1
			}
		}
		y[0], y[1] = 0, 1
		var num, pairs float64
		for i := range n {
			for j := range n {
				if y[i] != 1 || y[j] != 0 {
					continue
				}
				pairs++
				switch {
				case p[i] > p[j]:
					num++
				case p[i] == p[j]:
					num += 0.5
				}
			}
		}
		auc, _ := mlRankMetrics(p, y)
		if math.Abs(auc-num/pairs) > 1e-12 {
			t.Fatalf("trial %d: auc %v, pair count %v (p=%v y=%v)", trial, auc, num/pairs, p, y)
		}
	}
}

// Average precision equals its definition computed the slow way: for each
// distinct threshold, the recall gained times the precision at it.
func TestAveragePrecisionDefinition(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := range 100 {
		n := 2 + r.IntN(40)
		p := make([]float64, n)
		y := make([]uint8, n)
		for i := range p {
			p[i] = float64(r.IntN(8)) / 7
			if r.Float64() < 0.3 {
				y[i] = 1
			}
		}
		y[0] = 1
		P := 0.0
		for _, v := range y {
			P += float64(v)
		}
		want, prevRecall := 0.0, 0.0
		for k := 7; k >= 0; k-- {
			var tp, fp float64
			for i := range p {
				if p[i] >= float64(k)/7 {
					if y[i] == 1 {
						tp++
					} else {
						fp++
					}
				}
			}
			if tp+fp == 0 {
				continue
			}
			want += (tp/P - prevRecall) * tp / (tp + fp)
			prevRecall = tp / P
		}
		_, ap := mlRankMetrics(p, y)
		if math.Abs(ap-want) > 1e-12 {
			t.Fatalf("trial %d: ap %v, want %v", trial, ap, want)
		}
	}
}

func TestComputeMetrics(t *testing.T) {
	p := []float64{0.05, 0.15, 0.15, 0.5, 0.55, 0.95, 1.0, 0.1}
	y := []uint8{0, 0, 1, 0, 1, 1, 1, 0}
	m, err := mlComputeMetrics(p, y, 0.5, 10)
	if err != nil {
		t.Fatal(err)
	}
	// At 0.5 (>=): predicted positive 0.5, 0.55, 0.95, 1.0 → TP 3, FP 1;
	// negatives 0.05, 0.15, 0.15, 0.1 → TN 3, FN 1.
	if m.confusion != (Confusion{TP: 3, FP: 1, TN: 3, FN: 1}) {
		t.Errorf("confusion %+v", m.confusion)
	}
	mlNear(t, "accuracy", m.accuracy, 0.75, 1e-15)
	mlNear(t, "precision", m.precision, 0.75, 1e-15)
	mlNear(t, "recall", m.recall, 0.75, 1e-15)
	mlNear(t, "f1", m.f1, 0.75, 1e-15)
	if m.rows != 8 || m.positives != 4 {
		t.Errorf("rows %d positives %d", m.rows, m.positives)
	}
	// Calibration: 0.05 → bin 0; 0.1, 0.15, 0.15 → bin 1 (0.1·10 = 1);
	// 0.5, 0.55 → bin 5; 0.95, 1.0 → bin 9 (1.0 goes in the last bin).
	wantCount := []int{1, 3, 0, 0, 0, 2, 0, 0, 0, 2}
	total := 0
	for b, c := range m.calibration {
		total += c.Count
		if c.Count != wantCount[b] {
			t.Errorf("bin %d count %d, want %d", b, c.Count, wantCount[b])
		}
		if (c.Count == 0) != (c.MeanPredicted == nil) || (c.Count == 0) != (c.ObservedRate == nil) {
			t.Errorf("bin %d: empty bins have null means: %+v", b, c)
		}
		mlNear(t, "bin lo", c.Lo, float64(b)/10, 1e-15)
	}
	if total != len(p) {
		t.Errorf("calibration counts sum to %d, want %d", total, len(p))
	}
	b1 := m.calibration[1]
	mlNear(t, "bin 1 mean predicted", *b1.MeanPredicted, (0.1+0.15+0.15)/3, 1e-15)
	mlNear(t, "bin 1 observed", *b1.ObservedRate, 1.0/3, 1e-15)
	b9 := m.calibration[9]
	mlNear(t, "bin 9 mean predicted", *b9.MeanPredicted, 0.975, 1e-15)
	mlNear(t, "bin 9 observed", *b9.ObservedRate, 1, 0)
	// ECE = Σ count/n · |mean − observed|
	ece := (1*math.Abs(0.05-0) + 3*math.Abs((0.4/3)-1.0/3) + 2*math.Abs(0.525-0.5) + 2*math.Abs(0.975-1)) / 8
	mlNear(t, "ece", m.ece, ece, 1e-15)

	// No predicted positives: precision and F1 are 0, not NaN.
	m, err = mlComputeMetrics([]float64{0.1, 0.2}, []uint8{0, 1}, 0.5, 10)
	if err != nil {
		t.Fatal(err)
	}
	if m.precision != 0 || m.f1 != 0 || m.recall != 0 {
		t.Errorf("no positives predicted: precision %v recall %v f1 %v", m.precision, m.recall, m.f1)
	}

	if _, err := mlComputeMetrics([]float64{0.1, 0.2}, []uint8{1, 1}, 0.5, 10); !errors.Is(err, errMLOneClass) {
		t.Errorf("one class: err %v", err)
	}
	if _, err := mlComputeMetrics(nil, nil, 0.5, 10); err == nil {
		t.Error("no rows: no error")
	}
	if _, err := mlComputeMetrics([]float64{math.NaN(), 0.2}, []uint8{0, 1}, 0.5, 10); err == nil {
		t.Error("NaN prediction: no error")
	}
}

// BenchmarkComputeMetrics600k scores a churn-sized holdout (600k rows).
func BenchmarkComputeMetrics600k(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	n := 600_000
	p, y := make([]float64, n), make([]uint8, n)
	for i := range n {
		z := r.NormFloat64()*1.3 - 1
		p[i] = 1 / (1 + math.Exp(-z))
		if r.Float64() < p[i] {
			y[i] = 1
		}
	}
	b.ResetTimer()
	for range b.N {
		if _, err := mlComputeMetrics(p, y, 0.5, 10); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRadixSort(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 2, 17, 1000, 5000} {
		keys := make([]uint64, n)
		for i := range keys {
			switch i % 3 {
			case 0:
				keys[i] = r.Uint64()
			case 1:
				keys[i] = mlOrderKey(r.Float64())
			default:
				keys[i] = keys[max(0, i-1)] // ties
			}
		}
		want := slices.Clone(keys)
		slices.Sort(want)
		mlRadixSort(keys, make([]uint64, n))
		if !slices.Equal(keys, want) {
			t.Fatalf("n %d: not sorted like slices.Sort", n)
		}
	}
}
