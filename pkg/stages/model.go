package stages

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/cespare/xxhash/v2"
)

// ModelFormat tags every model file train writes (docs/model-format.md).
const ModelFormat = "orch.model.v1"

// Model is the JSON model file written by train and read by validate and
// by anything that serves the model. Field order is the file's order; the
// file is deterministic: the same inputs and params give the same bytes.
type Model struct {
	Format string `json:"format"`
	// Type is "logistic" or "gbdt"; exactly one of Logistic and GBDT is set.
	Type  string `json:"type"`
	Label string `json:"label"`
	// Features are the input columns in the order the weights and the
	// trees' feature indices refer to.
	Features []string `json:"features"`
	Split    Split    `json:"split"`
	// Stats are the fitted transform statistics of the features stage,
	// embedded as given (JSON), so serving can reproduce the features.
	Stats json.RawMessage `json:"stats,omitempty"`
	// Params are the resolved training params, defaults included.
	Params   map[string]any   `json:"params"`
	Logistic *LogisticWeights `json:"logistic,omitempty"`
	GBDT     *GBDTModel       `json:"gbdt,omitempty"`
	Training TrainingSummary  `json:"training"`

	flatOnce sync.Once
	flat     []mlFlatTree // the trees in scoring form, built on first use
}

// mlFlatTree is a tree in a compact form for scoring. A float32 x satisfies
// x <= t (t float64) exactly when x <= t rounded down to float32, so
// nodes compare in float32.
type mlFlatTree struct {
	nodes []mlFlatNode
	value []float64
}

type mlFlatNode struct {
	f    int32 // -1 for a leaf
	thr  float32
	l, r int32
}

func (m *Model) flatTrees() []mlFlatTree {
	m.flatOnce.Do(func() {
		if m.GBDT == nil {
			return
		}
		for _, t := range m.GBDT.Trees {
			ft := mlFlatTree{nodes: make([]mlFlatNode, len(t.Feature)), value: t.Value}
			for i := range ft.nodes {
				thr := float32(t.Threshold[i])
				if float64(thr) > t.Threshold[i] {
					thr = math.Nextafter32(thr, float32(math.Inf(-1)))
				}
				ft.nodes[i] = mlFlatNode{f: t.Feature[i], thr: thr, l: t.Left[i], r: t.Right[i]}
			}
			m.flat = append(m.flat, ft)
		}
	})
	return m.flat
}

// LogisticWeights are a logistic regression's parameters:
// P(label=1 | x) = 1 / (1 + exp(-(Intercept + Σ Coef[j]·x[j]))).
type LogisticWeights struct {
	Intercept float64   `json:"intercept"`
	Coef      []float64 `json:"coef"`
}

// GBDTModel is an ensemble of regression trees on the log-odds scale:
// P(label=1 | x) = 1 / (1 + exp(-(BaseScore + Σ tree(x)))).
type GBDTModel struct {
	BaseScore float64 `json:"base_score"`
	Trees     []Tree  `json:"trees"`
}

// Tree is one regression tree as parallel node arrays; node 0 is the root.
// An internal node n sends x to Left[n] when x[Feature[n]] <= Threshold[n]
// (NaN goes right) and to Right[n] otherwise; a leaf has Feature[n] == -1
// and contributes Value[n] (learning rate already applied). Children always
// have larger indices than their parent.
type Tree struct {
	Feature   []int32   `json:"feature"`
	Threshold []float64 `json:"threshold"`
	Left      []int32   `json:"left"`
	Right     []int32   `json:"right"`
	Value     []float64 `json:"value"`
}

// TrainingSummary describes the fit; it holds no timings, so model files
// stay byte-identical across runs.
type TrainingSummary struct {
	Rows         int     `json:"rows"`          // rows the model was fitted on
	Positives    int     `json:"positives"`     // of those, label 1
	ValidRows    int     `json:"valid_rows"`    // gbdt early-stopping fold
	HoldoutRows  int     `json:"holdout_rows"`  // rows left for validate
	Iterations   int     `json:"iterations"`    // Newton steps or boosting rounds run
	Rounds       int     `json:"rounds"`        // trees kept (gbdt)
	Converged    bool    `json:"converged"`     // logistic: step below tol; gbdt: early-stopped
	TrainLogLoss float64 `json:"train_logloss"` // mean log loss on the fitted rows
	// ValidLogLoss is the best early-stopping fold loss (gbdt), null if none.
	ValidLogLoss *float64 `json:"valid_logloss"`
}

