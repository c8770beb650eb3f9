package stages

import (
	"fmt"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"math"
	"slices"
	"sort"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// eval computes a single-output op over one batch.
func (o *featOp) eval(b *featBatch) (arrow.Array, error) {
	n := b.n
	switch o.kind {
	case "expr":
		v, err := featEval(o.expr, n, b.floats)
		if err != nil {
			return nil, err
		}
		out := make([]float32, n)
		if v.vec == nil {
			for i := range out {
				out[i] = float32(v.scalar)
			}
		} else {
			featTo32(out, v.vec)
		}
		return opsFloat32Array(out), nil
	case "log1p", "sqrt":
		x, err := b.floats(o.src)
		if err != nil {
			return nil, err
		}
		out := make([]float32, n)
		if o.kind == "log1p" {
			for i, v := range x {
				out[i] = float32(math.Log1p(v))
			}
		} else {
			for i, v := range x {
				out[i] = float32(math.Sqrt(v))
			}
		}
		return opsFloat32Array(out), nil
	case "standardize":
		if out, ok := featStandardizeDirect(b, o); ok {
			return opsFloat32Array(out), nil
		}
		x, err := b.floats(o.src)
		if err != nil {
			return nil, err
		}
		out := make([]float32, n)
		mean, std := o.mean, o.std
		if std == 0 {
			// A constant column: every value is the mean, z = 0 (pandas
			// divides by zero and gives NaN).
			for i, v := range x {
				out[i] = float32(v - v) // NaN stays NaN (missing), else 0
			}
		} else {
			for i, v := range x {
				out[i] = float32((v - mean) / std)
			}
		}
		return opsFloat32Array(out), nil
	case "bucketize":
		x, err := b.floats(o.src)
		if err != nil {
			return nil, err
		}
		var valid []bool
		idx := make([]int16, n)
		for i, v := range x {
			if v != v {
				if valid == nil {
					valid = make([]bool, n)
					for j := range valid {
						valid[j] = true
					}
				}
				valid[i] = false
				continue
			}
			// np.digitize(x, bounds): the number of bounds <= x.
			idx[i] = int16(sort.Search(len(o.bounds), func(j int) bool { return o.bounds[j] > v }))
		}
		if o.outType.ID() == arrow.INT8 {
			out := make([]int8, n)
			for i, v := range idx {
				out[i] = int8(v)
			}
			return opsPrimitiveArray(o.outType, out, valid), nil
		}
		return opsPrimitiveArray(o.outType, idx, valid), nil
	case "group_mean", "group_sum", "group_count":
		ids := o.keys.encode(b.array(*o.by), b.idBuf(), false)
		out := make([]float32, n)
		nan := float32(math.NaN())
		for i, id := range ids {
			if id < 0 || int(id) >= len(o.gval) {
				out[i] = nan
			} else {
				out[i] = float32(o.gval[id])
			}
		}
		return opsFloat32Array(out), nil
	case "date_part", "days_since":
		days, valid, err := opsDays(b.array(o.src), nil, nil)
		if err != nil {
			return nil, err
		}
		if o.kind == "days_since" {
			out := make([]int32, n)
			for i, d := range days {
				out[i] = o.ref - d
			}
			return opsPrimitiveArray(o.outType, out, valid), nil
		}
		return featDatePart(o.part, o.outType, days, valid), nil
	case "lag", "rolling_mean":
		// Computed whole when fitted; this batch is a window of it.
		return opsFloat32Array(o.win.out[b.off : b.off+int64(n)]), nil
	}
	return nil, fmt.Errorf("unknown op %s", o.kind)
}

// featStandardizeDirect standardizes an input column without nulls (the
// last pass's usual case) straight from its values, not through a float64
// copy of the column: the same arithmetic, (float64(v) - mean) / std. ok is
// false when it does not apply.
func featStandardizeDirect(b *featBatch, o *featOp) (out []float32, ok bool) {
	if o.std == 0 {
		return nil, false
	}
	out = make([]float32, b.n)
	return out, featDirect(b, o, out)
}

// featMomentsDirect adds an input column without nulls to o's moments
// straight from its values, not through a float64 copy (the same sums in
// the same order). It reports whether it applied.
func featMomentsDirect(b *featBatch, o *featOp) bool { return featDirect(b, o, nil) }

// featDirect standardizes o's input column into out, or with out nil adds
// it to o's moments, when the column is an input without nulls of a
// numeric type not yet converted to float64 for this batch.
func featDirect(b *featBatch, o *featOp, out []float32) bool {
	if o.src.op >= 0 {
		return false
	}
	if _, done := b.f64[o.src]; done {
		return false // converted already: use that
	}
	a := b.array(o.src)
	if a.NullN() > 0 {
		return false
	}
	switch c := a.(type) {
	case *array.Int8:
		featStdOrAdd(o, c.Int8Values(), out)
	case *array.Int16:
		featStdOrAdd(o, c.Int16Values(), out)
	case *array.Int32:
		featStdOrAdd(o, c.Int32Values(), out)
	case *array.Int64:
		featStdOrAdd(o, c.Int64Values(), out)
	case *array.Float32:
		featStdOrAdd(o, c.Float32Values(), out)
	case *array.Float64:
		featStdOrAdd(o, c.Float64Values(), out)
	default:
		return false
	}
	return true
}

func featStdOrAdd[T opsNumber](o *featOp, src []T, out []float32) {
	if out == nil {
		opsMomentsAdd(&o.mom, src)
		return
	}
	out = out[:len(src)]
	mean, std := o.mean, o.std
	for i, v := range src {
		out[i] = float32((float64(v) - mean) / std)
	}
}

// featTo32 rounds float64 values to float32.
func featTo32(dst []float32, src []float64) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = float32(v)
	}
}

