package table

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// Mem is a table file's rows kept in memory: the arrays its Writer was
// given, column by column, in row order. Reading a Mem yields what decoding
// the file yields (the same schema, values and nulls, in batches of
// BatchRows rows), without the decoding. A Mem is immutable and safe for
// concurrent readers; it holds its arrays until Release.
type Mem struct {
	schema *arrow.Schema
	cols   [][]arrow.Array
	rows   int64
	bytes  int64
}

// Schema returns the table's schema.
func (m *Mem) Schema() *arrow.Schema { return m.schema }

// NumRows returns the number of rows.
func (m *Mem) NumRows() int64 { return m.rows }

// Bytes returns the size of the buffers the table holds.
func (m *Mem) Bytes() int64 { return m.bytes }

// Column returns column c's arrays, in row order. They stay valid until
// Release; a caller keeping one longer retains it.
func (m *Mem) Column(c int) []arrow.Array { return m.cols[c] }

// Release drops the arrays.
func (m *Mem) Release() {
	for _, col := range m.cols {
		for _, a := range col {
			a.Release()
		}
	}
	m.cols = nil
}

// Handoff carries tables between built-in stages of one `orch run` in one
// process, so a stage reading what the stage before it has just written
// gets the arrays instead of decoding the file. The engine makes one per
// attempt: Keep names the output files whose Writers keep what they write
// (taken after the stage with Kept), Give the input files with their
// tables (which Open then reads from memory). The engine matches a kept
// table to a consumer's input by the content digest of the file, so a
// table is only ever given for a file with the very bytes its writer
// wrote. A Handoff is safe for concurrent use.
type Handoff struct {
	mu    sync.Mutex
	limit int64           // the most bytes one kept table may hold
	keep  map[string]bool // output paths to keep
	kept  map[string]*Mem // what their writers wrote, once closed
	given map[string]*Mem // input paths and their tables
}

// NewHandoff returns an empty Handoff whose writers stop keeping a table
// once it holds more than limit bytes.
func NewHandoff(limit int64) *Handoff {
	return &Handoff{limit: limit, keep: map[string]bool{}, kept: map[string]*Mem{}, given: map[string]*Mem{}}
}

// Keep asks the Writer of the file at path to keep what it writes.
func (h *Handoff) Keep(path string) {
	h.mu.Lock()
	h.keep[path] = true
	h.mu.Unlock()
}

// Give makes Open read the file at path from m, which the caller keeps
// alive (unreleased) until the stage is done.
func (h *Handoff) Give(path string, m *Mem) {
	h.mu.Lock()
	h.given[path] = m
	h.mu.Unlock()
}

// Kept returns, and hands over to the caller, the table the Writer of the
// file at path kept, or nil.
func (h *Handoff) Kept(path string) *Mem {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.kept[path]
	delete(h.kept, path)
	return m
}

// Release drops the kept tables that nobody took. A nil Handoff has none.
func (h *Handoff) Release() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for p, m := range h.kept {
		m.Release()
		delete(h.kept, p)
	}
}

func (h *Handoff) wants(path string) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.keep[path]
}

func (h *Handoff) put(path string, m *Mem) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.kept[path]; old != nil {
		old.Release()
	}
	h.kept[path] = m
}

type handoffKey struct{}

// WithHandoff returns ctx carrying h, for the stage's Open and Writers.
func WithHandoff(ctx context.Context, h *Handoff) context.Context {
	return context.WithValue(ctx, handoffKey{}, h)
}

// HandoffFrom returns the Handoff ctx carries, or nil. A kind passes it
// to its table Writer (Options.Handoff).
func HandoffFrom(ctx context.Context) *Handoff {
	h, _ := ctx.Value(handoffKey{}).(*Handoff)
	return h
}

// Given returns the table given for the file at path in ctx's Handoff, or
// nil: then the file is to be decoded.
func Given(ctx context.Context, path string) *Mem {
	h := HandoffFrom(ctx)
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.given[path]
}

// keeper collects a Writer's arrays for its Handoff.
type keeper struct {
	h     *Handoff
	cols  [][]arrow.Array
	bytes []int64 // per column: columns are filled concurrently
	total atomic.Int64
	over  atomic.Bool // past the limit: nothing more is kept
}

