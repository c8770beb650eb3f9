package table

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/metadata"
	"github.com/apache/arrow-go/v18/parquet/schema"
)

// fastChunk writes one column chunk of a flat fixed-width column (signed
// integers up to 64 bits, dates, floats, booleans, dictionary arrays of
// strings) without arrow-go's
// generic column writer, which spent most of the writer's CPU outside the
// compressor: its DELTA_BINARY_PACKED encoder packs one value at a time
// through a bit writer (0.5 s of ingest's and of preprocess's CPU at 3M
// rows), and every value passes through definition levels, statistics and
// two copies. fastChunk builds each page itself: the definition levels as
// one RLE run (or the validity bits as one bit-packed run), the values
// PLAIN or delta-packed 32 at a time, the column chunk's statistics in the
// same pass; arrow-go's page writer frames, compresses and records them.
// Pages hold a fixed number of values (pageValues), so the file does not
// depend on how the rows were batched.
type fastChunk struct {
	meta     *metadata.ColumnChunkMetaDataBuilder
	pager    file.PageWriter
	descr    *schema.Column
	dt       arrow.DataType // of the arrays given
	typ      arrow.Type     // dt's
	enc      parquet.Encoding
	nullable bool // the column has definition levels
	stats    bool
	perPage  int

	// The open page: n rows, of which nulls null; hasNull: the page has
	// a null, and buf.valid its rows' validity bits.
	n, nulls int
	hasNull  bool
	nbits    int // booleans in buf.raw
	*pageBufs

	// The chunk so far.
	rows               int
	chunkNulls, values int64
	hasMinMax          bool
	imin, imax         int64
	fmin, fmax         float64
	nTrue              int64

	// dict, while not nil, dictionary-encodes the chunk (floats, strings):
	// its pages wait in dict.held for the dictionary page, which comes
	// first. hasDict: the dictionary page is written.
	dict    *chunkDict
	hasDict bool
	props   *parquet.WriterProperties
	// Dictionaries of strings: the batch dictionary last mapped and the
	// chunk indices of its entries.
	mapFrom arrow.ArrayData
	mapping []uint16
}

// pageBufs are a column's page buffers, handed from one row group's
// chunk to the next: the values (nulls left out) of the open page, in
// i64 (integers, any width) or raw (PLAIN bytes of floats, booleans'
// bits); valid, the open page's validity bits (hasNull); page, the
// encoded page; comp, the compressed one.
type pageBufs struct {
	i64        []int64
	pidx       []uint16 // dictionary arrays' indices, in the chunk's dictionary
	raw, valid []byte
	page, comp bytes.Buffer
	dict       *chunkDict
}

// fastType reports whether a column of type dt can be written by a
// fastChunk.
func fastType(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.DATE32, arrow.INT64, arrow.FLOAT32, arrow.FLOAT64, arrow.BOOL:
		return true
	case arrow.DICTIONARY:
		d := dt.(*arrow.DictionaryType)
		return arrow.IsInteger(d.IndexType.ID()) && (d.ValueType.ID() == arrow.STRING || d.ValueType.ID() == arrow.BINARY)
	}
	return false
}

// pageBytes is about how many bytes of PLAIN values a page holds.
const pageBytes = 1 << 20

// newFastChunk returns a fastChunk writing pages of type dt through
// pager, with buffers bufs (nil: new ones).
func newFastChunk(meta *metadata.ColumnChunkMetaDataBuilder, pager file.PageWriter, dt arrow.DataType, props *parquet.WriterProperties, bufs *pageBufs) *fastChunk {
	descr := meta.Descr()
	c := &fastChunk{meta: meta, pager: pager, descr: descr, dt: dt, typ: dt.ID(), enc: props.EncodingFor(descr.Path()),
		nullable: descr.MaxDefinitionLevel() > 0, stats: props.StatisticsEnabledFor(descr.Path()), pageBufs: bufs, props: props}
	switch c.typ {
	case arrow.BOOL:
		c.perPage = 8 * pageBytes / 8 // as many rows as a page of bytes: 128 KiB of bits
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.DATE32, arrow.INT64:
		c.perPage = pageBytes / 8 // as int64s
	case arrow.FLOAT64:
		c.perPage = pageBytes / 8
	default:
		c.perPage = pageBytes / 4
	}
	if c.typ == arrow.FLOAT32 || c.typ == arrow.FLOAT64 || c.typ == arrow.DICTIONARY {
		if c.pageBufs != nil && c.pageBufs.dict != nil {
			c.dict = c.pageBufs.dict
			c.dict.reset()
		} else {
			c.dict = newChunkDict(c.typ == arrow.DICTIONARY)
		}
	}
	if c.pageBufs == nil {
		c.pageBufs = &pageBufs{valid: make([]byte, 0, bitutil.BytesForBits(int64(c.perPage)))}
		switch c.typ {
		case arrow.INT8, arrow.INT16, arrow.INT32, arrow.DATE32, arrow.INT64:
			c.i64 = make([]int64, 0, c.perPage)
			c.raw = make([]byte, 0, pageBytes+pageBytes/4) // deltaPack's output: at most 9 bytes a value, but PLAIN's 8
		default:
			c.raw = make([]byte, 0, pageBytes)
		}
	}
	return c
}

