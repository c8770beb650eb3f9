package stages

// Column helpers shared by the preprocess and features kinds: typed views of
// Arrow arrays as float64 (NaN marks a missing value), arrays built over Go
// slices without copying, dense key ids for group-by and one-hot, dates as
// day numbers, exact quantiles with numpy's linear interpolation, and the
// fixed inputs/outputs check. Everything works one column of one batch at a
// time over typed value slices.

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
)

// opsNumber is the set of Go types behind Arrow's numeric columns.
type opsNumber interface {
	~int8 | ~int16 | ~int32 | ~int64 | ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~float32 | ~float64
}

// opsNumRows returns the row count in a Parquet file's footer, or 0 if it
// cannot be read (a hint for sizing tables; errors surface on reading).
func opsNumRows(path string) int64 {
	f, err := file.OpenParquetFile(path, false)
	if err != nil {
		return 0
	}
	defer f.Close()
	return f.NumRows()
}

// opsFits reports whether the columns cols (of schema s) of the table file
// at path are estimated to take at most budget bytes decoded.
func opsFits(path string, s *arrow.Schema, cols []string, budget int) bool {
	width := 0
	for _, c := range cols {
		i := opsIndex(s, c)
		if i < 0 {
			return false
		}
		width += opsWidth(s.Field(i).Type)
	}
	return opsNumRows(path)*int64(width) <= int64(budget)
}

// opsWidth estimates the decoded bytes per row of a column of type dt.
func opsWidth(dt arrow.DataType) int {
	switch t := dt.(type) {
	case *arrow.DictionaryType:
		return opsWidth(t.IndexType)
	case arrow.FixedWidthDataType:
		return max(1, t.BitWidth()/8) + 1 // with the validity bitmap, rounded up
	}
	return 24 // offsets and a few bytes of data
}

// opsBatchBytes returns the bytes held by the buffers of rec's columns.
func opsBatchBytes(rec arrow.RecordBatch) int {
	n := 0
	var add func(d arrow.ArrayData)
	add = func(d arrow.ArrayData) {
		for _, b := range d.Buffers() {
			if b != nil {
				n += b.Len()
			}
		}
		if d.DataType().ID() == arrow.DICTIONARY {
			add(d.Dictionary())
		}
	}
	for _, c := range rec.Columns() {
		add(c.Data())
	}
	return n
}

// opsIndex returns the index of the column called name in schema, or -1.
func opsIndex(s *arrow.Schema, name string) int {
	if i := s.FieldIndices(name); len(i) > 0 {
		return i[0]
	}
	return -1
}

// opsIsNumeric reports whether a column of type dt can be read as numbers by
// opsFloat64s (integers, floats, booleans).
func opsIsNumeric(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64,
		arrow.FLOAT32, arrow.FLOAT64, arrow.BOOL:
		return true
	}
	return false
}

// opsIsInteger reports whether dt is an integer type.
func opsIsInteger(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64, arrow.UINT8, arrow.UINT16, arrow.UINT32, arrow.UINT64:
		return true
	}
	return false
}

// opsIsFloat reports whether dt is float32 or float64.
func opsIsFloat(dt arrow.DataType) bool {
	return dt.ID() == arrow.FLOAT32 || dt.ID() == arrow.FLOAT64
}

// opsIsString reports whether dt holds strings: string, large string, or a
// dictionary of either.
func opsIsString(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.STRING, arrow.LARGE_STRING:
		return true
	case arrow.DICTIONARY:
		return opsIsString(dt.(*arrow.DictionaryType).ValueType)
	}
	return false
}

// opsIsDate reports whether dt holds dates or times opsDays can read.
func opsIsDate(dt arrow.DataType) bool {
	switch dt.ID() {
	case arrow.DATE32, arrow.DATE64, arrow.TIMESTAMP:
		return true
	}
	return false
}

// opsValid reports whether row i of a is not null, reading the validity
// bitmap directly.
func opsValid(bitmap []byte, offset, i int) bool {
	return bitmap == nil || bitutil.BitIsSet(bitmap, offset+i)
}

// opsGrow returns a slice of length n, reusing buf's storage when it fits.
func opsGrow[T any](buf []T, n int) []T {
	if cap(buf) >= n {
		return buf[:n]
	}
	return make([]T, n)
}

