package stages

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/bitutil"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// This file holds ingest's column machinery, shared by every source:
//
//   - ingBuilder collects the values of one column of one chunk (a few MB of
//     a source file) in plain Go slices, inferring the column's kind as it
//     goes unless the schema declares it;
//   - ingPiece is a finished column of one chunk: an Arrow array of the
//     chunk's own narrowest type plus the statistics that decide the final
//     type (integer range, float32 faithfulness, local dictionary);
//   - ingest.go joins the pieces' kinds and statistics into one final type
//     per column, and converts each piece to it while writing.

// ingKind is the logical kind of a column.
type ingKind uint8

const (
	ingNull  ingKind = iota // no non-null value seen yet
	ingBool                 // true / false
	ingInt                  // whole numbers
	ingFloat                // other numbers
	ingDate                 // YYYY-MM-DD
	ingStr                  // anything else
	ingOther                // an Arrow type passed through unchanged (Parquet sources)
)

func (k ingKind) String() string {
	switch k {
	case ingNull:
		return "null"
	case ingBool:
		return "bool"
	case ingInt:
		return "int"
	case ingFloat:
		return "float"
	case ingDate:
		return "date"
	case ingStr:
		return "string"
	}
	return "other"
}

// ingJoin returns the kind that holds the values of both kinds.
func ingJoin(a, b ingKind) ingKind {
	switch {
	case a == b:
		return a
	case a == ingNull:
		return b
	case b == ingNull:
		return a
	case a == ingInt && b == ingFloat, a == ingFloat && b == ingInt:
		return ingFloat
	}
	return ingStr
}

const (
	// ingDictMax is the most distinct values an inferred string column may
	// have to be dictionary-encoded.
	ingDictMax = 1 << 15
	// ingF32Exact is the largest integer magnitude float32 holds exactly.
	ingF32Exact = 1 << 24
)

// ingDecl is a declared column type (param schema).
type ingDecl struct {
	name   string // as written: int8, float32, category, ...
	kind   ingKind
	typ    arrow.DataType // nil for category (index width chosen later)
	lo, hi int64          // range of a declared integer type
	dict   bool           // category: dictionary-encoded whatever the cardinality
}

// ingDeclTypes lists the type names param schema accepts.
var ingDeclTypes = []string{"int8", "int16", "int32", "int64", "float32", "float64", "bool", "string", "category", "date"}

func ingParseDecl(name string) (*ingDecl, bool) {
	d := &ingDecl{name: name}
	switch name {
	case "int8":
		d.kind, d.typ, d.lo, d.hi = ingInt, arrow.PrimitiveTypes.Int8, math.MinInt8, math.MaxInt8
	case "int16":
		d.kind, d.typ, d.lo, d.hi = ingInt, arrow.PrimitiveTypes.Int16, math.MinInt16, math.MaxInt16
	case "int32":
		d.kind, d.typ, d.lo, d.hi = ingInt, arrow.PrimitiveTypes.Int32, math.MinInt32, math.MaxInt32
	case "int64":
		d.kind, d.typ, d.lo, d.hi = ingInt, arrow.PrimitiveTypes.Int64, math.MinInt64, math.MaxInt64
	case "float32":
		d.kind, d.typ = ingFloat, arrow.PrimitiveTypes.Float32
	case "float64":
		d.kind, d.typ = ingFloat, arrow.PrimitiveTypes.Float64
	case "bool":
		d.kind, d.typ = ingBool, arrow.FixedWidthTypes.Boolean
	case "string":
		d.kind, d.typ = ingStr, arrow.BinaryTypes.String
	case "category":
		d.kind, d.dict = ingStr, true
	case "date":
		d.kind, d.typ = ingDate, arrow.FixedWidthTypes.Date32
	default:
		return nil, false
	}
	return d, true
}

// ingValueError is a value that does not fit its column's declared type.
// Row is 0-based within the chunk; the caller turns it into a file row.
type ingValueError struct {
	Row   int
	Value string
	Msg   string
}

func (e *ingValueError) Error() string { return e.Msg }

