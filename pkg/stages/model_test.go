package stages

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/cespare/xxhash/v2"
)

func mlBucketsOf(t *testing.T, a arrow.Array, seed uint64) []uint16 {
	t.Helper()
	defer a.Release()
	out := make([]uint16, a.Len())
	if err := mlIdBuckets(a, "id", seed, 0, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mlInt64s(vs ...int64) arrow.Array {
	b := array.NewInt64Builder(memory.DefaultAllocator)
	defer b.Release()
	b.AppendValues(vs, nil)
	return b.NewArray()
}

func mlStrings(vs ...string) arrow.Array {
	b := array.NewStringBuilder(memory.DefaultAllocator)
	defer b.Release()
	b.AppendValues(vs, nil)
	return b.NewArray()
}

// The split is the documented formula (docs/model-format.md):
// xxhash64(le64(seed) ‖ id bytes) mod 10000, integer ids as le64 whatever
// their width, strings as their UTF-8 bytes. Pinned values guard against
// a change that would silently move rows between train and holdout.
func TestSplitBucketsFormula(t *testing.T) {
	ids := []int64{1000000, 1000001, 42, -7}
	for _, seed := range []uint64{0, 7} {
		got := mlBucketsOf(t, mlInt64s(ids...), seed)
		for i, id := range ids {
			var buf [16]byte
			binary.LittleEndian.PutUint64(buf[:8], seed)
			binary.LittleEndian.PutUint64(buf[8:], uint64(id))
			if want := uint16(xxhash.Sum64(buf[:]) % 10000); got[i] != want {
				t.Errorf("seed %d id %d: bucket %d, want %d", seed, id, got[i], want)
			}
		}
	}
	if got := mlBucketsOf(t, mlInt64s(1000000, 1000001), 0); got[0] != mlPinned[0] || got[1] != mlPinned[1] {
		t.Errorf("pinned buckets changed: got %v, want %v", got, mlPinned[:2])
	}
	s := mlBucketsOf(t, mlStrings("cust-1", ""), 0)
	want := uint16(xxhash.Sum64(append(make([]byte, 8), "cust-1"...)) % 10000)
	if s[0] != want || s[0] != mlPinned[2] {
		t.Errorf("string id bucket %d, want %d (pinned %d)", s[0], want, mlPinned[2])
	}
}

// mlPinned: buckets of int64 1000000 and 1000001 and string "cust-1", seed 0.
// Python agrees (Debian's python3-xxhash):
//
//	xxhash.xxh64_intdigest(struct.pack('<Qq', 0, 1000000)) % 10000      # 4407
//	xxhash.xxh64_intdigest(struct.pack('<Q', 0) + b'cust-1') % 10000   # 6942
var mlPinned = [3]uint16{4407, 2572, 6942}

// An id's bucket does not depend on its column's integer width, on
// dictionary encoding, on the row order or on the other rows.
func TestSplitStable(t *testing.T) {
	ids := make([]int64, 5000)
	for i := range ids {
		ids[i] = int64(1_000_000 + i*7)
	}
	base := mlBucketsOf(t, mlInt64s(ids...), 3)

	b32 := array.NewInt32Builder(memory.DefaultAllocator)
	bu := array.NewUint32Builder(memory.DefaultAllocator)
	for _, id := range ids {
		b32.Append(int32(id))
		bu.Append(uint32(id))
	}
	for name, a := range map[string]arrow.Array{"int32": b32.NewArray(), "uint32": bu.NewArray()} {
		got := mlBucketsOf(t, a, 3)
		for i := range got {
			if got[i] != base[i] {
				t.Fatalf("%s: row %d bucket %d, int64 gives %d", name, i, got[i], base[i])
			}
		}
	}
	b32.Release()
	bu.Release()

	// reversed order: each id keeps its bucket
	rev := make([]int64, len(ids))
	for i, id := range ids {
		rev[len(ids)-1-i] = id
	}
	got := mlBucketsOf(t, mlInt64s(rev...), 3)
	for i := range got {
		if got[len(ids)-1-i] != base[i] {
			t.Fatalf("reversed: id %d moved from bucket %d to %d", ids[i], base[i], got[len(ids)-1-i])
		}
	}
	// a different seed gives a different split
	other := mlBucketsOf(t, mlInt64s(ids...), 4)
	same := 0
	for i := range other {
		if other[i] == base[i] {
			same++
		}
	}
	if same > 10 {
		t.Errorf("seeds 3 and 4 agree on %d of %d buckets", same, len(ids))
	}
	// the holdout share is close to the requested fraction
	hold := 0
	cut := Split{Holdout: 0.2}.holdoutCut()
	for _, b := range base {
		if b < cut {
			hold++
		}
	}
	if frac := float64(hold) / float64(len(ids)); frac < 0.18 || frac > 0.22 {
		t.Errorf("holdout share %.3f, want about 0.2", frac)
	}

	// dictionary-encoded strings hash like plain strings
	words := []string{"a", "bb", "a", "ccc", "bb", "a"}
	plain := mlBucketsOf(t, mlStrings(words...), 0)
	db := array.NewDictionaryBuilder(memory.DefaultAllocator, &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}).(*array.BinaryDictionaryBuilder)
	for _, w := range words {
		if err := db.AppendString(w); err != nil {
			t.Fatal(err)
		}
	}
	dict := mlBucketsOf(t, db.NewArray(), 0)
	db.Release()
	for i := range words {
		if dict[i] != plain[i] {
			t.Errorf("dictionary %q: bucket %d, plain %d", words[i], dict[i], plain[i])
		}
	}
}

func TestSplitBadIDs(t *testing.T) {
	b := array.NewInt64Builder(memory.DefaultAllocator)
	b.AppendValues([]int64{1, 2}, nil)
	b.AppendNull()
	a := b.NewArray()
	defer a.Release()
	b.Release()
	err := mlIdBuckets(a, "customer_id", 0, 100, make([]uint16, 3))
	if err == nil || !strings.Contains(err.Error(), `"customer_id"`) || !strings.Contains(err.Error(), "row 102") {
		t.Errorf("null id: %v", err)
	}
	fb := array.NewFloat64Builder(memory.DefaultAllocator)
	fb.Append(1.5)
	fa := fb.NewArray()
	defer fa.Release()
	fb.Release()
	if err := mlIdBuckets(fa, "x", 0, 0, make([]uint16, 1)); err == nil || !strings.Contains(err.Error(), "integer or string") {
		t.Errorf("float id: %v", err)
	}
}

// ReadModel rejects malformed model files with an error, never a panic,
// so that Predict cannot index out of range or loop.
func TestReadModelRejectsBadModels(t *testing.T) {
	good := `{"format":"orch.model.v1","type":"gbdt","label":"y","features":["a","b"],
	"split":{"id":"id","holdout":0.2,"seed":0,"hash":"xxhash64","buckets":10000},"params":{},
	"gbdt":{"base_score":0,"trees":[{"feature":[0,-1,-1],"threshold":[0.5,0,0],"left":[1,-1,-1],"right":[2,-1,-1],"value":[0,-1,1]}]},
	"training":{}}`
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "m.json")
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	m, err := ReadModel(write(good))
	if err != nil {
		t.Fatalf("good model: %v", err)
	}
	out := make([]float64, 2)
	m.Predict([][]float32{{0, 1}, {0, 0}}, 2, out)
	if !(out[0] < 0.5 && out[1] > 0.5) {
		t.Errorf("predictions %v", out)
	}
	bad := []struct{ name, old, new string }{
		{"format", `"orch.model.v1"`, `"orch.model.v0"`},
		{"type", `"type":"gbdt"`, `"type":"forest"`},
		{"self loop", `"left":[1,`, `"left":[0,`},
		{"child out of range", `"right":[2,`, `"right":[9,`},
		{"feature out of range", `"feature":[0,`, `"feature":[5,`},
		{"feature -2", `"feature":[0,`, `"feature":[-2,`},
		{"array lengths", `"value":[0,-1,1]`, `"value":[0,1]`},
		{"split hash", `"xxhash64"`, `"md5"`},
		{"holdout", `"holdout":0.2`, `"holdout":0`},
		{"no features", `["a","b"]`, `[]`},
		{"logistic without coef", `"type":"gbdt"`, `"type":"logistic"`},
		{"empty tree", `{"feature":[0,-1,-1],"threshold":[0.5,0,0],"left":[1,-1,-1],"right":[2,-1,-1],"value":[0,-1,1]}`, `{"feature":[],"threshold":[],"left":[],"right":[],"value":[]}`},
		{"no gbdt block", `"gbdt":{`, `"gbdt":null,"x":{`},
		{"not JSON", good, `{`},
	}
	for _, b := range bad {
		s := strings.Replace(good, b.old, b.new, 1)
		if s == good {
			t.Fatalf("%s: %q not found", b.name, b.old)
		}
		if _, err := ReadModel(write(s)); err == nil {
			t.Errorf("%s: no error", b.name)
		}
	}
}

