package table

import (
	"context"
	"fmt"
	"os"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// BatchRows is the number of rows per record batch the kinds aim for.
const BatchRows = 64 * 1024

// Reader streams the record batches of a Parquet table file.
type Reader struct {
	f   *os.File
	rr  pqarrow.RecordReader
	fr  *pqarrow.FileReader
	mem *memReader // the table given in memory (Handoff), instead of the file
}

// Open opens the Parquet file at path for streaming in batches of BatchRows.
// columns, if not nil, limits the read to those columns (others are never
// decoded). When ctx's Handoff gives the table at path in memory, the
// batches come from there, with the same schema and values.
func Open(ctx context.Context, path string, columns []string) (*Reader, error) {
	if m := Given(ctx, path); m != nil {
		mr, err := newMemReader(m, columns, path)
		if err != nil {
			return nil, err
		}
		return &Reader{mem: mr}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	pf, err := file.NewParquetReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: not a readable Parquet file: %w", path, err)
	}
	fr, err := pqarrow.NewFileReader(pf, pqarrow.ArrowReadProperties{BatchSize: BatchRows, Parallel: true}, memory.DefaultAllocator)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var idx []int
	if columns != nil {
		sc, err := fr.Schema()
		if err != nil {
			f.Close()
			return nil, err
		}
		for _, c := range columns {
			i := sc.FieldIndices(c)
			if len(i) == 0 {
				f.Close()
				return nil, fmt.Errorf("%s: no column %q", path, c)
			}
			idx = append(idx, i[0])
		}
	}
	rr, err := fr.GetRecordReader(ctx, idx, nil)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &Reader{f: f, rr: rr, fr: fr}, nil
}

// Schema returns the schema of the batches.
func (r *Reader) Schema() *arrow.Schema {
	if r.mem != nil {
		return r.mem.schema
	}
	return r.rr.Schema()
}

// Next returns the next batch, or nil at the end. The batch is valid until
// the next call; Retain it to keep it.
func (r *Reader) Next() (arrow.RecordBatch, error) {
	if r.mem != nil {
		return r.mem.next()
	}
	if r.rr.Next() {
		return r.rr.RecordBatch(), nil
	}
	return nil, r.rr.Err()
}

// Close releases the reader.
func (r *Reader) Close() error {
	if r.mem != nil {
		r.mem.close()
		return nil
	}
	r.rr.Release()
	return r.f.Close()
}

// ReadAll reads a whole Parquet table file into memory, for small tables
// (fitted statistics, models' inputs in tests).
func ReadAll(ctx context.Context, path string) (arrow.Table, error) {
	r, err := Open(ctx, path, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var recs []arrow.RecordBatch
	for {
		rec, err := r.Next()
		if err != nil {
			return nil, err
		}
		if rec == nil {
			break
		}
		rec.Retain()
		recs = append(recs, rec)
	}
	t := array.NewTableFromRecords(r.Schema(), recs)
	for _, rec := range recs {
		rec.Release()
	}
	return t, nil
}
