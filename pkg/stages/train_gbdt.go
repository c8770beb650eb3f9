package stages

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
)

// mlGbdtConfig are the params of histogram gradient-boosted trees.
type mlGbdtConfig struct {
	Rounds         int
	LearningRate   float64
	MaxDepth       int
	MinSamplesLeaf int
	L2             float64 // λ on leaf weights: leaf = -G/(H+λ)
	MinSplitGain   float64
	MaxBins        int
	EarlyStopping  int // rounds without improvement of the valid loss; 0: off
}

// mlBinSample is the most rows whose values choose a feature's bin edges.
const mlBinSample = 200_000

// mlMinChildHessian is the least hessian sum a child may have.
const mlMinChildHessian = 1e-3

// mlBinning maps each feature's float values to at most 255 bins.
type mlBinning struct {
	edges  [][]float64 // per feature, ascending; bin(x) = #{edges < x}
	off    []int       // offset of each feature's bins in a histogram
	total  int         // bins over all features
	common []uint8     // per feature, its most frequent bin among the fitting rows
	sparse []bool      // per feature, whether the common bin holds at least mlSparseShare of the rows
}

// mlSparseShare is the share of rows in one bin at or above which a
// feature is sparse: stored in a bundle, its common bin derived.
const mlSparseShare = 0.5

// setCommon finds each feature's most frequent bin in the binned rows.
func (b *mlBinning) setCommon(xb [][]uint8, workers int) {
	b.common = make([]uint8, len(xb))
	b.sparse = make([]bool, len(xb))
	mlParallelDo(len(xb), workers, func(_, f int) {
		var cnt [256]int
		for _, v := range xb[f] {
			cnt[v]++
		}
		best := 0
		for v, c := range cnt {
			if c > cnt[best] {
				best = v
			}
		}
		b.common[f] = uint8(best)
		b.sparse[f] = len(xb[f]) > 0 && float64(cnt[best]) >= mlSparseShare*float64(len(xb[f]))
	})
}

func (b *mlBinning) nbins(f int) int { return len(b.edges[f]) + 1 }

// mlFitBins chooses bin edges per feature from an evenly strided sample of
// rows: midpoints between distinct values, at most maxBins-1 of them at
// quantiles of the sample.
func mlFitBins(cols [][]float32, n, maxBins, workers int) *mlBinning {
	b := &mlBinning{edges: make([][]float64, len(cols)), off: make([]int, len(cols))}
	stride := max(1, (n+mlBinSample-1)/mlBinSample)
	mlParallelDo(len(cols), workers, func(_, f int) {
		col := cols[f]
		s := make([]float32, 0, n/stride+1)
		for i := 0; i < n; i += stride {
			s = append(s, col[i])
		}
		slices.Sort(s)
		b.edges[f] = mlQuantileEdges(s, maxBins)
	})
	for f := range cols {
		b.off[f] = b.total
		b.total += b.nbins(f)
	}
	return b
}

// mlQuantileEdges returns the bin edges for a sorted sample.
func mlQuantileEdges(s []float32, maxBins int) []float64 {
	type run struct {
		v float32
		n int
	}
	var runs []run
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			runs = append(runs, run{v, 0})
		}
		runs[len(runs)-1].n++
	}
	var edges []float64
	mid := func(i int) float64 { return (float64(runs[i].v) + float64(runs[i+1].v)) / 2 }
	if len(runs) <= maxBins {
		for i := 0; i+1 < len(runs); i++ {
			edges = append(edges, mid(i))
		}
		return edges
	}
	m := float64(len(s))
	k, cum := 1, 0
	for i := 0; i+1 < len(runs) && len(edges) < maxBins-1; i++ {
		cum += runs[i].n
		if float64(cum) >= float64(k)*m/float64(maxBins) {
			edges = append(edges, mid(i))
			for k < maxBins && float64(k)*m/float64(maxBins) <= float64(cum) {
				k++
			}
		}
	}
	return edges
}

