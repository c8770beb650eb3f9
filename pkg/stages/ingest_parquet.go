package stages

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// readParquet reads Parquet files batch by batch into chunks. Types come
// from the files; narrowing and the declared schema apply as for text.
func (r *ingRun) readParquet() error {
	b := &ingBuilder{}
	for fi := range r.files {
		f := &r.files[fi]
		st, err := os.Stat(f.path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: no such file", f.display)
			}
			return fmt.Errorf("%s: %w", f.display, err)
		}
		r.bytes += st.Size()
		if st.Size() == 0 {
			return fmt.Errorf("%s: the file is empty", f.display)
		}
		rd, err := table.Open(r.ctx, f.path, nil)
		if err != nil {
			return fmt.Errorf("%s: not a readable Parquet file: %v", f.display, errors.Unwrap(err))
		}
		rows := 0
		for {
			rec, err := rd.Next()
			if err != nil {
				rd.Close()
				return fmt.Errorf("%s: %w", f.display, err)
			}
			if rec == nil {
				break
			}
			ch := &ingChunk{file: fi, rows: int(rec.NumRows())}
			for c, fld := range rec.Schema().Fields() {
				p, err := ingParquetPiece(r.ctx, rec.Column(c), r.decls[fld.Name], r.narrow, b, r.nulls)
				if err != nil {
					rd.Close()
					for i := range ch.pieces {
						ch.pieces[i].release()
					}
					var ve *ingValueError
					if errors.As(err, &ve) {
						return fmt.Errorf("%s: row %d, column %q (declared %s): %s", f.display, rows+ve.Row+1, fld.Name, r.decls[fld.Name].name, ve.Msg)
					}
					return fmt.Errorf("%s: column %q: %w", f.display, fld.Name, err)
				}
				ch.names = append(ch.names, fld.Name)
				ch.pieces = append(ch.pieces, p)
			}
			rows += ch.rows
			r.chunks = append(r.chunks, ch)
			if err := r.ctx.Err(); err != nil {
				rd.Close()
				return err
			}
		}
		rd.Close()
	}
	return nil
}

