package stages

import (
	"context"
	"fmt"
	"math"
	"syscall"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// mlModelColumns names the columns train and validate read from a features
// table.
type mlModelColumns struct {
	features []string
	label    string
	id       string
}

// mlRowBatch is the selected rows of one record batch as float32 feature
// mlColumns (in mlModelColumns.features order), 0/1 labels and split buckets.
// Its slices are reused for the next batch: a consumer copies what it keeps.
type mlRowBatch struct {
	n      int
	cols   [][]float32
	y      []uint8
	bucket []uint16
}

// mlIsFeatureType reports whether a column of type dt can be a model feature.
func mlIsFeatureType(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.FLOAT32, arrow.FLOAT64, arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64,
		arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64, arrow.BOOL:
		return true
	}
	return false
}

// mlTableSchema returns the schema and the row count of a table file
// without reading its rows.
func mlTableSchema(ctx context.Context, path string) (*arrow.Schema, int, error) {
	r, err := table.Open(ctx, path, nil)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	defer pf.Close()
	return r.Schema(), int(pf.NumRows()), nil
}

// mlResolveFeatures checks the model columns against a table's schema; with no
// features given it picks every numeric or boolean column but the label and
// the id, in table order.
func mlResolveFeatures(schema *arrow.Schema, mc *mlModelColumns, path string) error {
	for _, c := range []struct{ what, name string }{{"label", mc.label}, {"id", mc.id}} {
		if len(schema.FieldIndices(c.name)) == 0 {
			return fmt.Errorf("%s: no %s column %q (columns: %s)", path, c.what, c.name, mlColumnList(schema))
		}
	}
	if mc.features == nil {
		for _, f := range schema.Fields() {
			if f.Name != mc.label && f.Name != mc.id && mlIsFeatureType(f.Type) {
				mc.features = append(mc.features, f.Name)
			}
		}
		if len(mc.features) == 0 {
			return fmt.Errorf("%s: no numeric or boolean columns besides the label %q and the id %q to use as features", path, mc.label, mc.id)
		}
		return nil
	}
	seen := map[string]bool{}
	for _, name := range mc.features {
		idx := schema.FieldIndices(name)
		switch {
		case seen[name]:
			return fmt.Errorf("feature %q is listed twice", name)
		case name == mc.label || name == mc.id:
			return fmt.Errorf("feature %q is the label or the id column", name)
		case len(idx) == 0:
			return fmt.Errorf("%s: no feature column %q (columns: %s)", path, name, mlColumnList(schema))
		case !mlIsFeatureType(schema.Field(idx[0]).Type):
			return fmt.Errorf("%s: feature column %q is %s, not numeric: encode it in the features stage (one-hot, dictionary codes) or leave it out", path, name, schema.Field(idx[0]).Type)
		}
		seen[name] = true
	}
	return nil
}

func mlColumnList(s *arrow.Schema) string {
	out := ""
	for i, f := range s.Fields() {
		if i > 0 {
			out += ", "
		}
		if i == 12 {
			return out + fmt.Sprintf("… %d more", s.NumFields()-12)
		}
		out += f.Name
	}
	return out
}

// mlScanTable streams the table at path and calls fn with the rows of each
// batch whose split bucket satisfies keep. It reads only the model
// columns. Nulls, NaN and infinities in the selected rows, and labels other
// than 0/1, are errors naming the column and row.
func mlScanTable(ctx context.Context, path string, mc *mlModelColumns, seed uint64, keep func(uint16) bool, fn func(*mlRowBatch) error) (rows int, err error) {
	want := append(append([]string{}, mc.features...), mc.label, mc.id)
	r, err := table.Open(ctx, path, want)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	sc := r.Schema()
	idx := make([]int, len(want))
	for i, name := range want {
		idx[i] = sc.FieldIndices(name)[0]
	}
	var all []uint16
	var sel []int32
	rb := &mlRowBatch{cols: make([][]float32, len(mc.features))}
	for {
		if err := ctx.Err(); err != nil {
			return rows, err
		}
		rec, err := r.Next()
		if err != nil {
			return rows, fmt.Errorf("%s: %w", path, err)
		}
		if rec == nil {
			return rows, nil
		}
		n := int(rec.NumRows())
		if cap(all) < n {
			all = make([]uint16, n)
		}
		all = all[:n]
		if err := mlIdBuckets(rec.Column(idx[len(idx)-1]), mc.id, seed, rows, all); err != nil {
			return rows, fmt.Errorf("%s: %w", path, err)
		}
		sel = sel[:0]
		for i, b := range all {
			if keep(b) {
				sel = append(sel, int32(i))
			}
		}
		if len(sel) > 0 {
			ns := len(sel)
			rb.n = ns
			rb.bucket = mlGrow(rb.bucket, ns)
			for k, i := range sel {
				rb.bucket[k] = all[i]
			}
			for j, name := range mc.features {
				rb.cols[j] = mlGrow(rb.cols[j], ns)
				if err := mlGatherFloat32(rec.Column(idx[j]), sel, rb.cols[j]); err != nil {
					return rows, fmt.Errorf("%s: feature column %q: %w", path, name, mlRowErr(err, rows))
				}
			}
			rb.y = mlGrow(rb.y, ns)
			clear(rb.y)
			if err := mlGatherLabel(rec.Column(idx[len(mc.features)]), sel, rb.y); err != nil {
				return rows, fmt.Errorf("%s: label column %q: %w", path, mc.label, mlRowErr(err, rows))
			}
			if err := fn(rb); err != nil {
				return rows, err
			}
		}
		rows += n
	}
}