// apply bins the columns: out[f][i] = #{edges[f] < cols[f][i]}.
func (b *mlBinning) apply(cols [][]float32, n, workers int) [][]uint8 {
	out := make([][]uint8, len(cols))
	mlParallelDo(len(cols), workers, func(_, f int) {
		e := b.edges[f]
		o := make([]uint8, n)
		if len(e) == 0 {
			out[f] = o
			return
		}
		for i, v := range cols[f][:n] {
			o[i] = uint8(mlCountBelow(e, float64(v)))
		}
		out[f] = o
	})
	return out
}

// mlCountBelow is the number of elements of the ascending, non-empty e
// that are < x: a binary search whose steps do not branch on the data.
func mlCountBelow(e []float64, x float64) int {
	base, n := 0, len(e)
	for n > 1 {
		half := n >> 1
		if e[base+half-1] < x {
			base += half
		}
		n -= half
	}
	if e[base] < x {
		base++
	}
	return base
}

type mlGhPair struct{ g, h float32 }

type mlHistEntry struct {
	g, h float64
	n    int64
}

type mlGbNode struct {
	start, end int // the node's rows are rows[start:end]
	depth      int
	g, h       float64
	n          int
	hist       []mlHistEntry
	id         int32 // index in the tree arrays
	// the best split, if split
	feat, bin   int
	gl, hl      float64
	left, right *mlGbNode
}

// mlGbdtFit is the outcome of mlFitGBDT.
type mlGbdtFit struct {
	model      GBDTModel
	iterations int
	stopped    bool
	trainLoss  float64
	validLoss  *float64
}

