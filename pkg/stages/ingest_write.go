package stages

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/flight"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// ingWriter writes a Parquet table file like table.Create (zstd level 1,
// row groups of up to 1<<20 rows, the Arrow schema stored) but encodes the
// columns of a row group concurrently: pqarrow.FileWriter encodes one column
// after another, which made the Parquet write the slowest part of ingest.
// Each column of a buffered row group has its own encoder and page buffer,
// so different goroutines can fill different columns.
type ingWriter struct {
	f      *os.File
	w      *file.Writer
	schema *arrow.Schema
	props  pqarrow.ArrowWriterProperties
	dict   []bool // Parquet dictionary encoding per column
	rows   int64
}

// ingMaxRowGroup matches table.Create's row group length.
const ingMaxRowGroup = 1 << 20

// ingCreate creates the table file at path. dict[i] says whether column i
// gets Parquet dictionary encoding (worth it for low-cardinality columns; a
// waste of hashing for ids and measurements).
func ingCreate(path string, schema *arrow.Schema, dict []bool) (*ingWriter, error) {
	opts := []parquet.WriterProperty{
		parquet.WithCompression(compress.Codecs.Zstd),
		parquet.WithCompressionLevel(1),
		parquet.WithDictionaryDefault(true),
		parquet.WithMaxRowGroupLength(ingMaxRowGroup),
	}
	for i, f := range schema.Fields() {
		if i < len(dict) && !dict[i] {
			opts = append(opts, parquet.WithDictionaryFor(f.Name, false))
		}
	}
	props := parquet.NewWriterProperties(opts...)
	aprops := pqarrow.NewArrowWriterProperties(pqarrow.WithStoreSchema())
	pqschema, err := pqarrow.ToParquet(schema, props, aprops)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	meta := metadata.KeyValueMetadata{}
	if err := meta.Append("ARROW:schema", base64.StdEncoding.EncodeToString(flight.SerializeSchema(schema, memory.DefaultAllocator))); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	w, err := file.NewParquetWriterWithError(f, pqschema.Root(), file.WithWriterProps(props), file.WithWriteMetadata(meta))
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	d := make([]bool, schema.NumFields())
	for i := range d {
		d[i] = i >= len(dict) || dict[i]
	}
	return &ingWriter{f: f, w: w, schema: schema, props: aprops, dict: d}, nil
}

// writeRowGroup writes one row group of rows rows. fill(ctx, c, put) must
// call put with the arrays of column c, in row order, totalling rows; fill
// runs for different columns concurrently (workers at a time).
func (w *ingWriter) writeRowGroup(ctx context.Context, rows int, workers int, fill func(ctx context.Context, c int, put func(arrow.Array) error) error) error {
	rgw, err := w.w.AppendBufferedRowGroupChecked()
	if err != nil {
		return err
	}
	ncol := w.schema.NumFields()
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		failed   atomic.Bool
	)
	for range min(workers, ncol) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			wctx := pqarrow.NewArrowWriteContext(ctx, &w.props)
			var levels []int16
			for !failed.Load() {
				c := int(next.Add(1) - 1)
				if c >= ncol {
					return
				}
				err := func() (err error) {
					defer func() {
						if p := recover(); p != nil {
							err = fmt.Errorf("internal error: %v", p)
						}
					}()
					cw, err := rgw.Column(c)
					if err != nil {
						return err
					}
					n := 0
					err = fill(wctx, c, func(a arrow.Array) error {
						if err := ctx.Err(); err != nil {
							return err
						}
						levels = ingDefLevels(levels, a)
						n += a.Len()
						return pqarrow.WriteArrowToColumn(wctx, cw, a, levels, nil, true)
					})
					if err == nil && n != rows {
						err = fmt.Errorf("column %s: %d rows, want %d", w.schema.Field(c).Name, n, rows)
					}
					if err == nil && !w.dict[c] {
						// Encode and compress the last page here, in parallel,
						// not in the serial rgw.Close. (A dictionary column's
						// pages must wait for its dictionary page.)
						if f, ok := cw.(interface{ FlushBufferedDataPages() error }); ok {
							err = f.FlushBufferedDataPages()
						}
					}
					return err
				}()
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("write column %s: %w", w.schema.Field(c).Name, err)
					}
					mu.Unlock()
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	w.rows += int64(rows)
	return rgw.Close()
}

// ingDefLevels returns the Parquet definition levels of a flat, nullable
// column: 1 for a value, 0 for a null.
func ingDefLevels(buf []int16, a arrow.Array) []int16 {
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

// close finishes the file.
func (w *ingWriter) close() error {
	return w.w.Close() // closes the file too
}

// abort closes and leaves the caller to remove the file.
func (w *ingWriter) abort() {
	_ = w.w.Close()
	_ = w.f.Close()
}