// opsFloat64s reads a numeric or boolean array as float64 into buf (grown
// as needed), with NaN for null rows.
func opsFloat64s(a arrow.Array, buf []float64) ([]float64, error) {
	n := a.Len()
	dst := opsGrow(buf, n)
	switch c := a.(type) {
	case *array.Int8:
		opsConvert(c.Int8Values(), dst)
	case *array.Int16:
		opsConvert(c.Int16Values(), dst)
	case *array.Int32:
		opsConvert(c.Int32Values(), dst)
	case *array.Int64:
		opsConvert(c.Int64Values(), dst)
	case *array.Uint8:
		opsConvert(c.Uint8Values(), dst)
	case *array.Uint16:
		opsConvert(c.Uint16Values(), dst)
	case *array.Uint32:
		opsConvert(c.Uint32Values(), dst)
	case *array.Uint64:
		opsConvert(c.Uint64Values(), dst)
	case *array.Float32:
		opsConvert(c.Float32Values(), dst)
	case *array.Float64:
		copy(dst, c.Float64Values())
	case *array.Boolean:
		for i := range dst {
			dst[i] = 0
			if c.Value(i) {
				dst[i] = 1
			}
		}
	default:
		return nil, fmt.Errorf("type %s is not numeric", a.DataType())
	}
	if a.NullN() > 0 {
		bm, off := a.NullBitmapBytes(), a.Data().Offset()
		nan := math.NaN()
		for i := range dst {
			if !bitutil.BitIsSet(bm, off+i) {
				dst[i] = nan
			}
		}
	}
	return dst, nil
}

func opsConvert[T opsNumber](src []T, dst []float64) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = float64(v)
	}
}

// opsFloat32Array wraps vals (without copying) as a float32 array; NaN and
// ±Inf become null.
func opsFloat32Array(vals []float32) arrow.Array {
	var validity *memory.Buffer
	nulls := 0
	for _, v := range vals {
		// NaN and ±Inf are the floats whose exponent bits are all set:
		// count them without a branch (b-1 wraps only when b is 0).
		b := math.Float32bits(v)&0x7F800000 ^ 0x7F800000
		nulls += int((b - 1) >> 31)
	}
	if nulls > 0 {
		bm := make([]byte, bitutil.BytesForBits(int64(len(vals))))
		for i, v := range vals {
			if v == v && !math.IsInf(float64(v), 0) {
				bitutil.SetBit(bm, i)
			}
		}
		validity = memory.NewBufferBytes(bm)
	}
	data := array.NewData(arrow.PrimitiveTypes.Float32, len(vals),
		[]*memory.Buffer{validity, memory.NewBufferBytes(arrow.Float32Traits.CastToBytes(vals))}, nil, nulls, 0)
	defer data.Release()
	return array.MakeFromData(data)
}

// opsPrimitiveArray wraps vals (without copying) as an array of type dt,
// with valid (nil: all valid) marking the non-null rows.
func opsPrimitiveArray[T opsNumber](dt arrow.DataType, vals []T, valid []bool) arrow.Array {
	var validity *memory.Buffer
	nulls := 0
	if valid != nil {
		bm := make([]byte, bitutil.BytesForBits(int64(len(vals))))
		for i, ok := range valid {
			if ok {
				bitutil.SetBit(bm, i)
			} else {
				nulls++
			}
		}
		if nulls > 0 {
			validity = memory.NewBufferBytes(bm)
		}
	}
	var raw []byte
	if len(vals) > 0 {
		raw = opsBytes(vals)
	}
	data := array.NewData(dt, len(vals), []*memory.Buffer{validity, memory.NewBufferBytes(raw)}, nil, nulls, 0)
	defer data.Release()
	return array.MakeFromData(data)
}

// opsBytes reinterprets a slice of numbers as bytes.
func opsBytes[T opsNumber](vals []T) []byte {
	var z T
	switch any(z).(type) {
	case int8:
		return arrow.Int8Traits.CastToBytes(any(vals).([]int8))
	case int16:
		return arrow.Int16Traits.CastToBytes(any(vals).([]int16))
	case int32:
		return arrow.Int32Traits.CastToBytes(any(vals).([]int32))
	case int64:
		return arrow.Int64Traits.CastToBytes(any(vals).([]int64))
	case uint8:
		return arrow.Uint8Traits.CastToBytes(any(vals).([]uint8))
	case uint16:
		return arrow.Uint16Traits.CastToBytes(any(vals).([]uint16))
	case uint32:
		return arrow.Uint32Traits.CastToBytes(any(vals).([]uint32))
	case uint64:
		return arrow.Uint64Traits.CastToBytes(any(vals).([]uint64))
	case float32:
		return arrow.Float32Traits.CastToBytes(any(vals).([]float32))
	case float64:
		return arrow.Float64Traits.CastToBytes(any(vals).([]float64))
	}
	panic(fmt.Sprintf("opsBytes: unsupported element type %T", z))
}