func featDatePart(part string, dt arrow.DataType, days []int32, valid []bool) arrow.Array {
	n := len(days)
	switch part {
	case "year", "dayofyear":
		out := make([]int16, n)
		for i, d := range days {
			if !valid[i] {
				continue
			}
			y, _, _ := opsCivil(d)
			if part == "year" {
				out[i] = int16(y)
			} else {
				out[i] = int16(d - opsDaysFromCivil(y, 1, 1) + 1)
			}
		}
		return opsPrimitiveArray(dt, out, valid)
	}
	out := make([]int8, n)
	for i, d := range days {
		if !valid[i] {
			continue
		}
		switch part {
		case "dow":
			// 1970-01-01 was a Thursday; Monday is 0, as pandas' dayofweek.
			dow := (int64(d) + 3) % 7
			if dow < 0 {
				dow += 7
			}
			out[i] = int8(dow)
		default:
			_, m, dd := opsCivil(d)
			switch part {
			case "month":
				out[i] = int8(m)
			case "day":
				out[i] = int8(dd)
			case "quarter":
				out[i] = int8((m-1)/3 + 1)
			}
		}
	}
	return opsPrimitiveArray(dt, out, valid)
}

// opsDaysFromCivil is the day number (since 1970-01-01) of y-m-d.
func opsDaysFromCivil(y, m, d int) int32 {
	if m <= 2 {
		y--
	}
	era := opsFloorDiv(int64(y), 400)
	yoe := int64(y) - era*400
	mp := int64(m + 9)
	if m > 2 {
		mp = int64(m - 3)
	}
	doy := (153*mp+2)/5 + int64(d) - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return int32(era*146097 + doe - 719468)
}

