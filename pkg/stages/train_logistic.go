package stages

import (
	"context"
	"errors"
	"fmt"
	"math"
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

// mlLrChunk is the number of rows one task of the parallel pass handles.
// Partial sums are per chunk and added in chunk order, so results do not
// depend on the number of cores.
const mlLrChunk = 16384

// mlLrBlock is the number of rows transposed at a time for the Hessian.
const mlLrBlock = 64

// mlLrHessianRows is the most rows the Hessian is summed over by default.
const mlLrHessianRows = 1 << 18

type mlLrPartial struct {
	loss float64
	g    []float64 // D
	h    []float64 // D×D, upper triangle filled
}

// mlLrFit is the outcome of mlFitLogistic.
type mlLrFit struct {
	weights    LogisticWeights
	iterations int
	converged  bool
	loss       float64 // mean log loss on the training rows
}

// mlFitLogistic fits an L2-regularised logistic regression by Newton's method
// (iteratively reweighted least squares) with a dense Hessian and a
// backtracking line search. cols are the feature columns, y the 0/1 labels.
// The objective is Σᵢ logloss(yᵢ, b + w·xᵢ) + L2/2·‖w‖², the objective of
// scikit-learn's LogisticRegression with C = 1/L2.
func mlFitLogistic(ctx context.Context, cols [][]float32, y []uint8, cfg mlLogisticConfig) (*mlLrFit, error) {
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
	nChunks := (n + mlLrChunk - 1) / mlLrChunk
	parts := make([]mlLrPartial, nChunks)
	for i := range parts {
		parts[i] = mlLrPartial{g: make([]float64, D), h: make([]float64, D*D)}
	}
	workers := mlParallelism(nChunks)
	type scratch struct {
		m, r, w, rows []float64
		sel           []int
	}
	scr := make([]scratch, workers)
	for i := range scr {
		scr[i] = scratch{m: make([]float64, mlLrChunk), r: make([]float64, mlLrChunk), w: make([]float64, mlLrChunk), rows: make([]float64, mlLrBlock*D), sel: make([]int, mlLrBlock)}
	}
	// Above mlLrHessianRows rows the Hessian is summed over every hstride-th
	// row and scaled up (sub-sampled Newton): the gradient stays exact, so
	// the optimum is the same; only the steps are slightly less than
	// Newton's.
	hrows := cfg.HessianRows
	if hrows <= 0 {
		hrows = mlLrHessianRows
	}
	hstride := max(1, (n+hrows-1)/hrows)
	hscale := float64(n) / float64((n+hstride-1)/hstride)

	// eval computes the objective, gradient and Hessian at b.
	eval := func(b []float64) (f float64, g, h []float64) {
		mlParallelDo(nChunks, workers, func(worker, c int) {
			lo, hi := c*mlLrChunk, min((c+1)*mlLrChunk, n)
			s := &scr[worker]
			p := &parts[c]
			m, r, w := s.m[:hi-lo], s.r[:hi-lo], s.w[:hi-lo]
			for i := range m {
				m[i] = b[d]
			}
			for j := range d {
				bj := b[j]
				if bj == 0 {
					continue
				}
				col := cols[j][lo:hi]
				for i, v := range col {
					m[i] += bj * float64(v)
				}
			}
			loss := 0.0
			yy := y[lo:hi]
			for i, z := range m {
				loss += mlLogLossOfMargin(z, yy[i])
				pr := mlSigmoid(z)
				r[i] = pr - float64(yy[i])
				w[i] = pr * (1 - pr)
			}
			p.loss = loss
			gsum := 0.0
			for _, v := range r {
				gsum += v
			}
			p.g[d] = gsum
			for j := range d {
				col := cols[j][lo:hi]
				s := 0.0
				for i, v := range col {
					s += r[i] * float64(v)
				}
				p.g[j] = s
			}
			clear(p.h)
			rows, sel := s.rows, s.sel
			first := (hstride - lo%hstride) % hstride // first row of the Hessian sample
			for b0 := first; b0 < hi-lo; b0 += mlLrBlock * hstride {
				bl := 0
				for i := b0; i < hi-lo && bl < mlLrBlock; i += hstride {
					sel[bl] = i
					bl++
				}
				for j := range d {
					col := cols[j][lo:hi]
					for q, i := range sel[:bl] {
						rows[q*D+j] = float64(col[i])
					}
				}
				for q, i := range sel[:bl] {
					x := rows[q*D : (q+1)*D]
					x[d] = 1
					wi := w[i]
					for j, xj := range x {
						if xj == 0 {
							continue
						}
						a := wi * xj
						hr := p.h[j*D+j : (j+1)*D]
						xr := x[j:]
						xr = xr[:len(hr)]
						for k, xk := range xr {
							hr[k] += a * xk
						}
					}
				}
			}
		})
		g = make([]float64, D)
		h = make([]float64, D*D)
		for c := range parts {
			p := &parts[c]
			f += p.loss
			for k, v := range p.g {
				g[k] += v
			}
			for k, v := range p.h {
				h[k] += v
			}
		}
		if hscale != 1 {
			for k := range h {
				h[k] *= hscale
			}
		}
		for j := range d {
			f += cfg.L2 / 2 * b[j] * b[j]
			g[j] += cfg.L2 * b[j]
			h[j*D+j] += cfg.L2
		}
		for j := range D { // mirror the upper triangle
			for k := j + 1; k < D; k++ {
				h[k*D+j] = h[j*D+k]
			}
		}
		return f, g, h
	}

	f, g, h := eval(beta)
	fit := &mlLrFit{}
	for fit.iterations < cfg.MaxIter {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		step, ok := mlSolveSPD(h, D, g)
		if !ok {
			return nil, errors.New("logistic regression: the Hessian is singular (constant or duplicated features with l2: 0); set l2 > 0")
		}
		dec := 0.0 // the Newton decrement gᵀH⁻¹g
		for k := range step {
			step[k] = -step[k]
			dec -= g[k] * step[k]
		}
		if dec/2 <= 1e-13*math.Max(1, math.Abs(f)) { // already at the optimum to float precision
			fit.converged = true
			break
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
			fn, gn, hn = eval(next)
			if fn <= f-1e-4*t*dec {
				break
			}
			t /= 2
		}
		if !(fn <= f) { // no descent even for a tiny step: we are at float precision
			fit.converged = true
			break
		}
		maxStep := 0.0
		for k := range step {
			maxStep = math.Max(maxStep, math.Abs(t*step[k]))
		}
		beta, f, g, h = next, fn, gn, hn
		if maxStep < cfg.Tol {
			fit.converged = true
			break
		}
	}
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
