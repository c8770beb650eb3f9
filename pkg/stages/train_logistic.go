package stages

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
)

// mlLogisticConfig are the params of an L2 logistic regression.
type mlLogisticConfig struct {
	L2      float64 // λ in Σ logloss + λ/2·‖w‖² (intercept not penalized); λ = 1/C of scikit-learn
	MaxIter int
	Tol     float64 // stop when no coefficient moves more than Tol in a step
	// HessianRows is the most rows the Hessian is summed over; 0 means
	// mlLrHessianRows.
	HessianRows int
}

// mlLrChunk is the number of rows one task of the parallel pass handles:
// the chunk's feature values (4096 rows of 46 float32 columns, 750 KB) stay
// in the core's cache between the margin and the gradient loops. Partial
// sums are per chunk and added in chunk order, so results do not depend on
// the number of cores.
const mlLrChunk = 4096

// mlLrHessianRows is the most rows the Hessian is summed over by default.
// On the 3M-row churn table a 2^16-row sample's Hessian makes each
// full-data step shrink the next about 20-fold, so four full-data steps
// reach tol 1e-6; 2^15 rows take eight, 2^18 rows four as well at four
// times the sample's cost (docs/benchmarks.md, "Third session").
const mlLrHessianRows = 1 << 16

// mlLrWarmTol is the step size at which the Newton iterations on the
// Hessian sample stop when more rows remain: the sample's optimum differs
// from the full one by more than that (by 0.09 on the churn table).
const mlLrWarmTol = 1e-2

// mlLrPartial is one chunk's share of the loss, gradient and Hessian.
type mlLrPartial struct {
	loss float64
	g    []float64 // D
	h    []float64 // D×D, upper triangle filled; nil until a Hessian is asked for
}

// mlLrData evaluates the data part of the objective, Σᵢ logloss(yᵢ, b + w·xᵢ),
// its gradient and its Hessian, on all cores.
type mlLrData struct {
	cols  [][]float32
	y     []uint8
	dense []int // the columns the passes read whole
	// sparse 0/1 columns (at most mlLrSparseMax ones, as one-hot columns
	// are):
	// ones[j] lists the rows holding 1, ascending, and chunk c's are
	// ones[j][start[j][c]:start[j][c+1]]; nil for dense columns
	ones, start [][]int32
	sparse      []int
	denseI      []int // dense, and d for the intercept
	// maxAbs[j] is the largest |x| of column j: a step s changes no margin
	// by more than |s_d| + Σ |s_j|·maxAbs[j]
	maxAbs []float64
	parts  []mlLrPartial
	scr    []mlLrScratch
}

type mlLrScratch struct {
	m, r, w, wx []float64
	dots        []float64 // a dot product per dense column
	one         []float32 // the intercept's column: 1s
	cnt, at     []int32   // a chunk's rows' sparse ones, as CSR
}

// mlNewLrData prepares the passes over cols (and the columns listed in
// ones, where ones[j] is not nil: the ascending rows holding 1, as
// mlLoadRows gives them; ones may be nil) and labels y.
func mlNewLrData(cols [][]float32, ones [][]int32, y []uint8) *mlLrData {
	n, D := len(y), len(cols)+1
	nChunks := (n + mlLrChunk - 1) / mlLrChunk
	e := &mlLrData{cols: cols, y: y, ones: make([][]int32, len(cols)), start: make([][]int32, len(cols)),
		maxAbs: make([]float64, len(cols)), parts: make([]mlLrPartial, nChunks), scr: make([]mlLrScratch, mlParallelism(nChunks))}
	for i := range e.parts {
		e.parts[i].g = make([]float64, D)
	}
	for i := range e.scr {
		e.scr[i] = mlLrScratch{m: make([]float64, mlLrChunk), r: make([]float64, mlLrChunk), w: make([]float64, mlLrChunk), dots: make([]float64, D)}
	}
	mlParallelDo(len(cols), mlParallelism(len(cols)), func(_, j int) {
		if ones != nil && ones[j] != nil {
			e.ones[j], e.start[j] = ones[j], mlChunkStarts(ones[j], nChunks, mlLrChunk)
		} else if e.ones[j], e.start[j] = mlSparseOnes(cols[j], nChunks); e.ones[j] == nil {
			e.maxAbs[j] = mlMaxAbs(cols[j])
			return
		}
		if len(e.ones[j]) > 0 {
			e.maxAbs[j] = 1
		}
	})
	for j := range cols {
		if e.ones[j] != nil {
			e.sparse = append(e.sparse, j)
		} else {
			e.dense = append(e.dense, j)
		}
	}
	e.denseI = append(slices.Clone(e.dense), len(cols))
	return e
}