// mlFitGBDT boosts depth-limited regression trees on the binary log loss.
// cols are the fitting rows' features, y their labels; vcols/vy the
// early-stopping fold (may be empty). Once the rows are binned, fitGBDT
// sets every cols[f] to nil and calls release (if not nil), so the caller
// can free the float columns' memory. Everything is deterministic: sums
// are over fixed chunks of rows, added in order.
func mlFitGBDT(ctx context.Context, cols [][]float32, y []uint8, vcols [][]float32, vy []uint8, cfg mlGbdtConfig, release func(), logf func(string, ...any)) (*mlGbdtFit, error) {
	n, nv, d := len(y), len(vy), len(cols)
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
	workers := mlParallelism(d)
	bins := mlFitBins(cols, n, cfg.MaxBins, workers)
	xb := bins.apply(cols, n, workers)
	bins.setCommon(xb, workers)
	vb := bins.apply(vcols, nv, workers)
	for f := range cols {
		cols[f] = nil
	}
	if release != nil {
		release()
	}

	base := math.Log(float64(pos) / float64(n-pos))
	fit := &mlGbdtFit{model: GBDTModel{BaseScore: base}}
	score := make([]float64, n)
	vscore := make([]float64, nv)
	for i := range score {
		score[i] = base
	}
	for i := range vscore {
		vscore[i] = base
	}
	gr := newMLGrower(xb, bins, n, cfg, workers)
	gh := gr.gh
	nChunks := (n + mlLrChunk - 1) / mlLrChunk
	chunkLoss := make([]float64, nChunks)
	best, bestLoss := 0, math.Inf(1)
	var splitBins [][]int // per tree, per node: its split bin

	// gradients sets gh from the scores, and returns the mean training
	// loss when asked (it costs a log per row).
	gradients := func(loss bool) float64 {
		mlParallelDo(nChunks, mlParallelism(nChunks), func(_, c int) {
			lo, hi := c*mlLrChunk, min((c+1)*mlLrChunk, n)
			l := 0.0
			for i := lo; i < hi; i++ {
				z, yi := score[i], float64(y[i])
				e := math.Exp(-math.Abs(z))
				p := 1 / (1 + e)
				if z < 0 {
					p = e / (1 + e)
				}
				if loss { // softplus(z) − y·z
					l += max(z, 0) - yi*z + math.Log1p(e)
				}
				gh[i] = mlGhPair{g: float32(p - yi), h: float32(max(p*(1-p), 1e-16))}
			}
			chunkLoss[c] = l
		})
		s := 0.0
		for _, l := range chunkLoss {
			s += l
		}
		return s / float64(n)
	}

	for round := 1; round <= cfg.Rounds; round++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		logNow := logf != nil && (round%20 == 0 || round == 1)
		trainLoss := gradients(logNow)
		tree, bin, leaves := gr.grow()
		for _, lf := range leaves {
			v := tree.Value[lf.id]
			for _, r := range gr.rows[lf.start:lf.end] {
				score[r] += v
			}
		}
		fit.model.Trees = append(fit.model.Trees, tree)
		splitBins = append(splitBins, bin)
		fit.iterations = round
		if nv == 0 {
			continue
		}
		vl := 0.0
		for i := range vscore {
			nd := int32(0)
			for tree.Feature[nd] >= 0 {
				if int(vb[tree.Feature[nd]][i]) <= bin[nd] {
					nd = tree.Left[nd]
				} else {
					nd = tree.Right[nd]
				}
			}
			vscore[i] += tree.Value[nd]
			vl += mlLogLossOfMargin(vscore[i], vy[i])
		}
		vl /= float64(nv)
		if vl < bestLoss {
			best, bestLoss = round, vl
		}
		if logNow {
			logf("gbdt: round %d: train logloss %.5f (before the round), valid logloss %.5f", round, trainLoss, vl)
		}
		if cfg.EarlyStopping > 0 && round-best >= cfg.EarlyStopping {
			fit.stopped = true
			break
		}
	}
	if nv > 0 && best < len(fit.model.Trees) {
		// take the trees after the best round back out of the scores
		drop, dropBins := fit.model.Trees[best:], splitBins[best:]
		mlParallelDo(nChunks, mlParallelism(nChunks), func(_, c int) {
			for i := c * mlLrChunk; i < min((c+1)*mlLrChunk, n); i++ {
				for k := range drop {
					t, b := &drop[k], dropBins[k]
					nd := int32(0)
					for t.Feature[nd] >= 0 {
						if int(xb[t.Feature[nd]][i]) <= b[nd] {
							nd = t.Left[nd]
						} else {
							nd = t.Right[nd]
						}
					}
					score[i] -= t.Value[nd]
				}
			}
		})
		fit.model.Trees = fit.model.Trees[:best]
	}
	fit.trainLoss = gradients(true)
	if nv > 0 {
		fit.validLoss = &bestLoss
	}
	if !mlCheckFinite(fit.trainLoss) || (fit.validLoss != nil && !mlCheckFinite(*fit.validLoss)) {
		return nil, fmt.Errorf("gbdt diverged (train log loss %v)", fit.trainLoss)
	}
	return fit, nil
}

// mlGrower grows the trees of one fit. The binned rows are stored row by
// row, one byte per column: a dense feature's bin, or a bundle of sparse
// features (one bin holds most rows, as in one-hot columns) that are never
// off their common bin in the same row (exclusive feature bundling, as in
// LightGBM): the byte says which of them is off its common bin, and in
// which bin. A lookup table turns each (column, byte) into a histogram
// index, so a histogram pass reads each of a node's rows once, with its
// gradient, and makes one addition per column; a sparse feature's common
// bin is then the node's totals minus its other bins. Only the smaller
// child of a split is summed; the larger is its parent minus the smaller.
// Rows are split into fixed chunks whose partial histograms are added in
// order, so results do not depend on the number of cores.
type mlGrower struct {
	cfg    mlGbdtConfig
	bins   *mlBinning
	xb     [][]uint8 // per feature: the rows' bins (column-major), for partitions
	sparse []int     // sparse feature indices
	col    []int     // per feature: its column in xr
	width  int       // columns in xr
	xr     []uint8   // n × width, row-major, for histograms
	// lut[j*256+v]: the histogram index of byte v in column j; index
	// bins.total is a trash entry (a bundle byte 0: every feature of the
	// bundle in its common bin)
	lut     []uint32
	gh      []mlGhPair
	rows    []uint32
	tmp     []uint32
	parts   [][]mlHistEntry // partial histograms, reused
	workers int
}

