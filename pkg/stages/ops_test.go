package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// Test helpers shared by the preprocess and features tests (prefixed opsT
// so they do not collide with other kinds' tests in this package).

// opsTCol is one column of a test table. vals is a slice of int8, int16,
// int32, int64, float32, float64, bool or string; null lists null rows.
// dict makes a string column dictionary-encoded; date makes an int32 column
// date32.
type opsTCol struct {
	name string
	vals any
	null []int
	dict bool
	date bool
}

func opsTRecord(t testing.TB, cols ...opsTCol) arrow.RecordBatch {
	t.Helper()
	var fields []arrow.Field
	var arrs []arrow.Array
	n := -1
	for _, c := range cols {
		isNull := map[int]bool{}
		for _, i := range c.null {
			isNull[i] = true
		}
		var b array.Builder
		mem := memory.DefaultAllocator
		switch v := c.vals.(type) {
		case []int8:
			bb := array.NewInt8Builder(mem)
			for i, x := range v {
				if isNull[i] {
					bb.AppendNull()
				} else {
					bb.Append(x)
				}
			}
			b = bb
		case []int16:
			bb := array.NewInt16Builder(mem)
			for i, x := range v {
				if isNull[i] {
					bb.AppendNull()
				} else {
					bb.Append(x)
				}
			}
			b = bb
		case []int32:
			if c.date {
				bb := array.NewDate32Builder(mem)
				for i, x := range v {
					if isNull[i] {
						bb.AppendNull()
					} else {
						bb.Append(arrow.Date32(x))
					}
				}
				b = bb
				break
			}
			bb := array.NewInt32Builder(mem)
			for i, x := range v {
				if isNull[i] {
					bb.AppendNull()
				} else {
					bb.Append(x)
				}
			}
			b = bb
		case []int64:
			bb := array.NewInt64Builder(mem)
			for i, x := range v {
				if isNull[i] {
					bb.AppendNull()
				} else {
					bb.Append(x)
				}
			}
			b = bb
		case []float32:
			bb := array.NewFloat32Builder(mem)
			for i, x := range v {
				if isNull[i] {
					bb.AppendNull()
				} else {
					bb.Append(x)
				}
			}
			b = bb
		case []float64:
			bb := array.NewFloat64Builder(mem)
			for i, x := range v {
				if isNull[i] {
					bb.AppendNull()
				} else {
					bb.Append(x)
				}
			}
			b = bb
		case []bool:
			bb := array.NewBooleanBuilder(mem)
			for i, x := range v {
				if isNull[i] {
					bb.AppendNull()
				} else {
					bb.Append(x)
				}
			}
			b = bb
		case []string:
			if c.dict {
				bb := array.NewDictionaryBuilder(mem, &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}).(*array.BinaryDictionaryBuilder)
				for i, x := range v {
					if isNull[i] {
						bb.AppendNull()
					} else if err := bb.AppendString(x); err != nil {
						t.Fatal(err)
					}
				}
				b = bb
				break
			}
			bb := array.NewStringBuilder(mem)
			for i, x := range v {
				if isNull[i] {
					bb.AppendNull()
				} else {
					bb.Append(x)
				}
			}
			b = bb
		default:
			t.Fatalf("opsTRecord: column %s: unsupported %T", c.name, c.vals)
		}
		a := b.NewArray()
		b.Release()
		if n >= 0 && a.Len() != n {
			t.Fatalf("opsTRecord: column %s has %d rows, want %d", c.name, a.Len(), n)
		}
		n = a.Len()
		fields = append(fields, arrow.Field{Name: c.name, Type: a.DataType(), Nullable: true})
		arrs = append(arrs, a)
	}
	rec := array.NewRecordBatch(arrow.NewSchema(fields, nil), arrs, int64(max(n, 0)))
	releaseAll(arrs)
	return rec
}

