package table

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
)

// hoSubset fails unless reading columns of path through ctx (a Handoff
// giving it in memory) yields what decoding them yields.
func hoSubset(t *testing.T, ctx context.Context, path string, columns []string) {
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
	if mem.Schema().String() != dec.Schema().String() {
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
		if m.NumRows() != d.NumRows() {
			t.Fatalf("batch %d: %d rows in memory, %d decoded", b, m.NumRows(), d.NumRows())
		}
		for c := range int(m.NumCols()) {
			if !sameValues(m.Column(c), d.Column(c)) {
				t.Fatalf("batch %d column %s: in memory %v, decoded %v", b, m.ColumnName(c), m.Column(c), d.Column(c))
			}
		}
	}
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
		wtGroup(t, w, g)
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
			if err := Verify(t.Context(), path, m); err != nil {
				t.Fatal(err)
			}
			hoSubset(t, ctx, path, []string{"flag", "plan", "id"})
		})
	}
	// Verify notices a table that is not what the file holds.
	if err := Verify(t.Context(), other, h2(t, filepath.Join(dir, "again"), recs)); err == nil {
		t.Error("Verify: a table of other rows passed")
	}
}

// h2 writes recs to path again, keeping them, and returns the table kept.
func h2(t *testing.T, path string, recs []arrow.RecordBatch) *Mem {
	h := NewHandoff(1 << 30)
	h.Keep(path)
	w, err := CreateWith(path, wtSchema, Options{Handoff: h})
	if err != nil {
		t.Fatal(err)
	}
	wtFeed(t, recs, w.Write, w.Close)
	m := h.Kept(path)
	if m == nil {
		t.Fatal("nothing kept")
	}
	t.Cleanup(m.Release)
	return m
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
