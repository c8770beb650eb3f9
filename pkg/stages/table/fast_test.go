package table

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
)

// DELTA_BINARY_PACKED by hand: the header (block 128, 4 miniblocks,
// count, zigzag first value), then per block the zigzag smallest delta,
// 4 bit widths and the miniblocks.
func TestDeltaPack(t *testing.T) {
	for _, tc := range []struct {
		vals []int64
		want []byte
	}{
		// Deltas 1, 1, 1, 1: all the smallest, width 0, no bits.
		{[]int64{1, 2, 3, 4, 5}, []byte{0x80, 0x01, 4, 5, 2, 2, 0, 0, 0, 0}},
		// Deltas -2, -2, 7: smallest -2 (zigzag 3), then 0, 0, 9 in 4
		// bits: bytes 0x00, 0x09, and 14 bytes of padding.
		{[]int64{7, 5, 3, 10}, append([]byte{0x80, 0x01, 4, 4, 14, 3, 4, 0, 0, 0, 0, 0x09}, make([]byte, 14)...)},
		// One value: the header only.
		{[]int64{-1}, []byte{0x80, 0x01, 4, 1, 1}},
		// INT32 deltas wrap: MaxInt32 → MinInt32 is +1.
		{[]int64{math.MaxInt32, math.MinInt32}, []byte{0x80, 0x01, 4, 2, 0xfe, 0xff, 0xff, 0xff, 0x0f, 2, 0, 0, 0, 0}},
	} {
		if got := deltaPack(nil, tc.vals, true); !bytes.Equal(got, tc.want) {
			t.Errorf("deltaPack(%v) = % x, want % x", tc.vals, got, tc.want)
		}
	}
}

// fastBoth writes batches of the given sizes (made by batch(i, first
// row, rows)) with Writer and with pqarrow's writer, in row groups of
// rowGroup rows, checks that they read back the same and returns their
// paths.
func fastBoth(t *testing.T, sc *arrow.Schema, sizes []int, rowGroup int, batch func(i, first, n int) arrow.RecordBatch) (got, want string) {
	t.Helper()
	var recs []arrow.RecordBatch
	first := 0
	for i, n := range sizes {
		recs = append(recs, batch(i, first, n))
		first += n
	}
	defer func() {
		for _, rec := range recs {
			rec.Release()
		}
	}()
	dir := t.TempDir()
	got, want = filepath.Join(dir, "got"), filepath.Join(dir, "want")
	wtWrite(t, got, sc, recs, Options{RowGroupRows: rowGroup})
	wtSerial(t, want, sc, recs, rowGroup)
	wtEqual(t, got, want)
	return got, want
}