// opsTWrite writes the columns as a Parquet table in dir and returns its path.
func opsTWrite(t testing.TB, dir string, cols ...opsTCol) string {
	t.Helper()
	rec := opsTRecord(t, cols...)
	defer rec.Release()
	path := filepath.Join(dir, "in.parquet")
	w, err := table.Create(path, rec.Schema())
	if err != nil {
		t.Fatal(err)
	}
	if rec.NumRows() > 0 {
		if err := w.Write(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// opsTParams turns plain Go values into stage params.
func opsTParams(t testing.TB, m map[string]any) map[string]Param {
	t.Helper()
	ps := map[string]Param{}
	for k, v := range m {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		// Decode the way the loader would hand values over (numbers float64
		// after JSON, ints from YAML also work).
		var plain any
		if err := json.Unmarshal(b, &plain); err != nil {
			t.Fatal(err)
		}
		ps[k] = Param{Text: string(b), Value: plain}
	}
	return ps
}

// opsTRun runs kind k on input path with params and returns the output
// paths (in a temp dir), the log, and Run's error.
func opsTRun(t testing.TB, k Kind, in string, params map[string]any, outputs ...string) (map[string]string, string, error) {
	t.Helper()
	dir := t.TempDir()
	outs := map[string]string{}
	for _, o := range outputs {
		outs[o] = filepath.Join(dir, o)
	}
	var log bytes.Buffer
	task := &Task{Pipeline: "p", Stage: "s", Dir: dir, Params: opsTParams(t, params),
		Inputs: map[string]string{"table": in}, Outputs: outs, Scratch: dir, Log: &log}
	if tb, ok := t.(*testing.T); ok {
		err := k.Run(tb.Context(), task)
		return outs, log.String(), err
	}
	err := k.Run(t.(*testing.B).Context(), task)
	return outs, log.String(), err
}

// opsTSame fails unless the two read-back tables hold the same columns and
// values (NaN equal to NaN).
func opsTSame(t *testing.T, got, want *opsTTable) {
	t.Helper()
	if !slices.Equal(got.names, want.names) || got.rows != want.rows {
		t.Fatalf("columns %v (%d rows), want %v (%d rows)", got.names, got.rows, want.names, want.rows)
	}
	for _, c := range got.names {
		if !slices.Equal(got.strs[c], want.strs[c]) {
			t.Fatalf("%s: strings differ", c)
		}
		a, b := got.nums[c], want.nums[c]
		if len(a) != len(b) {
			t.Fatalf("%s: %d values, want %d", c, len(a), len(b))
		}
		for i := range a {
			if a[i] != b[i] && !(math.IsNaN(a[i]) && math.IsNaN(b[i])) {
				t.Fatalf("%s row %d: %v, want %v", c, i, a[i], b[i])
			}
		}
	}
}

// opsTTable is a read-back table: column name → values (float64 with NaN
// for null, or strings with "<null>"), and types.
type opsTTable struct {
	names []string
	types map[string]arrow.DataType
	nums  map[string][]float64
	strs  map[string][]string
	rows  int
}

func opsTRead(t testing.TB, path string) *opsTTable {
	t.Helper()
	tbl, err := table.ReadAll(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	out := &opsTTable{types: map[string]arrow.DataType{}, nums: map[string][]float64{}, strs: map[string][]string{}, rows: int(tbl.NumRows())}
	for i, f := range tbl.Schema().Fields() {
		out.names = append(out.names, f.Name)
		out.types[f.Name] = f.Type
		var nums []float64
		var strs []string
		for _, ch := range tbl.Column(i).Data().Chunks() {
			if opsIsNumeric(ch.DataType()) {
				v, err := opsFloat64s(ch, nil)
				if err != nil {
					t.Fatal(err)
				}
				nums = append(nums, v...)
			}
			for r := 0; r < ch.Len(); r++ {
				if ch.IsNull(r) {
					strs = append(strs, "<null>")
				} else {
					strs = append(strs, opsStringAt(ch, r))
				}
			}
		}
		out.nums[f.Name] = nums
		out.strs[f.Name] = strs
	}
	return out
}

// opsTNear compares float slices (NaN equals NaN) within tol relative to
// max(1, |want|).
func opsTNear(t testing.TB, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values %v, want %d %v", what, len(got), got, len(want), want)
		return
	}
	for i := range got {
		g, w := got[i], want[i]
		if math.IsNaN(w) || math.IsNaN(g) {
			if math.IsNaN(w) != math.IsNaN(g) {
				t.Errorf("%s[%d] = %v, want %v", what, i, g, w)
			}
			continue
		}
		if math.Abs(g-w) > tol*math.Max(1, math.Abs(w)) {
			t.Errorf("%s[%d] = %v, want %v", what, i, g, w)
		}
	}
}

var nan = math.NaN()

func TestOpsQuantilesMatchNumpy(t *testing.T) {
	// Values checked with numpy.quantile(x, q) (method="linear").
	cases := []struct {
		x    []float64
		q    []float64
		want []float64
	}{
		{[]float64{1, 2, 3, 4}, []float64{0.01, 0.99, 0.5, 0.25}, []float64{1.03, 3.97, 2.5, 1.75}},
		{[]float64{5}, []float64{0, 0.01, 1}, []float64{5, 5, 5}},
		{[]float64{3, 1, 2}, []float64{0, 1, 0.5}, []float64{1, 3, 2}},
		{[]float64{10, 10, 10, 10}, []float64{0.01, 0.99}, []float64{10, 10}},
		{[]float64{-1, 7, 0, 100, 3, 3}, []float64{0.1, 0.9}, []float64{-0.5, 53.5}},
	}
	for _, c := range cases {
		got := opsQuantiles(append([]float64(nil), c.x...), c.q)
		opsTNear(t, "quantile", got, c.want, 1e-12)
	}
	if got := opsQuantiles(nil, []float64{0.5}); !math.IsNaN(got[0]) {
		t.Errorf("quantile of nothing = %v, want NaN", got[0])
	}
}

func TestOpsQuantilesAgreeWithSorting(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := 1; n < 300; n += 7 {
		x := make([]float64, n)
		for i := range x {
			x[i] = math.Round(r.NormFloat64()*10) / 2 // ties on purpose
		}
		s := append([]float64(nil), x...)
		slices.Sort(s)
		for _, q := range []float64{0, 0.01, 0.25, 0.5, 0.75, 0.99, 1} {
			vi := float64(n)*q + (1 - q) - 1
			lo := int(math.Floor(vi))
			var want float64
			switch {
			case vi >= float64(n-1):
				want = s[n-1]
			case vi < 0:
				want = s[0]
			default:
				want = opsLerp(s[lo], s[lo+1], vi-float64(lo))
			}
			got := opsQuantiles(append([]float64(nil), x...), []float64{q})[0]
			if got != want {
				t.Fatalf("n=%d q=%v: got %v, want %v", n, q, got, want)
			}
		}
		med := opsMedian(append([]float64(nil), x...))
		want := s[n/2]
		if n%2 == 0 {
			want = (s[n/2-1] + s[n/2]) / 2
		}
		if med != want {
			t.Fatalf("n=%d median %v, want %v", n, med, want)
		}
	}
}

func TestOpsMoments(t *testing.T) {
	var m opsMoments
	m.add([]float64{1, 2, nan})
	m.add([]float64{3, 4})
	m.add(nil)
	if m.n != 4 || m.mean != 2.5 || math.Abs(m.std()-math.Sqrt(1.25)) > 1e-15 {
		t.Errorf("moments n=%v mean=%v std=%v, want 4 2.5 %v", m.n, m.mean, m.std(), math.Sqrt(1.25))
	}
	// Large offset: no cancellation.
	var big opsMoments
	for range 10 {
		big.add([]float64{1e9 + 1, 1e9 + 2, 1e9 + 3})
	}
	if math.Abs(big.std()-math.Sqrt(2.0/3)) > 1e-9 {
		t.Errorf("std with offset = %v, want %v", big.std(), math.Sqrt(2.0/3))
	}
	var none opsMoments
	if !math.IsNaN(none.std()) {
		t.Errorf("std of nothing = %v", none.std())
	}
}

func TestOpsCivil(t *testing.T) {
	for _, s := range []string{"1970-01-01", "2024-02-29", "2024-12-31", "1969-12-31", "2000-03-01", "1900-02-28"} {
		d, err := opsParseDate(s)
		if err != nil {
			t.Fatal(err)
		}
		y, m, dd := opsCivil(d)
		var y2, m2, d2 int
		if _, err := fmt.Sscanf(s, "%d-%d-%d", &y2, &m2, &d2); err != nil {
			t.Fatal(err)
		}
		if y != y2 || m != m2 || dd != d2 {
			t.Errorf("%s: civil %d-%d-%d", s, y, m, dd)
		}
		if back := opsDaysFromCivil(y, m, dd); back != d {
			t.Errorf("%s: days %d, back %d", s, d, back)
		}
	}
	if _, err := opsParseDate("31/12/2024"); err == nil || !strings.Contains(err.Error(), "not a date") {
		t.Errorf("bad date: %v", err)
	}
}

// The dense mode gives the ids a hash table would, growing up and down,
// at the ends of int64, and handing over to the hash table when the keys
// spread too far; reserve widens what it takes.
func TestOpsIntMapDense(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, tc := range []struct {
		name   string
		key    func(i int) int64
		hashed bool
	}{
		{"ascending with repeats", func(i int) int64 { return 1_000_000 + int64(i) - int64(r.IntN(3)) }, false},
		{"descending", func(i int) int64 { return -int64(i) * 3 }, false},
		{"near MinInt64", func(i int) int64 { return math.MinInt64 + int64(r.IntN(5000)) }, false},
		{"near MaxInt64", func(i int) int64 { return math.MaxInt64 - int64(r.IntN(5000)) }, false},
		{"both ends", func(i int) int64 { return [2]int64{math.MinInt64, math.MaxInt64}[i%2] - int64(i%2) }, true},
		{"spread", func(i int) int64 { return int64(r.Uint64()) }, true},
		{"dense then far", func(i int) int64 {
			if i == 15000 {
				return 1 << 40
			}
			return int64(i % 9000)
		}, true},
	} {
		m := newOpsIntMap()
		ref := map[int64]int32{}
		var keys []int64
		for i := range 20000 {
			k := tc.key(i)
			want, seen := ref[k]
			if !seen {
				want = int32(len(ref))
				ref[k] = want
				keys = append(keys, k)
			}
			if id, isNew := m.add(k); id != want || isNew == seen {
				t.Fatalf("%s: add %d: id %d new %v, want %d new %v", tc.name, k, id, isNew, want, !seen)
			}
		}
		for _, k := range keys {
			if id := m.get(k); id != ref[k] {
				t.Fatalf("%s: get %d: %d, want %d", tc.name, k, id, ref[k])
			}
		}
		for _, k := range []int64{math.MinInt64, -7, 0, 999_999, 1 << 50, math.MaxInt64} {
			if _, in := ref[k]; !in && m.get(k) != -1 {
				t.Errorf("%s: absent key %d found", tc.name, k)
			}
		}
		if m.hashed != tc.hashed {
			t.Errorf("%s: hashed %v, want %v", tc.name, m.hashed, tc.hashed)
		}
	}
	m := newOpsIntMap()
	m.reserve(1 << 20)
	m.add(0)
	m.add(3 << 20) // within 4x the reserved keys
	if m.hashed {
		t.Error("a range of 3M for 1M reserved keys left the dense mode")
	}
}

func TestOpsIntMapGrows(t *testing.T) {
	m := newOpsIntMap()
	for i := int64(0); i < 5000; i++ {
		id, isNew := m.add(i * 7919)
		if !isNew || id != int32(i) {
			t.Fatalf("add %d: id %d new %v", i, id, isNew)
		}
	}
	for i := int64(0); i < 5000; i++ {
		if id := m.get(i * 7919); id != int32(i) {
			t.Fatalf("get %d: %d", i, id)
		}
		if id, isNew := m.add(i * 7919); isNew || id != int32(i) {
			t.Fatalf("re-add %d: %d %v", i, id, isNew)
		}
	}
	if m.get(-1) != -1 {
		t.Error("absent key found")
	}
}

func TestOpsKeysDictionaryAndStrings(t *testing.T) {
	rec := opsTRecord(t,
		opsTCol{name: "d", vals: []string{"b", "a", "b", "", "c"}, null: []int{3}, dict: true},
		opsTCol{name: "s", vals: []string{"a", "c", "a", "z", "b"}, null: []int{3}},
	)
	defer rec.Release()
	k, err := newOpsKeys(rec.Column(0).DataType())
	if err != nil {
		t.Fatal(err)
	}
	ids := k.encode(rec.Column(0), nil, true)
	if !slices.Equal(ids, []int32{0, 1, 0, -1, 2}) {
		t.Errorf("dictionary ids %v", ids)
	}
	ids = k.encode(rec.Column(1), nil, false) // same key space, no new keys
	if !slices.Equal(ids, []int32{1, 2, 1, -1, 0}) {
		t.Errorf("string ids %v", ids)
	}
	if _, err := newOpsKeys(arrow.PrimitiveTypes.Float64); err == nil {
		t.Error("float keys accepted")
	}
}

// BenchmarkOpsIntMap adds 3M customer-id-like keys (ascending, 0.5%
// repeats), as preprocess's dedupe does: in the dense mode, and in the
// hash table the map used for every key set before.
//
//	go test ./pkg/stages -run '^$' -bench OpsIntMap -benchtime 5x
func BenchmarkOpsIntMap(b *testing.B) {
	const n = 3_000_000
	r := rand.New(rand.NewPCG(13, 14))
	keys := make([]int64, n)
	for i := range keys {
		keys[i] = 1_000_000 + int64(i)
		if r.IntN(200) == 0 {
			keys[i] = 1_000_000 + int64(r.IntN(n))
		}
	}
	for _, hashed := range []bool{false, true} {
		b.Run(map[bool]string{false: "dense", true: "hashed"}[hashed], func(b *testing.B) {
			for range b.N {
				m := newOpsIntMap()
				m.reserve(n)
				if hashed {
					m.toHash()
				}
				for _, k := range keys {
					m.add(k)
				}
			}
		})
	}
}

// TestOpsOrderStatsBucketed checks the bucketed selection of large inputs
// against sorting: ties, a far outlier that crowds every other value into
// one bucket, infinities (no buckets), one repeated value, negative values.
func TestOpsOrderStatsBucketed(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	n := 3 * opsHistMin
	gens := map[string]func(i int) float64{
		"normal ties": func(int) float64 { return math.Round(r.NormFloat64()*100) / 4 },
		"outlier": func(i int) float64 {
			if i == 17 {
				return 1e300
			}
			return r.Float64()
		},
		"infinite": func(i int) float64 {
			switch i {
			case 5:
				return math.Inf(1)
			case 9:
				return math.Inf(-1)
			}
			return r.Float64()
		},
		"constant":   func(int) float64 { return 2.5 },
		"two values": func(i int) float64 { return float64(i%2) - 7 },
		"wide":       func(int) float64 { return (r.Float64() - 0.5) * 1e307 },
	}
	for name, gen := range gens {
		x := make([]float64, n)
		for i := range x {
			x[i] = gen(i)
		}
		s := slices.Clone(x)
		slices.Sort(s)
		ks := []int{0, 1, n / 100, n/100 + 1, n / 2, n/2 - 1, n - n/100, n - 2, n - 1}
		got := opsOrderStats(slices.Clone(x), ks)
		for _, k := range ks {
			if got[k] != s[k] {
				t.Errorf("%s: order statistic %d = %v, want %v", name, k, got[k], s[k])
			}
		}
		q := opsQuantiles(slices.Clone(x), []float64{0.01, 0.99})
		// numpy's virtual index n*q + (1-q) - 1 over n = 3*2^14 values:
		// 491.51 for 0.01, 48659.49 for 0.99.
		want := []float64{opsLerp(s[491], s[492], 0.51), opsLerp(s[48659], s[48660], 0.49)}
		for i := range q {
			if math.Abs(q[i]-want[i]) > 1e-9*math.Abs(want[i]) {
				t.Errorf("%s: quantiles %v, want %v", name, q, want)
			}
		}
		med := opsMedian(slices.Clone(x))
		if wm := (s[n/2-1] + s[n/2]) / 2; med != wm {
			t.Errorf("%s: median %v, want %v", name, med, wm)
		}
	}
}

func BenchmarkOpsQuantiles(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	x := make([]float64, 2_400_000)
	for i := range x {
		x[i] = math.Round(r.NormFloat64()*3000+5000) / 100
	}
	w := make([]float64, len(x))
	for b.Loop() {
		copy(w, x)
		opsQuantiles(w, []float64{0.01, 0.99})
	}
}

// opsFloat32Array makes NaN and ±Inf null, and nothing else: not zeros,
// the largest float32, the smallest denormal.
func TestOpsFloat32ArrayNulls(t *testing.T) {
	inf := float32(math.Inf(1))
	vals := []float32{1, float32(math.NaN()), inf, -inf, 0, float32(math.Copysign(0, -1)), math.MaxFloat32, math.SmallestNonzeroFloat32, -1}
	a := opsFloat32Array(vals)
	defer a.Release()
	if a.NullN() != 3 {
		t.Errorf("%d nulls, want 3", a.NullN())
	}
	for i := range vals {
		if want := i < 1 || i > 3; a.IsValid(i) != want {
			t.Errorf("value %d (%v): valid %v, want %v", i, vals[i], a.IsValid(i), want)
		}
	}
	if b := opsFloat32Array([]float32{2, 3}); b.NullN() != 0 || b.Data().Buffers()[0] != nil {
		t.Errorf("no nulls: %d nulls, bitmap %v", b.NullN(), b.Data().Buffers()[0])
	}
}