// ingWiden asks the parser to parse the chunk again with column Col as Kind:
// a value did not fit the kind inferred so far.
type ingWiden struct {
	Col  int
	Kind ingKind
}

func (e *ingWiden) Error() string { return fmt.Sprintf("column %d widens to %s", e.Col, e.Kind) }

// ingBuilder accumulates one column of one chunk.
type ingBuilder struct {
	kind  ingKind
	decl  *ingDecl // declared type, or nil
	force bool     // kind is fixed: a value that does not fit is an error
	lo    int64    // integer range accepted (declared type, else int64)
	hi    int64
	nulls map[string]bool // null tokens

	n        int
	nullRows []int32

	ints   []int64
	floats []float64
	f32ok  bool // every float so far is faithful as float32
	f32mem ingF32Memo
	bools  []byte
	dates  []int32

	strDict  bool // strings dictionary-encoded (else plain)
	keepDict bool // never fall back to plain strings (declared category)
	plainStr bool // never dictionary-encode (declared string, or high cardinality)
	dict     ingStrTab
	dictVals []string
	codes    []int32
	offs     []int32 // plain strings: n+1 offsets into sdata
	sdata    []byte
}

// reset prepares b for a new chunk whose column starts as kind.
func (b *ingBuilder) reset(kind ingKind, decl *ingDecl, force, highCard bool, nulls map[string]bool) {
	b.kind, b.decl, b.force, b.nulls = kind, decl, force || decl != nil, nulls
	b.lo, b.hi = math.MinInt64, math.MaxInt64
	b.keepDict, b.plainStr = false, highCard
	if decl != nil {
		b.kind = decl.kind
		if decl.kind == ingInt {
			b.lo, b.hi = decl.lo, decl.hi
		}
		b.keepDict = decl.dict
		b.plainStr = decl.kind == ingStr && !decl.dict
	}
	b.n = 0
	b.nullRows = b.nullRows[:0]
	b.ints, b.floats, b.bools, b.dates = b.ints[:0], b.floats[:0], b.bools[:0], b.dates[:0]
	b.f32ok = true
	b.codes, b.dictVals = b.codes[:0], b.dictVals[:0]
	b.dict.reset()
	b.offs = append(b.offs[:0], 0)
	b.sdata = b.sdata[:0]
	b.strDict = !b.plainStr
}

func (b *ingBuilder) isNull(v []byte) bool {
	if len(v) == 0 {
		return b.nulls[""]
	}
	return len(b.nulls) > 1 && b.nulls[string(v)]
}

// appendNull appends a null.
func (b *ingBuilder) appendNull() {
	b.nullRows = append(b.nullRows, int32(b.n))
	switch b.kind {
	case ingInt:
		b.ints = append(b.ints, 0)
	case ingFloat:
		b.floats = append(b.floats, 0)
	case ingBool:
		b.bools = append(b.bools, 0)
	case ingDate:
		b.dates = append(b.dates, 0)
	case ingStr:
		if b.strDict {
			b.codes = append(b.codes, 0)
		} else {
			b.offs = append(b.offs, int32(len(b.sdata)))
		}
	}
	b.n++
}

// setKind turns a column that has seen only nulls into kind.
func (b *ingBuilder) setKind(k ingKind) {
	b.kind = k
	switch k {
	case ingInt:
		b.ints = append(b.ints[:0], make([]int64, b.n)...)
	case ingFloat:
		b.floats = append(b.floats[:0], make([]float64, b.n)...)
	case ingBool:
		b.bools = append(b.bools[:0], make([]byte, b.n)...)
	case ingDate:
		b.dates = append(b.dates[:0], make([]int32, b.n)...)
	case ingStr:
		if b.strDict {
			b.codes = append(b.codes[:0], make([]int32, b.n)...)
		} else {
			b.offs = append(b.offs[:1], make([]int32, b.n)...)
		}
	}
}