// onehot computes the one-hot columns of one batch: 1 in the column of the
// row's category, or in col_other for a category not kept (when other is
// on); all 0 for a null.
func (o *featOp) onehot(b *featBatch) ([]arrow.Array, error) {
	a := b.array(o.src)
	ids := o.keys.encode(a, b.idBuf(), false)
	n := b.n
	// Booleans: Parquet bit-packs them, where 0/1 float32 columns were a
	// fifth of the three stages' CPU in LZ4 compression and four bytes a
	// value in train's memory.
	cols := make([][]byte, len(o.outs))
	for j := range cols {
		cols[j] = make([]byte, bitutil.BytesForBits(int64(n)))
	}
	other := -1
	if o.other {
		other = len(o.outs) - 1
	}
	bm, off := a.NullBitmapBytes(), a.Data().Offset()
	if a.NullN() == 0 {
		bm = nil
	}
	for i, id := range ids {
		if id >= 0 && int(id) < len(o.catCol) && o.catCol[id] >= 0 {
			bitutil.SetBit(cols[o.catCol[id]], i)
		} else if other >= 0 && opsValid(bm, off, i) {
			bitutil.SetBit(cols[other], i)
		}
	}
	out := make([]arrow.Array, len(cols))
	for j, c := range cols {
		out[j] = array.NewBoolean(n, memory.NewBufferBytes(c), nil, 0)
	}
	return out, nil
}

// fit adds one batch to the op's statistics.
func (o *featOp) fit(b *featBatch) error {
	switch o.kind {
	case "standardize":
		if featMomentsDirect(b, o) {
			return nil
		}
		x, err := b.floats(o.src)
		if err != nil {
			return err
		}
		o.mom.add(x)
	case "onehot":
		ids := o.keys.encode(b.array(o.src), b.idBuf(), true)
		for _, id := range ids {
			if id < 0 {
				continue
			}
			for int(id) >= len(o.count) {
				o.count = append(o.count, 0)
			}
			o.count[id]++
		}
	case "group_mean", "group_sum", "group_count":
		ids := o.keys.encode(b.array(*o.by), b.idBuf(), true)
		x, err := b.floats(o.src)
		if err != nil && o.kind != "group_count" {
			return err
		}
		if o.kind == "group_count" {
			// Count non-null values of any type.
			a := b.array(o.src)
			for i, id := range ids {
				if id < 0 {
					continue
				}
				o.growGroups(id)
				if a.IsValid(i) && (x == nil || x[i] == x[i]) {
					o.gcnt[id]++
				}
			}
			return nil
		}
		for i, id := range ids {
			if id < 0 {
				continue
			}
			o.growGroups(id)
			if v := x[i]; v == v {
				o.gsum[id] += v
				o.gcnt[id]++
			}
		}
	case "lag", "rolling_mean":
		if o.win == nil {
			o.win = &featWindow{}
		}
		return o.win.add(b, o)
	}
	return nil
}

func (o *featOp) growGroups(id int32) {
	for int(id) >= len(o.gcnt) {
		o.gcnt = append(o.gcnt, 0)
		o.gsum = append(o.gsum, 0)
	}
}

// finish turns the gathered statistics into the fitted values.
func (o *featOp) finish() error {
	switch o.kind {
	case "standardize":
		o.mean, o.std = o.mom.mean, o.mom.std()
		if o.mom.n == 0 {
			o.mean = math.NaN()
		}
	case "onehot":
		for len(o.count) < o.keys.len() {
			o.count = append(o.count, 0)
		}
		o.setCategories(o.sortCategories())
	case "group_mean", "group_sum", "group_count":
		o.gval = make([]float64, len(o.gcnt))
		for id := range o.gval {
			switch o.kind {
			case "group_mean":
				o.gval[id] = o.gsum[id] / float64(o.gcnt[id]) // NaN for a group without values
			case "group_sum":
				o.gval[id] = o.gsum[id]
			default:
				o.gval[id] = float64(o.gcnt[id])
			}
		}
		o.gsum, o.gcnt = nil, nil
	case "lag", "rolling_mean":
		if o.win == nil {
			o.win = &featWindow{}
		}
		o.win.compute(o)
	}
	return nil
}

// featWindow holds what a lag or rolling mean needs of the whole table: the
// group id, order key and value of every row; compute turns them into the
// output column (in input row order) and drops them.
type featWindow struct {
	gid   []int32
	order []int64
	vals  []float64
	out   []float32
}

