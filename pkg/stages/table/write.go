package table

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"golang.org/x/sys/unix"

	"github.com/orch-dev/orch/pkg/digest"
)

// MaxRowGroup is the most rows a row group of a table file holds.
const MaxRowGroup = 1 << 20

// Options tunes a Writer. The zero value is the default.
type Options struct {
	// Dict says, per column, whether it gets arrow-go's Parquet dictionary
	// encoding: worth it for low-cardinality columns, a waste of hashing
	// for ids and measurements. nil: string and dictionary columns only.
	// Float columns not listed get a dictionary anyway in the column
	// chunks of few distinct values (fastChunk, dictMax).
	Dict []bool
	// Workers is how many columns are encoded at once (0: GOMAXPROCS).
	Workers int
	// RowGroupRows is the most rows per row group (0: MaxRowGroup).
	RowGroupRows int
	// NoStats lists the columns written without statistics: for columns
	// whose statistics tell a reader nothing (one-hot 0/1 columns), where
	// computing them is a tenth of the write. Dictionary columns never
	// have them.
	NoStats []bool
	// Codec compresses the pages (zero: Zstd).
	Codec Codec
	// Handoff, when it asks for the file (Handoff.Keep), gets the arrays
	// written, once the file is closed: a kind passes HandoffFrom(ctx).
	Handoff *Handoff
}

// Codec is how a table file's pages are compressed.
type Codec int

const (
	// Zstd, level 1: the smallest files, for tables read seldom or shipped
	// (ingest's output, the fitted statistics).
	Zstd Codec = iota
	// LZ4Raw (Parquet's LZ4_RAW): files 30-50% larger than Zstd's, encoded
	// about twice and decoded three to five times as fast; for the
	// intermediate tables that the next stage reads at once. pandas
	// (pyarrow), Polars and DuckDB read it.
	LZ4Raw
)

// Writer writes a Parquet table file (zstd level 1 or LZ4_RAW, row groups of up to
// MaxRowGroup rows, the Arrow schema stored so dictionary and narrow types
// round-trip). Unlike pqarrow.FileWriter, which encodes and compresses one
// column after another, it encodes the columns of a row group concurrently:
// each column of a buffered row group has its own encoder and page buffer,
// so different goroutines can fill different columns. Fixed-width columns
// (integers, dates, floats, booleans) are paged by orch's own fastChunk,
// the others by arrow-go's column writers; the file is assembled from
// arrow-go's page writers and metadata builders. Only flat schemas (no
// list, struct or map columns) are supported: the kinds write no others.
//
// A Writer is not safe for concurrent use.
type Writer struct {
	path    string
	f       *os.File
	sink    *tellWriter // over the file, hashing it
	meta    *metadata.FileMetaDataBuilder
	pprops  *parquet.WriterProperties
	schema  *arrow.Schema
	props   pqarrow.ArrowWriterProperties
	dict    []bool
	fast    []bool      // columns written by a fastChunk
	bufs    []*pageBufs // theirs, kept from row group to row group
	workers int
	maxRows int // per row group
	ngroups int // row groups started

	keep *keeper // the arrays written, for a Handoff; nil: none kept
	// cost is how long each column took in the last columns call: the
	// next call hands the costliest out first, so that no worker is left
	// with a long column while the others idle.
	cost   []time.Duration
	rgw    *rowGroup // the open row group, or nil
	rgRows int
	closed bool
	err    error // the first write error: the file is unusable
}

// Create opens a Writer for schema at path with the default Options.
func Create(path string, schema *arrow.Schema) (*Writer, error) {
	return CreateWith(path, schema, Options{})
}

