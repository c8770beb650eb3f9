package stages

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
)

// The synthetic churn generator: the columns of
// ../shared/baselines/gen_churn.py with the same distributions, generated
// column at a time in chunks of synthChunkRows rows. Chunk k draws from its
// own PCG stream seeded with (seed, k), so the data depends only on the
// seed and the row count, never on how many goroutines generate it.

const synthChunkRows = 1 << 14

// synthColumns are the generated columns and their types, in order.
var synthColumns = []struct{ name, typ string }{
	{"customer_id", "int32"},
	{"signup_date", "date"},
	{"tenure_months", "int8"},
	{"plan", "category"},
	{"region", "category"},
	{"monthly_charges", "float32"},
	{"total_charges", "float64"},
	{"num_support_calls", "int8"},
	{"avg_session_minutes", "float32"},
	{"last_login_days_ago", "int16"},
	{"payment_method", "category"},
	{"contract", "category"},
	{"is_senior", "int8"},
	{"num_dependents", "int8"},
	{"data_usage_gb", "float32"},
	{"dropped_calls", "int8"},
	{"paperless_billing", "int8"},
	{"num_devices", "int8"},
	{"satisfaction_score", "int8"},
	{"churned", "int8"},
}

var (
	synthPlans     = []string{"Basic", "Standard", "Premium", "Family"}
	synthPayments  = []string{"credit_card", "bank_transfer", "electronic_check", "mailed_check"}
	synthContracts = []string{"month_to_month", "one_year", "two_year"}
	synthRegions   = func() []string {
		r := make([]string, 20)
		for i := range r {
			r[i] = "region_" + string(rune('0'+i/10)) + string(rune('0'+i%10))
		}
		return r
	}()
	synthPlanBase = [4]float64{25, 55, 85, 110}
	// 2024-12-31 as days since 1970-01-01.
	synthEnd = int32(ingDaysFromCivil(2024, 12, 31))
)

// synthetic generates rows of churn data into r.chunks.
func (r *ingRun) synthetic(rows, seed int64) error {
	nchunks := int((rows + synthChunkRows - 1) / synthChunkRows)
	r.chunks = make([]*ingChunk, nchunks)
	idType := "int32"
	if 1_000_000+rows-1 > math.MaxInt32 {
		idType = "int64"
	}
	for _, c := range synthColumns {
		t := c.typ
		if c.name == "customer_id" {
			t = idType
		}
		r.decls[c.name], _ = ingParseDecl(t)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(r.workers, nchunks) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := &synthGen{}
			for r.ctx.Err() == nil {
				k := int(next.Add(1) - 1)
				if k >= nchunks {
					return
				}
				start := int64(k) * synthChunkRows
				n := int(min(synthChunkRows, rows-start))
				r.chunks[k] = g.chunk(seed, k, start, n, rows, idType == "int64")
			}
		}()
	}
	wg.Wait()
	return r.ctx.Err()
}

// synthGen holds one goroutine's scratch columns.
type synthGen struct {
	plan, region, pay, con, tenure, support, lastLogin, sat, dropped, senior []int
	monthly                                                                  []float64
}

func synthInts(s []int, n int) []int {
	if cap(s) < n {
		return make([]int, n)
	}
	return s[:n]
}

// synthChoice draws an index with the given cumulative probabilities.
func synthChoice(rng *rand.Rand, cum []float64) int {
	u := rng.Float64()
	for i, c := range cum {
		if u < c {
			return i
		}
	}
	return len(cum)
}

// synthPoissonCDF returns the cumulative distribution of Poisson(λ) up to
// where it is 1 within float64 precision, for drawing by inversion.
func synthPoissonCDF(lambda float64) []float64 {
	var cdf []float64
	p := math.Exp(-lambda)
	sum := 0.0
	for k := 0; sum < 1-1e-16 && k < 100; k++ {
		sum += p
		cdf = append(cdf, sum)
		p *= lambda / float64(k+1)
	}
	return cdf
}

var (
	synthSupport1, synthSupport2 = synthPoissonCDF(1.2), synthPoissonCDF(2.0)
	synthDropped                 = synthPoissonCDF(0.6)
	synthPlanCum                 = []float64{0.35, 0.70, 0.90}
	synthPayCum                  = []float64{0.30, 0.55, 0.85}
	synthConCum                  = []float64{0.55, 0.80}
	synthDepsCum                 = []float64{0.5, 0.7, 0.85, 0.95}
)

func synthRound(x float64, digits int) float64 {
	s := ingPow10[digits]
	return math.RoundToEven(x*s) / s
}