// mlLrSparseMax is the largest share of ones for which a 0/1 column is
// kept as a list of rows: on churn-like columns a pass over 1M rows takes
// 34 ms with every column dense, 27 ms with the 0/1 columns below 0.4 as
// lists (0.1: 28 ms).
const mlLrSparseMax = 0.4

// mlSparseOnes returns the rows where col holds 1 and where each chunk's
// start in that list, if col holds only 0 and 1 and at most mlLrSparseMax
// ones; otherwise nil. Both passes are branch-free per value (one-hot
// values defeat branch prediction), and the first stops at the first chunk
// with another value, so a dense column costs one chunk.
func mlSparseOnes(col []float32, nChunks int) (ones, start []int32) {
	const one = 0x3F800000 // the bits of float32(1); bit 29 is set in it, clear in 0
	count := 0
	for lo := 0; lo < len(col); lo += mlLrChunk {
		var bad uint32
		for _, v := range col[lo:min(lo+mlLrChunk, len(col))] {
			b := math.Float32bits(v)
			isOne := b >> 29 & 1
			bad |= b ^ (-isOne & one) // 0 exactly when v is +0 or 1
			count += int(isOne)
		}
		if bad != 0 {
			return nil, nil
		}
	}
	if float64(count) > mlLrSparseMax*float64(len(col)) {
		return nil, nil
	}
	ones = make([]int32, count+1) // +1: every row is written, the last one past the end
	start = make([]int32, nChunks+1)
	k := 0
	for c := range nChunks {
		start[c] = int32(k)
		lo := c * mlLrChunk
		for i, v := range col[lo:min(lo+mlLrChunk, len(col))] {
			ones[k] = int32(lo + i)
			k += int(math.Float32bits(v) >> 29 & 1)
		}
	}
	start[nChunks] = int32(k)
	return ones[:count], start
}

// mlMaxAbs returns the largest |v| of finite values: their bits without
// the sign order as the values do.
func mlMaxAbs(col []float32) float64 {
	var m uint32
	for _, v := range col {
		if b := math.Float32bits(v) &^ (1 << 31); b > m {
			m = b
		}
	}
	return float64(math.Float32frombits(m))
}

// mlStepRatio bounds ∫₀¹(1−t)·φ”(t)dt / ∫₀¹φ”(t)dt for the objective φ
// along a step that changes no margin by more than m. The log loss has
// |ℓ”'| ≤ ℓ”, so φ” changes by at most a factor e^(m·|t−u|) between t
// and u (the penalty's part is constant), and the ratio is largest when
// φ” falls as fast as that allows, as e^(−m·t): 1/(1−e^(−m)) − 1/m,
// from 1/2 (a quadratic) up to 1.
func mlStepRatio(m float64) float64 {
	if m < 1e-3 {
		return 0.5 + m/12
	}
	return -1/math.Expm1(-m) - 1/m
}

// mlChunkStarts returns where each of nChunks chunks of size rows starts
// in the ascending row list ones, and its length last.
func mlChunkStarts(ones []int32, nChunks, size int) []int32 {
	start := make([]int32, nChunks+1)
	for c := range nChunks {
		k, _ := slices.BinarySearch(ones, int32(c*size))
		start[c] = int32(k)
	}
	start[nChunks] = int32(len(ones))
	return start
}

