package stages

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
)

// BenchmarkPreprocessFeatures runs the churn preprocess + features (the
// parity configuration, without the casts ingest makes unnecessary) on a
// churn-like table: ORCH_CHURN_PARQUET names a Parquet file (e.g. the
// 3M-row gen_churn.py data through ingest), otherwise 256Ki synthetic rows
// with ingest's types (int32 ids, int8 counts, float32 amounts, dictionary
// strings, date32 dates).
//
//	go test ./pkg/stages -run '^$' -bench PreprocessFeatures -benchtime 3x
func BenchmarkPreprocessFeatures(b *testing.B) {
	in := os.Getenv("ORCH_CHURN_PARQUET")
	if in == "" {
		in = featTSynthChurn(b, 256<<10)
	}
	pre := map[string]any{}
	for k, v := range featTParityPre {
		if k != "cast" {
			pre[k] = v
		}
	}
	b.ResetTimer()
	for range b.N {
		outs, log, err := opsTRun(b, NewPreprocess(), in, pre, "table")
		if err != nil {
			b.Fatalf("preprocess: %v\n%s", err, log)
		}
		if _, log, err := opsTRun(b, NewFeatures(), outs["table"], featTParityFeat, "table", "stats"); err != nil {
			b.Fatalf("features: %v\n%s", err, log)
		}
	}
}

// featTSynthChurn writes n rows shaped like gen_churn.py's data.
func featTSynthChurn(b testing.TB, n int) string {
	r := rand.New(rand.NewPCG(20240607, 1))
	pick := func(names ...string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = names[r.IntN(len(names))]
		}
		return out
	}
	regions := make([]string, 20)
	for i := range regions {
		regions[i] = fmt.Sprintf("region_%02d", i)
	}
	id := make([]int32, n)
	day := make([]int32, n)
	tenure := make([]int8, n)
	small := func(max int) []int8 {
		v := make([]int8, n)
		for i := range v {
			v[i] = int8(r.IntN(max))
		}
		return v
	}
	last := make([]int16, n)
	f32 := func(f func() float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(f())
		}
		return v
	}
	var nulls []int
	for i := range id {
		id[i] = int32(1_000_000 + i)
		if r.IntN(200) == 0 {
			id[i] = int32(1_000_000 + r.IntN(n)) // ~0.5% duplicates
		}
		tenure[i] = int8(1 + r.IntN(72))
		day[i] = 20088 - int32(float64(tenure[i])*30.4) - int32(r.IntN(30))
		last[i] = int16(math.Min(300, r.ExpFloat64()*12))
		if r.IntN(100) == 0 {
			nulls = append(nulls, i)
		}
	}
	monthly := f32(func() float64 { return math.Max(10, 55+r.NormFloat64()*25) })
	total := make([]float32, n)
	for i := range total {
		total[i] = monthly[i] * float32(tenure[i])
	}
	return opsTWrite(b, b.TempDir(),
		opsTCol{name: "customer_id", vals: id},
		opsTCol{name: "signup_date", vals: day, date: true},
		opsTCol{name: "tenure_months", vals: tenure},
		opsTCol{name: "plan", vals: pick("Basic", "Standard", "Premium", "Family"), dict: true},
		opsTCol{name: "region", vals: pick(regions...), dict: true},
		opsTCol{name: "monthly_charges", vals: monthly},
		opsTCol{name: "total_charges", vals: total, null: nulls},
		opsTCol{name: "num_support_calls", vals: small(6)},
		opsTCol{name: "avg_session_minutes", vals: f32(func() float64 { return r.ExpFloat64() * 24 })},
		opsTCol{name: "last_login_days_ago", vals: last},
		opsTCol{name: "payment_method", vals: pick("credit_card", "bank_transfer", "electronic_check", "mailed_check"), dict: true},
		opsTCol{name: "contract", vals: pick("month_to_month", "one_year", "two_year"), dict: true},
		opsTCol{name: "is_senior", vals: small(2)},
		opsTCol{name: "num_dependents", vals: small(5)},
		opsTCol{name: "data_usage_gb", vals: f32(func() float64 { return math.Exp(2 + 0.9*r.NormFloat64()) })},
		opsTCol{name: "dropped_calls", vals: small(4)},
		opsTCol{name: "paperless_billing", vals: small(2)},
		opsTCol{name: "num_devices", vals: small(6)},
		opsTCol{name: "satisfaction_score", vals: small(5)},
		opsTCol{name: "churned", vals: small(2)},
	)
}