// Split is the deterministic holdout split shared by train and validate.
// A row's bucket is xxhash64(le64(seed) ‖ idBytes) mod Buckets, where
// idBytes is the id as a little-endian int64 for integer columns (whatever
// their width) and the UTF-8 bytes for string columns. Rows with
// bucket < round(Holdout·Buckets) are the holdout; the rest train. The
// split depends only on each row's id, so it is stable across runs and
// independent of row order.
type Split struct {
	ID      string  `json:"id"`
	Holdout float64 `json:"holdout"`
	Seed    uint64  `json:"seed"`
	Hash    string  `json:"hash"`
	Buckets int     `json:"buckets"`
}

const (
	mlSplitHash    = "xxhash64"
	mlSplitBuckets = 10000
)

// holdoutCut is the first bucket that is not holdout.
func (s Split) holdoutCut() uint16 { return uint16(math.Round(s.Holdout * mlSplitBuckets)) }

// mlIdBuckets computes the bucket of every row of an id column.
func mlIdBuckets(col arrow.Array, name string, seed uint64, rowBase int, out []uint16) error {
	if col.NullN() > 0 {
		for i := 0; i < col.Len(); i++ {
			if col.IsNull(i) {
				return fmt.Errorf("id column %q: null at row %d: every row needs an id for the holdout split", name, rowBase+i)
			}
		}
	}
	var buf [16]byte
	binary.LittleEndian.PutUint64(buf[:8], seed)
	intHash := func(v int64) uint16 {
		binary.LittleEndian.PutUint64(buf[8:], uint64(v))
		return uint16(xxhash.Sum64(buf[:]) % mlSplitBuckets)
	}
	sb := make([]byte, 8, 64)
	copy(sb, buf[:8])
	strHash := func(s string) uint16 {
		sb = append(sb[:8], s...)
		return uint16(xxhash.Sum64(sb) % mlSplitBuckets)
	}
	switch a := col.(type) {
	case *array.Int64:
		for i, v := range a.Int64Values() {
			out[i] = intHash(v)
		}
	case *array.Int32:
		for i, v := range a.Int32Values() {
			out[i] = intHash(int64(v))
		}
	case *array.Int16:
		for i, v := range a.Int16Values() {
			out[i] = intHash(int64(v))
		}
	case *array.Int8:
		for i, v := range a.Int8Values() {
			out[i] = intHash(int64(v))
		}
	case *array.Uint64:
		for i, v := range a.Uint64Values() {
			out[i] = intHash(int64(v))
		}
	case *array.Uint32:
		for i, v := range a.Uint32Values() {
			out[i] = intHash(int64(v))
		}
	case *array.Uint16:
		for i, v := range a.Uint16Values() {
			out[i] = intHash(int64(v))
		}
	case *array.Uint8:
		for i, v := range a.Uint8Values() {
			out[i] = intHash(int64(v))
		}
	case *array.String:
		for i := range a.Len() {
			out[i] = strHash(a.Value(i))
		}
	case *array.LargeString:
		for i := range a.Len() {
			out[i] = strHash(a.Value(i))
		}
	case *array.Dictionary:
		dict, ok := a.Dictionary().(*array.String)
		if !ok {
			return fmt.Errorf("id column %q is %s: use an integer or string id", name, col.DataType())
		}
		hs := make([]uint16, dict.Len())
		for i := range hs {
			hs[i] = strHash(dict.Value(i))
		}
		for i := range a.Len() {
			out[i] = hs[a.GetValueIndex(i)]
		}
	default:
		return fmt.Errorf("id column %q is %s: use an integer or string id", name, col.DataType())
	}
	return nil
}

// ReadModel reads and checks a model file.
func ReadModel(path string) (*Model, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m Model
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: not a model file: %w", path, err)
	}
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &m, nil
}