func newKeeper(h *Handoff, path string, ncol int) *keeper {
	if !h.wants(path) {
		return nil
	}
	return &keeper{h: h, cols: make([][]arrow.Array, ncol), bytes: make([]int64, ncol)}
}

// add keeps a, column c's next array. Different columns may be added
// concurrently; one column's arrays come from one goroutine at a time.
func (k *keeper) add(c int, a arrow.Array) {
	if k == nil || k.over.Load() {
		return
	}
	n := arrayBytes(a.Data())
	if k.total.Add(n) > k.h.limit {
		k.over.Store(true)
		return
	}
	a.Retain()
	k.cols[c] = append(k.cols[c], a)
	k.bytes[c] += n
}

// trim drops what was kept once the table has grown past the limit,
// between the concurrent column writes (the writer calls it after each
// batch or row group), so a table too large to keep costs no more than
// the limit while it is written.
func (k *keeper) trim() {
	if k != nil && k.over.Load() && k.cols != nil {
		(&Mem{cols: k.cols}).Release()
		k.cols = nil
	}
}

// mem returns the kept table of the file at path, just written with
// schema, or nil (and releases what it kept) when it grew past the limit,
// its columns disagree on the number of rows, or the schema a reader of
// the file gets differs from schema in more than the fields' metadata
// (pqarrow adds PARQUET:field_id): the Mem has the reader's schema.
func (k *keeper) mem(path string, schema *arrow.Schema) *Mem {
	m := &Mem{cols: k.cols}
	k.cols = nil
	if m.cols == nil { // trimmed
		return nil
	}
	if sc, err := fileSchema(path); err != nil || !sameTypes(sc, schema) {
		k.over.Store(true)
	} else {
		m.schema = sc
	}
	for c, col := range m.cols {
		var n int64
		for _, a := range col {
			n += int64(a.Len())
		}
		if c == 0 {
			m.rows = n
		}
		m.bytes += k.bytes[c]
		if n != m.rows {
			k.over.Store(true)
		}
	}
	if k.over.Load() {
		m.Release()
		return nil
	}
	return m
}

// release drops what was kept (a failed write).
func (k *keeper) release() {
	if k == nil {
		return
	}
	(&Mem{cols: k.cols}).Release()
	k.cols = nil
}

// arrayBytes is the size of the buffers of d and its children and
// dictionary: what keeping the array keeps alive.
func arrayBytes(d arrow.ArrayData) int64 {
	var n int64
	for _, b := range d.Buffers() {
		if b != nil {
			n += int64(b.Len())
		}
	}
	for _, c := range d.Children() {
		n += arrayBytes(c)
	}
	if dd, ok := d.(*array.Data); ok {
		// a typed nil when there is none
		if dict, ok := dd.Dictionary().(*array.Data); ok && dict != nil {
			n += arrayBytes(dict)
		}
	}
	return n
}

// memReader streams a Mem's columns in batches of BatchRows rows, as
// pqarrow's record reader does a file's: a batch within one array is a
// slice of it, one spanning arrays a concatenation.
type memReader struct {
	m      *Mem
	schema *arrow.Schema
	idx    []int // the Mem's columns read
	at     int64 // the next row
	cur    arrow.RecordBatch
}

func newMemReader(m *Mem, columns []string, path string) (*memReader, error) {
	r := &memReader{m: m, schema: m.schema}
	if columns == nil {
		for c := range m.cols {
			r.idx = append(r.idx, c)
		}
		return r, nil
	}
	fields := make([]arrow.Field, 0, len(columns))
	for _, name := range columns {
		i := m.schema.FieldIndices(name)
		if len(i) == 0 {
			return nil, fmt.Errorf("%s: no column %q", path, name)
		}
		r.idx = append(r.idx, i[0])
		fields = append(fields, m.schema.Field(i[0]))
	}
	md := m.schema.Metadata()
	r.schema = arrow.NewSchema(fields, &md)
	return r, nil
}

func (r *memReader) next() (arrow.RecordBatch, error) {
	if r.cur != nil {
		r.cur.Release()
		r.cur = nil
	}
	if r.at >= r.m.rows {
		return nil, nil
	}
	n := min(int64(BatchRows), r.m.rows-r.at)
	arrs := make([]arrow.Array, len(r.idx))
	defer func() {
		for _, a := range arrs {
			if a != nil {
				a.Release()
			}
		}
	}()
	for j, c := range r.idx {
		a, err := rowsOf(r.m.cols[c], r.at, r.at+n)
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", r.schema.Field(j).Name, err)
		}
		arrs[j] = a
	}
	r.at += n
	r.cur = array.NewRecordBatch(r.schema, arrs, n)
	return r.cur, nil
}