func (w *featWindow) add(b *featBatch, o *featOp) error {
	x, err := b.floats(o.src)
	if err != nil {
		return err
	}
	w.vals = append(w.vals, x...)
	if o.by != nil {
		w.gid = append(w.gid, o.keys.encode(b.array(*o.by), nil, true)...)
	} else {
		w.gid = append(w.gid, make([]int32, b.n)...)
	}
	if o.order != nil {
		keys, err := featOrderKeys(b.array(*o.order))
		if err != nil {
			return fmt.Errorf("order %q: %w", o.order.col, err)
		}
		w.order = append(w.order, keys...)
	}
	return nil
}

// featOrderKeys maps an order column to int64 keys that sort like its
// values, nulls last: integers as they are, floats by their bits, dates and
// date strings as days, timestamps as they are.
func featOrderKeys(a arrow.Array) ([]int64, error) {
	n := a.Len()
	out := make([]int64, n)
	dt := a.DataType()
	switch {
	case opsIsInteger(dt) || dt.ID() == arrow.BOOL:
		v, _ := opsInt64s(a, nil)
		copy(out, v)
	case opsIsFloat(dt):
		v, _ := opsFloat64s(a, nil)
		for i, f := range v {
			if f != f {
				out[i] = math.MaxInt64
				continue
			}
			bits := int64(math.Float64bits(f))
			if bits < 0 {
				bits = math.MinInt64 - bits // negative floats: reverse, below positives
			}
			out[i] = bits
		}
		return out, nil
	case dt.ID() == arrow.TIMESTAMP:
		for i, v := range a.(*array.Timestamp).TimestampValues() {
			out[i] = int64(v)
		}
	default:
		days, _, err := opsDays(a, nil, nil)
		if err != nil {
			return nil, err
		}
		for i, d := range days {
			out[i] = int64(d)
		}
	}
	if a.NullN() > 0 {
		for i := range out {
			if a.IsNull(i) {
				out[i] = math.MaxInt64
			}
		}
	}
	return out, nil
}

// compute sorts the rows by (group, order, row) and computes the op along
// each group.
func (w *featWindow) compute(o *featOp) {
	n := len(w.vals)
	w.out = make([]float32, n)
	nan := float32(math.NaN())
	for i := range w.out {
		w.out[i] = nan
	}
	// Counting sort by group id keeps row order within a group.
	groups := 0
	for _, g := range w.gid {
		groups = max(groups, int(g)+1)
	}
	start := make([]int32, groups+1)
	for _, g := range w.gid {
		if g >= 0 {
			start[g+1]++
		}
	}
	for g := 1; g <= groups; g++ {
		start[g] += start[g-1]
	}
	perm := make([]int32, start[groups])
	next := append([]int32(nil), start[:groups]...)
	for r, g := range w.gid {
		if g >= 0 {
			perm[next[g]] = int32(r)
			next[g]++
		}
	}
	w.gid = nil
	for g := 0; g < groups; g++ {
		seg := perm[start[g]:start[g+1]]
		if w.order != nil && !slices.IsSortedFunc(seg, func(a, b int32) int { return cmpInt64(w.order[a], w.order[b]) }) {
			slices.SortStableFunc(seg, func(a, b int32) int { return cmpInt64(w.order[a], w.order[b]) })
		}
		if o.kind == "lag" {
			for j := o.n; j < len(seg); j++ {
				w.out[seg[j]] = float32(w.vals[seg[j-o.n]])
			}
			continue
		}
		// Rolling mean over the last `window` rows, nulls skipped.
		var sum float64
		cnt := 0
		for j, r := range seg {
			if v := w.vals[r]; v == v {
				sum += v
				cnt++
			}
			if j >= o.window {
				if v := w.vals[seg[j-o.window]]; v == v {
					sum -= v
					cnt--
				}
			}
			if cnt >= o.minP {
				w.out[r] = float32(sum / float64(cnt))
			}
		}
	}
	w.order, w.vals = nil, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