// opsDictIndices returns the indices of a dictionary array as int64s in buf.
func opsDictIndices(d *array.Dictionary, buf []int64) []int64 {
	dst, _ := opsInt64s(d.Indices(), buf) // indices are always integers
	return dst
}

// opsMapIndices sets dst[i] to ids[idx[i]].
func opsMapIndices(idx []int8, ids []int32, dst []int32) {
	dst = dst[:len(idx)]
	for i, j := range idx {
		dst[i] = ids[j]
	}
}

func opsWiden[T opsNumber](src []T, dst []int64) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = int64(v)
	}
}

// opsInt64s reads an integer array as int64 into buf; valid rows only are
// meaningful (check the validity bitmap).
func opsInt64s(a arrow.Array, buf []int64) ([]int64, bool) {
	dst := opsGrow(buf, a.Len())
	switch c := a.(type) {
	case *array.Int8:
		opsWiden(c.Int8Values(), dst)
	case *array.Int16:
		opsWiden(c.Int16Values(), dst)
	case *array.Int32:
		opsWiden(c.Int32Values(), dst)
	case *array.Int64:
		copy(dst, c.Int64Values())
	case *array.Uint8:
		opsWiden(c.Uint8Values(), dst)
	case *array.Uint16:
		opsWiden(c.Uint16Values(), dst)
	case *array.Uint32:
		opsWiden(c.Uint32Values(), dst)
	case *array.Uint64:
		opsWiden(c.Uint64Values(), dst)
	case *array.Boolean:
		for i := range dst {
			dst[i] = 0
			if c.Value(i) {
				dst[i] = 1
			}
		}
	default:
		return nil, false
	}
	return dst, true
}

// opsStringAt returns row i of a string, large string or dictionary-of-string
// array. The string aliases Arrow memory: clone it to keep it.
func opsStringAt(a arrow.Array, i int) string {
	switch c := a.(type) {
	case *array.String:
		return c.Value(i)
	case *array.LargeString:
		return c.Value(i)
	case *array.Dictionary:
		return opsStringAt(c.Dictionary(), c.GetValueIndex(i))
	}
	return a.ValueStr(i)
}

// opsIntMap maps int64 keys to dense ids 0..n-1: the hot path of dedupe
// and of grouping by an integer id, without Go map overhead. While every key
// seen lies in a range of at most maxDense values (ids like customer
// numbers), ids are looked up by key - lo in one array, which keys that come
// nearly in order walk through like a stream; beyond that, an open-addressing
// table (linear probing, Fibonacci hashing), whose random probes miss the
// cache for large key sets. Either way the ids are given in first-seen order.
type opsIntMap struct {
	keys  []int64
	ids   []int32 // id+1; 0 marks an empty slot
	shift uint
	n     int

	hashed   bool    // the keys are in keys/ids, not dense
	dense    []int32 // id+1 of key lo+i; 0: absent
	lo       int64
	maxDense int // the most slots dense may have
	want     int // the keys reserve asked room for
}

// opsDenseMin is the range of keys the dense mode takes before reserve says
// how many keys to expect.
const opsDenseMin = 1 << 20

func newOpsIntMap() *opsIntMap {
	return &opsIntMap{maxDense: opsDenseMin}
}

func (m *opsIntMap) resize(size int) {
	old, oldIDs := m.keys, m.ids
	m.keys = make([]int64, size)
	m.ids = make([]int32, size)
	m.shift = uint(64 - bitsLen(size))
	for i, id := range oldIDs {
		if id != 0 {
			m.put(old[i], id)
		}
	}
}

func bitsLen(size int) int {
	n := 0
	for size > 1 {
		size >>= 1
		n++
	}
	return n
}

func (m *opsIntMap) slot(k int64) int {
	return int(uint64(k) * 0x9E3779B97F4A7C15 >> m.shift)
}