// CreateWith opens a Writer for schema at path.
func CreateWith(path string, schema *arrow.Schema, opt Options) (*Writer, error) {
	maxRows := opt.RowGroupRows
	if maxRows <= 0 || maxRows > MaxRowGroup {
		maxRows = MaxRowGroup
	}
	dict := make([]bool, schema.NumFields())
	for i, f := range schema.Fields() {
		switch f.Type.ID() {
		case arrow.LIST, arrow.LARGE_LIST, arrow.FIXED_SIZE_LIST, arrow.LIST_VIEW, arrow.LARGE_LIST_VIEW,
			arrow.STRUCT, arrow.MAP, arrow.SPARSE_UNION, arrow.DENSE_UNION, arrow.RUN_END_ENCODED:
			return nil, fmt.Errorf("%s: column %q: nested type %s is not supported", path, f.Name, f.Type)
		case arrow.STRING, arrow.LARGE_STRING, arrow.BINARY, arrow.LARGE_BINARY, arrow.DICTIONARY:
			dict[i] = true
		}
		if opt.Dict != nil {
			dict[i] = i < len(opt.Dict) && opt.Dict[i]
		}
	}
	var codec []parquet.WriterProperty
	switch opt.Codec {
	case Zstd:
		codec = []parquet.WriterProperty{parquet.WithCompression(compress.Codecs.Zstd), parquet.WithCompressionLevel(1)}
	case LZ4Raw:
		codec = []parquet.WriterProperty{parquet.WithCompression(compress.Codecs.Lz4Raw)}
	default:
		return nil, fmt.Errorf("%s: unknown codec %d", path, opt.Codec)
	}
	opts := append(codec,
		parquet.WithDictionaryDefault(false),
		parquet.WithMaxRowGroupLength(int64(maxRows)),
	)
	for i, f := range schema.Fields() {
		if dict[i] {
			opts = append(opts, parquet.WithDictionaryFor(f.Name, true))
		} else if deltaEncoded(f.Type) {
			opts = append(opts, parquet.WithEncodingFor(f.Name, parquet.Encodings.DeltaBinaryPacked))
		}
		// Dictionary columns never get statistics: pqarrow computes them by
		// hashing every batch's indices to find the referenced values (the
		// dictionary object differs from batch to batch), a tenth of
		// preprocess's CPU, for a min/max of category names that prunes
		// nothing.
		if i < len(opt.NoStats) && opt.NoStats[i] || f.Type.ID() == arrow.DICTIONARY {
			opts = append(opts, parquet.WithStatsFor(f.Name, false))
		}
	}
	props := parquet.NewWriterProperties(opts...)
	aprops := pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())
	pqschema, err := pqarrow.ToParquet(schema, props, aprops)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// What pqarrow.WithStoreSchema stores, so readers get the Arrow types.
	meta := metadata.KeyValueMetadata{}
	if err := meta.Append("ARROW:schema", base64.StdEncoding.EncodeToString(flight.SerializeSchema(schema, memory.DefaultAllocator))); err != nil {
		return nil, err
	}
	fast := make([]bool, schema.NumFields())
	for i, f := range schema.Fields() {
		// Dictionary arrays keep their dictionary; other columns listed
		// in dict go through arrow-go's dictionary encoder.
		fast[i] = fastType(f.Type) && dict[i] == (f.Type.ID() == arrow.DICTIONARY)
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	// The file's digest is computed as it is written: the engine
	// collecting it into the cache need not read it again.
	sink := &tellWriter{w: digest.NewFileWriter(f)}
	if _, err := sink.Write([]byte(parquetMagic)); err != nil {
		sink.w.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	workers := opt.Workers
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	return &Writer{path: path, f: f, sink: sink, meta: metadata.NewFileMetadataBuilder(pqschema, props, meta), pprops: props,
		schema: schema, props: aprops, dict: dict, fast: fast, bufs: make([]*pageBufs, len(fast)), workers: workers, maxRows: maxRows,
		keep: newKeeper(opt.Handoff, path, schema.NumFields())}, nil
}

// parquetMagic starts and ends a Parquet file.
const parquetMagic = "PAR1"

// tellWriter counts the bytes written through it: arrow-go's page writers
// ask where in the file they are.
type tellWriter struct {
	w *digest.FileWriter
	n int64
}

func (t *tellWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	t.n += int64(n)
	return n, err
}

func (t *tellWriter) Tell() int64 { return t.n }

// rowGroup is the open row group: per column, a fastChunk or arrow-go's
// column writer, each with its own page buffer, so that different
// goroutines can fill different columns.
type rowGroup struct {
	meta *metadata.RowGroupMetaDataBuilder
	cols []chunk
}

// chunk writes one column chunk: fast when set, else cw.
type chunk struct {
	fast *fastChunk
	cw   file.ColumnChunkWriter
}

// startRowGroup opens a row group.
func (w *Writer) startRowGroup() error {
	rg := &rowGroup{meta: w.meta.AppendRowGroup(), cols: make([]chunk, w.schema.NumFields())}
	for c := range rg.cols {
		cm := rg.meta.NextColumnChunk()
		path := cm.Descr().Path()
		pager, err := file.NewPageWriter(w.sink, w.pprops.CompressionFor(path), w.pprops.CompressionLevelFor(path), cm,
			int16(w.ngroups), int16(c), w.pprops.Allocator(), true, nil, nil)
		if err != nil {
			return err
		}
		if w.fast[c] {
			rg.cols[c].fast = newFastChunk(cm, pager, w.schema.Field(c).Type, w.pprops, w.bufs[c])
			w.bufs[c] = rg.cols[c].fast.pageBufs
			w.bufs[c].dict = rg.cols[c].fast.dict
		} else {
			rg.cols[c].cw = file.NewColumnChunkWriter(cm, pager, w.pprops)
		}
	}
	w.ngroups++
	w.rgw, w.rgRows = rg, 0
	return nil
}

// deltaEncoded reports whether a column of type dt is written with
// DELTA_BINARY_PACKED rather than PLAIN: integers and dates. Parquet stores
// int8 and int16 as 4-byte INT32 values; bit-packed deltas make their pages
// 4-8x smaller before compression, so ingest spends about 10% less CPU
// (zstd compresses less), and the files are 15-35% smaller.
func deltaEncoded(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.INT8, arrow.INT16, arrow.UINT8, arrow.UINT16, arrow.INT32, arrow.DATE32, arrow.INT64:
		return true
	}
	return false
}