// check verifies a model's internal consistency, so that predicting with
// it cannot index out of range or loop.
func (m *Model) check() error {
	if m.Format != ModelFormat {
		return fmt.Errorf("format %q, want %q", m.Format, ModelFormat)
	}
	if m.Label == "" || len(m.Features) == 0 {
		return errors.New("model names no label or no features")
	}
	if m.Split.ID == "" || m.Split.Hash != mlSplitHash || m.Split.Buckets != mlSplitBuckets || !(m.Split.Holdout > 0 && m.Split.Holdout < 1) {
		return fmt.Errorf("unsupported split %+v", m.Split)
	}
	d := len(m.Features)
	switch m.Type {
	case "logistic":
		if m.Logistic == nil || len(m.Logistic.Coef) != d {
			return fmt.Errorf("logistic model needs %d coefficients", d)
		}
	case "gbdt":
		if m.GBDT == nil {
			return errors.New("gbdt model without trees")
		}
		for ti, t := range m.GBDT.Trees {
			n := len(t.Feature)
			if n == 0 || len(t.Threshold) != n || len(t.Left) != n || len(t.Right) != n || len(t.Value) != n {
				return fmt.Errorf("tree %d: node arrays of different lengths", ti)
			}
			for i := range n {
				f := t.Feature[i]
				if f == -1 {
					continue
				}
				if f < 0 || int(f) >= d || int(t.Left[i]) <= i || int(t.Right[i]) <= i || int(t.Left[i]) >= n || int(t.Right[i]) >= n {
					return fmt.Errorf("tree %d node %d: bad feature or child index", ti, i)
				}
			}
		}
	default:
		return fmt.Errorf("unknown model type %q", m.Type)
	}
	return nil
}

// Predict writes P(label=1) for n rows given as feature columns in the
// model's feature order. It is safe for concurrent use.
func (m *Model) Predict(cols [][]float32, n int, out []float64) {
	m.margins(cols, n, out)
	for i, z := range out[:n] {
		out[i] = mlSigmoid(z)
	}
}

// margins writes the log-odds of n rows into margin.
func (m *Model) margins(cols [][]float32, n int, margin []float64) {
	margin = margin[:n]
	switch m.Type {
	case "logistic":
		for i := range margin {
			margin[i] = m.Logistic.Intercept
		}
		for j, c := range cols {
			w := m.Logistic.Coef[j]
			c = c[:n]
			for i, v := range c {
				margin[i] += w * float64(v)
			}
		}
	case "gbdt":
		// a block of rows at a time through every tree, so the block's
		// feature values stay in cache
		const block = 256
		trees := m.flatTrees()
		for lo := 0; lo < n; lo += block {
			mb := margin[lo:min(lo+block, n)]
			for i := range mb {
				mb[i] = m.GBDT.BaseScore
			}
			for ti := range trees {
				nodes, value := trees[ti].nodes, trees[ti].value
				for i := range mb {
					nd := &nodes[0]
					k := int32(0)
					for nd.f >= 0 {
						if cols[nd.f][lo+i] <= nd.thr {
							k = nd.l
						} else {
							k = nd.r
						}
						nd = &nodes[k]
					}
					mb[i] += value[k]
				}
			}
		}
	}
}

func mlSigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

// mlSoftplus is log(1+exp(z)), computed without overflow.
func mlSoftplus(z float64) float64 {
	if z > 0 {
		return z + math.Log1p(math.Exp(-z))
	}
	return math.Log1p(math.Exp(z))
}

// mlPredictChunk is the number of rows per parallel prediction task.
const mlPredictChunk = 4096

// predictParallel is Predict over row chunks on all cores. A logistic
// model may have 0/1 features as ones[j], the ascending rows holding 1
// (mlRows.ones), with cols[j] nil; ones may be nil. The margins add the
// columns in the same order either way, and w·0 adds nothing, so they
// are the same bits.
func (m *Model) predictParallel(cols [][]float32, ones [][]int32, n int, out []float64) {
	chunks := (n + mlPredictChunk - 1) / mlPredictChunk
	starts := make([][]int32, len(ones))
	for j, o := range ones {
		if o != nil {
			starts[j] = mlChunkStarts(o, chunks, mlPredictChunk)
		}
	}
	mlParallelDo(chunks, mlParallelism(chunks), func(_, c int) {
		lo, hi := c*mlPredictChunk, min((c+1)*mlPredictChunk, n)
		margin := out[lo:hi]
		if ones == nil {
			sub := make([][]float32, len(cols))
			for j, col := range cols {
				sub[j] = col[lo:hi]
			}
			m.margins(sub, hi-lo, margin)
		} else { // logistic
			for i := range margin {
				margin[i] = m.Logistic.Intercept
			}
			for j, col := range cols {
				w := m.Logistic.Coef[j]
				if st := starts[j]; st != nil {
					for _, i := range ones[j][st[c]:st[c+1]] {
						margin[int(i)-lo] += w
					}
					continue
				}
				for i, v := range col[lo:hi] {
					margin[i] += w * float64(v)
				}
			}
		}
		for i, z := range margin {
			margin[i] = mlSigmoid(z)
		}
	})
}