func (m *opsIntMap) put(k int64, id int32) {
	mask := len(m.keys) - 1
	for s := m.slot(k); ; s = (s + 1) & mask {
		if m.ids[s] == 0 {
			m.keys[s], m.ids[s] = k, id
			return
		}
	}
}

// reserve sizes the map for n keys without growing: the dense mode may
// then span 4n values.
func (m *opsIntMap) reserve(n int) {
	m.want = max(m.want, n)
	if !m.hashed {
		m.maxDense = max(m.maxDense, 4*n)
		return
	}
	size := max(len(m.keys), 1<<10)
	for size < 2*n+2 {
		size *= 2
	}
	if size > len(m.keys) {
		m.resize(size)
	}
}

// denseSlot returns the index of k in dense, or -1 when k is outside it.
func (m *opsIntMap) denseSlot(k int64) int {
	if k < m.lo {
		return -1
	}
	if d := uint64(k) - uint64(m.lo); d < uint64(len(m.dense)) {
		return int(d)
	}
	return -1
}

// growDense widens dense to hold k, unless the range would pass maxDense.
func (m *opsIntMap) growDense(k int64) bool {
	if m.dense == nil {
		m.lo, m.dense = k, make([]int32, opsUpTo(min(1<<12, m.maxDense), uint64(math.MaxInt64)-uint64(k)))
		return true
	}
	hi := m.lo + int64(len(m.dense)) - 1
	var span uint64 // the values from min(lo, k) to max(hi, k)
	if k < m.lo {
		span = uint64(hi) - uint64(k) + 1
	} else {
		span = uint64(k) - uint64(m.lo) + 1
	}
	if span == 0 || span > uint64(m.maxDense) {
		return false
	}
	size := min(max(2*len(m.dense), int(span)), m.maxDense)
	if k < m.lo {
		size = opsUpTo(size, uint64(hi)^1<<63) // hi - MinInt64: lo stays >= MinInt64
		lo := hi - int64(size) + 1
		dense := make([]int32, size)
		copy(dense[m.lo-lo:], m.dense)
		m.lo, m.dense = lo, dense
		return true
	}
	size = opsUpTo(size, uint64(math.MaxInt64)-uint64(m.lo)) // the last slot stays <= MaxInt64
	dense := make([]int32, size)
	copy(dense, m.dense)
	m.dense = dense
	return true
}

// opsUpTo returns size, or d+1 if that is smaller (d+1 may not fit uint64).
func opsUpTo(size int, d uint64) int {
	if uint64(size-1) > d {
		return int(d + 1)
	}
	return size
}

// toHash moves the keys from dense into the hash table, for good.
func (m *opsIntMap) toHash() {
	m.hashed = true
	size := 1 << 10
	for size < 2*max(m.n, m.want)+2 {
		size *= 2
	}
	m.resize(size)
	for i, id := range m.dense {
		if id != 0 {
			m.put(m.lo+int64(i), id)
		}
	}
	m.dense = nil
}

// get returns the id of k, or -1.
func (m *opsIntMap) get(k int64) int32 {
	if !m.hashed {
		if s := m.denseSlot(k); s >= 0 {
			return m.dense[s] - 1
		}
		return -1
	}
	mask := len(m.keys) - 1
	for s := m.slot(k); ; s = (s + 1) & mask {
		switch id := m.ids[s]; {
		case id == 0:
			return -1
		case m.keys[s] == k:
			return id - 1
		}
	}
}

// add returns the id of k, giving it the next id if it is new.
func (m *opsIntMap) add(k int64) (id int32, isNew bool) {
	if !m.hashed {
		s := m.denseSlot(k)
		if s < 0 && m.growDense(k) {
			s = m.denseSlot(k)
		}
		if s >= 0 {
			if got := m.dense[s]; got != 0 {
				return got - 1, false
			}
			id = int32(m.n)
			m.dense[s] = id + 1
			m.n++
			return id, true
		}
		m.toHash()
	}
	mask := len(m.keys) - 1
	for s := m.slot(k); ; s = (s + 1) & mask {
		switch got := m.ids[s]; {
		case got == 0:
			id = int32(m.n)
			m.keys[s], m.ids[s] = k, id+1
			m.n++
			if 2*m.n > len(m.keys) {
				m.resize(2 * len(m.keys))
			}
			return id, true
		case m.keys[s] == k:
			return got - 1, false
		}
	}
}