// write appends a's values, flushing pages as they fill.
func (c *fastChunk) write(a arrow.Array) error {
	if a.NullN() > 0 && !c.nullable {
		return errNullInRequired
	}
	if a.DataType().ID() != c.typ {
		return fmt.Errorf("an array of %s where the column is %s", a.DataType(), c.dt)
	}
	for off := 0; off < a.Len(); {
		take := min(a.Len()-off, c.perPage-c.n)
		if err := c.add(a, off, take); err != nil {
			return err
		}
		off += take
		if c.n == c.perPage {
			if err := c.flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// add appends rows [off, off+n) of a to the open page.
func (c *fastChunk) add(a arrow.Array, off, n int) error {
	nulls := 0
	if a.NullN() > 0 {
		nulls = n - bitutil.CountSetBits(a.NullBitmapBytes(), a.Data().Offset()+off, n)
	}
	if nulls > 0 && !c.hasNull {
		c.hasNull = true
		c.valid = c.valid[:bitutil.BytesForBits(int64(c.perPage))]
		clear(c.valid)
		bitutil.SetBitsTo(c.valid, 0, int64(c.n), true)
	}
	if c.hasNull {
		if nulls > 0 {
			bitutil.CopyBitmap(a.NullBitmapBytes(), a.Data().Offset()+off, n, c.valid, c.n)
		} else {
			bitutil.SetBitsTo(c.valid, int64(c.n), int64(n), true)
		}
	}
	var valid func(int) bool // nil: all
	if nulls > 0 {
		valid = a.IsValid
	}
	switch v := a.(type) {
	case *array.Int8:
		c.i64 = appendInts(c.i64, v.Int8Values()[off:off+n], valid, off)
	case *array.Int16:
		c.i64 = appendInts(c.i64, v.Int16Values()[off:off+n], valid, off)
	case *array.Int32:
		c.i64 = appendInts(c.i64, v.Int32Values()[off:off+n], valid, off)
	case *array.Date32:
		c.i64 = appendInts(c.i64, v.Date32Values()[off:off+n], valid, off)
	case *array.Int64:
		c.i64 = appendInts(c.i64, v.Int64Values()[off:off+n], valid, off)
	case *array.Float32:
		c.raw = appendFloats(c, c.raw, v.Float32Values()[off:off+n], valid, off, nulls)
	case *array.Float64:
		c.raw = appendFloats(c, c.raw, v.Float64Values()[off:off+n], valid, off, nulls)
	case *array.Boolean:
		c.addBools(v, off, n, nulls)
	case *array.Dictionary:
		if err := c.addStrings(v, off, n, valid); err != nil {
			return err
		}
	}
	c.n += n
	c.nulls += nulls
	return nil
}

// addStrings appends rows [off, off+n) of a dictionary array of strings:
// their indices in the chunk's dictionary (mapped from v's own), or, once
// that is full, their PLAIN values.
func (c *fastChunk) addStrings(v *array.Dictionary, off, n int, valid func(int) bool) error {
	if v.Dictionary().NullN() > 0 {
		// Parquet has no null dictionary entry, and writing "" for it
		// would lose the nulls (arrow-go's writer refuses it too).
		return errors.New("a dictionary with a null entry is not supported (make the rows null instead)")
	}
	if c.dict != nil && v.Dictionary().Data() != c.mapFrom && !c.mapDict(v.Dictionary()) {
		// Too many distinct values: the pages held and the open one go
		// PLAIN, as the rest of the chunk.
		if err := c.dropDict(); err != nil {
			return err
		}
		for _, i := range c.pidx {
			c.raw = c.dict.appendPlain(c.raw, i)
		}
		c.pidx = c.pidx[:0]
		c.dict = nil
	}
	if c.dict == nil {
		for i := off; i < off+n; i++ {
			if valid == nil || valid(i) {
				c.raw = appendByteArray(c.raw, dictString(v.Dictionary(), v.GetValueIndex(i)))
			}
		}
		return nil
	}
	switch idx := v.Indices().(type) {
	case *array.Int8:
		c.pidx = appendMapped(c.pidx, idx.Int8Values()[off:off+n], c.mapping, valid, off)
	case *array.Int16:
		c.pidx = appendMapped(c.pidx, idx.Int16Values()[off:off+n], c.mapping, valid, off)
	case *array.Int32:
		c.pidx = appendMapped(c.pidx, idx.Int32Values()[off:off+n], c.mapping, valid, off)
	default:
		for i := off; i < off+n; i++ {
			if valid == nil || valid(i) {
				c.pidx = append(c.pidx, uint16(c.mapping[v.GetValueIndex(i)]))
			}
		}
	}
	return nil
}

// mapDict maps the entries of a batch's dictionary to the chunk's,
// adding them; false when that is full.
func (c *fastChunk) mapDict(dict arrow.Array) bool {
	d := c.dict
	c.mapping = c.mapping[:0]
	for j := range dict.Len() {
		s := dictString(dict, j)
		i, ok := d.strIdx[s]
		if !ok {
			if len(d.strs) == dictMax {
				return false
			}
			i = uint16(len(d.strs))
			d.strs = append(d.strs, s)
			d.strIdx[s] = i
		}
		c.mapping = append(c.mapping, i)
	}
	c.mapFrom = dict.Data()
	return true
}

// dictString is entry j of a dictionary of strings or binaries.
func dictString(dict arrow.Array, j int) string {
	switch d := dict.(type) {
	case *array.String:
		return d.Value(j)
	case *array.Binary:
		return d.ValueString(j)
	}
	return ""
}

func appendMapped[T int8 | int16 | int32](dst []uint16, src []T, mapping []uint16, valid func(int) bool, off int) []uint16 {
	for i, x := range src {
		if valid == nil || valid(off+i) {
			dst = append(dst, mapping[x])
		}
	}
	return dst
}

// appendByteArray appends s PLAIN as a BYTE_ARRAY: its length in 4
// bytes, then its bytes.
func appendByteArray(dst []byte, s string) []byte {
	return append(binary.LittleEndian.AppendUint32(dst, uint32(len(s))), s...)
}

func appendInts[T int8 | int16 | int32 | arrow.Date32 | int64](dst []int64, src []T, valid func(int) bool, off int) []int64 {
	if valid == nil {
		k := len(dst)
		dst = slices.Grow(dst, len(src))[:k+len(src)]
		for i, x := range src {
			dst[k+i] = int64(x)
		}
		return dst
	}
	for i, x := range src {
		if valid(off + i) {
			dst = append(dst, int64(x))
		}
	}
	return dst
}

// appendFloats appends src's valid values to dst as PLAIN bytes and takes
// their minimum and maximum (NaNs left out) into the chunk's statistics.
func appendFloats[T float32 | float64](c *fastChunk, dst []byte, src []T, valid func(int) bool, off, nulls int) []byte {
	lo, hi := T(math.Inf(1)), T(math.Inf(-1))
	if nulls == 0 {
		// Little-endian, as PLAIN.
		dst = append(dst, unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(src))), len(src)*int(unsafe.Sizeof(src[0])))...)
		if c.stats {
			for _, x := range src { // NaNs compare false: left out; zeros' signs are the statistics' business
				if x < lo {
					lo = x
				}
				if x > hi {
					hi = x
				}
			}
		}
	} else {
		for i, x := range src {
			if !valid(off + i) {
				continue
			}
			dst = append(dst, unsafe.Slice((*byte)(unsafe.Pointer(&x)), unsafe.Sizeof(x))...)
			if x < lo {
				lo = x
			}
			if x > hi {
				hi = x
			}
		}
	}
	seen := lo <= hi
	if seen && c.stats {
		if !c.hasMinMax {
			c.fmin, c.fmax, c.hasMinMax = float64(lo), float64(hi), true
		} else {
			c.fmin, c.fmax = min(c.fmin, float64(lo)), max(c.fmax, float64(hi))
		}
	}
	return dst
}

