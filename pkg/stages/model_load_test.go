package stages

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// mlLoadRows reads every numeric type a feature may have, across row
// groups, from orch's writer (small row groups) and from pqarrow's default
// writer (dictionary-encoded pages): the kept rows' values, labels and
// buckets are those of the table, in order, and nulls in rows it does not
// keep are no error.
func TestLoadRowsTypesAndRowGroups(t *testing.T) {
	const n = 1000
	fields := []arrow.Field{
		{Name: "id", Type: arrow.BinaryTypes.String},
		{Name: "f32", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
		{Name: "f64", Type: arrow.PrimitiveTypes.Float64},
		{Name: "i8", Type: arrow.PrimitiveTypes.Int8},
		{Name: "i16", Type: arrow.PrimitiveTypes.Int16},
		{Name: "i64", Type: arrow.PrimitiveTypes.Int64},
		{Name: "u8", Type: arrow.PrimitiveTypes.Uint8},
		{Name: "u32", Type: arrow.PrimitiveTypes.Uint32},
		{Name: "u64", Type: arrow.PrimitiveTypes.Uint64},
		{Name: "b", Type: arrow.FixedWidthTypes.Boolean},
		{Name: "y", Type: arrow.FixedWidthTypes.Boolean},
		{Name: "s", Type: arrow.FixedWidthTypes.Boolean, Nullable: true},
		{Name: "g32", Type: arrow.PrimitiveTypes.Float32}, // no nulls: gathered from the arrays in memory
	}
	schema := arrow.NewSchema(fields, nil)
	rb := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer rb.Release()
	ids := make([]string, n)
	for i := range n {
		ids[i] = "c" + strings.Repeat("x", i%3) + string(rune('a'+i%26)) + string(rune('0'+i%10)) + string(rune('A'+i/26%26))
	}
	idArr := array.NewStringBuilder(memory.DefaultAllocator)
	idArr.AppendValues(ids, nil)
	buckets := mlBucketsOf(t, idArr.NewArray(), 3)
	idArr.Release()
	cut := (Split{Holdout: 0.3}).holdoutCut()
	keep := func(b uint16) bool { return b >= cut }
	want := make([][]float32, 9)
	var wantY []uint8
	var wantB []uint16
	var wantOnes []int32 // the kept rows where s is true
	for i := range n {
		rb.Field(12).(*array.Float32Builder).Append(float32(i)/4 - 100)
		sb := rb.Field(11).(*array.BooleanBuilder)
		switch sv := i%7 == 0 || i%64 == 63; {
		case keep(buckets[i]):
			if sv {
				wantOnes = append(wantOnes, int32(len(wantY)))
			}
			sb.Append(sv)
		case i%5 == 0:
			sb.AppendNull() // not read: no error
		default:
			sb.Append(sv)
		}
		rb.Field(0).(*array.StringBuilder).Append(ids[i])
		vals := []float64{float64(i) / 8, float64(i) * 1.5, float64(i%256 - 128), float64(i*30 - 15000), float64(int64(i) << 40), float64(i % 256), float64(uint32(4_000_000_000) + uint32(i)), float64(uint64(1)<<63 + uint64(i)<<20), float64(i % 2)}
		if keep(buckets[i]) {
			for j, v := range vals {
				want[j] = append(want[j], float32(v))
			}
			wantY = append(wantY, uint8(i%3%2))
			wantB = append(wantB, buckets[i])
			rb.Field(1).(*array.Float32Builder).Append(float32(vals[0]))
		} else {
			rb.Field(1).(*array.Float32Builder).AppendNull() // not read: no error
		}
		rb.Field(2).(*array.Float64Builder).Append(vals[1])
		rb.Field(3).(*array.Int8Builder).Append(int8(vals[2]))
		rb.Field(4).(*array.Int16Builder).Append(int16(vals[3]))
		rb.Field(5).(*array.Int64Builder).Append(int64(i) << 40)
		rb.Field(6).(*array.Uint8Builder).Append(uint8(i % 256))
		rb.Field(7).(*array.Uint32Builder).Append(uint32(4_000_000_000) + uint32(i))
		rb.Field(8).(*array.Uint64Builder).Append(uint64(1)<<63 + uint64(i)<<20)
		rb.Field(9).(*array.BooleanBuilder).Append(i%2 == 1)
		rb.Field(10).(*array.BooleanBuilder).Append(i%3%2 == 1)
	}
	rec := rb.NewRecordBatch()
	defer rec.Release()
	dir := t.TempDir()
	small := filepath.Join(dir, "small.parquet")
	// the table in memory as well (table.Given), in arrays of 333, 367 and
	// 300 rows: the later ones start mid-byte of their bitmaps
	h := table.NewHandoff(1 << 30)
	h.Keep(small)
	w, err := table.CreateWith(small, schema, table.Options{RowGroupRows: 97, Handoff: h})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]int64{{0, 333}, {333, 700}, {700, n}} {
		part := rec.NewSlice(r[0], r[1])
		if err := w.Write(part); err != nil {
			t.Fatal(err)
		}
		part.Release()
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	mem := h.Kept(small)
	if mem == nil {
		t.Fatal("the writer kept no table")
	}
	h.Give(small, mem)
	memCtx := table.WithHandoff(context.Background(), h)
	dict := filepath.Join(dir, "dict.parquet")
	f, err := os.Create(dict)
	if err != nil {
		t.Fatal(err)
	}
	tbl := array.NewTableFromRecords(schema, []arrow.RecordBatch{rec})
	defer tbl.Release()
	if err := pqarrow.WriteTable(tbl, f, 300, parquet.NewWriterProperties(parquet.WithDictionaryDefault(true)), pqarrow.DefaultWriterProps()); err != nil {
		t.Fatal(err)
	}
	f.Close()
	names := []string{"f32", "f64", "i8", "i16", "i64", "u8", "u32", "u64", "b", "s", "g32"}
	want = append(want, nil, nil)
	for k := range wantY {
		want[9] = append(want[9], float32(mlBool(slices.Contains(wantOnes, int32(k)))))
	}
	for i := range n {
		if keep(buckets[i]) {
			want[10] = append(want[10], float32(i)/4-100)
		}
	}
	type load struct {
		what   string
		ctx    context.Context
		path   string
		sparse bool
	}
	var loads []load
	for _, sparse := range []bool{false, true} {
		loads = append(loads, load{"small", context.Background(), small, sparse}, load{"dict", context.Background(), dict, sparse}, load{"memory", memCtx, small, sparse})
	}
	for _, l := range loads {
		var arena mlArena
		rows, err := mlLoadRows(l.ctx, l.path, &mlModelColumns{features: names, label: "y", id: "id"}, 3, keep, &arena, l.sparse)
		what := fmt.Sprintf("%s (sparse %v)", l.what, l.sparse)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if rows.total != n || len(rows.y) != len(wantY) || string(rows.y) != string(wantY) {
			t.Errorf("%s: total %d, %d labels: want %d, %d", what, rows.total, len(rows.y), n, len(wantY))
		}
		for k, b := range wantB {
			if rows.bucket[k] != b {
				t.Fatalf("%s: bucket %d = %d, want %d", what, k, rows.bucket[k], b)
			}
		}
		for j, name := range names {
			// s (a sixth true) comes as a list when sparse; b (half
			// true, above mlLrSparseMax) stays a column
			if l.sparse && name == "s" {
				if rows.cols[j] != nil || !slices.Equal(rows.ones[j], wantOnes) {
					t.Errorf("%s: s listed as %v, want %v", what, rows.ones[j], wantOnes)
				}
				continue
			}
			if rows.ones != nil && rows.ones[j] != nil {
				t.Errorf("%s: %s listed, want a column", what, name)
			}
			for k, v := range want[j] {
				if got := rows.cols[j][k]; got != v {
					t.Fatalf("%s: %s[%d] = %v, want %v", what, name, k, got, v)
				}
			}
		}
		arena.free()
	}
}

// The fused loss and residuals agree with the textbook formulas;
// mlLog1pUnit agrees with math.Log1p to 4.5e-16 relative (2 ulp), and
// mlExpNeg with math.Exp to 2.5 ulp.
func TestLrResidualsAndLog1p(t *testing.T) {
	worst := 0.0
	for i := 0; i <= 400000; i++ {
		e := float64(i) / 400000
		if i%2 == 1 {
			e = math.Exp(-float64(i) / 600)
		}
		want := math.Log1p(e)
		got := mlLog1pUnit(e, 1+e, 1/(1+e))
		if d := math.Abs(got - want); d > 4.5e-16*want {
			t.Fatalf("mlLog1pUnit(%g) = %g, want %g", e, got, want)
		}
		x := -float64(i) / 500 // to −800
		wantE := math.Exp(max(x, -708))
		gotE := mlExpNeg(x)
		worst = max(worst, math.Abs(gotE-wantE)/wantE)
		if math.Abs(gotE-wantE) > 2.5*0x1p-52*wantE {
			t.Fatalf("mlExpNeg(%g) = %g, want %g", x, gotE, wantE)
		}
	}
	t.Logf("mlExpNeg: worst relative error %.3g ulp", worst/0x1p-52)
	if mlExpNeg(0) != 1 || mlExpNeg(-math.Ln2) != 0.5 {
		t.Errorf("exp(0) = %v, exp(−ln 2) = %v", mlExpNeg(0), mlExpNeg(-math.Ln2))
	}
	var zs []float64
	var ys []uint8
	for _, z := range []float64{-800, -40, -20.5, -3, -1e-9, 0, 1e-9, 0.7, 5, 36, 800} {
		zs = append(zs, z, z)
		ys = append(ys, 0, 1)
	}
	r, w := make([]float64, len(zs)), make([]float64, len(zs))
	for i := range zs {
		one := mlLrResiduals(zs[i:i+1], ys[i:i+1], r[i:i+1], w[i:i+1], true, true)
		if none := mlLrResiduals(zs[i:i+1], ys[i:i+1], r[i:i+1], w[i:i+1], true, false); none != 0 {
			t.Errorf("z %g: loss %g without the loss", zs[i], none)
		}
		p := mlSigmoid(zs[i])
		if ll := mlLogLossOfMargin(zs[i], ys[i]); math.Abs(one-ll) > 1e-15*math.Max(1, ll) {
			t.Errorf("z %g y %d: loss %g, want %g", zs[i], ys[i], one, ll)
		}
		// σ(z)(1−σ(z)) = e/(1+e)² with e = exp(−|z|) (p·(1−p) loses
		// digits to the subtraction); e stops at exp(−708) ≈ 3e-308
		e := math.Exp(max(-math.Abs(zs[i]), -708))
		pq := e / ((1 + e) * (1 + e))
		if math.Abs(r[i]-(p-float64(ys[i]))) > 1e-16 || math.Abs(w[i]-pq) > 1e-15*pq {
			t.Errorf("z %g y %d: residual %g weight %g, want %g, %g", zs[i], ys[i], r[i], w[i], p-float64(ys[i]), pq)
		}
	}
}

// The passes of the logistic fit (dense columns four at a time, one-hot
// columns as lists of rows, the Hessian over nonzeros) give the loss,
// gradient and Hessian of the textbook sums.
func TestLrEvalMatchesNaive(t *testing.T) {
	cols, y := mlChurnLike(3*mlLrChunk + 123)
	e := mlNewLrData(cols, nil, y)
	if len(e.sparse) < 31 || len(e.dense) < 13 {
		t.Fatalf("%d sparse and %d dense columns: want the one-hot columns sparse", len(e.sparse), len(e.dense))
	}
	d := len(cols)
	D := d + 1
	b := make([]float64, D)
	for j := range b {
		b[j] = 0.3 * math.Sin(float64(j)+1)
	}
	loss, g, h := e.eval(b, true, true)
	var wl float64
	wg, wh := make([]float64, D), make([]float64, D*D)
	x := make([]float64, D)
	for i := range y {
		z := b[d]
		for j := range d {
			x[j] = float64(cols[j][i])
			z += b[j] * x[j]
		}
		x[d] = 1
		p := mlSigmoid(z)
		wl += mlLogLossOfMargin(z, y[i])
		for j := range D {
			wg[j] += (p - float64(y[i])) * x[j]
			for k := range D {
				wh[j*D+k] += p * (1 - p) * x[j] * x[k]
			}
		}
	}
	mlNear(t, "loss", loss, wl, 1e-9*wl)
	for j := range D {
		mlNear(t, fmt.Sprintf("g[%d]", j), g[j], wg[j], 1e-9*(1+math.Abs(wg[j])))
		for k := range D {
			mlNear(t, fmt.Sprintf("h[%d,%d]", j, k), h[j*D+k], wh[j*D+k], 1e-9*(1+math.Abs(wh[j*D+k])))
		}
	}
}

// A 0/1 column becomes the list of its ones with each chunk's start;
// other values, −0 included, and more than mlLrSparseMax ones keep it dense.
func TestSparseOnes(t *testing.T) {
	n := 2*mlLrChunk + 5
	nChunks := 3
	col := make([]float32, n)
	var want []int32
	for _, i := range []int{3, 700, mlLrChunk, mlLrChunk + 1, 2*mlLrChunk + 4} {
		col[i] = 1
		want = append(want, int32(i))
	}
	ones, start := mlSparseOnes(col, nChunks)
	if !slices.Equal(ones, want) || !slices.Equal(start, []int32{0, 2, 4, 5}) {
		t.Errorf("ones %v starts %v", ones, start)
	}
	for _, v := range []float32{0.5, float32(math.Copysign(0, -1)), 2, float32(math.NaN()), 1e-30} {
		c := slices.Clone(col)
		c[n-1] = v
		if ones, _ := mlSparseOnes(c, nChunks); ones != nil {
			t.Errorf("a column holding %v is not 0/1, but came out sparse", v)
		}
	}
	dense := make([]float32, 10)
	for i := range 5 {
		dense[i] = 1
	}
	if ones, _ := mlSparseOnes(dense, 1); ones != nil {
		t.Errorf("half ones came out sparse")
	}
}

func mlBool(b bool) int {
	if b {
		return 1
	}
	return 0
}

// mlAppendTrue lists the kept true rows of boolean arrays at any bit
// offset, and a null in a kept row (only there) is an error naming it.
func TestAppendTrue(t *testing.T) {
	const n = 300
	bb := array.NewBooleanBuilder(memory.DefaultAllocator)
	defer bb.Release()
	for i := range n {
		if i == 250 {
			bb.AppendNull()
			continue
		}
		bb.Append(i%3 == 0 || i/64 == 2)
	}
	all := bb.NewBooleanArray()
	defer all.Release()
	kidx := make([]int32, n)
	kept := int32(0)
	for i := range kidx {
		kidx[i] = -1
		if i%4 != 1 {
			kidx[i], kept = kept, kept+1
		}
	}
	for _, r := range [][2]int{{0, 250}, {3, 250}, {13, 77}, {64, 192}, {100, 101}, {5, 5}} {
		a := array.NewSlice(all, int64(r[0]), int64(r[1])).(*array.Boolean)
		got, err := mlAppendTrue([]int32{-7}, a, kidx[r[0]:r[1]], 1000)
		a.Release()
		if err != nil {
			t.Fatalf("%v: %v", r, err)
		}
		want := []int32{-7}
		for i := r[0]; i < r[1]; i++ {
			if kidx[i] >= 0 && (i%3 == 0 || i/64 == 2) {
				want = append(want, 1000+kidx[i])
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("rows %v: %v, want %v", r, got, want)
		}
	}
	// row 250 is kept (250%4 = 2) and null; row 249 (249%4 = 1) is not kept
	a := array.NewSlice(all, 200, n).(*array.Boolean)
	defer a.Release()
	_, err := mlAppendTrue(nil, a, kidx[200:], 0)
	if br, ok := err.(*mlBadRow); !ok || br.row != 50 || !strings.Contains(br.msg, "null") {
		t.Errorf("null in a kept row: %v, want row 50", err)
	}
}

func TestMlBitsToFloats(t *testing.T) {
	bits := []byte{0b10110010, 0b01100111, 0b00000001}
	for off := range 9 {
		for n := range 24 - off {
			out := make([]float32, n)
			for i := range out {
				out[i] = 7 // every value must be overwritten
			}
			mlBitsToFloats(out, bits, off)
			for i, v := range out {
				want := float32(bits[(off+i)/8] >> ((off + i) % 8) & 1)
				if v != want {
					t.Fatalf("offset %d, %d values: out[%d] = %v, want %v", off, n, i, v, want)
				}
			}
		}
	}
}

// An arena maps large slices, or with heap takes them from the Go heap;
// either way they come zeroed and at the size asked.
func TestArenaHeap(t *testing.T) {
	for _, heap := range []bool{false, true} {
		a := mlArena{heap: heap}
		col := a.float32s(1 << 20)[:1<<20]
		for i, v := range col {
			if v != 0 {
				t.Fatalf("heap %v: col[%d] = %v", heap, i, v)
			}
		}
		col[len(col)-1] = 1
		if (len(a.maps) == 0) != heap {
			t.Errorf("heap %v: %d maps", heap, len(a.maps))
		}
		a.free()
	}
}