// fastSchema has every type fastChunk writes, with nulls, NaNs, -0 and
// the integers' extremes.
var fastSchema = arrow.NewSchema([]arrow.Field{
	{Name: "i32", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	{Name: "i8", Type: arrow.PrimitiveTypes.Int8, Nullable: true},
	{Name: "i16", Type: arrow.PrimitiveTypes.Int16},
	{Name: "i64", Type: arrow.PrimitiveTypes.Int64},
	{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	{Name: "f64", Type: arrow.PrimitiveTypes.Float64},
	{Name: "day", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
	{Name: "flag", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
	{Name: "on", Type: arrow.FixedWidthTypes.Boolean},
	{Name: "few32", Type: arrow.PrimitiveTypes.Float32, Nullable: true}, // a dictionary
	{Name: "few64", Type: arrow.PrimitiveTypes.Float64},                 // a dictionary
	{Name: "late", Type: arrow.PrimitiveTypes.Float64},                  // one first, then too many values
}, nil)

// fastLate is the row from which column late has too many values for a
// dictionary: in its second page.
const fastLate = 150000

func fastBatch(r *rand.Rand, first, n int, nulls bool) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, fastSchema)
	defer b.Release()
	null := func() bool { return nulls && r.IntN(50) == 0 }
	few := []float64{0, math.Copysign(0, -1), math.NaN(), -1.5, 2.25, 1e30, math.Inf(-1)}
	for i := range n {
		switch {
		case null():
			b.Field(0).AppendNull()
		case r.IntN(1000) == 0:
			b.Field(0).(*array.Int32Builder).Append([]int32{math.MinInt32, math.MaxInt32}[r.IntN(2)])
		default:
			b.Field(0).(*array.Int32Builder).Append(r.Int32() - r.Int32())
		}
		if null() {
			b.Field(1).AppendNull()
		} else {
			b.Field(1).(*array.Int8Builder).Append(int8(r.IntN(7) - 3))
		}
		b.Field(2).(*array.Int16Builder).Append(int16(r.IntN(1 << 16)))
		b.Field(3).(*array.Int64Builder).Append(int64(r.Uint64()))
		switch k := r.IntN(100); {
		case null():
			b.Field(4).AppendNull()
		case k == 0:
			b.Field(4).(*array.Float32Builder).Append(float32(math.NaN()))
		case k == 1:
			b.Field(4).(*array.Float32Builder).Append(float32(math.Copysign(0, -1)))
		default:
			b.Field(4).(*array.Float32Builder).Append(float32(r.NormFloat64()))
		}
		b.Field(5).(*array.Float64Builder).Append(r.ExpFloat64())
		if null() {
			b.Field(6).AppendNull()
		} else {
			b.Field(6).(*array.Date32Builder).Append(arrow.Date32(18000 + r.IntN(3000)))
		}
		if null() {
			b.Field(7).AppendNull()
		} else {
			b.Field(7).(*array.BooleanBuilder).Append(r.IntN(3) == 0)
		}
		b.Field(8).(*array.BooleanBuilder).Append(r.IntN(2) == 0)
		if null() {
			b.Field(9).AppendNull()
		} else {
			b.Field(9).(*array.Float32Builder).Append(float32(few[r.IntN(len(few))]))
		}
		b.Field(10).(*array.Float64Builder).Append(few[r.IntN(len(few))] + float64(r.IntN(3000)))
		if first+i < fastLate {
			b.Field(11).(*array.Float64Builder).Append(float64(r.IntN(100)))
		} else {
			b.Field(11).(*array.Float64Builder).Append(r.Float64())
		}
	}
	return b.NewRecordBatch()
}

// Columns written by fastChunks, over several pages and row groups, in
// batches that straddle both, read back as the values pqarrow's writer
// gives and carry the same statistics (NaNs left out, -0 as the minimum's
// zero), encodings and value counts. Float columns of few distinct values
// are dictionary-encoded; one whose values outgrow the dictionary in its
// second page is written PLAIN.
func TestFastChunkMatchesPqarrow(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	got, want := fastBoth(t, fastSchema, []int{70000, 1, 200000, 130001, 9}, 250000, func(i, first, n int) arrow.RecordBatch {
		return fastBatch(r, first, n, i != 1)
	})
	g, err := file.OpenParquetFile(got, false)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	w, err := file.OpenParquetFile(want, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if g.NumRowGroups() != 2 || w.NumRowGroups() != 2 {
		t.Fatalf("row groups: %d, want 2 (pqarrow %d)", g.NumRowGroups(), w.NumRowGroups())
	}
	for rg := range 2 {
		for c := range fastSchema.NumFields() {
			gc, _ := g.MetaData().RowGroup(rg).ColumnChunk(c)
			wc, _ := w.MetaData().RowGroup(rg).ColumnChunk(c)
			name := fmt.Sprintf("row group %d column %s", rg, fastSchema.Field(c).Name)
			dict := gc.HasDictionaryPage()
			switch f := fastSchema.Field(c).Name; {
			case f == "few32" || f == "few64":
				if !dict {
					t.Errorf("%s: no dictionary", name)
				}
			case dict:
				t.Errorf("%s: a dictionary", name)
			}
			if gc.NumValues() != wc.NumValues() {
				t.Errorf("%s: %d values, want %d", name, gc.NumValues(), wc.NumValues())
			}
			gs, err := gc.Statistics()
			if err != nil {
				t.Fatal(err)
			}
			ws, _ := wc.Statistics()
			ge, _ := gs.Encode()
			we, _ := ws.Encode()
			if !bytes.Equal(ge.Min, we.Min) || !bytes.Equal(ge.Max, we.Max) || ge.NullCount != we.NullCount || ge.HasMin != we.HasMin {
				t.Errorf("%s: statistics %+v, want %+v", name, ge, we)
			}
		}
	}
	// The ints are delta-packed in pages of 128Ki values: the first row
	// group's 250000 rows in two.
	pr, err := g.RowGroup(0).GetColumnPageReader(0)
	if err != nil {
		t.Fatal(err)
	}
	pages := 0
	for pr.Next() {
		pages++
		if p, ok := pr.Page().(*file.DataPageV1); ok && p.Encoding() != 5 { // DELTA_BINARY_PACKED
			t.Errorf("page encoding %v", p.Encoding())
		}
	}
	if pages != 2 {
		t.Errorf("i32: %d pages, want 2", pages)
	}
}

// deltaPack on a page of small random integers, as ingest's (8.4 ns a
// value when packMini went through packBits and appends; 3.8 after).
func BenchmarkDeltaPack(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	vals := make([]int64, 1<<17)
	for i := range vals {
		vals[i] = int64(r.IntN(73))
	}
	dst := make([]byte, 0, 1<<20)
	b.SetBytes(int64(len(vals)))
	for b.Loop() {
		deltaPack(dst, vals, true)
	}
}

// wantSchema is the schema pqarrow's file at path reads back with.
func wantSchema(t *testing.T, path string) string {
	tbl, err := ReadAll(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	return tbl.Schema().String()
}

// Float columns of only nulls (an empty dictionary: written PLAIN) or one
// value (a dictionary of width 1), booleans of only nulls, and a batch of
// no rows, read back as pqarrow's writer gives them.
func TestFastChunkEdgeColumns(t *testing.T) {
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "nulls", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
		{Name: "one", Type: arrow.PrimitiveTypes.Float64},
		{Name: "flag", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "n", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, sc)
	defer b.Release()
	empty := b.NewRecordBatch()
	defer empty.Release()
	for i := range 10 {
		b.Field(0).AppendNull()
		b.Field(1).(*array.Float64Builder).Append(2.5)
		b.Field(2).AppendNull()
		b.Field(3).(*array.Int32Builder).Append(int32(i * i))
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	for name, recs := range map[string][]arrow.RecordBatch{"rows": {empty, rec, empty}, "none": {empty}} {
		dir := t.TempDir()
		got, want := filepath.Join(dir, "got"), filepath.Join(dir, "want")
		wtWrite(t, got, sc, recs, Options{})
		wtSerial(t, want, sc, recs, MaxRowGroup)
		t.Run(name, func(t *testing.T) {
			if name == "rows" {
				wtEqual(t, got, want)
				return
			}
			tbl, err := ReadAll(t.Context(), got)
			if err != nil {
				t.Fatal(err)
			}
			defer tbl.Release()
			if tbl.NumRows() != 0 || tbl.Schema().String() != wantSchema(t, want) {
				t.Errorf("%d rows, schema %v", tbl.NumRows(), tbl.Schema())
			}
		})
	}
}

// A batch whose column has another type than the schema's is refused,
// naming the column, not written as garbage.
func TestFastChunkWrongType(t *testing.T) {
	sc := arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int8}}, nil)
	b := array.NewInt32Builder(memory.DefaultAllocator)
	defer b.Release()
	b.AppendValues([]int32{1, 2}, nil)
	a := b.NewArray()
	defer a.Release()
	rec := array.NewRecordBatch(arrow.NewSchema([]arrow.Field{{Name: "x", Type: arrow.PrimitiveTypes.Int32}}, nil), []arrow.Array{a}, 2)
	defer rec.Release()
	w, err := Create(filepath.Join(t.TempDir(), "t"), sc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.Write(rec); err == nil || !strings.Contains(err.Error(), "column x: an array of int32 where the column is int8") {
		t.Errorf("Write: %v", err)
	}
}

// dictBatch makes n rows of dictionary arrays: s over dictionary words
// (its own per batch), many over as many distinct strings as rows from
// first on, with nulls in s.
func dictBatch(r *rand.Rand, sc *arrow.Schema, words []string, first, n int) arrow.RecordBatch {
	sb := array.NewStringBuilder(memory.DefaultAllocator)
	defer sb.Release()
	sb.AppendValues(words, nil)
	dict := sb.NewArray()
	defer dict.Release()
	ib := array.NewInt16Builder(memory.DefaultAllocator)
	defer ib.Release()
	for range n {
		if r.IntN(20) == 0 {
			ib.AppendNull()
		} else {
			ib.Append(int16(r.IntN(len(words))))
		}
	}
	idx := ib.NewArray()
	defer idx.Release()
	s := array.NewDictionaryArray(sc.Field(0).Type, idx, dict)
	defer s.Release()
	for i := range n {
		sb.Append(fmt.Sprint("v", first+i))
	}
	mdict := sb.NewArray()
	defer mdict.Release()
	mb := array.NewInt32Builder(memory.DefaultAllocator)
	defer mb.Release()
	for i := range n {
		mb.Append(int32(i))
	}
	midx := mb.NewArray()
	defer midx.Release()
	m := array.NewDictionaryArray(sc.Field(1).Type, midx, mdict)
	defer m.Release()
	return array.NewRecordBatch(sc, []arrow.Array{s, m}, int64(n))
}

// Dictionary arrays of strings keep a dictionary per column chunk, mapped
// from each batch's own, over pages and row groups, and read back as
// pqarrow's writer gives them; a column whose strings outgrow the
// dictionary is written PLAIN.
func TestFastChunkStrings(t *testing.T) {
	sc := arrow.NewSchema([]arrow.Field{
		{Name: "s", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int16, ValueType: arrow.BinaryTypes.String}, Nullable: true},
		{Name: "many", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: arrow.BinaryTypes.String}},
	}, nil)
	r := rand.New(rand.NewPCG(9, 10))
	words := [][]string{{"a", "b", "c"}, {"c"}, {"d", "", "b", "a"}, {"é", "a"}}
	got, _ := fastBoth(t, sc, []int{120000, 3, 200000, 80000}, 300000, func(i, first, n int) arrow.RecordBatch {
		return dictBatch(r, sc, words[i], first, n)
	})
	g, err := file.OpenParquetFile(got, false)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for rg := range g.NumRowGroups() {
		s, _ := g.MetaData().RowGroup(rg).ColumnChunk(0)
		m, _ := g.MetaData().RowGroup(rg).ColumnChunk(1)
		if !s.HasDictionaryPage() || m.HasDictionaryPage() {
			t.Errorf("row group %d: dictionary pages %v, %v; want true, false", rg, s.HasDictionaryPage(), m.HasDictionaryPage())
		}
	}
}

// A dictionary with a null entry is refused with an error naming the
// column, as arrow-go's writer does, rather than written with "" for the
// null (the rows pointing at it would read back as empty strings).
func TestFastChunkNullDictionaryEntry(t *testing.T) {
	typ := &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}
	sc := arrow.NewSchema([]arrow.Field{{Name: "s", Type: typ, Nullable: true}}, nil)
	sb := array.NewStringBuilder(memory.DefaultAllocator)
	defer sb.Release()
	sb.Append("a")
	sb.AppendNull()
	dict := sb.NewArray()
	defer dict.Release()
	ib := array.NewInt8Builder(memory.DefaultAllocator)
	defer ib.Release()
	ib.AppendValues([]int8{0, 1, 1, 0}, nil)
	idx := ib.NewArray()
	defer idx.Release()
	s := array.NewDictionaryArray(typ, idx, dict)
	defer s.Release()
	rec := array.NewRecordBatch(sc, []arrow.Array{s}, 4)
	defer rec.Release()
	w, err := Create(filepath.Join(t.TempDir(), "t"), sc)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	err = w.Write(rec)
	if err == nil {
		err = w.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "column s") || !strings.Contains(err.Error(), "null entry") {
		t.Errorf("a dictionary with a null entry: %v, want an error naming column s", err)
	}
}