// opsKeys gives the values of one key column dense ids 0..n-1, consistent
// across batches and passes, for grouping, dedupe and one-hot encoding.
// Integer, boolean, string and dictionary-of-string columns are keys.
type opsKeys struct {
	str   map[string]int32
	ints  *opsIntMap
	names []string // the value of each id as text (strings; integers in decimal)
	nums  []int64  // the value of each integer id
	isInt bool
	i64   []int64
	dict  []int32
}

func newOpsKeys(dt arrow.DataType) (*opsKeys, error) {
	switch {
	case opsIsString(dt):
		return &opsKeys{str: map[string]int32{}}, nil
	case opsIsInteger(dt) || dt.ID() == arrow.BOOL:
		return &opsKeys{ints: newOpsIntMap(), isInt: true}, nil
	}
	return nil, fmt.Errorf("type %s cannot be a key (use integers, booleans or strings)", dt)
}

// reserve prepares for about n distinct keys.
func (k *opsKeys) reserve(n int) {
	if k.isInt && n > 0 {
		k.ints.reserve(n)
		k.nums = slices.Grow(k.nums, n)
	}
}

// len returns the number of distinct keys seen.
func (k *opsKeys) len() int {
	if k.isInt {
		return len(k.nums)
	}
	return len(k.names)
}

// name returns the text of id.
func (k *opsKeys) name(id int32) string {
	if k.isInt {
		return strconv.FormatInt(k.nums[id], 10)
	}
	return k.names[id]
}

func (k *opsKeys) lookupString(s string, add bool) int32 {
	if id, ok := k.str[s]; ok {
		return id
	}
	if !add {
		return -1
	}
	id := int32(len(k.names))
	s = strings.Clone(s)
	k.str[s] = id
	k.names = append(k.names, s)
	return id
}

// encode writes the id of each row of a into buf (grown as needed): -1 for
// null rows, and for keys not seen before when add is false.
func (k *opsKeys) encode(a arrow.Array, buf []int32, add bool) []int32 {
	n := a.Len()
	dst := opsGrow(buf, n)
	bm, off := a.NullBitmapBytes(), a.Data().Offset()
	if a.NullN() == 0 {
		bm = nil
	}
	if k.isInt {
		k.i64, _ = opsInt64s(a, k.i64)
		for i, v := range k.i64[:n] {
			if !opsValid(bm, off, i) {
				dst[i] = -1
				continue
			}
			if add {
				id, isNew := k.ints.add(v)
				if isNew {
					k.nums = append(k.nums, v)
				}
				dst[i] = id
			} else {
				dst[i] = k.ints.get(v)
			}
		}
		return dst
	}
	switch c := a.(type) {
	case *array.Dictionary:
		// Map each dictionary entry once, then the rows through their indices.
		dict := c.Dictionary()
		k.dict = opsGrow(k.dict, dict.Len())
		for j := range k.dict {
			if dict.IsNull(j) {
				k.dict[j] = -1
			} else {
				k.dict[j] = k.lookupString(opsStringAt(dict, j), add)
			}
		}
		if ix, ok := c.Indices().(*array.Int8); ok && bm == nil {
			// The usual case (a category column of up to 128 values, no
			// nulls): map the indices directly, not through int64s.
			opsMapIndices(ix.Int8Values(), k.dict, dst)
			return dst
		}
		k.i64 = opsDictIndices(c, k.i64)
		for i, j := range k.i64[:n] {
			if !opsValid(bm, off, i) {
				dst[i] = -1
			} else {
				dst[i] = k.dict[j]
			}
		}
	case *array.String:
		for i := range dst {
			if !opsValid(bm, off, i) {
				dst[i] = -1
			} else {
				dst[i] = k.lookupString(c.Value(i), add)
			}
		}
	case *array.LargeString:
		for i := range dst {
			if !opsValid(bm, off, i) {
				dst[i] = -1
			} else {
				dst[i] = k.lookupString(c.Value(i), add)
			}
		}
	}
	return dst
}

// opsDaySeconds is the length of a day in seconds.
const opsDaySeconds = 86400