// eval returns the gradient at b (the intercept last), with wantLoss the
// loss (else 0) and with wantH the Hessian (row-major D×D, both
// triangles). The slices are new.
func (e *mlLrData) eval(b []float64, wantH, wantLoss bool) (loss float64, g, h []float64) {
	n, d := len(e.y), len(e.cols)
	D := d + 1
	mlParallelDo(len(e.parts), len(e.scr), func(worker, c int) {
		lo, hi := c*mlLrChunk, min((c+1)*mlLrChunk, n)
		s := &e.scr[worker]
		p := &e.parts[c]
		m, r, w := s.m[:hi-lo], s.r[:hi-lo], s.w[:hi-lo]
		for i := range m {
			m[i] = b[d]
		}
		mlAddMargin(m, e.cols, e.dense, lo, b)
		for _, j := range e.sparse {
			bj := b[j]
			for _, i := range e.ones[j][e.start[j][c]:e.start[j][c+1]] {
				m[int(i)-lo] += bj
			}
		}
		p.loss = mlLrResiduals(m, e.y[lo:hi], r, w, wantH, wantLoss)
		mlLrGradient(p.g, r, e.cols, e.dense, lo, s.dots)
		for _, j := range e.sparse {
			sum := 0.0
			for _, i := range e.ones[j][e.start[j][c]:e.start[j][c+1]] {
				sum += r[int(i)-lo]
			}
			p.g[j] = sum
		}
		if wantH {
			if p.h == nil {
				p.h = make([]float64, D*D)
			}
			e.hessian(p.h, c, lo, w, s)
		}
	})
	g = make([]float64, D)
	if wantH {
		h = make([]float64, D*D)
	}
	for c := range e.parts {
		p := &e.parts[c]
		loss += p.loss
		for k, v := range p.g {
			g[k] += v
		}
		if wantH {
			for k, v := range p.h {
				h[k] += v
			}
		}
	}
	if wantH {
		for j := range D { // mirror the upper triangle
			for k := j + 1; k < D; k++ {
				h[k*D+j] = h[j*D+k]
			}
		}
	}
	return loss, g, h
}

// mlAddMargin adds Σⱼ coef[j]·cols[j][lo+i] over the columns j of idx to
// m[i], four columns at a time (a quarter of the loads and stores of m).
func mlAddMargin(m []float64, cols [][]float32, idx []int, lo int, coef []float64) {
	n := len(m)
	k := 0
	for ; k+4 <= len(idx); k += 4 {
		j0, j1, j2, j3 := idx[k], idx[k+1], idx[k+2], idx[k+3]
		b0, b1, b2, b3 := coef[j0], coef[j1], coef[j2], coef[j3]
		c0, c1, c2, c3 := cols[j0][lo:lo+n], cols[j1][lo:lo+n], cols[j2][lo:lo+n], cols[j3][lo:lo+n]
		for i := range m {
			m[i] += b0*float64(c0[i]) + b1*float64(c1[i]) + b2*float64(c2[i]) + b3*float64(c3[i])
		}
	}
	for ; k < len(idx); k++ {
		bj := coef[idx[k]]
		if bj == 0 {
			continue
		}
		col := cols[idx[k]][lo : lo+n]
		for i := range m {
			m[i] += bj * float64(col[i])
		}
	}
}

// mlLrResiduals turns margins into residuals r = σ(z) − y and, with
// weights, Hessian weights w = σ(z)(1 − σ(z)); with loss it returns
// Σ logloss, otherwise 0. With e = exp(−|z|): σ(z) = 1/(1+e) for z ≥ 0 and
// e/(1+e) below, σ(1−σ) = e/(1+e)², and logloss = softplus(z) − y·z with
// softplus(z) = max(z, 0) + log1p(e). exp and log1p are inlined by hand
// (mlExpNeg and mlLog1pUnit, which the tests check against the math
// package) and the sign select is branch-free: a call each (Go inlines
// neither) and a mispredicted branch on half the rows cost more than the
// arithmetic (28 ns a row with the loss before, 20 now; 10 without it).
func mlLrResiduals(m []float64, y []uint8, r, w []float64, weights, loss bool) float64 {
	sum := 0.0
	y = y[:len(m)]
	r = r[:len(m)]
	w = w[:len(m)]
	for i, z := range m {
		az := math.Abs(z)
		// e = mlExpNeg(−az)
		x := max(-az, mlExpMin)
		kf := x*mlExpScale + mlRoundMagic
		k := int64(math.Float64bits(kf))
		kf -= mlRoundMagic
		t := x - kf*mlLn2Hi64 - kf*mlLn2Lo64
		s := math.Float64frombits(uint64(int64(mlExp2Tab[k&63]) + k>>6<<52))
		e := s + s*(t*(1+t*(1.0/2+t*(1.0/6+t*(1.0/24+t*(1.0/120+t*(1.0/720)))))))
		u := 1 + e
		q := 1 / u
		// σ(z) = f·q with f = e when z < 0, else 1
		neg := uint64(int64(math.Float64bits(z)) >> 63)
		f := math.Float64frombits(math.Float64bits(e)&neg | mlOneBits&^neg)
		yi := float64(y[i])
		r[i] = f*q - yi
		if weights {
			w[i] = e * q * q
		}
		if loss {
			// mlLog1pUnit(e, u, q)
			c := (e - (u - 1)) * q
			li := min(uint(int((u-1)*mlLnSteps+0.5)), mlLnSteps) // NaN: not an index
			v := (u - (1 + float64(li)*(1.0/mlLnSteps))) * mlLnInv[li]
			v2 := v * v
			l := mlLnLog[li] + (v + v2*(-1.0/2+v*(1.0/3)) + v2*v2*(-1.0/4+v*(1.0/5)-v2*(1.0/6))) + c
			sum += (z+az)*0.5 + l - yi*z // (z+|z|)/2 = max(z, 0), exactly
		}
	}
	return sum
}