// ingParquetPiece turns one column of a batch into a piece.
func ingParquetPiece(ctx context.Context, a arrow.Array, d *ingDecl, narrow bool, b *ingBuilder, nulls map[string]bool) (ingPiece, error) {
	n := a.Len()
	if a.NullN() == n && d == nil {
		return ingPiece{kind: ingNull, n: n, nulls: n}, nil
	}
	id := a.DataType().ID()
	switch id {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		if d != nil && d.kind != ingInt && d.kind != ingFloat {
			break
		}
		lo, hi, ok := ingArrowIntRange(a)
		if !ok { // uint64 beyond int64
			if d == nil {
				return ingOtherPiece(a), nil
			}
			break
		}
		if d != nil && d.kind == ingFloat {
			return ingCastTo(ctx, a, d.typ, ingFloat, true)
		}
		if d != nil && (lo < d.lo || hi > d.hi) {
			for i := range n {
				if v := ingArrowInt(a, i); a.IsValid(i) && (v < d.lo || v > d.hi) {
					return ingPiece{}, &ingValueError{Row: i, Msg: fmt.Sprintf("%d does not fit %s", v, d.name)}
				}
			}
		}
		w := 8
		if narrow || d != nil {
			w = ingIntWidth(lo, hi)
		}
		p, err := ingCastTo(ctx, a, ingIntType(w), ingInt, lo >= -ingF32Exact && hi <= ingF32Exact)
		p.min, p.max = lo, hi
		return p, err
	case arrow.FLOAT32, arrow.FLOAT64, arrow.FLOAT16:
		if d != nil && d.kind != ingFloat {
			break
		}
		f32ok := id != arrow.FLOAT64
		if id == arrow.FLOAT64 && narrow && d == nil {
			f32ok = true
			for i, v := range a.(*array.Float64).Float64Values() {
				if a.IsValid(i) && !b.f32mem.faithful(v) {
					f32ok = false
					break
				}
			}
		}
		// float64 stays float64 in the piece (whether the column narrows
		// depends on the other batches); float16 widens to float32.
		to := arrow.PrimitiveTypes.Float64
		if id != arrow.FLOAT64 || (d != nil && d.typ.ID() == arrow.FLOAT32) {
			to = arrow.PrimitiveTypes.Float32
		}
		return ingCastTo(ctx, a, to, ingFloat, f32ok)
	case arrow.BOOL:
		if d == nil || d.kind == ingBool {
			a.Retain()
			return ingPiece{kind: ingBool, n: n, nulls: a.NullN(), arr: a}, nil
		}
	case arrow.DATE32:
		if d == nil || d.kind == ingDate {
			a.Retain()
			return ingPiece{kind: ingDate, n: n, nulls: a.NullN(), arr: a}, nil
		}
	case arrow.STRING, arrow.LARGE_STRING, arrow.STRING_VIEW:
		if d == nil || d.kind == ingStr {
			b.reset(ingStr, d, true, !narrow, nulls)
			for i := range n {
				if a.IsNull(i) {
					b.appendNull()
				} else {
					b.appendStr(ingArrowBytes(a, i))
				}
			}
			return b.finish(), nil
		}
	case arrow.DICTIONARY:
		da := a.(*array.Dictionary)
		vid := da.Dictionary().DataType().ID()
		if (vid == arrow.STRING || vid == arrow.LARGE_STRING) && (d == nil || d.kind == ingStr) {
			b.reset(ingStr, d, true, !narrow, nulls)
			dict := da.Dictionary()
			for i := range n {
				if da.IsNull(i) {
					b.appendNull()
				} else {
					b.appendStr(ingArrowBytes(dict, da.GetValueIndex(i)))
				}
			}
			return b.finish(), nil
		}
		if d == nil {
			return ingOtherPiece(a), nil
		}
		plain, err := compute.CastArray(ctx, a, compute.SafeCastOptions(da.Dictionary().DataType()))
		if err != nil {
			return ingPiece{}, fmt.Errorf("cannot read dictionary of %s as %s: %v", da.Dictionary().DataType(), d.name, err)
		}
		defer plain.Release()
		return ingParquetPiece(ctx, plain, d, narrow, b, nulls)
	case arrow.NULL:
		b.reset(ingNull, d, true, false, nulls)
		for range n {
			b.appendNull()
		}
		return b.finish(), nil
	default:
		if d == nil {
			return ingOtherPiece(a), nil
		}
	}
	// A declared type of another kind: go through the values' text.
	return ingTextPiece(ctx, a, d, b, nulls)
}

func ingOtherPiece(a arrow.Array) ingPiece {
	a.Retain()
	return ingPiece{kind: ingOther, n: a.Len(), nulls: a.NullN(), arr: a}
}

// ingTextPiece casts a to strings and parses them as the declared type.
func ingTextPiece(ctx context.Context, a arrow.Array, d *ingDecl, b *ingBuilder, nulls map[string]bool) (ingPiece, error) {
	s, err := compute.CastArray(ctx, a, compute.SafeCastOptions(arrow.BinaryTypes.String))
	if err != nil {
		return ingPiece{}, fmt.Errorf("cannot read %s as %s: %v", a.DataType(), d.name, err)
	}
	defer s.Release()
	b.reset(d.kind, d, true, false, nulls)
	sa := s.(*array.String)
	for i := range sa.Len() {
		if sa.IsNull(i) {
			b.appendNull()
			continue
		}
		if err := b.appendText(0, ingBytes(sa.Value(i)), false); err != nil {
			var ve *ingValueError
			if errors.As(err, &ve) {
				ve.Row = i
			}
			return ingPiece{}, err
		}
	}
	return b.finish(), nil
}