// mlHistChunk is the number of rows per histogram task.
const mlHistChunk = 32768

// newMLGrower stores the binned columns xb row-wise too.
func newMLGrower(xb [][]uint8, bins *mlBinning, n int, cfg mlGbdtConfig, workers int) *mlGrower {
	g := &mlGrower{cfg: cfg, bins: bins, xb: xb, workers: workers, col: make([]int, len(xb)),
		gh: make([]mlGhPair, n), rows: make([]uint32, n), tmp: make([]uint32, n)}
	base := make([]int, len(xb)) // per sparse feature: the byte of its first non-common bin
	trash := uint32(bins.total)
	var lut []uint32
	for f := range xb { // dense columns first
		if bins.sparse[f] {
			g.sparse = append(g.sparse, f)
			continue
		}
		g.col[f] = g.width
		g.width++
		t := make([]uint32, 256)
		for v := range t {
			t[v] = uint32(bins.off[f] + min(v, bins.nbins(f)-1))
		}
		lut = append(lut, t...)
	}
	// bundles, greedily in feature order: a sparse feature joins the first
	// bundle it never shares a row with and whose bytes it fits in
	type bundle struct {
		used  []uint64 // rows where some member is off its common bin
		bytes int      // bytes taken, 0 included
		lut   []uint32
	}
	var bundles []*bundle
	for _, f := range g.sparse {
		c, nb := bins.common[f], bins.nbins(f)
		if nb == 1 {
			g.col[f] = -1 // constant: never split, never stored
			continue
		}
		var into *bundle
		for _, b := range bundles {
			if b.bytes+nb-1 > 256 {
				continue
			}
			free := true
			for r, v := range xb[f] {
				if v != c && b.used[r>>6]&(1<<(r&63)) != 0 {
					free = false
					break
				}
			}
			if free {
				into = b
				break
			}
		}
		if into == nil {
			into = &bundle{used: make([]uint64, (n+63)/64), bytes: 1, lut: make([]uint32, 256)}
			for v := range into.lut {
				into.lut[v] = trash
			}
			g.col[f] = g.width + len(bundles)
			bundles = append(bundles, into)
		} else {
			for k, b := range bundles {
				if b == into {
					g.col[f] = g.width + k
				}
			}
		}
		base[f] = into.bytes
		for b := range nb {
			if b != int(c) {
				into.lut[into.bytes] = uint32(bins.off[f] + b)
				into.bytes++
			}
		}
		for r, v := range xb[f] {
			if v != c {
				into.used[r>>6] |= 1 << (r & 63)
			}
		}
	}
	for _, b := range bundles {
		lut = append(lut, b.lut...)
	}
	dense := g.width
	g.width += len(bundles)
	g.lut = lut
	w := g.width
	g.xr = make([]uint8, n*w)
	chunks := (n + mlHistChunk - 1) / mlHistChunk
	mlParallelDo(chunks, workers, func(_, ch int) {
		lo, hi := ch*mlHistChunk, min((ch+1)*mlHistChunk, n)
		for f, col := range xb {
			j := g.col[f]
			if j < 0 {
				continue
			}
			if j < dense {
				for i, v := range col[lo:hi] {
					g.xr[(lo+i)*w+j] = v
				}
				continue
			}
			c, b0 := bins.common[f], base[f]
			for i, v := range col[lo:hi] {
				if v != c {
					k := v // the byte: b0 + rank of v among the non-common bins
					if v > c {
						k--
					}
					g.xr[(lo+i)*w+j] = uint8(b0 + int(k))
				}
			}
		}
	})
	return g
}

