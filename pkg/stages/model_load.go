package stages

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"slices"
	"sort"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// mlRows are the rows of a features table that a split keeps, in table
// order: float32 feature columns (in mlModelColumns.features order, in
// arena memory), 0/1 labels and split buckets. When loaded with sparse,
// a boolean feature j with at most mlLrSparseMax of its kept values true
// is ones[j] instead, the ascending indices of the kept rows holding true,
// and cols[j] is nil.
type mlRows struct {
	cols   [][]float32
	ones   [][]int32 // nil unless sparse; ones[j] is nil for dense columns
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
//
// With sparse, boolean features are read as bitmaps and their kept true
// rows listed (mlRows.ones): the logistic fit wants one-hot columns that
// way, and the lists take a tenth of the memory of float32 columns (on
// the churn table, 31 of 46 columns: 296 MB of arena to fill and page in
// otherwise). A list holding more than mlLrSparseMax of the kept rows is
// turned back into a float32 column.
//
// When the table is given in memory (table.Given), its arrays are read
// instead of the file (mlMemSource).
func mlLoadRows(ctx context.Context, path string, mc *mlModelColumns, seed uint64, keep func(uint16) bool, arena *mlArena, sparse bool) (*mlRows, error) {
	names := append(append([]string{}, mc.features...), mc.label)
	var src mlSource
	if m := table.Given(ctx, path); m != nil {
		src = &mlMemSource{m: m}
	} else {
		pf, err := file.OpenParquetFile(path, false)
		if err != nil {
			return nil, fmt.Errorf("%s: not a readable Parquet file: %w", path, err)
		}
		defer pf.Close()
		fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		src = &mlFileSource{pf: pf, fr: fr}
	}
	sc, err := src.schema()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// the column and Arrow type of each feature and of the label
	cols := make([]int, len(names))
	fields := make([]int, len(names))
	types := make([]arrow.DataType, len(names))
	for i, name := range names {
		fi := sc.FieldIndices(name)
		if len(fi) == 0 {
			return nil, fmt.Errorf("%s: no column %q", path, name)
		}
		if cols[i], err = src.column(name, fi[0]); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		fields[i], types[i] = fi[0], sc.Field(fi[0]).Type
	}
	d := len(mc.features)
	// the features read as lists of their true rows
	listed := make([]bool, d)
	anyListed := false
	for j := range listed {
		listed[j] = sparse && types[j].ID() == arrow.BOOL
		anyListed = anyListed || listed[j]
	}
	if lt := types[len(names)-1]; !mlIsFeatureType(lt) {
		return nil, fmt.Errorf("%s: label column %q: type %s: the label must be 0/1 or boolean", path, mc.label, lt)
	}
	idField := sc.FieldIndices(mc.id)
	if len(idField) == 0 {
		return nil, fmt.Errorf("%s: no id column %q", path, mc.id)
	}
	// every row's split bucket
	sizes := src.groups()
	nGroups := len(sizes)
	bases := make([]int, nGroups+1)
	for rg, n := range sizes {
		bases[rg+1] = bases[rg] + n
	}
	total := bases[nGroups]
	all := make([]uint16, total)
	idErrs := make([]error, nGroups)
	mlParallelDo(nGroups, mlParallelism(nGroups), func(_, rg int) {
		idErrs[rg] = src.buckets(ctx, rg, idField[0], mc.id, seed, all[bases[rg]:bases[rg+1]], bases[rg])
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
		kidx           []int32 // with listed columns: each row's index among the kept rows, −1 if not kept
	}
	groups := make([]group, nGroups)
	var bucket []uint16
	var kidx []int32
	if anyListed {
		kidx = make([]int32, total)
	}
	kept := 0
	for rg := range groups {
		gr := group{rows: bases[rg+1] - bases[rg], base: bases[rg], at: kept}
		if kidx != nil {
			gr.kidx = kidx[bases[rg]:bases[rg+1]]
		}
		for i, b := range all[bases[rg]:bases[rg+1]] {
			if keep(b) {
				if gr.kidx != nil {
					gr.kidx[i] = int32(len(gr.sel))
				}
				gr.sel = append(gr.sel, int32(i))
				bucket = append(bucket, b)
			} else if gr.kidx != nil {
				gr.kidx[i] = -1
			}
		}
		groups[rg] = gr
		kept += len(gr.sel)
	}
	rs := &mlRows{cols: make([][]float32, d), y: make([]uint8, kept), bucket: bucket, total: total}
	if anyListed {
		rs.ones = make([][]int32, d)
	}
	mlParallelDo(d, mlParallelism(d), func(_, j int) {
		if !listed[j] {
			rs.cols[j] = arena.float32s(kept)[:kept]
		}
	})
	// a task per row group and column, but one per listed column for all
	// row groups, its list growing in row order; those first, as the
	// largest
	type task struct{ rg, c int } // rg −1: every row group
	var tasks []task
	for c := range d {
		if listed[c] {
			tasks = append(tasks, task{-1, c})
		}
	}
	for rg := range groups {
		for c := range names {
			if c == d || !listed[c] {
				tasks = append(tasks, task{rg, c})
			}
		}
	}
	workers := mlParallelism(len(tasks))
	scr := make([]mlColScratch, workers)
	errs := make([]error, len(groups)*len(names)) // by row group, then column
	mlParallelDo(len(tasks), workers, func(w, ti int) {
		rg, c := tasks[ti].rg, tasks[ti].c
		if rg < 0 {
			var ones []int32
			for rg, gr := range groups {
				if len(gr.sel) == 0 || ctx.Err() != nil {
					continue
				}
				if gr.at > 0 {
					// room for the rest at the rate so far: one move of
					// the first group's list, not one per group
					est := int(float64(len(ones))*float64(kept)/float64(gr.at)*1.02) + 64
					ones = slices.Grow(ones, est-len(ones))
				}
				var err error
				if ones, err = src.ones(ctx, rg, gr.base, fields[c], gr.rows, gr.kidx, int32(gr.at), ones); err != nil {
					errs[rg*len(names)+c] = mlRowErr(err, gr.base)
					return
				}
			}
			if float64(len(ones)) > mlLrSparseMax*float64(kept) {
				col := arena.float32s(kept)[:kept]
				for _, i := range ones {
					col[i] = 1
				}
				rs.cols[c] = col
				return
			}
			if ones == nil {
				// No kept row is true: an empty list, not a nil one,
				// which every later step would take for a dense column.
				ones = []int32{}
			}
			rs.ones[c] = ones
			return
		}
		gr := groups[rg]
		if len(gr.sel) == 0 || ctx.Err() != nil {
			return
		}
		if c < d {
			if done, err := src.gather(gr.base, cols[c], gr.rows, gr.sel, rs.cols[c][gr.at:gr.at+len(gr.sel)]); done {
				errs[rg*len(names)+c] = mlRowErr(err, gr.base)
				return
			}
		}
		vals, err := src.read(rg, gr.base, cols[c], types[c], gr.rows, gr.sel, &scr[w])
		if err == nil && c < d {
			err = mlGatherFeature(rs.cols[c][gr.at:gr.at+len(gr.sel)], vals, gr.sel, 0)
		} else if err == nil {
			err = mlGatherLabel(rs.y[gr.at:gr.at+len(gr.sel)], vals, gr.sel)
		}
		errs[rg*len(names)+c] = mlRowErr(err, gr.base)
	})
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for i, err := range errs { // the first error in row order
		if err == nil {
			continue
		}
		c := i % len(names)
		what := "feature"
		if c == d {
			what = "label"
		}
		return nil, fmt.Errorf("%s: %s column %q: %w", path, what, names[c], err)
	}
	return rs, nil
}

// mlAppendTrue appends at+kidx[i] to out for every row i of a boolean
// array that holds true and is kept (kidx[i] >= 0), in order. It visits
// only the set bits, 64 rows a word, and appends without branching on
// kidx. A null in a kept row is an *mlBadRow.
func mlAppendTrue(out []int32, a *array.Boolean, kidx []int32, at int32) ([]int32, error) {
	n := a.Len()
	kidx = kidx[:n]
	if a.NullN() > 0 {
		for i, k := range kidx {
			if k >= 0 && a.IsNull(i) {
				return out, &mlBadRow{row: i, msg: "null value: fill nulls before training (preprocess fill)"}
			}
		}
	}
	bm, off := a.Data().Buffers()[1].Bytes(), a.Data().Offset()
	for i0 := 0; i0 < n; i0 += 64 {
		w := mlBitsWord(bm, off+i0)
		if n-i0 < 64 {
			w &= 1<<(n-i0) - 1
		}
		for w != 0 {
			k := kidx[i0+bits.TrailingZeros64(w)]
			w &= w - 1
			out = append(out, at+k)
			out = out[:len(out)-int(uint32(k)>>31)] // not kept: take it back
		}
	}
	return out, nil
}

// mlTrueCount counts the set bits of a boolean array's values (nulls
// included).
func mlTrueCount(a *array.Boolean) int {
	bm, off, n := a.Data().Buffers()[1].Bytes(), a.Data().Offset(), a.Len()
	count := 0
	for i0 := 0; i0 < n; i0 += 64 {
		w := mlBitsWord(bm, off+i0)
		if n-i0 < 64 {
			w &= 1<<(n-i0) - 1
		}
		count += bits.OnesCount64(w)
	}
	return count
}

// mlBitsWord returns the 64 bits of bm from bit pos on (least significant
// first), zeros past its end.
func mlBitsWord(bm []byte, pos int) uint64 {
	j, s := pos>>3, uint(pos&7)
	if j+9 <= len(bm) {
		return binary.LittleEndian.Uint64(bm[j:])>>s | uint64(bm[j+8])<<(64-s)
	}
	var w uint64
	for b := range 64 {
		if p := pos + b; p>>3 < len(bm) {
			w |= uint64(bm[p>>3]>>(p&7)&1) << b
		}
	}
	return w
}

// mlSource is what mlLoadRows reads a features table from: its Parquet
// file, or its arrays when the stage before handed them over (table.Mem).
// Either way the table is read in row groups, each column of a group an
// independent task.
type mlSource interface {
	schema() (*arrow.Schema, error)
	// column returns the handle read takes for the field at index field,
	// named name.
	column(name string, field int) (int, error)
	// groups returns the row count of each row group.
	groups() []int
	// buckets computes the split buckets of row group rg's ids (field
	// id), whose first row is row base of the table, into out.
	buckets(ctx context.Context, rg, id int, name string, seed uint64, out []uint16, base int) error
	// read returns row group rg's values of column col (of type dt), n
	// rows from row base, as float32 in s.f32. A null in a row of sel is
	// an *mlBadRow.
	read(rg, base, col int, dt arrow.DataType, n int, sel []int32, s *mlColScratch) ([]float32, error)
	// ones appends to out at+kidx[i] for the rows i of row group rg's
	// boolean field that hold true and are kept (kidx[i] >= 0), n rows
	// from row base (mlAppendTrue).
	ones(ctx context.Context, rg, base, field, n int, kidx []int32, at int32, out []int32) ([]int32, error)
	// gather, when it can, copies the rows sel of column col's n rows
	// from row base into out (mlGatherFeature) without read's copy of
	// them all, and says whether it did.
	gather(base, col, n int, sel []int32, out []float32) (bool, error)
}

// mlFileSource reads a Parquet file's column chunks with Parquet's typed
// readers.
type mlFileSource struct {
	pf *file.Reader
	fr *pqarrow.FileReader
}

func (f *mlFileSource) schema() (*arrow.Schema, error) { return f.fr.Schema() }

func (f *mlFileSource) column(name string, _ int) (int, error) {
	leaf := f.pf.MetaData().Schema.ColumnIndexByName(name)
	if leaf < 0 {
		return 0, fmt.Errorf("no column %q", name)
	}
	return leaf, nil
}

func (f *mlFileSource) groups() []int {
	out := make([]int, f.pf.NumRowGroups())
	for rg := range out {
		out[rg] = int(f.pf.RowGroup(rg).NumRows())
	}
	return out
}

func (f *mlFileSource) buckets(ctx context.Context, rg, id int, name string, seed uint64, out []uint16, base int) error {
	return mlGroupBuckets(ctx, f.fr, rg, id, name, seed, out, base)
}

func (f *mlFileSource) read(rg, _, col int, dt arrow.DataType, n int, sel []int32, s *mlColScratch) ([]float32, error) {
	return mlReadColumnChunk(f.pf.RowGroup(rg), col, dt, n, sel, s)
}

func (f *mlFileSource) ones(ctx context.Context, rg, _, field, n int, kidx []int32, at int32, out []int32) ([]int32, error) {
	// pqarrow decodes booleans into a bitmap; the typed column reader
	// makes a bool a byte, which took longer than the rest of the read
	col, err := f.fr.RowGroup(rg).Column(field).Read(ctx)
	if err != nil {
		return nil, err
	}
	defer col.Release()
	if col.Len() != n {
		return nil, fmt.Errorf("row group %d has %d values for %d rows", rg, col.Len(), n)
	}
	return mlChunksTrue(out, col.Chunks(), kidx, at)
}

func (f *mlFileSource) gather(int, int, int, []int32, []float32) (bool, error) { return false, nil }

// mlChunksTrue is mlAppendTrue over consecutive boolean arrays. It grows
// out once, by their true count (growing it per array, by 1.25 times its
// size each time, moved it five times over).
func mlChunksTrue(out []int32, chunks []arrow.Array, kidx []int32, at int32) ([]int32, error) {
	count := 0
	for _, a := range chunks {
		if b, ok := a.(*array.Boolean); ok {
			count += mlTrueCount(b)
		}
	}
	out = slices.Grow(out, count)
	start := 0
	for _, a := range chunks {
		b, ok := a.(*array.Boolean)
		if !ok {
			return nil, fmt.Errorf("type %s is not boolean", a.DataType())
		}
		var err error
		if out, err = mlAppendTrue(out, b, kidx[start:], at); err != nil {
			if br, ok := err.(*mlBadRow); ok {
				br.row += start
			}
			return nil, err
		}
		start += a.Len()
	}
	return out, nil
}

// mlMemSource reads a table in memory, in row groups of table.MaxRowGroup
// rows.
type mlMemSource struct{ m *table.Mem }

func (s *mlMemSource) schema() (*arrow.Schema, error) { return s.m.Schema(), nil }

func (s *mlMemSource) column(_ string, field int) (int, error) { return field, nil }

func (s *mlMemSource) groups() []int {
	var out []int
	for left := int(s.m.NumRows()); left > 0; left -= table.MaxRowGroup {
		out = append(out, min(left, table.MaxRowGroup))
	}
	return out
}

// each calls fn with the arrays of column col's rows [base, base+n), in
// order, and where in the range each starts.
func (s *mlMemSource) each(col, base, n int, fn func(a arrow.Array, at int) error) error {
	start := 0
	for _, a := range s.m.Column(col) {
		end := start + a.Len()
		if end > base && start < base+n {
			lo, hi := max(base, start), min(base+n, end)
			part := array.NewSlice(a, int64(lo-start), int64(hi-start))
			err := fn(part, lo-base)
			part.Release()
			if err != nil {
				return err
			}
		}
		if end >= base+n {
			break
		}
		start = end
	}
	return nil
}

func (s *mlMemSource) buckets(_ context.Context, rg, id int, name string, seed uint64, out []uint16, base int) error {
	return s.each(id, base, len(out), func(a arrow.Array, at int) error {
		return mlIdBuckets(a, name, seed, base+at, out[at:at+a.Len()])
	})
}

func (s *mlMemSource) ones(_ context.Context, _, base, field, n int, kidx []int32, at int32, out []int32) ([]int32, error) {
	var chunks []arrow.Array
	err := s.each(field, base, n, func(a arrow.Array, _ int) error {
		a.Retain()
		chunks = append(chunks, a)
		return nil
	})
	defer func() {
		for _, a := range chunks {
			a.Release()
		}
	}()
	if err != nil {
		return nil, err
	}
	return mlChunksTrue(out, chunks, kidx, at)
}

// gather gathers a float32 column without nulls from its arrays.
func (s *mlMemSource) gather(base, col, n int, sel []int32, out []float32) (bool, error) {
	plain := true
	_ = s.each(col, base, n, func(a arrow.Array, _ int) error {
		_, f32 := a.(*array.Float32)
		plain = plain && f32 && a.NullN() == 0
		return nil
	})
	if !plain {
		return false, nil
	}
	k := 0
	return true, s.each(col, base, n, func(a arrow.Array, at int) error {
		vals := a.(*array.Float32).Float32Values()
		k0 := k
		k += sort.Search(len(sel)-k, func(q int) bool { return int(sel[k+q]) >= at+len(vals) })
		return mlGatherFeature(out[k0:k], vals, sel[k0:k], at)
	})
}

func (s *mlMemSource) read(_, base, col int, dt arrow.DataType, n int, sel []int32, sc *mlColScratch) ([]float32, error) {
	sc.f32 = mlGrow(sc.f32, n)
	dst := sc.f32
	nulls := false
	err := s.each(col, base, n, func(a arrow.Array, at int) error {
		nulls = nulls || a.NullN() > 0
		out := dst[at : at+a.Len()]
		switch a := a.(type) {
		case *array.Float32:
			copy(out, a.Float32Values())
		case *array.Float64:
			mlNarrow(out, a.Float64Values())
		case *array.Int8:
			mlNarrow(out, a.Int8Values())
		case *array.Int16:
			mlNarrow(out, a.Int16Values())
		case *array.Int32:
			mlNarrow(out, a.Int32Values())
		case *array.Int64:
			mlNarrow(out, a.Int64Values())
		case *array.Uint8:
			mlNarrow(out, a.Uint8Values())
		case *array.Uint16:
			mlNarrow(out, a.Uint16Values())
		case *array.Uint32:
			mlNarrow(out, a.Uint32Values())
		case *array.Uint64:
			mlNarrow(out, a.Uint64Values())
		case *array.Boolean:
			mlBitsToFloats(out, a.Data().Buffers()[1].Bytes(), a.Data().Offset())
		default:
			return fmt.Errorf("type %s is not numeric", dt)
		}
		return nil
	})
	if err != nil || !nulls {
		return dst, err
	}
	// rows whose value is null: none may be kept
	return dst, s.each(col, base, n, func(a arrow.Array, at int) error {
		if a.NullN() == 0 {
			return nil
		}
		lo := sort.Search(len(sel), func(k int) bool { return int(sel[k]) >= at })
		for _, i := range sel[lo:] {
			if int(i) >= at+a.Len() {
				break
			}
			if a.IsNull(int(i) - at) {
				return &mlBadRow{row: int(i), msg: "null value: fill nulls before training (preprocess fill)"}
			}
		}
		return nil
	})
}

// mlBitFloats[b] are the bits of byte b, least significant first, as 0/1.
var mlBitFloats = func() (t [256][8]float32) {
	for b := range t {
		for i := range 8 {
			t[b][i] = float32(b >> i & 1)
		}
	}
	return t
}()

// mlBitsToFloats sets out[i] to bit off+i of bitmap bits (a boolean
// array's values) as 0 or 1, a byte at a time where it can.
func mlBitsToFloats(out []float32, bits []byte, off int) {
	i := 0
	for ; i < len(out) && (off+i)%8 != 0; i++ {
		out[i] = float32(bits[(off+i)/8] >> ((off + i) % 8) & 1)
	}
	for ; i+8 <= len(out); i += 8 {
		copy(out[i:i+8], mlBitFloats[bits[(off+i)/8]][:])
	}
	for ; i < len(out); i++ {
		out[i] = float32(bits[(off+i)/8] >> ((off + i) % 8) & 1)
	}
}

// mlNarrow converts numbers to float32.
func mlNarrow[T int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64 | float64](dst []float32, vals []T) {
	for i, v := range vals {
		dst[i] = float32(v)
	}
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

// mlGatherFeature copies vals[sel − off] into out; they must be finite.
func mlGatherFeature(out, vals []float32, sel []int32, off int) error {
	out = out[:len(sel)]
	bad := false
	for k, i := range sel {
		v := vals[int(i)-off]
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