// The constants of mlExpNeg.
const (
	mlExpMin     = -708.0 // exp(−708) is still a normal float64
	mlExpScale   = 64 / math.Ln2
	mlRoundMagic = 0x1.8p52                        // x + this rounds x to an integer, in the low bits
	mlLn2Hi64    = 6.93147180369123816490e-01 / 64 // ln 2/64 in two parts, the first with
	mlLn2Lo64    = 1.90821492927058770002e-10 / 64 // trailing zeros (k·hi is exact)
	mlOneBits    = 0x3FF0000000000000
	mlLnSteps    = 256
)

// mlExp2Tab holds the bits of 2^(j/64).
var mlExp2Tab = func() (t [64]uint64) {
	for j := range t {
		t[j] = math.Float64bits(math.Exp2(float64(j) / 64))
	}
	return t
}()

// mlExpNeg returns exp(x) for x ≤ 0, within 2.5 ulp, and exp(−708) for
// x < −708: x = k·ln2/64 + t, |t| ≤ ln2/128, and exp(x) =
// 2^(k>>6)·2^((k&63)/64)·exp(t), the last a degree-6 polynomial. Branch-free
// and without division; mlLrResiduals inlines a copy.
func mlExpNeg(x float64) float64 {
	x = max(x, mlExpMin)
	kf := x*mlExpScale + mlRoundMagic
	k := int64(math.Float64bits(kf))
	kf -= mlRoundMagic
	t := x - kf*mlLn2Hi64 - kf*mlLn2Lo64
	s := math.Float64frombits(uint64(int64(mlExp2Tab[k&63]) + k>>6<<52))
	return s + s*(t*(1+t*(1.0/2+t*(1.0/6+t*(1.0/24+t*(1.0/120+t*(1.0/720)))))))
}

// mlLnInv and mlLnLog tabulate 1/cᵢ and log cᵢ for cᵢ = 1 + i/256.
var mlLnInv, mlLnLog = func() (inv, lg [mlLnSteps + 1]float64) {
	for i := range inv {
		inv[i] = 1 / (1 + float64(i)/mlLnSteps)
		lg[i] = math.Log1p(float64(i) / mlLnSteps)
	}
	return inv, lg
}()

// mlLog1pUnit returns log(1+e) for e in [0, 1], given u = 1+e and q = 1/u
// as the caller computed them: log cᵢ for the nearest cᵢ = 1 + i/256, plus
// the series of log1p(v) for v = (u − cᵢ)/cᵢ (u − cᵢ is exact, |v| ≤
// 1/512: six terms), plus what rounding 1+e lost, (e − (u−1))/u. Within
// 2 ulp of math.Log1p, small e included (c₀ = 1: nothing cancels), without
// branches; mlLrResiduals inlines a copy.
func mlLog1pUnit(e, u, q float64) float64 {
	c := (e - (u - 1)) * q
	li := min(uint(int((u-1)*mlLnSteps+0.5)), mlLnSteps) // NaN: not an index
	v := (u - (1 + float64(li)*(1.0/mlLnSteps))) * mlLnInv[li]
	v2 := v * v
	return mlLnLog[li] + (v + v2*(-1.0/2+v*(1.0/3)) + v2*v2*(-1.0/4+v*(1.0/5)-v2*(1.0/6))) + c
}