// mlGrow returns s resliced to n elements, reallocated if too small.
func mlGrow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

// mlBadRow is a value error at a row of the current batch.
type mlBadRow struct {
	row int
	msg string
}

func (e *mlBadRow) Error() string { return fmt.Sprintf("row %d: %s", e.row, e.msg) }

func mlRowErr(err error, base int) error {
	if br, ok := err.(*mlBadRow); ok {
		return &mlBadRow{row: br.row + base, msg: br.msg}
	}
	return err
}

func mlCheckNulls(a arrow.Array, sel []int32) error {
	if a.NullN() == 0 {
		return nil
	}
	for _, i := range sel {
		if a.IsNull(int(i)) {
			return &mlBadRow{row: int(i), msg: "null value: fill nulls before training (preprocess fill)"}
		}
	}
	return nil
}

func mlGatherNum[T int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64 | float32 | float64](vals []T, sel []int32, out []float32) {
	for k, i := range sel {
		out[k] = float32(vals[i])
	}
}

// mlGatherFloat32 converts the selected rows of a numeric or boolean column.
func mlGatherFloat32(a arrow.Array, sel []int32, out []float32) error {
	if err := mlCheckNulls(a, sel); err != nil {
		return err
	}
	switch c := a.(type) {
	case *array.Float32:
		mlGatherNum(c.Float32Values(), sel, out)
	case *array.Float64:
		mlGatherNum(c.Float64Values(), sel, out)
	case *array.Int8:
		mlGatherNum(c.Int8Values(), sel, out)
	case *array.Int16:
		mlGatherNum(c.Int16Values(), sel, out)
	case *array.Int32:
		mlGatherNum(c.Int32Values(), sel, out)
	case *array.Int64:
		mlGatherNum(c.Int64Values(), sel, out)
	case *array.Uint8:
		mlGatherNum(c.Uint8Values(), sel, out)
	case *array.Uint16:
		mlGatherNum(c.Uint16Values(), sel, out)
	case *array.Uint32:
		mlGatherNum(c.Uint32Values(), sel, out)
	case *array.Uint64:
		mlGatherNum(c.Uint64Values(), sel, out)
	case *array.Boolean:
		for k, i := range sel {
			if c.Value(int(i)) {
				out[k] = 1
			} else {
				out[k] = 0
			}
		}
	default:
		return fmt.Errorf("type %s is not numeric", a.DataType())
	}
	for k, v := range out {
		if v-v != 0 { // NaN or ±Inf
			return &mlBadRow{row: int(sel[k]), msg: fmt.Sprintf("value %v: features must be finite", v)}
		}
	}
	return nil
}

// mlGatherLabel reads the selected rows of a 0/1 label column.
func mlGatherLabel(a arrow.Array, sel []int32, out []uint8) error {
	if err := mlCheckNulls(a, sel); err != nil {
		return err
	}
	if b, ok := a.(*array.Boolean); ok {
		for k, i := range sel {
			if b.Value(int(i)) {
				out[k] = 1
			}
		}
		return nil
	}
	if !mlIsFeatureType(a.DataType()) {
		return fmt.Errorf("type %s: the label must be 0/1 or boolean", a.DataType())
	}
	tmp := make([]float32, len(sel))
	if err := mlGatherFloat32(a, sel, tmp); err != nil {
		return err
	}
	for k, v := range tmp {
		switch v {
		case 0:
		case 1:
			out[k] = 1
		default:
			return &mlBadRow{row: int(sel[k]), msg: fmt.Sprintf("value %v: the label must be 0 or 1", v)}
		}
	}
	return nil
}

// mlLogLossOfMargin is the log loss of margin z (log-odds) against label y.
func mlLogLossOfMargin(z float64, y uint8) float64 {
	if y == 1 {
		return mlSoftplus(-z)
	}
	return mlSoftplus(z)
}

// mlCheckFinite reports whether every value is finite.
func mlCheckFinite(vs ...float64) bool {
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return false
		}
	}
	return true
}

// mlArena hands out large pointer-free slices from anonymous memory maps,
// outside the Go heap. The training columns are most of a train stage's
// memory; on the heap they would double the garbage collector's goal (the
// goal is twice the live heap), so the garbage of decoding batches could
// pile up to their size again. Outside it, the heap stays small and is
// collected often, and pages of the reserved capacity that are never
// written never become resident. Slices from an arena must not be used
// after free.
type mlArena struct{ maps [][]byte }

// bytes returns n zeroed bytes, from a map when n is large.
func (a *mlArena) bytes(n int) []byte {
	if n < 1<<20 {
		return make([]byte, n)
	}
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, n) // no map: the heap will do
	}
	a.maps = append(a.maps, b)
	return b
}

// float32s returns an empty slice with capacity n.
func (a *mlArena) float32s(n int) []float32 {
	if n == 0 {
		return nil
	}
	b := a.bytes(4 * n)
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n)[:0]
}

// free unmaps every map; slices from the arena must not be used after.
func (a *mlArena) free() {
	for _, b := range a.maps {
		_ = syscall.Munmap(b)
	}
	a.maps = nil
}