// intsToFloats widens an int column of this chunk to float (exact below 2^53).
func (b *ingBuilder) intsToFloats() {
	b.floats = b.floats[:0]
	for _, v := range b.ints {
		b.floats = append(b.floats, float64(v))
		if v > ingF32Exact || v < -ingF32Exact {
			b.f32ok = false
		}
	}
	b.ints = b.ints[:0]
	b.kind = ingFloat
}

func (b *ingBuilder) appendInt(v int64) error {
	if v < b.lo || v > b.hi {
		return &ingValueError{Row: b.n, Value: strconv.FormatInt(v, 10), Msg: fmt.Sprintf("%d does not fit %s", v, b.decl.name)}
	}
	b.ints = append(b.ints, v)
	b.n++
	return nil
}

func (b *ingBuilder) appendFloat(v float64, faithful bool) {
	b.floats = append(b.floats, v)
	b.n++
	if b.f32ok && !faithful {
		b.f32ok = b.f32mem.faithful(v)
	}
}

// ingF32Memo remembers values found faithful as float32: the slow check
// (a float formatting and parse) then runs once per distinct value of a
// column of prices or rates, not once per row.
type ingF32Memo struct {
	bits [512]uint64
}

func (m *ingF32Memo) faithful(v float64) bool {
	x := math.Float64bits(v)
	i := (x ^ x>>29) * 0x9E3779B97F4A7C15 >> 55
	if x != 0 && m.bits[i] == x {
		return true
	}
	if !ingF32Faithful(v) {
		return false
	}
	m.bits[i] = x
	return true
}

func (b *ingBuilder) appendBool(v bool) {
	var x byte
	if v {
		x = 1
	}
	b.bools = append(b.bools, x)
	b.n++
}

func (b *ingBuilder) appendDate(d int32) {
	b.dates = append(b.dates, d)
	b.n++
}

func (b *ingBuilder) appendStr(s []byte) {
	if b.strDict {
		slot, code := b.dict.find(s, b.dictVals)
		if code < 0 {
			if len(b.dictVals) >= ingDictMax && !b.keepDict {
				b.toPlain()
				b.appendStr(s)
				return
			}
			code = int32(len(b.dictVals))
			b.dictVals = append(b.dictVals, string(s))
			b.dict.insert(slot, code, b.dictVals)
		}
		b.codes = append(b.codes, code)
	} else {
		b.sdata = append(b.sdata, s...)
		b.offs = append(b.offs, int32(len(b.sdata)))
	}
	b.n++
}

// toPlain switches a dictionary string column of this chunk to plain strings:
// it has too many distinct values to be worth a dictionary.
func (b *ingBuilder) toPlain() {
	b.offs, b.sdata = append(b.offs[:0], 0), b.sdata[:0]
	for _, c := range b.codes {
		b.sdata = append(b.sdata, b.dictVals[c]...)
		b.offs = append(b.offs, int32(len(b.sdata)))
	}
	b.codes, b.dictVals = b.codes[:0], b.dictVals[:0]
	b.dict.reset()
	b.strDict, b.plainStr = false, true
}

// appendText appends a value written as text (CSV fields, partition values,
// JSON strings when jsonStr). It parses the text as the column's kind, infers
// a kind for a column that has seen only nulls, and widens int to float in
// place. It returns *ingWiden when the column must become a string column
// and *ingValueError when a value does not fit the declared type.
func (b *ingBuilder) appendText(col int, v []byte, jsonStr bool) error {
	if b.isNull(v) {
		b.appendNull()
		return nil
	}
	switch b.kind {
	case ingStr:
		b.appendStr(v)
		return nil
	case ingInt:
		if !jsonStr || b.force {
			if x, ok := ingParseInt(v); ok {
				return b.appendInt(x)
			}
			if !b.force {
				if f, faithful, ok := ingParseFloat(v); ok {
					b.intsToFloats()
					b.appendFloat(f, faithful)
					return nil
				}
			}
		}
	case ingFloat:
		if !jsonStr || b.force {
			if f, faithful, ok := ingParseFloat(v); ok {
				b.appendFloat(f, faithful)
				return nil
			}
		}
	case ingDate:
		if d, ok := ingParseDate(v); ok {
			b.appendDate(d)
			return nil
		}
	case ingBool:
		if x, ok := ingParseBool(v, b.force); ok && (!jsonStr || b.force) {
			b.appendBool(x)
			return nil
		}
	case ingNull:
		k := ingClassify(v, jsonStr)
		b.setKind(k)
		return b.appendText(col, v, jsonStr)
	}
	if b.force {
		return b.typeError(v)
	}
	return &ingWiden{Col: col, Kind: ingStr}
}