// addBools appends rows [off, off+n) of v as PLAIN booleans: bit-packed,
// least significant bit first, as Arrow's bitmaps.
func (c *fastChunk) addBools(v *array.Boolean, off, n, nulls int) {
	bitmap, boff := v.Data().Buffers()[1].Bytes(), v.Data().Offset()+off
	need := int(bitutil.BytesForBits(int64(c.nbits + n)))
	if len(c.raw) < need {
		c.raw = append(c.raw, make([]byte, need-len(c.raw))...)
	}
	if nulls == 0 {
		bitutil.CopyBitmap(bitmap, boff, n, c.raw, c.nbits)
		c.nbits += n
		c.nTrue += int64(bitutil.CountSetBits(bitmap, boff, n))
		return
	}
	for i := range n {
		if v.IsValid(off + i) {
			if v.Value(off + i) {
				bitutil.SetBit(c.raw, c.nbits)
				c.nTrue++
			}
			c.nbits++
		}
	}
}

// flush writes the open page, if it has rows.
func (c *fastChunk) flush() error {
	if c.n == 0 {
		return nil
	}
	c.page.Reset()
	if c.nullable {
		c.page.Write([]byte{0, 0, 0, 0}) // the levels' length, set below
		if c.hasNull {
			// One bit-packed run of width 1: the validity bits, in groups
			// of 8 rows.
			groups := (c.n + 7) / 8
			c.page.Write(binary.AppendUvarint(nil, uint64(groups)<<1|1))
			c.page.Write(c.valid[:groups])
			for i := c.n; i < groups*8; i++ { // padding: zeros
				bitutil.ClearBit(c.page.Bytes()[c.page.Len()-groups:], i)
			}
		} else {
			// One RLE run: n rows at level 1.
			c.page.Write(binary.AppendUvarint(nil, uint64(c.n)<<1))
			c.page.WriteByte(1)
		}
		binary.LittleEndian.PutUint32(c.page.Bytes(), uint32(c.page.Len()-4))
	}
	levels := c.page.Len()
	nvals := c.n - c.nulls
	switch {
	case c.typ == arrow.BOOL:
		c.page.Write(c.raw[:bitutil.BytesForBits(int64(c.nbits))])
	case c.typ == arrow.FLOAT32 || c.typ == arrow.FLOAT64 || c.typ == arrow.DICTIONARY:
		c.page.Write(c.raw) // PLAIN: without a dictionary
	default:
		if c.stats && nvals > 0 {
			lo, hi := c.i64[0], c.i64[0]
			for _, x := range c.i64 {
				lo, hi = min(lo, x), max(hi, x)
			}
			if !c.hasMinMax {
				c.imin, c.imax, c.hasMinMax = lo, hi, true
			} else {
				c.imin, c.imax = min(c.imin, lo), max(c.imax, hi)
			}
		}
		if c.enc == parquet.Encodings.DeltaBinaryPacked {
			c.page.Write(deltaPack(c.raw[:0], c.i64, c.typ != arrow.INT64))
		} else if c.typ == arrow.INT64 {
			for _, x := range c.i64 {
				c.page.Write(binary.LittleEndian.AppendUint64(c.raw[:0], uint64(x)))
			}
		} else {
			for _, x := range c.i64 {
				c.page.Write(binary.LittleEndian.AppendUint32(c.raw[:0], uint32(x)))
			}
		}
	}
	var err error
	if c.dict != nil && c.typ == arrow.DICTIONARY {
		c.dict.holdIndices(c, levels)
	} else if c.dict != nil && !c.dict.hold(c, levels, nvals) {
		// Too many distinct values: the pages held go PLAIN, as the
		// rest of the chunk.
		err = c.dropDict()
		c.dict = nil
	}
	if c.dict == nil && err == nil {
		err = c.writePage(c.page.Bytes(), c.n, c.enc, c.rows)
	}
	c.rows += c.n
	c.chunkNulls += int64(c.nulls)
	c.values += int64(nvals)
	c.n, c.nulls, c.hasNull, c.nbits = 0, 0, false, 0
	c.i64, c.raw, c.pidx = c.i64[:0], c.raw[:0], c.pidx[:0]
	return err
}