// opsParseDate parses "YYYY-MM-DD" (optionally followed by a time, which is
// ignored) into days since 1970-01-01.
func opsParseDate(s string) (int32, error) {
	if len(s) > 10 && (s[10] == 'T' || s[10] == ' ') {
		s = s[:10]
	}
	t, err := time.Parse("2006-01-02", s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a date (YYYY-MM-DD)", s)
	}
	return int32(t.Unix() / opsDaySeconds), nil
}

// opsDays reads a date32, date64, timestamp (UTC day) or "YYYY-MM-DD" string
// array as days since 1970-01-01 into buf, with valid[i] false for nulls.
// A string that is not a date is an error naming the row (batch-relative).
func opsDays(a arrow.Array, buf []int32, valid []bool) ([]int32, []bool, error) {
	n := a.Len()
	dst := opsGrow(buf, n)
	ok := opsGrow(valid, n)
	bm, off := a.NullBitmapBytes(), a.Data().Offset()
	if a.NullN() == 0 {
		bm = nil
	}
	for i := range ok {
		ok[i] = opsValid(bm, off, i)
	}
	switch c := a.(type) {
	case *array.Date32:
		for i, v := range c.Date32Values() {
			dst[i] = int32(v)
		}
	case *array.Date64:
		for i, v := range c.Date64Values() {
			dst[i] = int32(opsFloorDiv(int64(v), 86400000))
		}
	case *array.Timestamp:
		unit := c.DataType().(*arrow.TimestampType).Unit
		per := int64(opsDaySeconds) * int64(time.Second/unit.Multiplier())
		for i, v := range c.TimestampValues() {
			dst[i] = int32(opsFloorDiv(int64(v), per))
		}
	default:
		if !opsIsString(a.DataType()) {
			return nil, nil, fmt.Errorf("type %s is not a date", a.DataType())
		}
		for i := range dst {
			if !ok[i] {
				continue
			}
			d, err := opsParseDate(opsStringAt(a, i))
			if err != nil {
				return nil, nil, &opsRowError{Row: i, Err: err}
			}
			dst[i] = d
		}
	}
	return dst, ok, nil
}

func opsFloorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// opsCivil converts days since 1970-01-01 to year, month (1-12) and day
// (Howard Hinnant's days_from_civil inverse).
func opsCivil(days int32) (y, m, d int) {
	z := int64(days) + 719468
	era := opsFloorDiv(z, 146097)
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	yy := yoe + era*400
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	dd := doy - (153*mp+2)/5 + 1
	mm := mp + 3
	if mp >= 10 {
		mm = mp - 9
	}
	if mm <= 2 {
		yy++
	}
	return int(yy), int(mm), int(dd)
}

// opsRowError is an error at a row of a batch; callers add the batch's
// offset to name the table row.
type opsRowError struct {
	Row int
	Err error
}

func (e *opsRowError) Error() string { return fmt.Sprintf("row %d: %v", e.Row, e.Err) }
func (e *opsRowError) Unwrap() error { return e.Err }

// opsAtRow rewrites a batch-relative row error to name the table row
// (1-based, as a person counts data rows).
func opsAtRow(err error, offset int64) error {
	var re *opsRowError
	if errors.As(err, &re) {
		return fmt.Errorf("row %d: %w", offset+int64(re.Row)+1, re.Err)
	}
	return err
}

