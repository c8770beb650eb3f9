package table

import (
	"path/filepath"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// A table written with Create streams back through Open with the same
// schema (dictionary and narrow types included), values and nulls.
func TestParquetRoundTrip(t *testing.T) {
	schema := arrow.NewSchema([]arrow.Field{
		{Name: "id", Type: arrow.PrimitiveTypes.Int32},
		{Name: "charges", Type: arrow.PrimitiveTypes.Float32, Nullable: true},
		{Name: "plan", Type: &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int8, ValueType: arrow.BinaryTypes.String}},
	}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Int32Builder).AppendValues([]int32{1, 2, 3}, nil)
	b.Field(1).(*array.Float32Builder).AppendValues([]float32{9.5, 0, 7.25}, []bool{true, false, true})
	db := b.Field(2).(*array.BinaryDictionaryBuilder)
	for _, s := range []string{"basic", "premium", "basic"} {
		if err := db.AppendString(s); err != nil {
			t.Fatal(err)
		}
	}
	rec := b.NewRecordBatch()
	defer rec.Release()

	path := filepath.Join(t.TempDir(), "t.parquet")
	w, err := Create(path, schema)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	tbl, err := ReadAll(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer tbl.Release()
	for i, want := range schema.Fields() {
		got := tbl.Schema().Field(i)
		if got.Name != want.Name || !arrow.TypeEqual(got.Type, want.Type) || got.Nullable != want.Nullable {
			t.Errorf("field %d: got %v, want %v", i, got, want)
		}
	}
	if tbl.NumRows() != 3 {
		t.Fatalf("rows: got %d, want 3", tbl.NumRows())
	}
	charges := tbl.Column(1).Data().Chunk(0).(*array.Float32)
	if charges.IsValid(1) || charges.Value(2) != 7.25 {
		t.Errorf("charges: got %v", charges)
	}
	plan := tbl.Column(2).Data().Chunk(0).(*array.Dictionary)
	if got := plan.Dictionary().(*array.String).Value(plan.GetValueIndex(1)); got != "premium" {
		t.Errorf("plan[1]: got %q", got)
	}

	r, err := Open(t.Context(), path, []string{"plan", "id"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if names := []string{r.Schema().Field(0).Name, r.Schema().Field(1).Name}; names[0] != "id" && names[0] != "plan" {
		t.Errorf("projected schema: %v", names)
	}
	if _, err := Open(t.Context(), path, []string{"nope"}); err == nil {
		t.Error("Open of a missing column: no error")
	}
}