// writePage compresses and writes a page of n rows.
func (c *fastChunk) writePage(b []byte, n int, enc parquet.Encoding, firstRow int) error {
	data := b
	if c.pager.HasCompressor() {
		c.comp.Reset()
		data = c.pager.Compress(&c.comp, b)
	}
	page := file.NewDataPageV1WithConfig(memory.NewBufferBytes(data), parquet.Encodings.RLE, parquet.Encodings.RLE, file.DataPageConfig{
		Num: int32(n), Encoding: enc, UncompressedSize: int32(len(b)), FirstRowIndex: int64(firstRow),
	})
	_, err := c.pager.WriteDataPage(page)
	return err
}

// finish writes the last page and, for a dictionary-encoded chunk, the
// dictionary and the pages held: all but the metadata, so that different
// goroutines can finish different columns.
func (c *fastChunk) finish() error {
	if err := c.flush(); err != nil {
		return err
	}
	d := c.dict
	if d == nil || len(d.held) == 0 {
		return nil
	}
	if d.size() == 0 { // only nulls: no dictionary
		err := c.dropDict()
		c.dict = nil
		return err
	}
	c.dict = nil
	c.page.Reset()
	for i := range d.size() {
		c.page.Write(d.appendPlain(c.comp.AvailableBuffer(), uint16(i)))
	}
	dp := file.NewDictionaryPage(memory.NewBufferBytes(bytes.Clone(c.page.Bytes())), int32(d.size()), c.props.DictionaryPageEncoding())
	if _, err := c.pager.WriteDictionaryPage(dp); err != nil {
		return err
	}
	c.hasDict = true
	w := max(1, bits.Len(uint(d.size()-1)))
	for _, h := range d.held {
		c.page.Reset()
		c.page.Write(h.levels)
		c.page.WriteByte(byte(w))
		groups := (len(h.idx) + 7) / 8
		c.page.Write(binary.AppendUvarint(c.comp.AvailableBuffer(), uint64(groups)<<1|1))
		c.page.Write(packBits(c.comp.AvailableBuffer(), h.idx, uint(w)))
		if err := c.writePage(c.page.Bytes(), h.n, c.props.DictionaryIndexEncoding(), h.firstRow); err != nil {
			return err
		}
		d.free(h)
	}
	d.held = d.held[:0]
	return nil
}