func (b *ingBuilder) typeError(v []byte) error {
	name := b.kind.String()
	if b.decl != nil {
		name = b.decl.name
	}
	s := string(v)
	if len(s) > 60 {
		s = s[:57] + "..."
	}
	msg := fmt.Sprintf("%q is not %s %s", s, ingArticle(name), name)
	if b.kind == ingInt {
		if _, _, ok := ingParseFloat(v); ok {
			if _, err := strconv.ParseInt(string(v), 10, 64); err != nil && ingAllDigits(v) {
				msg = fmt.Sprintf("%s does not fit %s", s, name)
			}
		}
	}
	return &ingValueError{Row: b.n, Value: s, Msg: msg}
}

func ingArticle(s string) string {
	switch s[0] {
	case 'a', 'e', 'i', 'o', 'u':
		return "an"
	}
	return "a"
}

func ingAllDigits(v []byte) bool {
	if len(v) > 0 && (v[0] == '-' || v[0] == '+') {
		v = v[1:]
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(v) > 0
}

// ingClassify infers the kind of one text value.
func ingClassify(v []byte, jsonStr bool) ingKind {
	if !jsonStr {
		if _, ok := ingParseInt(v); ok {
			return ingInt
		}
		if _, _, ok := ingParseFloat(v); ok {
			return ingFloat
		}
		if _, ok := ingParseBool(v, false); ok {
			return ingBool
		}
	}
	if _, ok := ingParseDate(v); ok {
		return ingDate
	}
	return ingStr
}

// ingStrTab is an open-addressing hash table from strings to dictionary
// codes: faster than a Go map for the short strings of categorical columns.
// A slot keeps the length and the first and last 8 bytes of its string, so
// strings of up to 16 bytes compare without touching the dictionary.
type ingStrTab struct {
	slots []ingSlot
	n     int
}

type ingSlot struct {
	code   int32 // code+1; 0 is empty
	n      int32
	w0, w1 uint64
}

func (t *ingStrTab) reset() {
	if len(t.slots) > 1<<12 {
		t.slots = nil // do not keep a huge table for the next chunk
	}
	clear(t.slots)
	t.n = 0
}

// ingWords returns the first and last 8 bytes of s (zero-padded).
func ingWords(s []byte) (w0, w1 uint64) {
	if len(s) >= 8 {
		return binary.LittleEndian.Uint64(s), binary.LittleEndian.Uint64(s[len(s)-8:])
	}
	for i, c := range s {
		w0 |= uint64(c) << (8 * i)
	}
	return w0, 0
}

func ingStrHash(s []byte, w0, w1 uint64) uint64 {
	h := (uint64(len(s))*0x9E3779B97F4A7C15 ^ w0) * 0xff51afd7ed558ccd
	h = (h ^ w1) * 0xc4ceb9fe1a85ec53
	for s = s[min(len(s), 8):]; len(s) > 8; s = s[8:] {
		h = (h ^ binary.LittleEndian.Uint64(s)) * 0xff51afd7ed558ccd
	}
	return h ^ h>>29
}

// find returns the slot of s and its code, or the empty slot to insert it
// at and -1.
func (t *ingStrTab) find(s []byte, vals []string) (int, int32) {
	if len(t.slots) == 0 {
		t.slots = make([]ingSlot, 64)
	}
	w0, w1 := ingWords(s)
	mask := len(t.slots) - 1
	i := int(ingStrHash(s, w0, w1)) & mask
	for {
		sl := &t.slots[i]
		if sl.code == 0 {
			return i, -1
		}
		if sl.n == int32(len(s)) && sl.w0 == w0 && sl.w1 == w1 && (len(s) <= 16 || vals[sl.code-1] == string(s)) {
			return i, sl.code - 1
		}
		i = (i + 1) & mask
	}
}

// insert puts code (whose string is vals[code]) at slot (from find),
// growing the table past half full.
func (t *ingStrTab) insert(slot int, code int32, vals []string) {
	s := ingBytes(vals[code])
	w0, w1 := ingWords(s)
	t.slots[slot] = ingSlot{code: code + 1, n: int32(len(s)), w0: w0, w1: w1}
	t.n++
	if 2*t.n <= len(t.slots) {
		return
	}
	old := t.slots
	t.slots = make([]ingSlot, 2*len(old))
	mask := len(t.slots) - 1
	for _, sl := range old {
		if sl.code == 0 {
			continue
		}
		i := int(ingStrHash(ingBytes(vals[sl.code-1]), sl.w0, sl.w1)) & mask
		for t.slots[i].code != 0 {
			i = (i + 1) & mask
		}
		t.slots[i] = sl
	}
}

// ingPiece is one column of one chunk, finished.
type ingPiece struct {
	kind  ingKind
	n     int
	nulls int
	// arr holds the values: Int8..Int64 (the chunk's narrowest), Float32 or
	// Float64, Boolean, Date32, String (plain), Int16/Int32 codes into dict
	// (dictionary strings), or any type (ingOther). nil for ingNull.
	arr      arrow.Array
	dict     []string // local dictionary of a dictionary string piece
	min, max int64    // ingInt: range of the valid values
	f32ok    bool     // ingFloat/ingInt: every value is faithful as float32
}

func (p *ingPiece) release() {
	if p.arr != nil {
		p.arr.Release()
		p.arr = nil
	}
}

// finish turns the builder's values into a piece (copying them, so the
// builder can be reused).
func (b *ingBuilder) finish() ingPiece {
	p := ingPiece{kind: b.kind, n: b.n, nulls: len(b.nullRows), f32ok: b.f32ok}
	if p.nulls == p.n {
		// Only nulls: keep the kind only when it is declared or was forced.
		if !b.force {
			p.kind = ingNull
			return p
		}
	}
	valid := ingValidity(b.n, b.nullRows)
	switch b.kind {
	case ingNull:
		return p
	case ingInt:
		p.min, p.max = ingIntRange(b.ints, valid)
		p.f32ok = p.min >= -ingF32Exact && p.max <= ingF32Exact
		p.arr = ingIntArray(b.ints, ingIntWidth(p.min, p.max), valid, p.nulls)
	case ingFloat:
		// Keep float64 unless declared float32: whether the column narrows
		// depends on the other chunks, and a float32 cannot be widened back
		// to the float64 that was read.
		if b.decl != nil && b.decl.typ.ID() == arrow.FLOAT32 {
			f := make([]float32, len(b.floats))
			for i, v := range b.floats {
				f[i] = float32(v)
			}
			p.arr = ingArray(arrow.PrimitiveTypes.Float32, b.n, valid, p.nulls, arrow.Float32Traits.CastToBytes(f))
		} else {
			f := append([]float64(nil), b.floats...)
			p.arr = ingArray(arrow.PrimitiveTypes.Float64, b.n, valid, p.nulls, arrow.Float64Traits.CastToBytes(f))
		}
	case ingBool:
		bits := make([]byte, bitutil.BytesForBits(int64(b.n)))
		for i, v := range b.bools {
			if v != 0 {
				bitutil.SetBit(bits, i)
			}
		}
		p.arr = ingArray(arrow.FixedWidthTypes.Boolean, b.n, valid, p.nulls, bits)
	case ingDate:
		d := append([]int32(nil), b.dates...)
		p.arr = ingArray(arrow.FixedWidthTypes.Date32, b.n, valid, p.nulls, arrow.Int32Traits.CastToBytes(d))
	case ingStr:
		if b.strDict {
			p.dict = append([]string(nil), b.dictVals...)
			if len(p.dict) == 0 {
				p.dict = []string{""} // all null, but forced string: codes point at a value
			}
			if len(p.dict) <= math.MaxInt16+1 {
				c := make([]int16, len(b.codes))
				for i, v := range b.codes {
					c[i] = int16(v)
				}
				p.arr = ingArray(arrow.PrimitiveTypes.Int16, b.n, valid, p.nulls, arrow.Int16Traits.CastToBytes(c))
			} else {
				c := append([]int32(nil), b.codes...)
				p.arr = ingArray(arrow.PrimitiveTypes.Int32, b.n, valid, p.nulls, arrow.Int32Traits.CastToBytes(c))
			}
		} else {
			offs := append([]int32(nil), b.offs...)
			data := append([]byte(nil), b.sdata...)
			var vb *memory.Buffer
			if valid != nil {
				vb = memory.NewBufferBytes(valid)
			}
			d := array.NewData(arrow.BinaryTypes.String, b.n, []*memory.Buffer{vb, memory.NewBufferBytes(arrow.Int32Traits.CastToBytes(offs)), memory.NewBufferBytes(data)}, nil, p.nulls, 0)
			p.arr = array.MakeFromData(d)
			d.Release()
		}
	}
	return p
}

// ingValidity returns an Arrow validity bitmap with the given rows null, or
// nil when there are none.
func ingValidity(n int, nullRows []int32) []byte {
	if len(nullRows) == 0 {
		return nil
	}
	bits := make([]byte, bitutil.BytesForBits(int64(n)))
	bitutil.SetBitsTo(bits, 0, int64(n), true)
	for _, r := range nullRows {
		bitutil.ClearBit(bits, int(r))
	}
	return bits
}

// ingArray wraps Go-allocated buffers as an array of a fixed-width type.
func ingArray(dt arrow.DataType, n int, valid []byte, nulls int, values []byte) arrow.Array {
	var vb *memory.Buffer
	if valid != nil {
		vb = memory.NewBufferBytes(valid)
	}
	d := array.NewData(dt, n, []*memory.Buffer{vb, memory.NewBufferBytes(values)}, nil, nulls, 0)
	defer d.Release()
	return array.MakeFromData(d)
}

func ingIntRange(v []int64, valid []byte) (lo, hi int64) {
	lo, hi = math.MaxInt64, math.MinInt64
	if valid == nil {
		for _, x := range v {
			lo = min(lo, x)
			hi = max(hi, x)
		}
		return lo, hi
	}
	for i, x := range v {
		if bitutil.BitIsSet(valid, i) {
			lo = min(lo, x)
			hi = max(hi, x)
		}
	}
	return lo, hi
}

// ingIntWidth returns the bytes of the narrowest signed integer holding [lo, hi].
func ingIntWidth(lo, hi int64) int {
	switch {
	case lo >= math.MinInt8 && hi <= math.MaxInt8:
		return 1
	case lo >= math.MinInt16 && hi <= math.MaxInt16:
		return 2
	case lo >= math.MinInt32 && hi <= math.MaxInt32:
		return 4
	}
	return 8
}

func ingIntType(width int) arrow.DataType {
	switch width {
	case 1:
		return arrow.PrimitiveTypes.Int8
	case 2:
		return arrow.PrimitiveTypes.Int16
	case 4:
		return arrow.PrimitiveTypes.Int32
	}
	return arrow.PrimitiveTypes.Int64
}

// ingIntArray stores v in an integer array of the given byte width (every
// value fits it).
func ingIntArray(v []int64, width int, valid []byte, nulls int) arrow.Array {
	n := len(v)
	switch width {
	case 1:
		out := make([]int8, n)
		for i, x := range v {
			out[i] = int8(x)
		}
		return ingArray(arrow.PrimitiveTypes.Int8, n, valid, nulls, arrow.Int8Traits.CastToBytes(out))
	case 2:
		out := make([]int16, n)
		for i, x := range v {
			out[i] = int16(x)
		}
		return ingArray(arrow.PrimitiveTypes.Int16, n, valid, nulls, arrow.Int16Traits.CastToBytes(out))
	case 4:
		out := make([]int32, n)
		for i, x := range v {
			out[i] = int32(x)
		}
		return ingArray(arrow.PrimitiveTypes.Int32, n, valid, nulls, arrow.Int32Traits.CastToBytes(out))
	}
	out := append([]int64(nil), v...)
	return ingArray(arrow.PrimitiveTypes.Int64, n, valid, nulls, arrow.Int64Traits.CastToBytes(out))
}

// ingF32Faithful reports whether v survives a trip through float32: the
// float32's shortest decimal, read back as float64, is v again. A value read
// from text ("55.23") then prints the same from the float32 column.
func ingF32Faithful(v float64) bool {
	f := float32(v)
	if float64(f) == v || v != v {
		return true
	}
	if math.IsInf(float64(f), 0) {
		return false
	}
	var buf [32]byte
	s := strconv.AppendFloat(buf[:0], float64(f), 'g', -1, 32)
	w, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(s), len(s)), 64)
	return err == nil && w == v
}