// ingCastPiece converts a piece whose kind differs from the column's final
// kind (always a string column, by the join rules) for sources that cannot
// be re-read as text.
func ingCastPiece(ctx context.Context, p *ingPiece, kind ingKind, d *ingDecl, nulls map[string]bool) (ingPiece, error) {
	b := &ingBuilder{}
	if kind != ingStr {
		return ingPiece{}, fmt.Errorf("cannot convert %s to %s", p.kind, kind)
	}
	s, err := compute.CastArray(ctx, p.arr, compute.SafeCastOptions(arrow.BinaryTypes.String))
	if err != nil {
		return ingPiece{}, fmt.Errorf("cannot convert %s to string: %v", p.arr.DataType(), err)
	}
	defer s.Release()
	b.reset(ingStr, d, true, false, nulls)
	sa := s.(*array.String)
	for i := range sa.Len() {
		if sa.IsNull(i) {
			b.appendNull()
		} else {
			b.appendStr(ingBytes(sa.Value(i)))
		}
	}
	return b.finish(), nil
}

// ingCastTo makes a piece of kind k holding a cast to type to.
func ingCastTo(ctx context.Context, a arrow.Array, to arrow.DataType, k ingKind, f32ok bool) (ingPiece, error) {
	p := ingPiece{kind: k, n: a.Len(), nulls: a.NullN(), f32ok: f32ok}
	if arrow.TypeEqual(a.DataType(), to) {
		a.Retain()
		p.arr = a
		return p, nil
	}
	c, err := compute.CastArray(ctx, a, compute.UnsafeCastOptions(to))
	if err != nil {
		return ingPiece{}, fmt.Errorf("cannot convert %s to %s: %v", a.DataType(), to, err)
	}
	p.arr = c
	return p, nil
}

// ingArrowIntRange returns the range of the valid values of an integer
// array; ok is false for uint64 values beyond int64.
func ingArrowIntRange(a arrow.Array) (lo, hi int64, ok bool) {
	var valid []byte
	if a.NullN() > 0 {
		valid = a.NullBitmapBytes()
	}
	off := a.Data().Offset()
	switch x := a.(type) {
	case *array.Int8:
		lo, hi = ingRange(x.Int8Values(), valid, off)
	case *array.Int16:
		lo, hi = ingRange(x.Int16Values(), valid, off)
	case *array.Int32:
		lo, hi = ingRange(x.Int32Values(), valid, off)
	case *array.Int64:
		lo, hi = ingRange(x.Int64Values(), valid, off)
	case *array.Uint8:
		lo, hi = ingRange(x.Uint8Values(), valid, off)
	case *array.Uint16:
		lo, hi = ingRange(x.Uint16Values(), valid, off)
	case *array.Uint32:
		lo, hi = ingRange(x.Uint32Values(), valid, off)
	case *array.Uint64:
		for i, v := range x.Uint64Values() {
			if x.IsValid(i) && v > math.MaxInt64 {
				return 0, 0, false
			}
		}
		lo, hi = ingRange(x.Uint64Values(), valid, off)
	}
	if lo > hi {
		lo, hi = 0, 0
	}
	return lo, hi, true
}

func ingRange[T int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64](v []T, valid []byte, off int) (lo, hi int64) {
	lo, hi = math.MaxInt64, math.MinInt64
	for i, x := range v {
		if valid == nil || bitutil.BitIsSet(valid, off+i) {
			lo, hi = min(lo, int64(x)), max(hi, int64(x))
		}
	}
	return lo, hi
}

func ingArrowInt(a arrow.Array, i int) int64 {
	switch x := a.(type) {
	case *array.Int8:
		return int64(x.Value(i))
	case *array.Int16:
		return int64(x.Value(i))
	case *array.Int32:
		return int64(x.Value(i))
	case *array.Int64:
		return x.Value(i)
	case *array.Uint8:
		return int64(x.Value(i))
	case *array.Uint16:
		return int64(x.Value(i))
	case *array.Uint32:
		return int64(x.Value(i))
	case *array.Uint64:
		return int64(x.Value(i))
	}
	return 0
}

func ingArrowBytes(a arrow.Array, i int) []byte {
	switch x := a.(type) {
	case *array.String:
		return ingBytes(x.Value(i))
	case *array.LargeString:
		return ingBytes(x.Value(i))
	case *array.StringView:
		return ingBytes(x.Value(i))
	}
	return nil
}

// ingBytes views s as bytes without copying; the bytes must not be changed.
func ingBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