// dropDict writes the pages held as PLAIN pages.
func (c *fastChunk) dropDict() error {
	d := c.dict
	var plain bytes.Buffer
	for _, h := range d.held {
		plain.Reset()
		plain.Write(h.levels)
		for _, i := range h.idx {
			plain.Write(d.appendPlain(c.comp.AvailableBuffer(), i))
		}
		if err := c.writePage(plain.Bytes(), h.n, c.enc, h.firstRow); err != nil {
			return err
		}
		d.free(h)
	}
	d.held = d.held[:0]
	return nil
}

// close writes the chunk's statistics and metadata, after finish.
func (c *fastChunk) close() error {
	if c.stats && c.rows > 0 {
		s := metadata.NewStatistics(c.descr, memory.DefaultAllocator)
		if c.hasMinMax || c.typ == arrow.BOOL && c.values > 0 {
			switch s := s.(type) {
			case *metadata.Int32Statistics:
				s.SetMinMax(int32(c.imin), int32(c.imax))
			case *metadata.Int64Statistics:
				s.SetMinMax(c.imin, c.imax)
			case *metadata.Float32Statistics:
				s.SetMinMax(float32(c.fmin), float32(c.fmax))
			case *metadata.Float64Statistics:
				s.SetMinMax(c.fmin, c.fmax)
			case *metadata.BooleanStatistics:
				s.SetMinMax(c.nTrue == c.values, c.nTrue > 0)
			}
		}
		s.IncNulls(c.chunkNulls)
		s.IncNumValues(c.values)
		enc, err := s.Encode()
		if err != nil {
			return err
		}
		enc.Signed = c.descr.SortOrder() == schema.SortSIGNED
		c.meta.SetStats(enc)
	}
	return c.pager.Close(c.hasDict, false)
}

// Parquet's DELTA_BINARY_PACKED layout, as arrow-go writes it: blocks of
// 128 deltas in 4 miniblocks of 32.
const (
	deltaBlock = 128
	deltaMini  = 32
)