// Write appends one batch to the open row group (starting one if needed,
// and splitting the batch where a row group fills up), its columns encoded
// concurrently.
func (w *Writer) Write(rec arrow.RecordBatch) error {
	if err := w.usable(); err != nil {
		return err
	}
	if err := w.write(rec); err != nil {
		w.err = err
		return err
	}
	return nil
}

func (w *Writer) write(rec arrow.RecordBatch) error {
	if int(rec.NumCols()) != w.schema.NumFields() {
		return fmt.Errorf("%s: batch has %d columns, the table %d", w.path, rec.NumCols(), w.schema.NumFields())
	}
	n := int(rec.NumRows())
	for off := 0; off < n; {
		if w.rgw == nil {
			if err := w.startRowGroup(); err != nil {
				return err
			}
		}
		take := min(n-off, w.maxRows-w.rgRows)
		err := w.columns(context.Background(), func(ctx context.Context, c int, cw *chunk, levels *[]int16) error {
			a := rec.Column(c)
			if off != 0 || take != n {
				a = array.NewSlice(a, int64(off), int64(off+take))
				defer a.Release()
			}
			w.keep.add(c, a)
			return writeArray(ctx, cw, a, levels)
		})
		w.keep.trim()
		if err != nil {
			return err
		}
		w.rgRows += take
		off += take
		if w.rgRows == w.maxRows {
			if err := w.endRowGroup(); err != nil {
				return err
			}
		}
	}
	return nil
}

// WriteRowGroup writes one whole row group of rows rows, after closing the
// open one, if any. fill(ctx, c, put) must call put with the arrays of
// column c, in row order, totalling rows; fill runs for different columns
// concurrently, so a caller can convert its columns in parallel too.
func (w *Writer) WriteRowGroup(ctx context.Context, rows int, fill func(ctx context.Context, c int, put func(arrow.Array) error) error) error {
	if err := w.usable(); err != nil {
		return err
	}
	if err := w.writeRowGroup(ctx, rows, fill); err != nil {
		w.err = err
		return err
	}
	return nil
}

// usable returns why the writer cannot take more rows, if it cannot.
func (w *Writer) usable() error {
	if w.closed {
		return fmt.Errorf("%s: write after close", w.path)
	}
	return w.err
}

func (w *Writer) writeRowGroup(ctx context.Context, rows int, fill func(ctx context.Context, c int, put func(arrow.Array) error) error) error {
	if rows > w.maxRows {
		return fmt.Errorf("%s: row group of %d rows, at most %d", w.path, rows, w.maxRows)
	}
	if w.rgw != nil {
		if err := w.endRowGroup(); err != nil {
			return err
		}
	}
	if err := w.startRowGroup(); err != nil {
		return err
	}
	w.rgRows = rows
	err := w.columns(ctx, func(wctx context.Context, c int, cw *chunk, levels *[]int16) error {
		n := 0
		err := fill(wctx, c, func(a arrow.Array) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			n += a.Len()
			w.keep.add(c, a)
			return writeArray(wctx, cw, a, levels)
		})
		if err == nil && n != rows {
			err = fmt.Errorf("%d rows, want %d", n, rows)
		}
		return err
	})
	w.keep.trim()
	if err != nil {
		return err
	}
	return w.endRowGroup()
}

// columns runs do for every column of the open row group, w.workers
// columns at a time; each worker has its own Arrow write context and
// definition-level buffer. The first error wins and stops the others.
func (w *Writer) columns(ctx context.Context, do func(ctx context.Context, c int, cw *chunk, levels *[]int16) error) error {
	ncol := w.schema.NumFields()
	if len(w.cost) != ncol {
		w.cost = make([]time.Duration, ncol)
	}
	order := make([]int, ncol)
	for c := range order {
		order[c] = c
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(w.cost[b], w.cost[a]) })
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		failed   atomic.Bool
	)
	for range min(w.workers, ncol) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx := pqarrow.NewArrowWriteContext(ctx, &w.props)
			var levels []int16
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= ncol {
					return
				}
				c := order[i]
				start := time.Now()
				err := func() (err error) {
					defer func() {
						if p := recover(); p != nil {
							err = fmt.Errorf("internal error: %v", p)
						}
					}()
					return do(wctx, c, &w.rgw.cols[c], &levels)
				}()
				w.cost[c] = time.Since(start) // each column by one worker at a time
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("%s: write column %s: %w", w.path, w.schema.Field(c).Name, err)
					}
					mu.Unlock()
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

