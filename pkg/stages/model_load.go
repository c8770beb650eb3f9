package stages

import (
	"context"
	"fmt"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// mlRows are the rows of a features table that a split keeps, in table
// order: float32 feature columns (in mlModelColumns.features order, in
// arena memory), 0/1 labels and split buckets.
type mlRows struct {
	cols   [][]float32
	y      []uint8
	bucket []uint16
	total  int // rows in the table
}

// mlLoadRows reads the rows of the table at path whose split bucket
// satisfies keep. It reads the id column first (its row groups on all
// cores), so it knows which rows it keeps and allocates the columns at
// their size; then the feature and label column chunks of all row groups
// are read on all cores, each with Parquet's typed column reader into the
// worker's scratch buffer, and the kept rows gathered from there into
// their place. Nulls, NaN and
// infinities in the kept rows, and labels other than 0/1, are errors
// naming the column and row; rows not kept are not checked.
func mlLoadRows(ctx context.Context, path string, mc *mlModelColumns, seed uint64, keep func(uint16) bool, arena *mlArena) (*mlRows, error) {
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		return nil, fmt.Errorf("%s: not a readable Parquet file: %w", path, err)
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sc, err := fr.Schema()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// the leaf column and Arrow type of each feature and of the label
	names := append(append([]string{}, mc.features...), mc.label)
	leaf := make([]int, len(names))
	types := make([]arrow.DataType, len(names))
	for i, name := range names {
		leaf[i] = pf.MetaData().Schema.ColumnIndexByName(name)
		fi := sc.FieldIndices(name)
		if leaf[i] < 0 || len(fi) == 0 {
			return nil, fmt.Errorf("%s: no column %q", path, name)
		}
		types[i] = sc.Field(fi[0]).Type
	}
	if lt := types[len(names)-1]; !mlIsFeatureType(lt) {
		return nil, fmt.Errorf("%s: label column %q: type %s: the label must be 0/1 or boolean", path, mc.label, lt)
	}
	idField := sc.FieldIndices(mc.id)
	if len(idField) == 0 {
		return nil, fmt.Errorf("%s: no id column %q", path, mc.id)
	}
	total := int(pf.NumRows())
	// every row's split bucket
	all := make([]uint16, total)
	nGroups := pf.NumRowGroups()
	bases := make([]int, nGroups+1)
	for rg := range nGroups {
		bases[rg+1] = bases[rg] + int(pf.RowGroup(rg).NumRows())
	}
	idErrs := make([]error, nGroups)
	mlParallelDo(nGroups, mlParallelism(nGroups), func(_, rg int) {
		idErrs[rg] = mlGroupBuckets(ctx, fr, rg, idField[0], mc.id, seed, all[bases[rg]:bases[rg+1]], bases[rg])
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, err := range idErrs {
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	// every row group's kept rows and where they go: with these known, the
	// (row group, column) reads are independent tasks
	type group struct {
		rows, base, at int // rows, first row, first kept row
		sel            []int32
	}
	groups := make([]group, nGroups)
	var bucket []uint16
	kept := 0
	for rg := range groups {
		gr := group{rows: bases[rg+1] - bases[rg], base: bases[rg], at: kept}
		for i, b := range all[bases[rg]:bases[rg+1]] {
			if keep(b) {
				gr.sel = append(gr.sel, int32(i))
				bucket = append(bucket, b)
			}
		}
		groups[rg] = gr
		kept += len(gr.sel)
	}
	d := len(mc.features)
	rs := &mlRows{cols: make([][]float32, d), y: make([]uint8, kept), bucket: bucket, total: total}
	mlParallelDo(d, mlParallelism(d), func(_, j int) { rs.cols[j] = arena.float32s(kept)[:kept] })
	tasks := len(groups) * len(names)
	workers := mlParallelism(tasks)
	scr := make([]mlColScratch, workers)
	errs := make([]error, tasks)
	mlParallelDo(tasks, workers, func(w, task int) {
		gr, c := groups[task/len(names)], task%len(names)
		if len(gr.sel) == 0 || ctx.Err() != nil {
			return
		}
		vals, err := mlReadColumnChunk(pf.RowGroup(task/len(names)), leaf[c], types[c], gr.rows, gr.sel, &scr[w])
		if err == nil && c < d {
			err = mlGatherFeature(rs.cols[c][gr.at:gr.at+len(gr.sel)], vals, gr.sel)
		} else if err == nil {
			err = mlGatherLabel(rs.y[gr.at:gr.at+len(gr.sel)], vals, gr.sel)
		}
		errs[task] = mlRowErr(err, gr.base)
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for task, err := range errs { // the first error in row order
		if err == nil {
			continue
		}
		c := task % len(names)
		what := "feature"
		if c == d {
			what = "label"
		}
		return nil, fmt.Errorf("%s: %s column %q: %w", path, what, names[c], err)
	}
	return rs, nil
}

// mlGroupBuckets computes the buckets of row group rg's ids into out,
// whose first row is row base of the table.
func mlGroupBuckets(ctx context.Context, fr *pqarrow.FileReader, rg, field int, name string, seed uint64, out []uint16, base int) error {
	ids, err := fr.RowGroup(rg).Column(field).Read(ctx)
	if err != nil {
		return fmt.Errorf("id column %q: %w", name, err)
	}
	defer ids.Release()
	at := 0
	for _, a := range ids.Chunks() {
		if at+a.Len() > len(out) {
			break
		}
		if err := mlIdBuckets(a, name, seed, base+at, out[at:at+a.Len()]); err != nil {
			return err
		}
		at += a.Len()
	}
	if at != len(out) || ids.Len() != len(out) {
		return fmt.Errorf("id column %q: row group %d has %d ids for %d rows", name, rg, ids.Len(), len(out))
	}
	return nil
}

// mlColScratch is one worker's buffers for reading column chunks.
type mlColScratch struct {
	def []int16
	f32 []float32
	i32 []int32
	i64 []int64
	f64 []float64
	b   []bool
}

// mlReadColumnChunk reads a column chunk of n rows and returns its values
// as float32, in s.f32. A null in a row of sel is an *mlBadRow.
func mlReadColumnChunk(rgr *file.RowGroupReader, leaf int, dt arrow.DataType, n int, sel []int32, s *mlColScratch) ([]float32, error) {
	cr, err := rgr.Column(leaf)
	if err != nil {
		return nil, err
	}
	s.f32 = mlGrow(s.f32, n)
	dst := s.f32
	maxDef := cr.Descriptor().MaxDefinitionLevel()
	var def []int16
	if maxDef > 0 {
		s.def = mlGrow(s.def, n)
		def = s.def
	}
	var vals int
	switch c := cr.(type) {
	case *file.Float32ColumnChunkReader:
		vals, err = mlReadBatches(c, dst, def)
	case *file.Float64ColumnChunkReader:
		s.f64 = mlGrow(s.f64, n)
		vals, err = mlReadBatches(c, s.f64, def)
		for i, v := range s.f64[:vals] {
			dst[i] = float32(v)
		}
	case *file.Int32ColumnChunkReader:
		s.i32 = mlGrow(s.i32, n)
		vals, err = mlReadBatches(c, s.i32, def)
		mlWiden(dst, s.i32[:vals], dt.ID() == arrow.UINT32)
	case *file.Int64ColumnChunkReader:
		s.i64 = mlGrow(s.i64, n)
		vals, err = mlReadBatches(c, s.i64, def)
		mlWiden(dst, s.i64[:vals], dt.ID() == arrow.UINT64)
	case *file.BooleanColumnChunkReader:
		s.b = mlGrow(s.b, n)
		vals, err = mlReadBatches(c, s.b, def)
		for i, v := range s.b[:vals] {
			dst[i] = 0
			if v {
				dst[i] = 1
			}
		}
	default:
		return nil, fmt.Errorf("type %s is not numeric", dt)
	}
	if err != nil {
		return nil, err
	}
	if vals < n { // nulls: spread the values to their rows, from the back
		v := vals - 1
		for i := n - 1; i >= 0; i-- {
			if def[i] == maxDef {
				dst[i] = dst[v]
				v--
			}
		}
		for _, i := range sel {
			if def[i] != maxDef {
				return nil, &mlBadRow{row: int(i), msg: "null value: fill nulls before training (preprocess fill)"}
			}
		}
	}
	return dst, nil
}

// mlBatchReader is a typed Parquet column chunk reader.
type mlBatchReader[T any] interface {
	ReadBatch(batchSize int64, values []T, defLvls, repLvls []int16) (total int64, valuesRead int, err error)
}

// mlReadBatches reads len(buf) rows into buf (and their levels into def,
// when not nil) and returns the number of values: nulls take no value, so
// the values are dense.
func mlReadBatches[T any](r mlBatchReader[T], buf []T, def []int16) (int, error) {
	n := len(buf)
	rows, vals := 0, 0
	for rows < n {
		var d []int16
		if def != nil {
			d = def[rows:]
		}
		got, v, err := r.ReadBatch(int64(n-rows), buf[vals:], d, nil)
		if err != nil {
			return 0, err
		}
		if got == 0 {
			return 0, fmt.Errorf("column chunk ends after %d of %d rows", rows, n)
		}
		rows += int(got)
		vals += v
	}
	return vals, nil
}

// mlWiden converts Parquet INT32 or INT64 values to float32, as unsigned
// when the Arrow type is.
func mlWiden[T int32 | int64](dst []float32, vals []T, unsigned bool) {
	for i, v := range vals {
		switch {
		case !unsigned:
			dst[i] = float32(v)
		case unsafe.Sizeof(v) == 4:
			dst[i] = float32(uint32(v))
		default:
			dst[i] = float32(uint64(v))
		}
	}
}

// mlGatherFeature copies vals[sel] into out; they must be finite.
func mlGatherFeature(out, vals []float32, sel []int32) error {
	out = out[:len(sel)]
	bad := false
	for k, i := range sel {
		v := vals[i]
		out[k] = v
		bad = bad || v-v != 0 // NaN or ±Inf
	}
	if bad {
		for k, v := range out {
			if v-v != 0 {
				return &mlBadRow{row: int(sel[k]), msg: fmt.Sprintf("value %v: features must be finite", v)}
			}
		}
	}
	return nil
}

// mlGatherLabel copies vals[sel] into out as 0/1 labels.
func mlGatherLabel(out []uint8, vals []float32, sel []int32) error {
	for k, i := range sel {
		switch v := vals[i]; v {
		case 0:
			out[k] = 0
		case 1:
			out[k] = 1
		default:
			return &mlBadRow{row: int(i), msg: fmt.Sprintf("value %v: the label must be 0 or 1", v)}
		}
	}
	return nil
}

// split moves the rows whose bucket satisfies out into a new mlRows (its
// columns from the arena), keeping both in table order; the rest stay,
// compacted in place.
func (rs *mlRows) split(out func(uint16) bool, arena *mlArena) *mlRows {
	var idx []int32
	for i, b := range rs.bucket {
		if out(b) {
			idx = append(idx, int32(i))
		}
	}
	o := &mlRows{cols: make([][]float32, len(rs.cols)), y: make([]uint8, len(idx)), bucket: make([]uint16, len(idx)), total: rs.total}
	for j := range o.cols {
		o.cols[j] = arena.float32s(len(idx))[:len(idx)]
	}
	mlParallelDo(len(rs.cols), mlParallelism(len(rs.cols)), func(_, j int) {
		rs.cols[j] = mlMoveRows(rs.cols[j], idx, o.cols[j])
	})
	rs.y = mlMoveRows(rs.y, idx, o.y)
	rs.bucket = mlMoveRows(rs.bucket, idx, o.bucket)
	return o
}

// mlMoveRows copies s[idx] into out and returns s without them, compacted
// in place.
func mlMoveRows[T any](s []T, idx []int32, out []T) []T {
	w, next := 0, 0
	for i, v := range s {
		if next < len(idx) && int(idx[next]) == i {
			out[next] = v
			next++
			continue
		}
		s[w] = v
		w++
	}
	return s[:w]
}