// mlLrGradient writes g[j] = Σᵢ r[i]·cols[j][lo+i] for the columns j of
// idx and g[d] = Σ r; dots is scratch of len(idx).
func mlLrGradient(g, r []float64, cols [][]float32, idx []int, lo int, dots []float64) {
	sum := 0.0
	for _, v := range r {
		sum += v
	}
	g[len(cols)] = sum
	mlDots(dots[:len(idx)], r, func(k int) []float32 { return cols[idx[k]][lo:] })
	for k, j := range idx {
		g[j] = dots[k]
	}
}

// mlDots sets out[k] = Σᵢ v[i]·col(k)[i] for each k, four columns at a
// time with an accumulator each (a quarter of the loads of v).
func mlDots(out, v []float64, col func(k int) []float32) {
	n := len(v)
	k := 0
	for ; k+4 <= len(out); k += 4 {
		c0, c1, c2, c3 := col(k)[:n], col(k + 1)[:n], col(k + 2)[:n], col(k + 3)[:n]
		var s0, s1, s2, s3 float64
		for i, x := range v {
			s0 += x * float64(c0[i])
			s1 += x * float64(c1[i])
			s2 += x * float64(c2[i])
			s3 += x * float64(c3[i])
		}
		out[k], out[k+1], out[k+2], out[k+3] = s0, s1, s2, s3
	}
	for ; k < len(out); k++ {
		c := col(k)[:n]
		sum := 0.0
		for i, x := range v {
			sum += x * float64(c[i])
		}
		out[k] = sum
	}
}

// hessian sets the upper triangle of h to Σᵢ w[i]·xᵢxᵢᵀ over chunk c's
// rows lo..lo+len(w) (x with a final 1 for the intercept), by blocks: for
// each dense column a (the intercept one of them), with wx = w·x_a, the
// dense entries are dot products of wx with the other dense columns, four
// at a time, and the (a, sparse t) entries sums of wx over t's ones; the
// sparse-sparse entries add w[i] over the pairs of each row's ones. The
// one-hot columns are mostly zero, and a row-at-a-time sum over nonzeros
// spent 370 ns a churn row on scattered adds; this takes about a third.
func (e *mlLrData) hessian(h []float64, c, lo int, w []float64, s *mlLrScratch) {
	d := len(e.cols)
	D := d + 1
	n := len(w)
	clear(h)
	if s.wx == nil {
		s.wx, s.one = make([]float64, mlLrChunk), make([]float32, mlLrChunk)
		for i := range s.one {
			s.one[i] = 1
		}
		s.cnt = make([]int32, mlLrChunk+1)
	}
	col := func(a int) []float32 {
		if a == d {
			return s.one[:n]
		}
		return e.cols[a][lo : lo+n]
	}
	at := func(a, b int) int { return min(a, b)*D + max(a, b) }
	dn := e.denseI
	wx := s.wx[:n]
	for ai, a := range dn {
		ca := col(a)
		for i, v := range ca {
			wx[i] = w[i] * float64(v)
		}
		bs := dn[ai:]
		dots := s.dots[:len(bs)]
		mlDots(dots, wx, func(k int) []float32 { return col(bs[k]) })
		for k, b := range bs {
			h[at(a, b)] = dots[k]
		}
		for _, t := range e.sparse {
			sum := 0.0
			for _, i := range e.ones[t][e.start[t][c]:e.start[t][c+1]] {
				sum += wx[int(i)-lo]
			}
			h[at(a, t)] = sum
		}
	}
	// the rows' sparse ones, grouped by row (counting sort), in column order
	cnt := s.cnt[:n+1]
	clear(cnt)
	total := 0
	for _, t := range e.sparse {
		ones := e.ones[t][e.start[t][c]:e.start[t][c+1]]
		total += len(ones)
		for _, i := range ones {
			cnt[int(i)-lo+1]++
		}
	}
	for i := range n {
		cnt[i+1] += cnt[i]
	}
	s.at = mlGrow(s.at, total)
	fill := s.at
	for _, t := range e.sparse {
		for _, i := range e.ones[t][e.start[t][c]:e.start[t][c+1]] {
			r := int(i) - lo
			fill[cnt[r]] = int32(t)
			cnt[r]++
		}
	}
	// cnt[r] is now where row r+1's ones start
	from := 0
	for r := range n {
		row := fill[from:cnt[r]]
		from = int(cnt[r])
		for p, t := range row {
			hr := h[int(t)*D : (int(t)+1)*D]
			for _, u := range row[p:] {
				hr[u] += w[r]
			}
		}
	}
}

