package table

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/pkg/digest"
)

// wtSchema has every type the kinds write: narrow ints, floats with nulls,
// dictionary and plain strings, dates, booleans, a required column.
var wtSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "n8", Type: arrow.PrimitiveTypes.Int8, Nullable: true},
	{Name: "n32", Type: arrow.PrimitiveTypes.Int32, Nullable: true},
	{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
	{Name: "f64", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "plan", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}, Nullable: true},
	{Name: "note", Type: arrow.BinaryTypes.String, Nullable: true},
	{Name: "day", Type: arrow.FixedWidthTypes.Date32, Nullable: true},
	{Name: "flag", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
}, nil)

// wtBatch makes n random rows of wtSchema starting at id first, with
// about 5% nulls in the nullable columns.
func wtBatch(r *rand.Rand, first, n int) arrow.RecordBatch {
	b := array.NewRecordBuilder(memory.DefaultAllocator, wtSchema)
	defer b.Release()
	null := func() bool { return r.IntN(20) == 0 }
	plans := []string{"Basic", "Standard", "Premium", "Family"}
	for i := range n {
		b.Field(0).(*array.Int64Builder).Append(int64(first + i))
		if null() {
			for c := 1; c < wtSchema.NumFields(); c++ {
				b.Field(c).AppendNull()
			}
			continue
		}
		b.Field(1).(*array.Int8Builder).Append(int8(r.IntN(256) - 128))
		b.Field(2).(*array.Int32Builder).Append(r.Int32())
		b.Field(3).(*array.Float32Builder).Append(float32(r.NormFloat64()))
		b.Field(4).(*array.Float64Builder).Append(r.ExpFloat64())
		if err := b.Field(5).(*array.BinaryDictionaryBuilder).AppendString(plans[r.IntN(len(plans))]); err != nil {
			panic(err)
		}
		b.Field(6).(*array.StringBuilder).Append(strings.Repeat("x", r.IntN(5)))
		b.Field(7).(*array.Date32Builder).Append(arrow.Date32(20000 + r.IntN(1000)))
		b.Field(8).(*array.BooleanBuilder).Append(r.IntN(2) == 0)
	}
	return b.NewRecordBatch()
}

// wtSerial writes recs with pqarrow's own (serial) writer and the
// properties Create uses: the reference the concurrent writer must agree
// with, and the baseline of BenchmarkWriter.
func wtSerial(t testing.TB, path string, sc *arrow.Schema, recs []arrow.RecordBatch, rowGroup int) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	opts := []parquet.WriterProperty{parquet.WithCompression(compress.Codecs.Zstd), parquet.WithCompressionLevel(1),
		parquet.WithDictionaryDefault(false), parquet.WithMaxRowGroupLength(int64(rowGroup))}
	for _, fl := range sc.Fields() {
		if id := fl.Type.ID(); id == arrow.STRING || id == arrow.DICTIONARY {
			opts = append(opts, parquet.WithDictionaryFor(fl.Name, true))
		}
	}
	fw, err := pqarrow.NewFileWriter(sc, f, parquet.NewWriterProperties(opts...), pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema()))
	if err != nil {
		t.Fatal(err)
	}
	wtFeed(t, recs, fw.WriteBuffered, fw.Close)
}