// deltaPack appends vals DELTA_BINARY_PACKED to dst: a header (block
// size, miniblocks per block, count, first value zigzag), then per block
// the smallest delta (zigzag), the miniblocks' bit widths and the
// miniblocks, each 32 deltas less the smallest, bit-packed least
// significant bit first (the last one padded with zeros; widths of
// miniblocks past the end 0). narrow: the values are INT32, whose deltas
// wrap at 32 bits as the format requires.
func deltaPack(dst []byte, vals []int64, narrow bool) []byte {
	dst = binary.AppendUvarint(dst, deltaBlock)
	dst = binary.AppendUvarint(dst, deltaBlock/deltaMini)
	dst = binary.AppendUvarint(dst, uint64(len(vals)))
	if len(vals) == 0 {
		return binary.AppendVarint(dst, 0)
	}
	dst = binary.AppendVarint(dst, vals[0])
	var deltas [deltaBlock]int64
	for start := 1; start < len(vals); start += deltaBlock {
		n := min(deltaBlock, len(vals)-start)
		d, cur, prev := deltas[:n], vals[start:start+n], vals[start-1:start-1+n]
		lo := int64(math.MaxInt64)
		if narrow {
			for i := range d {
				d[i] = int64(int32(cur[i]) - int32(prev[i]))
				lo = min(lo, d[i])
			}
		} else {
			for i := range d {
				d[i] = cur[i] - prev[i]
				lo = min(lo, d[i])
			}
		}
		for i := range d {
			d[i] -= lo
		}
		dst = binary.AppendVarint(dst, lo)
		widths := len(dst)
		dst = append(dst, 0, 0, 0, 0)
		for m := 0; m*deltaMini < n; m++ {
			mini := d[m*deltaMini : min(n, (m+1)*deltaMini)]
			var or int64
			for _, x := range mini {
				or |= x
			}
			w := uint(bits.Len64(uint64(or)))
			dst[widths+m] = byte(w)
			if len(mini) < deltaMini { // the last: padded with zeros
				var full [deltaMini]int64
				copy(full[:], mini)
				mini = full[:]
			}
			dst = packMini(dst, (*[deltaMini]int64)(mini), w)
		}
	}
	return dst
}

// packMini appends 32 values of w bits each, least significant bit
// first: 4*w bytes.
func packMini(dst []byte, mini *[deltaMini]int64, w uint) []byte {
	if w == 0 {
		return dst
	}
	k := len(dst)
	dst = slices.Grow(dst, 4*int(w))[:k+4*int(w)]
	out := dst[k:]
	var acc uint64
	var nb uint
	o := 0
	for _, x := range mini {
		u := uint64(x)
		acc |= u << nb
		nb += w
		if nb >= 64 {
			binary.LittleEndian.PutUint64(out[o:], acc)
			o += 8
			nb -= 64
			acc = u >> (w - nb) // 0 when nb is 0: u < 1<<w
		}
	}
	if nb > 0 { // 32*w bits: 4 bytes left
		binary.LittleEndian.PutUint32(out[o:], uint32(acc))
	}
	return dst
}

// packBits appends vals, w bits each, least significant bit first, padded
// with zeros to a multiple of 8 values: w bytes per 8 values.
func packBits(dst []byte, vals []uint16, w uint) []byte {
	if w == 0 {
		return dst
	}
	var acc uint64
	var nb uint
	for _, x := range vals {
		u := uint64(x)
		acc |= u << nb
		nb += w
		if nb >= 64 {
			dst = binary.LittleEndian.AppendUint64(dst, acc)
			nb -= 64
			acc = 0
			if nb > 0 {
				acc = u >> (w - nb)
			}
		}
	}
	for ; nb > 0; nb -= min(nb, 8) {
		dst = append(dst, byte(acc))
		acc >>= 8
	}
	if pad := len(vals) % 8; pad != 0 {
		for range (8 - pad) * int(w) / 8 {
			dst = append(dst, 0)
		}
	}
	return dst
}

// dictMax is the most distinct values a column chunk's dictionary holds
// (a float column's, or a dictionary array column's of strings): at most 14-bit indices, against 32 or 64 bits a value PLAIN. The
// standardized small integers of a features table (a handful of values),
// categories' means and prices in cents fit; measurements do not, and
// give up within the first dictMax+1 distinct values.
const dictMax = 1 << 14