// ingParseInt parses an optionally signed decimal integer.
func ingParseInt(v []byte) (int64, bool) {
	i, neg := 0, false
	if len(v) > 0 && (v[0] == '-' || v[0] == '+') {
		neg = v[0] == '-'
		i = 1
	}
	if i == len(v) || len(v)-i > 18 {
		if len(v)-i > 18 && ingAllDigits(v) {
			x, err := strconv.ParseInt(string(v), 10, 64)
			return x, err == nil
		}
		return 0, false
	}
	var x int64
	for ; i < len(v); i++ {
		c := v[i] - '0'
		if c > 9 {
			return 0, false
		}
		x = x*10 + int64(c)
	}
	if neg {
		x = -x
	}
	return x, true
}

var ingPow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
	1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// ingParseFloat parses a decimal number ("55.23", "-1e-3", "NaN", "inf").
// faithful reports that the value is certainly faithful as float32 (at most
// six significant digits and a modest exponent); when false the caller checks
// with ingF32Faithful.
func ingParseFloat(v []byte) (f float64, faithful bool, ok bool) {
	n := len(v)
	i, neg := 0, false
	if n > 0 && (v[0] == '-' || v[0] == '+') {
		neg = v[0] == '-'
		i = 1
	}
	// Fast path: [-]digits[.digits], at most 15 digits: exact by one
	// division (both operands are exact in float64).
	if n-i <= 16 {
		var m uint64
		j := i
		for j < n && v[j]-'0' <= 9 {
			m = m*10 + uint64(v[j]-'0')
			j++
		}
		intDigits, frac := j-i, 0
		if j < n && v[j] == '.' {
			j++
			k := j
			for j < n && v[j]-'0' <= 9 {
				m = m*10 + uint64(v[j]-'0')
				j++
			}
			frac = j - k
		}
		if j == n && intDigits+frac > 0 && intDigits+frac <= 15 {
			f = float64(m)
			if frac > 0 {
				f /= ingPow10[frac]
			}
			if neg {
				f = -f
			}
			return f, m < 1_000_000 && frac <= 10, true
		}
	}
	var mant uint64
	nd, exp, digits := 0, 0, 0
	trunc := false
	for ; i < n; i++ {
		c := v[i] - '0'
		if c > 9 {
			break
		}
		digits++
		if mant == 0 && c == 0 {
			continue
		}
		if nd < 19 {
			mant = mant*10 + uint64(c)
			nd++
		} else {
			exp++
			trunc = true
		}
	}
	if i < n && v[i] == '.' {
		i++
		for ; i < n; i++ {
			c := v[i] - '0'
			if c > 9 {
				break
			}
			digits++
			if mant == 0 && c == 0 {
				exp--
				continue
			}
			if nd < 19 {
				mant = mant*10 + uint64(c)
				nd++
				exp--
			} else {
				trunc = true
			}
		}
	}
	if digits == 0 {
		return ingParseSpecial(v)
	}
	if i < n && (v[i] == 'e' || v[i] == 'E') {
		i++
		eneg := false
		if i < n && (v[i] == '-' || v[i] == '+') {
			eneg = v[i] == '-'
			i++
		}
		if i == n {
			return 0, false, false
		}
		e := 0
		for ; i < n; i++ {
			c := v[i] - '0'
			if c > 9 {
				return 0, false, false
			}
			if e < 10000 {
				e = e*10 + int(c)
			}
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	if i != n {
		return 0, false, false
	}
	if mant == 0 {
		if neg {
			return math.Copysign(0, -1), true, true
		}
		return 0, true, true
	}
	for mant%10 == 0 {
		mant /= 10
		nd--
		exp++
	}
	faithful = nd <= 6 && exp >= -10 && exp <= 9
	if !trunc && mant < 1<<53 && exp >= -22 && exp <= 22 {
		f = float64(mant)
		if exp < 0 {
			f /= ingPow10[-exp]
		} else {
			f *= ingPow10[exp]
		}
		if neg {
			f = -f
		}
		return f, faithful, true
	}
	f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(v), len(v)), 64)
	if err != nil {
		if ne, isNum := err.(*strconv.NumError); isNum && ne.Err == strconv.ErrRange {
			return f, false, true // ±Inf or 0: the nearest float64, like pandas
		}
		return 0, false, false
	}
	return f, faithful, true
}