// endRowGroup encodes and compresses the last page of every column
// concurrently, then writes the row group out (serially: a copy of buffers
// already compressed).
func (w *Writer) endRowGroup() error {
	err := w.columns(context.Background(), func(_ context.Context, c int, cw *chunk, _ *[]int16) error {
		// A dictionary column's pages must wait for its dictionary page,
		// which the serial Close writes.
		switch {
		case cw.fast != nil:
			return cw.fast.finish()
		case w.dict[c]:
			return nil
		}
		if f, ok := cw.cw.(interface{ FlushBufferedDataPages() error }); ok {
			return f.FlushBufferedDataPages()
		}
		return nil
	})
	rg := w.rgw
	w.rgw = nil
	if err == nil {
		err = rg.close(w.rgRows, int16(w.ngroups-1))
	}
	w.writeback()
	return err
}

// close writes the row group's column chunks to the file, in order, and
// finishes its metadata.
func (rg *rowGroup) close(rows int, ordinal int16) error {
	for _, cw := range rg.cols {
		var err error
		if cw.fast != nil {
			err = cw.fast.close()
		} else {
			err = cw.cw.Close()
		}
		if err != nil {
			return err
		}
	}
	rg.meta.SetNumRows(rows)
	return rg.meta.Finish(0, ordinal)
}

// writeback starts writing the file's dirty pages to disk, without
// waiting, so the disk works while the stages compute: a run's closing
// syncfs (orch run --sync, store.Local.Sync) then finds most of a large
// table written already (0.26 -> 0.13 s at 3M rows), and without it the
// kernel is not left a run's tables to write at once. No measurable cost
// to a run without --sync (3 alternating 3M-row runs each way).
func (w *Writer) writeback() {
	_ = unix.SyncFileRange(int(w.f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

// errNullInRequired is the error of a null in a column declared not
// nullable.
var errNullInRequired = errors.New("null in a column that is not nullable")

// writeArray writes a flat array to ch, with its definition levels.
func writeArray(ctx context.Context, ch *chunk, a arrow.Array, levels *[]int16) error {
	if ch.fast != nil {
		return ch.fast.write(a)
	}
	cw := ch.cw
	var def []int16
	if cw.LevelInfo().DefLevel > 0 {
		*levels = defLevels(*levels, a)
		def = *levels
	} else if a.NullN() > 0 {
		return errNullInRequired
	}
	return pqarrow.WriteArrowToColumn(ctx, cw, a, def, nil, true)
}

// defLevels returns the Parquet definition levels of a flat, nullable
// column: 1 for a value, 0 for a null.
func defLevels(buf []int16, a arrow.Array) []int16 {
	n := a.Len()
	if cap(buf) < n {
		buf = make([]int16, n)
	}
	buf = buf[:n]
	if a.NullN() == 0 {
		for i := range buf {
			buf[i] = 1
		}
		return buf
	}
	for i := range buf {
		if a.IsValid(i) {
			buf[i] = 1
		} else {
			buf[i] = 0
		}
	}
	return buf
}

// Close writes the open row group and finishes the file. After a failed
// write it only closes the file and returns that failure.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	if w.err != nil {
		w.Abort()
		return w.err
	}
	var err error
	if w.rgw != nil {
		err = w.endRowGroup()
	}
	w.closed = true
	w.writeback() // before the footer: the file's close flushes that
	if err == nil {
		err = w.footer()
	}
	if cerr := w.sink.w.Close(); err == nil { // closes the file too
		err = cerr
	}
	if err != nil {
		w.f.Close()
		w.keep.release()
		return fmt.Errorf("%s: %w", w.path, err)
	}
	if w.keep != nil {
		if m := w.keep.mem(w.path, w.schema); m != nil {
			w.keep.h.put(w.path, m)
		}
		w.keep = nil
	}
	return nil
}

// footer writes the file's metadata, its length and the closing magic.
func (w *Writer) footer() error {
	md, err := w.meta.Finish()
	if err != nil {
		return err
	}
	n, err := md.WriteTo(w.sink, nil)
	if err != nil {
		return err
	}
	_, err = w.sink.Write(binary.LittleEndian.AppendUint32(nil, uint32(n)))
	if err == nil {
		_, err = w.sink.Write([]byte(parquetMagic))
	}
	return err
}

// Abort closes the file after a failed write; the caller removes it.
func (w *Writer) Abort() {
	if w.closed {
		return
	}
	w.closed = true
	w.keep.release()
	w.keep = nil
	_ = w.sink.w.Close()
	_ = w.f.Close()
}