// chunkDict dictionary-encodes a column chunk: for floats, the distinct
// values' bits in order of first appearance and an open-addressing table
// over them; for strings, the strings in the batches' dictionaries' order
// and a map to their indices; the pages encoded so far, waiting for the
// dictionary page.
type chunkDict struct {
	keys   []uint64
	slots  []int32 // index+1; 0: free
	f32    bool    // the keys are float32s' bits
	strs   []string
	strIdx map[string]uint16 // a dictionary of strings: strs and their indices, not keys
	held   []heldPage
	spare  [][]uint16 // idx slices of pages written, for reuse
}

// heldPage is a dictionary-encoded page waiting: its rows, first row,
// definition levels (as written, length included) and indices.
type heldPage struct {
	n, firstRow int
	levels      []byte
	idx         []uint16
}

func newChunkDict(strs bool) *chunkDict {
	if strs {
		return &chunkDict{strIdx: map[string]uint16{}}
	}
	return &chunkDict{slots: make([]int32, 2*dictMax)}
}

func (d *chunkDict) reset() {
	d.keys, d.strs = d.keys[:0], d.strs[:0]
	clear(d.slots)
	clear(d.strIdx)
}

// size is how many values the dictionary holds.
func (d *chunkDict) size() int { return len(d.keys) + len(d.strs) }

// appendPlain appends value i PLAIN.
func (d *chunkDict) appendPlain(dst []byte, i uint16) []byte {
	switch {
	case d.strIdx != nil:
		return appendByteArray(dst, d.strs[i])
	case d.f32:
		return binary.LittleEndian.AppendUint32(dst, uint32(d.keys[i]))
	}
	return binary.LittleEndian.AppendUint64(dst, d.keys[i])
}

// holdIndices holds the open page of a dictionary array, whose indices
// are in c.pidx.
func (d *chunkDict) holdIndices(c *fastChunk, levels int) {
	d.held = append(d.held, heldPage{n: c.n, firstRow: c.rows, levels: bytes.Clone(c.page.Bytes()[:levels]), idx: c.pidx})
	c.pidx = nil
	if n := len(d.spare); n > 0 {
		c.pidx, d.spare = d.spare[n-1], d.spare[:n-1]
	}
}

func (d *chunkDict) free(h heldPage) { d.spare = append(d.spare, h.idx[:0]) }

// hold indexes the open page's values (the bytes of c.page after levels)
// and holds the page; false when the dictionary is full.
func (d *chunkDict) hold(c *fastChunk, levels, nvals int) bool {
	var idx []uint16
	if n := len(d.spare); n > 0 {
		idx, d.spare = d.spare[n-1], d.spare[:n-1]
	}
	idx = slices.Grow(idx[:0], nvals)[:nvals]
	vals := c.page.Bytes()[levels:]
	var ok bool
	d.f32 = c.typ == arrow.FLOAT32
	if d.f32 {
		ok = indexAll(d, idx, unsafe.Slice((*uint32)(unsafe.Pointer(unsafe.SliceData(vals))), nvals))
	} else {
		ok = indexAll(d, idx, unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(vals))), nvals))
	}
	if !ok {
		d.spare = append(d.spare, idx[:0])
		return false
	}
	d.held = append(d.held, heldPage{n: c.n, firstRow: c.rows, levels: bytes.Clone(c.page.Bytes()[:levels]), idx: idx})
	return true
}

// indexAll sets idx[i] to the index of vals[i]'s bits, adding them as
// needed; false when more than dictMax are distinct.
func indexAll[T uint32 | uint64](d *chunkDict, idx []uint16, vals []T) bool {
	const shift = 64 - 15 // log2(len(slots))
	mask := len(d.slots) - 1
	last, lastIdx := uint64(0), -1
	for i, v := range vals {
		b := uint64(v)
		if b == last && lastIdx >= 0 {
			idx[i] = uint16(lastIdx)
			continue
		}
		h := int((b * 0x9E3779B97F4A7C15) >> shift)
		for {
			s := d.slots[h]
			if s == 0 {
				if len(d.keys) == dictMax {
					return false
				}
				d.keys = append(d.keys, b)
				s = int32(len(d.keys))
				d.slots[h] = s
			} else if d.keys[s-1] != b {
				h = (h + 1) & mask
				continue
			}
			last, lastIdx = b, int(s-1)
			idx[i] = uint16(s - 1)
			break
		}
	}
	return true
}