func (g *mlGrower) canSplit(nd *mlGbNode) bool {
	return nd.depth < g.cfg.MaxDepth && nd.n >= 2*g.cfg.MinSamplesLeaf
}

// grow grows one tree on the gradients in g.gh. It returns the tree, each
// node's split bin, and its leaves (whose rows are g.rows[start:end]).
func (g *mlGrower) grow() (Tree, []int, []*mlGbNode) {
	var t Tree
	var splitBin []int
	add := func(nd *mlGbNode) {
		nd.id = int32(len(t.Feature))
		t.Feature = append(t.Feature, -1)
		t.Threshold = append(t.Threshold, 0)
		t.Left = append(t.Left, -1)
		t.Right = append(t.Right, -1)
		t.Value = append(t.Value, 0)
		splitBin = append(splitBin, -1)
	}
	rows := g.rows
	for i := range rows {
		rows[i] = uint32(i)
	}
	root := &mlGbNode{start: 0, end: len(rows), n: len(rows)}
	add(root)
	for _, p := range g.gh {
		root.g += float64(p.g)
		root.h += float64(p.h)
	}
	if g.canSplit(root) {
		g.hists([]*mlGbNode{root})
	}
	var leaves []*mlGbNode
	level := []*mlGbNode{root}
	for len(level) > 0 {
		var next, split, small []*mlGbNode
		for _, nd := range level {
			if nd.hist == nil || !mlBestSplit(nd, g.bins, g.cfg) {
				leaves = append(leaves, nd)
				t.Value[nd.id] = -g.cfg.LearningRate * nd.g / (nd.h + g.cfg.L2)
				nd.hist = nil
				continue
			}
			split = append(split, nd)
		}
		// stable partitions, one node per task: left rows keep their order
		// in place, right ones go through the node's part of tmp
		nls := make([]int, len(split))
		mlParallelDo(len(split), g.workers, func(_, i int) {
			nd := split[i]
			seg := rows[nd.start:nd.end]
			tmp := g.tmp[nd.start:nd.end]
			nl, nr := 0, 0
			// branch-free: the direction is random
			col := g.xb[nd.feat]
			var goLeft [256]int
			for v := 0; v <= nd.bin; v++ {
				goLeft[v] = 1
			}
			for _, r := range seg {
				lt := goLeft[col[r]]
				seg[nl] = r
				tmp[nr] = r
				nl += lt
				nr += 1 - lt
			}
			copy(seg[nl:], tmp[:nr])
			nls[i] = nl
		})
		for i, nd := range split {
			nl := nls[i]
			l := &mlGbNode{start: nd.start, end: nd.start + nl, depth: nd.depth + 1, g: nd.gl, h: nd.hl, n: nl}
			r := &mlGbNode{start: nd.start + nl, end: nd.end, depth: nd.depth + 1, g: nd.g - nd.gl, h: nd.h - nd.hl, n: nd.n - nl}
			add(l)
			add(r)
			t.Feature[nd.id] = int32(nd.feat)
			t.Threshold[nd.id] = g.bins.edges[nd.feat][nd.bin]
			t.Left[nd.id], t.Right[nd.id] = l.id, r.id
			splitBin[nd.id] = nd.bin
			nd.left, nd.right = l, r
			next = append(next, l, r)
			if g.canSplit(l) || g.canSplit(r) {
				if r.n < l.n {
					small = append(small, r)
				} else {
					small = append(small, l)
				}
			}
		}
		g.hists(small)
		for _, nd := range split {
			l, r := nd.left, nd.right
			s, large := l, r
			if r.hist != nil {
				s, large = r, l
			}
			if s.hist != nil && g.canSplit(large) {
				large.hist = nd.hist // parent − small, in place
				for k := range large.hist {
					large.hist[k].g -= s.hist[k].g
					large.hist[k].h -= s.hist[k].h
					large.hist[k].n -= s.hist[k].n
				}
			}
			nd.hist = nil
			if !g.canSplit(s) {
				s.hist = nil
			}
		}
		level = next
	}
	return t, splitBin, leaves
}