// Scoring in float32 (flat trees) sends every value the way the model
// file's float64 rule x <= threshold does, also at thresholds that are not
// float32 values and at float32 neighbours of them.
func TestPredictThresholdsExact(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 8))
	var thr []float64
	for range 200 {
		thr = append(thr, r.NormFloat64())
	}
	thr = append(thr, 0.1, -0.1, 1e-40, 0, 3.4e38, -3.4e38, 1e300)
	var xs []float32
	for _, th := range thr {
		x := float32(th)
		xs = append(xs, x, math.Nextafter32(x, float32(math.Inf(1))), math.Nextafter32(x, float32(math.Inf(-1))))
	}
	for _, th := range thr {
		m := &Model{Type: "gbdt", GBDT: &GBDTModel{Trees: []Tree{{
			Feature: []int32{0, -1, -1}, Threshold: []float64{th, 0, 0}, Left: []int32{1, -1, -1}, Right: []int32{2, -1, -1}, Value: []float64{0, -1, 1},
		}}}}
		out := make([]float64, len(xs))
		m.Predict([][]float32{xs}, len(xs), out)
		for i, x := range xs {
			left := float64(x) <= th
			if (out[i] < 0.5) != left {
				t.Fatalf("threshold %v, x %v: went %s", th, x, map[bool]string{true: "right", false: "left"}[left])
			}
		}
	}
}

// A logistic model predicts the same bits from 0/1 features given as lists
// of their ones (as validate loads boolean features) as from the whole
// columns, across prediction chunks.
func TestPredictListedColumns(t *testing.T) {
	cols, _ := mlChurnLike(3*mlPredictChunk + 77)
	n := len(cols[0])
	m := &Model{Type: "logistic", Logistic: &LogisticWeights{Intercept: -0.7}}
	listed := slices.Clone(cols)
	ones := make([][]int32, len(cols))
	for j := range cols {
		m.Logistic.Coef = append(m.Logistic.Coef, 0.1*math.Sin(float64(3*j+1)))
		if j >= 13 && j%3 != 0 {
			ones[j] = []int32{}
			for i, v := range cols[j] {
				if v == 1 {
					ones[j] = append(ones[j], int32(i))
				}
			}
			listed[j] = nil
		}
	}
	want := make([]float64, n)
	m.Predict(cols, n, want)
	got := make([]float64, n)
	m.predictParallel(listed, ones, n, got)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("row %d: %v from lists, %v from columns", i, got[i], want[i])
		}
	}
}