// chunk generates rows [start, start+n) of a table of total rows.
func (g *synthGen) chunk(seed int64, k int, start int64, n int, total int64, id64 bool) *ingChunk {
	rng := rand.New(rand.NewPCG(uint64(seed), uint64(k)^0x5eedc402))
	g.plan, g.region = synthInts(g.plan, n), synthInts(g.region, n)
	g.pay, g.con = synthInts(g.pay, n), synthInts(g.con, n)
	g.tenure, g.support = synthInts(g.tenure, n), synthInts(g.support, n)
	g.lastLogin, g.sat = synthInts(g.lastLogin, n), synthInts(g.sat, n)
	g.dropped, g.senior = synthInts(g.dropped, n), synthInts(g.senior, n)
	if cap(g.monthly) < n {
		g.monthly = make([]float64, n)
	}
	g.monthly = g.monthly[:n]

	ch := &ingChunk{rows: n}
	add := func(name string, p ingPiece) {
		ch.names = append(ch.names, name)
		ch.pieces = append(ch.pieces, p)
	}
	codes := func(v []int, dict []string) ingPiece {
		c := make([]int16, n)
		for i, x := range v {
			c[i] = int16(x)
		}
		return ingPiece{kind: ingStr, n: n, dict: dict, arr: ingArray(arrow.PrimitiveTypes.Int16, n, nil, 0, arrow.Int16Traits.CastToBytes(c))}
	}
	int8s := func(v []int) ingPiece {
		c := make([]int8, n)
		lo, hi := int64(math.MaxInt8), int64(math.MinInt8)
		for i, x := range v {
			c[i] = int8(x)
			lo, hi = min(lo, int64(x)), max(hi, int64(x))
		}
		return ingPiece{kind: ingInt, n: n, min: lo, max: hi, f32ok: true, arr: ingArray(arrow.PrimitiveTypes.Int8, n, nil, 0, arrow.Int8Traits.CastToBytes(c))}
	}
	float32s := func(v []float32) ingPiece {
		return ingPiece{kind: ingFloat, n: n, f32ok: true, arr: ingArray(arrow.PrimitiveTypes.Float32, n, nil, 0, arrow.Float32Traits.CastToBytes(v))}
	}

	// Categoricals and tenure.
	for i := range n {
		g.plan[i] = synthChoice(rng, synthPlanCum)
	}
	for i := range n {
		g.region[i] = rng.IntN(20)
	}
	for i := range n {
		g.pay[i] = synthChoice(rng, synthPayCum)
	}
	for i := range n {
		g.con[i] = synthChoice(rng, synthConCum)
	}
	for i := range n {
		g.tenure[i] = 1 + rng.IntN(72)
	}

	// customer_id: consecutive, with ~0.5% duplicates of a random other id.
	ids := make([]int64, n)
	for i := range n {
		ids[i] = 1_000_000 + start + int64(i)
		if rng.Float64() < 0.005 {
			ids[i] = 1_000_000 + rng.Int64N(total)
		}
	}
	if id64 {
		add("customer_id", ingPiece{kind: ingInt, n: n, min: 1_000_000, max: 1_000_000 + total - 1, arr: ingArray(arrow.PrimitiveTypes.Int64, n, nil, 0, arrow.Int64Traits.CastToBytes(ids))})
	} else {
		id32 := make([]int32, n)
		lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
		for i, v := range ids {
			id32[i] = int32(v)
			lo, hi = min(lo, v), max(hi, v)
		}
		add("customer_id", ingPiece{kind: ingInt, n: n, min: lo, max: hi, arr: ingArray(arrow.PrimitiveTypes.Int32, n, nil, 0, arrow.Int32Traits.CastToBytes(id32))})
	}

	// signup_date: about tenure months before 2024-12-31, less up to 29 days.
	dates := make([]int32, n)
	for i, t := range g.tenure {
		dates[i] = synthEnd - int32(float64(t)*30.4) - int32(rng.IntN(30))
	}
	add("signup_date", ingPiece{kind: ingDate, n: n, arr: ingArray(arrow.FixedWidthTypes.Date32, n, nil, 0, arrow.Int32Traits.CastToBytes(dates))})
	add("tenure_months", int8s(g.tenure))
	add("plan", codes(g.plan, synthPlans))
	add("region", codes(g.region, synthRegions))

	// monthly_charges: plan base + region adjustment + noise, at least 10,
	// and one row in 2000 an extreme outlier (5 to 20 times).
	monthly32 := make([]float32, n)
	for i := range n {
		m := synthPlanBase[g.plan[i]] + float64(g.region[i]-10)*0.8 + rng.NormFloat64()*8
		m = synthRound(max(m, 10), 2)
		if rng.Float64() < 1.0/2000 {
			m = synthRound(m*(5+15*rng.Float64()), 2)
		}
		g.monthly[i] = m
		monthly32[i] = float32(m)
	}
	add("monthly_charges", float32s(monthly32))

	// total_charges: monthly × tenure × U(0.9, 1.05); ~1% missing.
	total64 := make([]float64, n)
	var nullRows []int32
	for i := range n {
		total64[i] = synthRound(g.monthly[i]*float64(g.tenure[i])*(0.9+0.15*rng.Float64()), 2)
		if rng.Float64() < 0.01 {
			total64[i] = 0
			nullRows = append(nullRows, int32(i))
		}
	}
	add("total_charges", ingPiece{kind: ingFloat, n: n, nulls: len(nullRows), arr: ingArray(arrow.PrimitiveTypes.Float64, n, ingValidity(n, nullRows), len(nullRows), arrow.Float64Traits.CastToBytes(total64))})

	// num_support_calls ~ Poisson(1.2, or 2.0 on month-to-month contracts).
	for i := range n {
		cdf := synthSupport1
		if g.con[i] == 0 {
			cdf = synthSupport2
		}
		g.support[i] = synthChoice(rng, cdf)
	}
	add("num_support_calls", int8s(g.support))

	// avg_session_minutes ~ Gamma(4, 6): the sum of four exponentials.
	session := make([]float32, n)
	for i := range n {
		x := rng.ExpFloat64() + rng.ExpFloat64() + rng.ExpFloat64() + rng.ExpFloat64()
		session[i] = float32(synthRound(6*x, 1))
	}
	add("avg_session_minutes", float32s(session))

	// last_login_days_ago ~ Geometric(0.08) - 1.
	ln := math.Log(1 - 0.08)
	login := make([]int16, n)
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for i := range n {
		v := min(int(math.Floor(math.Log(1-rng.Float64())/ln)), math.MaxInt16)
		g.lastLogin[i] = v
		login[i] = int16(v)
		lo, hi = min(lo, int64(v)), max(hi, int64(v))
	}
	add("last_login_days_ago", ingPiece{kind: ingInt, n: n, min: lo, max: hi, f32ok: true, arr: ingArray(arrow.PrimitiveTypes.Int16, n, nil, 0, arrow.Int16Traits.CastToBytes(login))})
	add("payment_method", codes(g.pay, synthPayments))
	add("contract", codes(g.con, synthContracts))

	for i := range n {
		g.senior[i] = 0
		if rng.Float64() < 0.16 {
			g.senior[i] = 1
		}
	}
	add("is_senior", int8s(g.senior))

	deps := synthInts(nil, n)
	for i := range n {
		deps[i] = synthChoice(rng, synthDepsCum)
	}
	add("num_dependents", int8s(deps))

	// data_usage_gb ~ LogNormal(2, 0.9).
	usage := make([]float32, n)
	for i := range n {
		usage[i] = float32(synthRound(math.Exp(2+0.9*rng.NormFloat64()), 3))
	}
	add("data_usage_gb", float32s(usage))

	for i := range n {
		g.dropped[i] = synthChoice(rng, synthDropped)
	}
	add("dropped_calls", int8s(g.dropped))

	paper := deps // reuse
	for i := range n {
		paper[i] = 0
		if rng.Float64() < 0.6 {
			paper[i] = 1
		}
	}
	add("paperless_billing", int8s(paper))

	devices := synthInts(nil, n)
	for i := range n {
		devices[i] = 1 + rng.IntN(6)
	}
	add("num_devices", int8s(devices))

	for i := range n {
		g.sat[i] = int(min(max(math.RoundToEven(3.6+rng.NormFloat64()), 1), 5))
	}
	add("satisfaction_score", int8s(g.sat))

	// churned: a logistic model of contract, tenure, support calls, charges,
	// satisfaction, dropped calls, payment method, last login and age.
	churned := make([]int, n)
	for i := range n {
		logit := -1.6 - 0.035*float64(g.tenure[i]) + 0.35*float64(g.support[i]) +
			0.012*(min(g.monthly[i], 200)-60) - 0.45*(float64(g.sat[i])-3.6) +
			0.25*float64(g.dropped[i]) + 0.01*float64(min(g.lastLogin[i], 100)) + 0.2*float64(g.senior[i])
		switch g.con[i] {
		case 0:
			logit += 1.3
		case 2:
			logit -= 0.6
		}
		if g.pay[i] == 2 {
			logit += 0.4
		}
		if rng.Float64() < 1/(1+math.Exp(-logit)) {
			churned[i] = 1
		}
	}
	add("churned", int8s(churned))
	return ch
}