// opsSelect reorders a so that a[k] is the value that would be at k if a
// were sorted, everything before it is <= a[k] and everything after >= a[k]
// (introselect: median-of-three quickselect, falling back to sorting small
// ranges). a holds no NaN. ingest uses it on hashes too.
func opsSelect[T cmp.Ordered](a []T, k int) {
	lo, hi := 0, len(a)-1
	for hi-lo > 16 {
		mid := lo + (hi-lo)/2
		// median of three to a[lo]
		if a[mid] < a[lo] {
			a[mid], a[lo] = a[lo], a[mid]
		}
		if a[hi] < a[lo] {
			a[hi], a[lo] = a[lo], a[hi]
		}
		if a[hi] < a[mid] {
			a[hi], a[mid] = a[mid], a[hi]
		}
		p := a[mid]
		// Hoare partition
		i, j := lo, hi
		for i <= j {
			for a[i] < p {
				i++
			}
			for a[j] > p {
				j--
			}
			if i <= j {
				a[i], a[j] = a[j], a[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return // a[j+1..i-1] all equal p
		}
	}
	// insertion sort of the small range
	for i := lo + 1; i <= hi; i++ {
		v := a[i]
		j := i - 1
		for j >= lo && a[j] > v {
			a[j+1] = a[j]
			j--
		}
		a[j+1] = v
	}
}

// opsQuantiles returns the qs quantiles of vals (no NaN; may be reordered
// in place) the way numpy.quantile's default "linear" method computes them,
// which pandas' quantile uses: virtual index n*q + (1-q) - 1, neighbours
// below and above it, and numpy's _lerp. An empty vals gives NaN.
func opsQuantiles(vals []float64, qs []float64) []float64 {
	out := make([]float64, len(qs))
	n := len(vals)
	if n == 0 {
		for i := range out {
			out[i] = math.NaN()
		}
		return out
	}
	type want struct {
		prev, next int
		gamma      float64
	}
	ws := make([]want, len(qs))
	var idx []int
	for i, q := range qs {
		vi := float64(n)*q + (1 - q) - 1
		prev := math.Floor(vi)
		w := want{prev: int(prev), next: int(prev) + 1, gamma: vi - prev}
		switch {
		case vi >= float64(n-1):
			w.prev, w.next = n-1, n-1
		case vi < 0:
			w.prev, w.next = 0, 0
		}
		ws[i] = w
		idx = append(idx, w.prev, w.next)
	}
	got := opsOrderStats(vals, idx)
	for i, w := range ws {
		out[i] = opsLerp(got[w.prev], got[w.next], w.gamma)
	}
	return out
}

// opsHistMin is the fewest values opsOrderStats buckets before selecting;
// below it a quickselect over all of them is as fast.
const opsHistMin = 1 << 14

// opsOrderStats returns the k-th smallest value of vals (no NaN; may be
// reordered in place) for each k of ks (0 <= k < len(vals)).
//
// Large inputs are bucketed first: one pass finds the range, one counts the
// values per bucket of a monotone map of the value onto 64k buckets, one
// gathers the few buckets that hold a wanted rank, and only those are
// selected in. That is about three cheap passes instead of a quickselect
// (several partitioning passes) per wanted rank.
func opsOrderStats(vals []float64, ks []int) map[int]float64 {
	got := make(map[int]float64, len(ks))
	ks = slices.Clone(ks)
	sortInts(ks)
	ks = slices.Compact(ks)
	n := len(vals)
	if n < opsHistMin || n > math.MaxInt32 || len(ks) > math.MaxInt8 {
		opsSelectMany(vals, ks, got)
		return got
	}
	lo, hi := vals[0], vals[0]
	for _, v := range vals {
		lo = min(lo, v)
		hi = max(hi, v)
	}
	nb := 1 << 16
	scale := float64(nb) / (hi - lo)
	if !(hi > lo) || math.IsInf(scale, 0) || !(scale > 0) {
		if hi == lo {
			for _, k := range ks {
				got[k] = lo
			}
			return got
		}
		opsSelectMany(vals, ks, got) // infinite or huge range
		return got
	}
	// bucket(v) = min(int((v-lo)*scale), nb-1) is non-decreasing in v:
	// each step (a rounded subtraction, a product with a positive constant,
	// truncation, clamping) preserves order.
	counts := make([]int32, nb)
	last := int32(nb - 1)
	for _, v := range vals {
		counts[min(int32((v-lo)*scale), last)]++
	}
	// The bucket holding each wanted rank, and the rank of its first value.
	slot := make([]int8, nb) // 1 + index into buckets, 0 for none
	type bucket struct {
		b, start int
		vals     []float64
		ks       []int
	}
	var buckets []*bucket
	cum, b := 0, 0
	for _, k := range ks {
		for cum+int(counts[b]) <= k {
			cum += int(counts[b])
			b++
		}
		if slot[b] == 0 {
			buckets = append(buckets, &bucket{b: b, start: cum, vals: make([]float64, 0, counts[b])})
			slot[b] = int8(len(buckets))
		}
		bk := buckets[slot[b]-1]
		bk.ks = append(bk.ks, k-cum)
	}
	for _, v := range vals {
		if s := slot[min(int32((v-lo)*scale), last)]; s != 0 {
			bk := buckets[s-1]
			bk.vals = append(bk.vals, v)
		}
	}
	for _, bk := range buckets {
		sub := make(map[int]float64, len(bk.ks))
		opsSelectMany(bk.vals, bk.ks, sub)
		for r, v := range sub {
			got[bk.start+r] = v
		}
	}
	return got
}

// opsSelectMany puts the k-th smallest value of a in got[k] for each k of
// ks (ascending, distinct), selecting each in the part of a above the
// previous one.
func opsSelectMany(a []float64, ks []int, got map[int]float64) {
	base := 0
	for _, k := range ks {
		opsSelect(a[base:], k-base)
		got[k] = a[k]
		base = k
	}
}

// opsLerp is numpy's _lerp: a + (b-a)*t, computed from b when t >= 0.5 so
// that the ends are exact.
func opsLerp(a, b, t float64) float64 {
	d := b - a
	if t >= 0.5 {
		return b - d*(1-t)
	}
	return a + d*t
}

func sortInts(a []int) {
	for i := 1; i < len(a); i++ {
		v := a[i]
		j := i - 1
		for j >= 0 && a[j] > v {
			a[j+1] = a[j]
			j--
		}
		a[j+1] = v
	}
}

// opsMedian returns the median of vals (no NaN; may be reordered in place)
// as numpy does: the middle value, or the mean of the two middle values.
func opsMedian(vals []float64) float64 {
	n := len(vals)
	if n == 0 {
		return math.NaN()
	}
	h := n / 2
	if n%2 == 1 {
		return opsOrderStats(vals, []int{h})[h]
	}
	got := opsOrderStats(vals, []int{h - 1, h})
	return (got[h-1] + got[h]) / 2
}

// opsMoments accumulates count, mean and the sum of squared deviations over
// batches (Chan et al.'s pairwise update of a per-batch two-pass result), in
// float64, skipping NaN.
type opsMoments struct {
	n    float64
	mean float64
	m2   float64
}

func (m *opsMoments) add(vals []float64) { opsMomentsAdd(m, vals) }

// opsMomentsAdd is opsMoments.add over values of any numeric type, each
// taken as float64.
func opsMomentsAdd[T opsNumber](m *opsMoments, vals []T) {
	var n, sum float64
	for _, x := range vals {
		if v := float64(x); v == v {
			n++
			sum += v
		}
	}
	if n == 0 {
		return
	}
	mean := sum / n
	var m2 float64
	for _, x := range vals {
		if v := float64(x); v == v {
			d := v - mean
			m2 += d * d
		}
	}
	if m.n == 0 {
		m.n, m.mean, m.m2 = n, mean, m2
		return
	}
	tot := m.n + n
	delta := mean - m.mean
	m.mean += delta * n / tot
	m.m2 += m2 + delta*delta*m.n*n/tot
	m.n = tot
}

// std returns the population standard deviation (ddof=0).
func (m *opsMoments) std() float64 {
	if m.n == 0 {
		return math.NaN()
	}
	return math.Sqrt(m.m2 / m.n)
}

// opsPipe runs do over the items sent to it, in the order sent, on a
// goroutine of its own, so that the sender computes the next item
// meanwhile: encoding and compressing a batch (opsStartWriter), collecting
// or fitting statistics in order (the same sums as one goroutine would
// get). Every item is released after do; after do fails, the later items
// are only released, and finish reports the failure.
type opsPipe[T any] struct {
	ch   chan T
	done chan error
	err  error
	open bool
}

func opsStartPipe[T any](do func(T) error, release func(T)) *opsPipe[T] {
	p := &opsPipe[T]{ch: make(chan T, 2), done: make(chan error, 1), open: true}
	go func() {
		var err error
		for v := range p.ch {
			if err == nil {
				err = do(v)
			}
			release(v)
		}
		p.done <- err
	}()
	return p
}

// send hands v (ownership included) to the pipe.
func (p *opsPipe[T]) send(v T) { p.ch <- v }

// finish waits for every item sent and returns the first error of do;
// later calls return the same.
func (p *opsPipe[T]) finish() error {
	if p.open {
		p.open = false
		close(p.ch)
		p.err = <-p.done
	}
	return p.err
}

// opsStartWriter starts writing record batches to w on a goroutine of its
// own; the caller sends batches and must call finish.
func opsStartWriter(w interface {
	Write(arrow.RecordBatch) error
}) *opsPipe[arrow.RecordBatch] {
	return opsStartPipe(w.Write, arrow.RecordBatch.Release)
}