// mlLrFit is the outcome of mlFitLogistic.
type mlLrFit struct {
	weights    LogisticWeights
	iterations int
	warmSteps  int // of iterations, the Newton steps on the Hessian sample
	sampleRows int // rows of the Hessian sample (all rows up to HessianRows)
	converged  bool
	loss       float64 // mean log loss on the training rows
	searches   int     // full-data steps that fell back to the line search on the loss
}

// mlFitLogistic fits an L2-regularised logistic regression: it minimises
// Σᵢ logloss(yᵢ, b + w·xᵢ) + L2/2·‖w‖², the objective of scikit-learn's
// LogisticRegression with C = 1/L2. cols are the feature columns, y the 0/1
// labels; a 0/1 column j may come as ones[j], the ascending rows holding 1,
// with cols[j] nil (ones may be nil).
//
// Up to HessianRows rows it runs Newton's method (iteratively reweighted
// least squares) with the exact Hessian and a backtracking line search.
// Above, it first runs Newton on every k-th row (at most HessianRows rows,
// the penalty scaled to them) to near that sample's optimum, then takes
// quasi-Newton steps on all rows: the exact gradient and the sample's
// Hessian scaled to n rows, recomputed on the sample only when a step
// shrinks by less than a factor 4. The gradient is always exact, so the
// optimum is the same; each full-data step costs one pass (margins,
// gradient) instead of a pass plus a Hessian, and the loss is computed in
// the last pass only (fullSteps).
func mlFitLogistic(ctx context.Context, cols [][]float32, ones [][]int32, y []uint8, cfg mlLogisticConfig) (*mlLrFit, error) {
	n, d := len(y), len(cols)
	D := d + 1 // the intercept is the last coordinate
	if n == 0 {
		return nil, errors.New("no training rows")
	}
	pos := 0
	for _, v := range y {
		pos += int(v)
	}
	if pos == 0 || pos == n {
		return nil, errors.New("the training rows have only one class")
	}
	beta := make([]float64, D)
	beta[d] = math.Log(float64(pos) / float64(n-pos)) // the base rate: Newton starts close
	hrows := cfg.HessianRows
	if hrows <= 0 {
		hrows = mlLrHessianRows
	}
	stride := max(1, (n+hrows-1)/hrows)
	var full, sample *mlLrData
	if stride > 1 {
		full = mlNewLrData(cols, ones, y)
		sc, sy := mlStrided(cols, ones, y, stride)
		sample = mlNewLrData(sc, nil, sy)
	} else { // the Hessian is over all rows: they need every column dense
		dc, _ := mlStrided(cols, ones, y, 1)
		full = mlNewLrData(dc, nil, y)
		sample = full
	}
	ns := len(sample.y)
	// the objective on data e with penalty l2: its gradient, with wantLoss
	// f (else 0) and with wantH its Hessian
	objective := func(e *mlLrData, b []float64, l2 float64, wantH, wantLoss bool) (float64, []float64, []float64) {
		f, g, h := e.eval(b, wantH, wantLoss)
		for j := range d {
			if wantLoss {
				f += l2 / 2 * b[j] * b[j]
			}
			g[j] += l2 * b[j]
			if wantH {
				h[j*D+j] += l2
			}
		}
		return f, g, h
	}
	singular := errors.New("logistic regression: the Hessian is singular (constant or duplicated features with l2: 0); set l2 > 0")
	fit := &mlLrFit{}
	// newton runs Newton steps −H⁻¹g from beta on data e with a
	// backtracking line search until a step is below tol (converged) or
	// steps run out.
	var f float64
	var g, h []float64
	newton := func(e *mlLrData, l2, tol float64) (converged bool, err error) {
		for fit.iterations < cfg.MaxIter {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			step, ok := mlSolveSPD(h, D, g)
			if !ok {
				return false, singular
			}
			dec := 0.0 // the Newton decrement gᵀH⁻¹g
			for k := range step {
				step[k] = -step[k]
				dec -= g[k] * step[k]
			}
			if dec/2 <= 1e-13*math.Max(1, math.Abs(f)) { // already at the optimum to float precision
				return true, nil
			}
			fit.iterations++
			t := 1.0
			next := make([]float64, D)
			var fn float64
			var gn, hn []float64
			for range 40 {
				for k := range beta {
					next[k] = beta[k] + t*step[k]
				}
				fn, gn, hn = objective(e, next, l2, true, true)
				if fn <= f-1e-4*t*dec {
					break
				}
				t /= 2
			}
			if !(fn <= f) { // no descent even for a tiny step: we are at float precision
				return true, nil
			}
			maxStep := 0.0
			for k := range step {
				maxStep = math.Max(maxStep, math.Abs(t*step[k]))
			}
			beta, f, g, h = next, fn, gn, hn
			if maxStep < tol {
				return true, nil
			}
		}
		return false, nil
	}
	// fullSteps takes the quasi-Newton steps on all rows, from beta with
	// the scaled sample Hessian h: the passes compute the gradient alone
	// (the loss is half of a pass's arithmetic). A step is taken whole when
	// the slopes along it prove the sufficient decrease the line search
	// asks for: with φ(t) the objective at beta + t·step, φ'(0) = −dec and
	// φ(1) − φ(0) = φ'(0) + ∫₀¹(1−t)·φ'' ≤ −dec + r·(φ'(1) + dec), r the
	// mlStepRatio of the step's largest margin change. A Hessian within a
	// few percent, as the sample's is, gives φ'(1) near 0 and passes;
	// otherwise the step falls back to the backtracking search on the
	// loss. Converged means the next step would move no coefficient more
	// than tol: the loss is asked for in the pass where the step sizes,
	// shrinking at a steady rate, say so, and computed after the last step
	// only if they did not. fScale is the objective's size, for the float
	// precision test.
	fullSteps := func(h []float64, fScale float64, hess func() []float64) (converged bool, err error) {
		haveF := false // whether f is the objective at beta
		_, g, _ = objective(full, beta, cfg.L2, false, false)
		prevStep := math.Inf(1)
		for {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			step, ok := mlSolveSPD(h, D, g)
			if !ok {
				return false, singular
			}
			dec, maxStep := 0.0, 0.0
			for k := range step {
				step[k] = -step[k]
				dec -= g[k] * step[k]
				maxStep = math.Max(maxStep, math.Abs(step[k]))
			}
			if maxStep < cfg.Tol || dec/2 <= 1e-13*math.Max(1, math.Abs(fScale)) {
				converged = true
				break
			}
			if fit.iterations >= cfg.MaxIter {
				break
			}
			fit.iterations++
			next := make([]float64, D)
			for k := range beta {
				next[k] = beta[k] + step[k]
			}
			// the step after this one, if they keep shrinking at this rate
			predicted := maxStep
			if !math.IsInf(prevStep, 1) {
				predicted = maxStep * maxStep / prevStep
			}
			wantLoss := predicted < cfg.Tol
			fn, gn, _ := objective(full, next, cfg.L2, false, wantLoss)
			slope, dz := 0.0, math.Abs(step[d])
			for k := range step {
				slope += gn[k] * step[k]
			}
			for j := range d {
				dz += math.Abs(step[j]) * full.maxAbs[j]
			}
			if !(-dec+mlStepRatio(dz)*(slope+dec) <= -1e-4*dec) { // no proof of descent (or NaN): search on the loss
				fit.searches++
				f0, _, _ := objective(full, beta, cfg.L2, false, true)
				t := 1.0
				for range 40 {
					for k := range beta {
						next[k] = beta[k] + t*step[k]
					}
					fn, gn, _ = objective(full, next, cfg.L2, false, true)
					if fn <= f0-1e-4*t*dec {
						break
					}
					t /= 2
				}
				if !(fn <= f0) { // no descent even for a tiny step: float precision
					f, haveF = f0, true
					converged = true
					break
				}
				maxStep *= t
				wantLoss = true
			}
			beta, g = next, gn
			f, haveF = fn, wantLoss
			if maxStep > prevStep/4 {
				h = hess()
			}
			prevStep = maxStep
		}
		if !haveF {
			f, _, _ = objective(full, beta, cfg.L2, false, true)
		}
		return converged, nil
	}
	// Newton on the sample, its penalty scaled to its rows
	l2s := cfg.L2 * float64(ns) / float64(n)
	tol := cfg.Tol
	if stride > 1 {
		tol = math.Max(tol, mlLrWarmTol)
	}
	f, g, h = objective(sample, beta, l2s, true, true)
	converged, err := newton(sample, l2s, tol)
	if err != nil {
		return nil, err
	}
	fit.warmSteps, fit.sampleRows = fit.iterations, ns
	if stride > 1 {
		// scaled sample Hessian of the full objective at beta
		scaled := func(hs []float64) []float64 {
			for j := range d {
				hs[j*D+j] -= l2s
			}
			for k := range hs {
				hs[k] *= float64(n) / float64(ns)
			}
			for j := range d {
				hs[j*D+j] += cfg.L2
			}
			return hs
		}
		h = scaled(h)
		converged, err = fullSteps(h, f*float64(n)/float64(ns), func() []float64 {
			_, _, hs := objective(sample, beta, l2s, true, true)
			return scaled(hs)
		})
		if err != nil {
			return nil, err
		}
	}
	fit.converged = converged
	if !mlCheckFinite(beta...) || !mlCheckFinite(f) {
		return nil, fmt.Errorf("logistic regression diverged (objective %v)", f)
	}
	reg := 0.0
	for j := range d {
		reg += cfg.L2 / 2 * beta[j] * beta[j]
	}
	fit.loss = (f - reg) / float64(n)
	fit.weights = LogisticWeights{Intercept: beta[d], Coef: beta[:d:d]}
	return fit, nil
}

