package table

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// hoSame fails unless reading path through ctx (a Handoff giving it in
// memory) yields exactly what decoding the file yields: the same schema,
// metadata included, and the same batches, row for row and value for
// value, dictionaries and nulls included.
func hoSame(t *testing.T, ctx context.Context, path string, columns []string) {
	t.Helper()
	mem, err := Open(ctx, path, columns)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if mem.mem == nil {
		t.Fatal("the table was not given in memory")
	}
	dec, err := Open(context.Background(), path, columns)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	if !mem.Schema().Equal(dec.Schema()) || mem.Schema().String() != dec.Schema().String() {
		t.Fatalf("schema in memory:\n%v\ndecoded:\n%v", mem.Schema(), dec.Schema())
	}
	for b := 0; ; b++ {
		m, err := mem.Next()
		if err != nil {
			t.Fatal(err)
		}
		d, err := dec.Next()
		if err != nil {
			t.Fatal(err)
		}
		if m == nil || d == nil {
			if m != d {
				t.Fatalf("batch %d: in memory %v, decoded %v", b, m != nil, d != nil)
			}
			return
		}
		if m.NumRows() != d.NumRows() || !m.Schema().Equal(d.Schema()) {
			t.Fatalf("batch %d: %d rows in memory, %d decoded", b, m.NumRows(), d.NumRows())
		}
		for c := range int(m.NumCols()) {
			ma, da := m.Column(c), d.Column(c)
			if !arrow.TypeEqual(ma.DataType(), da.DataType()) || ma.NullN() != da.NullN() {
				t.Fatalf("batch %d column %s: %s with %d nulls in memory, %s with %d decoded", b, m.ColumnName(c), ma.DataType(), ma.NullN(), da.DataType(), da.NullN())
			}
			if !hoValuesEqual(ma, da) {
				t.Fatalf("batch %d column %s: values differ\nin memory: %v\ndecoded:   %v", b, m.ColumnName(c), ma, da)
			}
		}
	}
}

// hoValuesEqual compares arrays value by value; dictionary arrays by the
// values their indices stand for.
func hoValuesEqual(a, b arrow.Array) bool {
	da, okA := a.(*array.Dictionary)
	db, okB := b.(*array.Dictionary)
	if !okA || !okB {
		return array.Equal(a, b)
	}
	for i := range a.Len() {
		if a.IsNull(i) != b.IsNull(i) {
			return false
		}
		if a.IsValid(i) && da.Dictionary().ValueStr(da.GetValueIndex(i)) != db.Dictionary().ValueStr(db.GetValueIndex(i)) {
			return false
		}
	}
	return true
}

func TestHandoffMatchesDecoding(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	// Batches of odd sizes, each with its own dictionary: batches read
	// back span written arrays, so they are concatenations.
	var recs []arrow.RecordBatch
	first := 0
	for _, n := range []int{70000, 1000, 100000, 3, 40000} {
		recs = append(recs, wtBatch(r, first, n))
		first += n
	}
	defer func() {
		for _, rec := range recs {
			rec.Release()
		}
	}()
	dir := t.TempDir()
	h := NewHandoff(1 << 30)

	// Write: batches split across row groups of 50,000 rows.
	byBatch := filepath.Join(dir, "batches")
	h.Keep(byBatch)
	w, err := CreateWith(byBatch, wtSchema, Options{RowGroupRows: 50000, Handoff: h, Codec: LZ4Raw})
	if err != nil {
		t.Fatal(err)
	}
	wtFeed(t, recs, w.Write, w.Close)

	// WriteRowGroup: several arrays per column and row group.
	byGroup := filepath.Join(dir, "groups")
	h.Keep(byGroup)
	w, err = CreateWith(byGroup, wtSchema, Options{Handoff: h})
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range [][]arrow.RecordBatch{recs[:2], recs[2:]} {
		rows := 0
		for _, rec := range g {
			rows += int(rec.NumRows())
		}
		err := w.WriteRowGroup(t.Context(), rows, func(_ context.Context, c int, put func(arrow.Array) error) error {
			for _, rec := range g {
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
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	// Not asked for: nothing kept.
	other := filepath.Join(dir, "other")
	w, err = CreateWith(other, wtSchema, Options{Handoff: h})
	if err != nil {
		t.Fatal(err)
	}
	wtFeed(t, recs[:1], w.Write, w.Close)
	if m := h.Kept(other); m != nil {
		t.Error("a table nobody asked for was kept")
	}

	for _, path := range []string{byBatch, byGroup} {
		m := h.Kept(path)
		if m == nil {
			t.Fatalf("%s: nothing kept", filepath.Base(path))
		}
		defer m.Release()
		if m.NumRows() != int64(first) {
			t.Errorf("%s: %d rows kept, want %d", filepath.Base(path), m.NumRows(), first)
		}
		give := NewHandoff(0)
		give.Give(path, m)
		ctx := WithHandoff(t.Context(), give)
		t.Run(filepath.Base(path), func(t *testing.T) {
			hoSame(t, ctx, path, nil)
			hoSame(t, ctx, path, []string{"flag", "plan", "id"})
		})
	}
}

func TestHandoffLimit(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	rec := wtBatch(r, 0, 10000)
	defer rec.Release()
	path := filepath.Join(t.TempDir(), "t")
	h := NewHandoff(1000) // bytes: far less than the table
	h.Keep(path)
	w, err := CreateWith(path, wtSchema, Options{Handoff: h})
	if err != nil {
		t.Fatal(err)
	}
	wtFeed(t, []arrow.RecordBatch{rec}, w.Write, w.Close)
	if m := h.Kept(path); m != nil {
		t.Errorf("a table of %d bytes was kept under a limit of 1000", m.Bytes())
	}
	// A failed write keeps nothing either.
	h = NewHandoff(1 << 30)
	h.Keep(path)
	w, err = CreateWith(path, wtSchema, Options{Handoff: h})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if m := h.Kept(path); m != nil {
		t.Error("an aborted write kept its table")
	}
	// Open of a column the table does not have is an error naming it.
	h.Give(path, &Mem{schema: wtSchema})
	if _, err := Open(WithHandoff(t.Context(), h), path, []string{"nope"}); err == nil {
		t.Error("Open of a missing column in memory: no error")
	}
}