// wtFeed writes recs with write, then closes.
func wtFeed(t testing.TB, recs []arrow.RecordBatch, write func(arrow.RecordBatch) error, close func() error) {
	for _, rec := range recs {
		if err := write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := close(); err != nil {
		t.Fatal(err)
	}
}

// wtRowGroups returns the row counts of the row groups of a Parquet file.
func wtRowGroups(t testing.TB, path string) []int64 {
	r, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []int64
	for i := range r.NumRowGroups() {
		out = append(out, r.MetaData().RowGroup(i).NumRows())
	}
	return out
}

// wtEqual fails unless the two files hold the same schema and values.
func wtEqual(t *testing.T, got, want string) {
	t.Helper()
	g, err := ReadAll(t.Context(), got)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Release()
	w, err := ReadAll(t.Context(), want)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Release()
	if !g.Schema().Equal(w.Schema()) {
		t.Fatalf("schema:\n%v\nwant\n%v", g.Schema(), w.Schema())
	}
	if g.NumRows() != w.NumRows() {
		t.Fatalf("rows: %d, want %d", g.NumRows(), w.NumRows())
	}
	for c := range int(g.NumCols()) {
		ga, err := array.Concatenate(g.Column(c).Data().Chunks(), memory.DefaultAllocator)
		if err != nil {
			t.Fatal(err)
		}
		wa, err := array.Concatenate(w.Column(c).Data().Chunks(), memory.DefaultAllocator)
		if err != nil {
			t.Fatal(err)
		}
		if !array.ApproxEqual(ga, wa, array.WithNaNsEqual(true), array.WithAbsTolerance(0)) && !sameStrings(ga, wa) { // exactly, NaN as NaN
			t.Errorf("column %s differs", g.Schema().Field(c).Name)
		}
		ga.Release()
		wa.Release()
	}
}

// Batches written concurrently, column by column, read back as the same
// values as pqarrow's serial writer gives, with the same row groups, also
// where a batch straddles a row group boundary.
func TestWriterMatchesPqarrow(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var recs []arrow.RecordBatch
	first := 0
	for _, n := range []int{777, 1, 0, 2500, 999, 1223} {
		recs = append(recs, wtBatch(r, first, n))
		first += n
	}
	defer func() {
		for _, rec := range recs {
			rec.Release()
		}
	}()
	dir := t.TempDir()
	for _, workers := range []int{1, 3} {
		t.Run(fmt.Sprint("workers=", workers), func(t *testing.T) {
			got := filepath.Join(dir, fmt.Sprint("got", workers))
			wtWrite(t, got, wtSchema, recs, Options{Workers: workers, RowGroupRows: 1000})
			want := filepath.Join(dir, "want")
			wtSerial(t, want, wtSchema, recs, 1000)
			wtEqual(t, got, want)
			if g, w := fmt.Sprint(wtRowGroups(t, got)), fmt.Sprint(wtRowGroups(t, want)); g != w {
				t.Errorf("row groups %s, want %s", g, w)
			}
		})
	}
}

// wtGroup writes recs as one row group through WriteRowGroup, each column
// put as one array per batch.
func wtGroup(t *testing.T, w *Writer, recs []arrow.RecordBatch) {
	t.Helper()
	rows := 0
	for _, rec := range recs {
		rows += int(rec.NumRows())
	}
	err := w.WriteRowGroup(t.Context(), rows, func(_ context.Context, c int, put func(arrow.Array) error) error {
		for _, rec := range recs {
			if err := put(rec.Column(c)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// WriteRowGroup fills each column from its own producer; the file matches
// one written batch by batch; a producer that gives the wrong row count or
// fails is reported with the column's name.
func TestWriterRowGroup(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	parts := []arrow.RecordBatch{wtBatch(r, 0, 300), wtBatch(r, 300, 700)}
	defer parts[0].Release()
	defer parts[1].Release()
	dir := t.TempDir()
	got := filepath.Join(dir, "got")
	w, err := CreateWith(got, wtSchema, Options{RowGroupRows: 1000})
	if err != nil {
		t.Fatal(err)
	}
	wtGroup(t, w, parts)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "want")
	wtSerial(t, want, wtSchema, parts, 1000)
	wtEqual(t, got, want)

	w, err = CreateWith(filepath.Join(dir, "bad"), wtSchema, Options{RowGroupRows: 1000})
	if err != nil {
		t.Fatal(err)
	}
	err = w.WriteRowGroup(t.Context(), 1000, func(_ context.Context, c int, put func(arrow.Array) error) error {
		if c == 3 {
			return put(parts[0].Column(c))
		}
		for _, p := range parts {
			if err := put(p.Column(c)); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "column f32: 300 rows, want 1000") {
		t.Errorf("short column: got %v", err)
	}
	// The writer is unusable after a failure: more rows and Close report it.
	if err := w.Write(parts[0]); err == nil || !strings.Contains(err.Error(), "300 rows") {
		t.Errorf("Write after a failure: got %v", err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "300 rows") {
		t.Errorf("Close after a failure: got %v", err)
	}
}

// Nested columns are refused up front, naming the column.
func TestWriterRejectsNested(t *testing.T) {
	sc := arrow.NewSchema([]arrow.Field{{Name: "tags", Type: arrow.ListOf(arrow.BinaryTypes.String)}}, nil)
	_, err := Create(filepath.Join(t.TempDir(), "x"), sc)
	if err == nil || !strings.Contains(err.Error(), `column "tags"`) {
		t.Errorf("got %v", err)
	}
}

// BenchmarkWriter compares pqarrow's serial writer with Writer on a
// features-shaped table (46 float32 columns, 15 of them one-hot 0/1) of
// 1Mi rows in 64Ki-row batches; ns/op is wall time, so the win is the
// number of cores the column encoders can use; cpu-ns/op is the process's
// user + system CPU time, the figure to compare on a shared machine.
//
//	go test ./pkg/stages/table -run '^$' -bench Writer -benchtime 3x
func BenchmarkWriter(b *testing.B) {
	const rows, ncol, onehot = 1 << 20, 46, 15
	fields := make([]arrow.Field, ncol)
	for i := range fields {
		fields[i] = arrow.Field{Name: fmt.Sprint("c", i), Type: arrow.PrimitiveTypes.Float32, Nullable: true}
	}
	sc := arrow.NewSchema(fields, nil)
	r := rand.New(rand.NewPCG(5, 6))
	var recs []arrow.RecordBatch
	for off := 0; off < rows; off += BatchRows {
		cols := make([]arrow.Array, ncol)
		for c := range cols {
			v := make([]float32, BatchRows)
			for i := range v {
				if c < ncol-onehot {
					v[i] = float32(r.NormFloat64())
				} else if r.IntN(4) == 0 {
					v[i] = 1
				}
			}
			bld := array.NewFloat32Builder(memory.DefaultAllocator)
			bld.AppendValues(v, nil)
			cols[c] = bld.NewArray()
			bld.Release()
		}
		recs = append(recs, array.NewRecordBatch(sc, cols, BatchRows))
		for _, a := range cols {
			a.Release()
		}
	}
	dir := b.TempDir()
	b.Run("pqarrow", func(b *testing.B) {
		defer wtCPU(b)()
		for range b.N {
			wtSerial(b, filepath.Join(dir, "serial"), sc, recs, MaxRowGroup)
		}
	})
	b.Run("table", func(b *testing.B) { wtBench(b, filepath.Join(dir, "parallel"), sc, recs, Options{}) })
	b.Run("table-lz4", func(b *testing.B) { wtBench(b, filepath.Join(dir, "lz4"), sc, recs, Options{Codec: LZ4Raw}) })
}

// wtCPU reports the process's CPU time per op when the returned func runs.
func wtCPU(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			b.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() { b.ReportMetric(float64(cpu()-start)/float64(b.N), "cpu-ns/op") }
}

func wtBench(b *testing.B, path string, sc *arrow.Schema, recs []arrow.RecordBatch, opt Options) {
	defer wtCPU(b)()
	for range b.N {
		wtWrite(b, path, sc, recs, opt)
	}
}

// wtWrite writes recs with a Writer.
func wtWrite(t testing.TB, path string, sc *arrow.Schema, recs []arrow.RecordBatch, opt Options) {
	w, err := CreateWith(path, sc, opt)
	if err != nil {
		t.Fatal(err)
	}
	wtFeed(t, recs, w.Write, w.Close)
}

// Options.NoStats leaves out the statistics of the columns it names, and
// of dictionary columns, and only those.
func TestWriterNoStats(t *testing.T) {
	rec := wtBatch(rand.New(rand.NewPCG(7, 8)), 0, 100)
	defer rec.Release()
	path := filepath.Join(t.TempDir(), "t")
	noStats := make([]bool, wtSchema.NumFields())
	noStats[3] = true // f32
	wtWrite(t, path, wtSchema, []arrow.RecordBatch{rec}, Options{NoStats: noStats})
	r, err := file.OpenParquetFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i := range wtSchema.NumFields() {
		cc, err := r.MetaData().RowGroup(0).ColumnChunk(i)
		if err != nil {
			t.Fatal(err)
		}
		set, err := cc.StatsSet()
		if err != nil {
			t.Fatal(err)
		}
		want := !noStats[i] && wtSchema.Field(i).Type.ID() != arrow.DICTIONARY
		if set != want {
			t.Errorf("column %s: statistics set %v, want %v", wtSchema.Field(i).Name, set, want)
		}
	}
}

// Options.Codec picks the compression of every column chunk; integer and
// date columns are DELTA_BINARY_PACKED, the others not; the values read
// back are those of the default (zstd) file; an unknown codec is refused.
func TestWriterCodec(t *testing.T) {
	rec := wtBatch(rand.New(rand.NewPCG(9, 10)), 0, 3000)
	defer rec.Release()
	dir := t.TempDir()
	for _, tc := range []struct {
		codec Codec
		want  compress.Compression
	}{{Zstd, compress.Codecs.Zstd}, {LZ4Raw, compress.Codecs.Lz4Raw}} {
		path := filepath.Join(dir, tc.want.String())
		wtWrite(t, path, wtSchema, []arrow.RecordBatch{rec}, Options{Codec: tc.codec, RowGroupRows: 1000})
		r, err := file.OpenParquetFile(path, false)
		if err != nil {
			t.Fatal(err)
		}
		for g := range r.NumRowGroups() {
			for i := range wtSchema.NumFields() {
				cc, err := r.MetaData().RowGroup(g).ColumnChunk(i)
				if err != nil {
					t.Fatal(err)
				}
				if got := cc.Compression(); got != tc.want {
					t.Errorf("codec %d: row group %d column %s: %s, want %s", tc.codec, g, wtSchema.Field(i).Name, got, tc.want)
				}
				delta := slices.Contains(cc.Encodings(), parquet.Encodings.DeltaBinaryPacked)
				if want := deltaEncoded(wtSchema.Field(i).Type); delta != want {
					t.Errorf("column %s: DELTA_BINARY_PACKED %v, want %v (encodings %v)", wtSchema.Field(i).Name, delta, want, cc.Encodings())
				}
			}
		}
		r.Close()
	}
	wtEqual(t, filepath.Join(dir, compress.Codecs.Lz4Raw.String()), filepath.Join(dir, compress.Codecs.Zstd.String()))
	if _, err := CreateWith(filepath.Join(dir, "bad"), wtSchema, Options{Codec: 99}); err == nil || !strings.Contains(err.Error(), "unknown codec") {
		t.Errorf("codec 99: %v, want an unknown-codec error", err)
	}
}

// A table file's digest is computed as it is written, and remembered for
// the cache under the file's state: it is the digest of the file's bytes.
func TestWriterDigest(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	recs := []arrow.RecordBatch{wtBatch(r, 0, 1500), wtBatch(r, 1500, 700)}
	defer func() {
		for _, rec := range recs {
			rec.Release()
		}
	}()
	path := filepath.Join(t.TempDir(), "t")
	wtWrite(t, path, wtSchema, recs, Options{RowGroupRows: 1000})
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	got, ok := digest.Recall(digest.FileIDOf(&st))
	if !ok {
		t.Fatal("no digest remembered for the table file")
	}
	want, _, err := digest.File(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("digest computed while writing %s, the file's %s", got.Short(), want.Short())
	}
}

// sameStrings reports whether two dictionary arrays of strings hold the
// same strings and nulls, whatever their dictionaries' order.
func sameStrings(a, b arrow.Array) bool {
	da, ok := a.(*array.Dictionary)
	db, ok2 := b.(*array.Dictionary)
	if !ok || !ok2 || a.Len() != b.Len() {
		return false
	}
	for i := range a.Len() {
		if a.IsNull(i) != b.IsNull(i) ||
			a.IsValid(i) && dictString(da.Dictionary(), da.GetValueIndex(i)) != dictString(db.Dictionary(), db.GetValueIndex(i)) {
			return false
		}
	}
	return true
}