// mlStrided returns every stride-th row of cols and y, with the columns
// listed in ones (if ones[j] is not nil) made dense. With stride 1 the
// dense columns and y are not copied.
func mlStrided(cols [][]float32, ones [][]int32, y []uint8, stride int) ([][]float32, []uint8) {
	n := (len(y) + stride - 1) / stride
	sc := make([][]float32, len(cols))
	for j, col := range cols {
		if ones != nil && ones[j] != nil {
			sc[j] = make([]float32, n)
			next := 0 // the first multiple of stride not below the row
			for _, i := range ones[j] {
				for next < int(i) {
					next += stride
				}
				if next == int(i) {
					sc[j][next/stride] = 1
				}
			}
			continue
		}
		if stride == 1 {
			sc[j] = col
			continue
		}
		sc[j] = make([]float32, n)
		for k := range n {
			sc[j][k] = col[k*stride]
		}
	}
	if stride == 1 {
		return sc, y
	}
	sy := make([]uint8, n)
	for k := range n {
		sy[k] = y[k*stride]
	}
	return sc, sy
}

// mlSolveSPD solves A x = b for a symmetric positive definite n×n matrix A
// (row-major) by Cholesky factorisation. If A is only semi-definite it adds
// a tiny ridge, growing it until the factorisation succeeds (up to 1e-6 of
// the mean diagonal); ok is false when that is not enough.
func mlSolveSPD(a []float64, n int, b []float64) (x []float64, ok bool) {
	tr := 0.0
	for i := range n {
		tr += a[i*n+i]
	}
	scale := tr / float64(n)
	l := make([]float64, n*n)
	for _, ridge := range []float64{0, 1e-12, 1e-10, 1e-8, 1e-6} {
		if mlChol(a, n, ridge*scale, l) {
			x = make([]float64, n)
			for i := range n { // L y = b
				s := b[i]
				for k := range i {
					s -= l[i*n+k] * x[k]
				}
				x[i] = s / l[i*n+i]
			}
			for i := n - 1; i >= 0; i-- { // Lᵀ x = y
				s := x[i]
				for k := i + 1; k < n; k++ {
					s -= l[k*n+i] * x[k]
				}
				x[i] = s / l[i*n+i]
			}
			return x, true
		}
	}
	return nil, false
}

// mlChol writes the lower Cholesky factor of A + ridge·I into l.
func mlChol(a []float64, n int, ridge float64, l []float64) bool {
	clear(l)
	for i := range n {
		for j := 0; j <= i; j++ {
			s := a[i*n+j]
			if i == j {
				s += ridge
			}
			for k := range j {
				s -= l[i*n+k] * l[j*n+k]
			}
			if i == j {
				if !(s > 1e-13*math.Abs(a[i*n+i]) && s > 1e-300) {
					return false
				}
				l[i*n+i] = math.Sqrt(s)
			} else {
				l[i*n+j] = s / l[j*n+j]
			}
		}
	}
	return true
}