func (r *memReader) close() {
	if r.cur != nil {
		r.cur.Release()
		r.cur = nil
	}
}

// rowsOf returns rows [from, to) of the column made of arrs: a slice when
// they lie in one array, else a concatenation.
func rowsOf(arrs []arrow.Array, from, to int64) (arrow.Array, error) {
	var parts []arrow.Array
	var start int64
	for _, a := range arrs {
		end := start + int64(a.Len())
		if end > from && start < to {
			lo, hi := max(from, start)-start, min(to, end)-start
			parts = append(parts, array.NewSlice(a, lo, hi))
		}
		if end >= to {
			break
		}
		start = end
	}
	if len(parts) == 1 {
		return parts[0], nil
	}
	defer func() {
		for _, p := range parts {
			p.Release()
		}
	}()
	return array.Concatenate(parts, memory.DefaultAllocator)
}

// fileSchema returns the Arrow schema a reader of the Parquet file at path
// gets, from its footer.
func fileSchema(path string) (*arrow.Schema, error) {
	pf, err := file.OpenParquetFile(path, false)
	if err != nil {
		return nil, err
	}
	defer pf.Close()
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		return nil, err
	}
	return fr.Schema()
}

// sameTypes reports whether a and b have the same fields (names, types,
// nullability), whatever their metadata.
func sameTypes(a, b *arrow.Schema) bool {
	if a.NumFields() != b.NumFields() {
		return false
	}
	for i, fa := range a.Fields() {
		fb := b.Field(i)
		if fa.Name != fb.Name || fa.Nullable != fb.Nullable || !arrow.TypeEqual(fa.Type, fb.Type) {
			return false
		}
	}
	return true
}

// Verify reports how reading m differs from decoding the file at path,
// or nil when it yields the same: the schema (metadata included), and
// batch by batch the same rows, types, nulls and values (dictionary
// columns compared by the values their indices stand for, NaN equal to
// NaN). ORCH_HANDOFF=verify has the engine check every kept table with it.
func Verify(ctx context.Context, path string, m *Mem) error {
	mr, err := newMemReader(m, nil, path)
	if err != nil {
		return err
	}
	defer mr.close()
	dec, err := Open(WithHandoff(ctx, nil), path, nil)
	if err != nil {
		return err
	}
	defer dec.Close()
	if !mr.schema.Equal(dec.Schema()) || mr.schema.String() != dec.Schema().String() {
		return fmt.Errorf("%s: schema in memory:\n%v\ndecoded:\n%v", path, mr.schema, dec.Schema())
	}
	for b := 0; ; b++ {
		mb, err := mr.next()
		if err != nil {
			return err
		}
		db, err := dec.Next()
		if err != nil {
			return err
		}
		if mb == nil || db == nil {
			if mb != nil || db != nil {
				return fmt.Errorf("%s: batch %d: in memory %v, decoded %v", path, b, mb != nil, db != nil)
			}
			return nil
		}
		if mb.NumRows() != db.NumRows() {
			return fmt.Errorf("%s: batch %d: %d rows in memory, %d decoded", path, b, mb.NumRows(), db.NumRows())
		}
		for c := range int(mb.NumCols()) {
			ma, da := mb.Column(c), db.Column(c)
			if !arrow.TypeEqual(ma.DataType(), da.DataType()) || ma.NullN() != da.NullN() || !sameValues(ma, da) {
				return fmt.Errorf("%s: batch %d, column %s: values differ", path, b, mb.ColumnName(c))
			}
		}
	}
}

// sameValues compares arrays value by value (NaN equal to NaN);
// dictionary arrays by the values their indices stand for.
func sameValues(a, b arrow.Array) bool {
	da, okA := a.(*array.Dictionary)
	db, okB := b.(*array.Dictionary)
	if !okA || !okB {
		return array.ApproxEqual(a, b, array.WithNaNsEqual(true), array.WithAbsTolerance(0))
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