// hists computes the histograms of nodes from their rows.
func (g *mlGrower) hists(nodes []*mlGbNode) {
	type task struct{ node, lo, hi int }
	var tasks []task
	first := make([]int, len(nodes)+1) // tasks of node i: first[i]..first[i+1]
	for i, nd := range nodes {
		first[i] = len(tasks)
		for lo := nd.start; lo < nd.end; lo += mlHistChunk {
			tasks = append(tasks, task{i, lo, min(lo+mlHistChunk, nd.end)})
		}
	}
	first[len(nodes)] = len(tasks)
	total := g.bins.total
	for len(g.parts) < len(tasks) {
		g.parts = append(g.parts, make([]mlHistEntry, total+1)) // + trash
	}
	w := g.width
	mlParallelDo(len(tasks), g.workers, func(_, ti int) {
		tk := tasks[ti]
		h := g.parts[ti]
		clear(h)
		lut := g.lut[:w*256]
		for _, r := range g.rows[tk.lo:tk.hi] {
			p := g.gh[r]
			pg, ph := float64(p.g), float64(p.h)
			row := g.xr[int(r)*w : int(r)*w+w]
			for j, v := range row {
				e := &h[lut[j<<8|int(v)]]
				e.g += pg
				e.h += ph
				e.n++
			}
		}
	})
	mlParallelDo(len(nodes), g.workers, func(_, i int) {
		nd := nodes[i]
		h := make([]mlHistEntry, total)
		for ti := first[i]; ti < first[i+1]; ti++ {
			for k, e := range g.parts[ti][:total] {
				h[k].g += e.g
				h[k].h += e.h
				h[k].n += e.n
			}
		}
		for _, f := range g.sparse {
			c := g.bins.off[f] + int(g.bins.common[f])
			e := mlHistEntry{g: nd.g, h: nd.h, n: int64(nd.n)}
			for k := g.bins.off[f]; k < g.bins.off[f]+g.bins.nbins(f); k++ {
				if k != c {
					e.g -= h[k].g
					e.h -= h[k].h
					e.n -= h[k].n
				}
			}
			h[c] = e
		}
		nd.hist = h
	})
}

// mlBestSplit finds the split of nd with the largest gain
// G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ); ties go to the lower feature, then
// the lower bin. It reports whether a split beats MinSplitGain.
func mlBestSplit(nd *mlGbNode, bins *mlBinning, cfg mlGbdtConfig) bool {
	lam := cfg.L2
	parent := nd.g * nd.g / (nd.h + lam)
	bestGain := math.Max(cfg.MinSplitGain, 1e-12)
	found := false
	msl := int64(cfg.MinSamplesLeaf)
	for f := range bins.edges {
		h := nd.hist[bins.off[f] : bins.off[f]+bins.nbins(f)]
		var gl, hl float64
		var nl int64
		for b := 0; b+1 < len(h); b++ {
			gl += h[b].g
			hl += h[b].h
			nl += h[b].n
			nr := int64(nd.n) - nl
			if nl < msl {
				continue
			}
			if nr < msl {
				break
			}
			gr, hr := nd.g-gl, nd.h-hl
			if hl < mlMinChildHessian || hr < mlMinChildHessian {
				continue
			}
			gain := gl*gl/(hl+lam) + gr*gr/(hr+lam) - parent
			if gain > bestGain {
				bestGain, found = gain, true
				nd.feat, nd.bin, nd.gl, nd.hl = f, b, gl, hl
			}
		}
	}
	return found
}