func ingParseSpecial(v []byte) (float64, bool, bool) {
	s := v
	neg := false
	if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
		neg = s[0] == '-'
		s = s[1:]
	}
	switch string(s) {
	case "nan", "NaN", "NAN":
		return math.NaN(), true, true
	case "inf", "Inf", "INF", "infinity", "Infinity", "INFINITY":
		if neg {
			return math.Inf(-1), true, true
		}
		return math.Inf(1), true, true
	}
	return 0, false, false
}

// ingParseDate parses YYYY-MM-DD into days since 1970-01-01.
func ingParseDate(v []byte) (int32, bool) {
	if len(v) != 10 || v[4] != '-' || v[7] != '-' {
		return 0, false
	}
	y0, y1, y2, y3 := v[0]-'0', v[1]-'0', v[2]-'0', v[3]-'0'
	m0, m1, d0, d1 := v[5]-'0', v[6]-'0', v[8]-'0', v[9]-'0'
	if max(y0, y1, y2, y3, m0, m1, d0, d1) > 9 {
		return 0, false
	}
	y := int(y0)*1000 + int(y1)*100 + int(y2)*10 + int(y3)
	m := int(m0)*10 + int(m1)
	d := int(d0)*10 + int(d1)
	if m < 1 || m > 12 || d < 1 || (d > 28 && d > ingDaysIn(y, m)) {
		return 0, false
	}
	return int32(ingDaysFromCivil(y, m, d)), true
}

func ingDaysIn(y, m int) int {
	switch m {
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// ingDaysFromCivil is H. Hinnant's days_from_civil: days since 1970-01-01.
func ingDaysFromCivil(y, m, d int) int {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// ingParseBool parses true/false (any case); declared bool columns also take
// 1/0, t/f, yes/no and y/n.
func ingParseBool(v []byte, lenient bool) (bool, bool) {
	switch len(v) {
	case 4:
		if (v[0]|0x20) == 't' && (v[1]|0x20) == 'r' && (v[2]|0x20) == 'u' && (v[3]|0x20) == 'e' {
			return true, true
		}
	case 5:
		if (v[0]|0x20) == 'f' && (v[1]|0x20) == 'a' && (v[2]|0x20) == 'l' && (v[3]|0x20) == 's' && (v[4]|0x20) == 'e' {
			return false, true
		}
	}
	if !lenient {
		return false, false
	}
	switch string(v) {
	case "1", "t", "T", "y", "Y", "yes", "Yes", "YES":
		return true, true
	case "0", "f", "F", "n", "N", "no", "No", "NO":
		return false, true
	}
	return false, false
}
