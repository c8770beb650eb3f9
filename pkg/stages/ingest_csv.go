package stages

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// CSV and JSON-lines files are read by one goroutine in blocks of a few MB
// cut at record boundaries (quote-aware for CSV: a quoted field may hold
// newlines), and the blocks are parsed concurrently, each into one chunk of
// column pieces. The file is never held whole in memory.

// ingBlockSize is the target size of one block; a record longer than this
// grows its block.
const ingBlockSize = 8 << 20

// ingRowError is a problem with one record of a chunk. Line is the file line
// of the record; Row is its 0-based index within the chunk (-1 if unknown);
// Col is the column index or -1; Name, when set, names the column instead.
// Line is 0 for sources without lines (Parquet).
type ingRowError struct {
	Line int
	Row  int
	Col  int
	Name string
	Msg  string
}

func (e *ingRowError) Error() string { return fmt.Sprintf("line %d: %s", e.Line, e.Msg) }

// ingLastBoundary returns the index just past the last record in data (which
// starts at a record start), or -1 when data holds no complete record.
func ingLastBoundary(data []byte, csv bool, delim byte) int {
	if !csv || bytes.IndexByte(data, '"') < 0 {
		i := bytes.LastIndexByte(data, '\n')
		if i < 0 {
			return -1
		}
		return i + 1
	}
	return ingScanBoundary(data, delim, false)
}

// ingBlock is a run of whole records of one file.
type ingBlock struct {
	file int
	off  int64 // byte offset in the file
	line int   // file line of the first byte
	data []byte
}

// ingBlockReader cuts files into blocks.
type ingBlockReader struct {
	csv   bool
	delim byte
	size  int
	pool  chan []byte
}

func (r *ingBlockReader) get(n int) []byte {
	select {
	case b := <-r.pool:
		if cap(b) >= n {
			return b[:cap(b)]
		}
	default:
	}
	return make([]byte, max(n, r.size))
}

func (r *ingBlockReader) put(b []byte) {
	select {
	case r.pool <- b[:0]:
	default:
	}
}

// read sends the blocks of f from off (a record start on line line) to emit,
// which returns false to stop early.
func (r *ingBlockReader) read(f io.ReaderAt, fileIdx int, off int64, line int, emit func(ingBlock) bool) error {
	buf := r.get(r.size)
	carry := 0
	for {
		n, err := f.ReadAt(buf[carry:], off+int64(carry))
		if err != nil && err != io.EOF {
			return err
		}
		carry += n
		data := buf[:carry]
		if err == io.EOF || n == 0 {
			if len(data) > 0 {
				emit(ingBlock{file: fileIdx, off: off, line: line, data: data})
			} else {
				r.put(buf)
			}
			return nil
		}
		if carry < len(buf) {
			continue // short read: fill the buffer before cutting
		}
		b := ingLastBoundary(data, r.csv, r.delim)
		if b <= 0 {
			// One record longer than the buffer: grow it.
			nb := make([]byte, 2*len(buf))
			copy(nb, data)
			buf, carry = nb, len(data)
			continue
		}
		next := r.get(max(r.size, 2*(len(data)-b)))
		carry = copy(next, data[b:])
		blk := ingBlock{file: fileIdx, off: off, line: line, data: data[:b]}
		off += int64(b)
		line += bytes.Count(blk.data, []byte{'\n'})
		if !emit(blk) {
			r.put(next)
			return nil
		}
		buf = next
	}
}

// ingCSVHeader reads the header record of a CSV file: the column names, the
// offset of the first data byte and the line it is on.
func ingCSVHeader(f *os.File, display string, delim byte, start int64) (names []string, off int64, line int, err error) {
	buf := make([]byte, 64<<10)
	var data []byte
	for {
		n, rerr := f.ReadAt(buf[len(data):], start+int64(len(data)))
		data = buf[:len(data)+n]
		if rerr != nil && rerr != io.EOF {
			return nil, 0, 0, rerr
		}
		end := ingFirstBoundary(data, delim)
		if end < 0 && rerr == io.EOF {
			end = len(data)
		}
		if end >= 0 {
			rec := data[:end]
			if len(bytes.TrimSpace(rec)) == 0 {
				if len(data) == 0 {
					return nil, 0, 0, fmt.Errorf("%s: the file is empty (no header line)", display)
				}
				return nil, 0, 0, fmt.Errorf("%s: line 1: the header line is empty", display)
			}
			names, err = ingSplitRecord(rec, delim)
			if err != nil {
				return nil, 0, 0, fmt.Errorf("%s: line 1: header: %v", display, err)
			}
			seen := map[string]int{}
			for i, nm := range names {
				if nm == "" {
					nm = fmt.Sprintf("column_%d", i+1)
					names[i] = nm
				}
				if j, dup := seen[nm]; dup {
					return nil, 0, 0, fmt.Errorf("%s: line 1: the header names column %q twice (columns %d and %d)", display, nm, j+1, i+1)
				}
				seen[nm] = i
			}
			return names, start + int64(end), 1 + bytes.Count(rec, []byte{'\n'}), nil
		}
		if len(data) == len(buf) {
			nb := make([]byte, 2*len(buf))
			copy(nb, data)
			buf = nb
		}
	}
}

// ingFirstBoundary returns the index just past the first record of data, or
// -1 if it does not end in data.
func ingFirstBoundary(data []byte, delim byte) int { return ingScanBoundary(data, delim, true) }

// ingScanBoundary walks data (which starts at a record start) with CSV
// quoting, newlines inside quoted fields belonging to their record, and
// returns the index just past the first record end (first) or the last one,
// or -1 when no record ends in data.
func ingScanBoundary(data []byte, delim byte, first bool) int {
	last := -1
	fieldStart, inQ := true, false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inQ {
			if c == '"' {
				if i+1 < len(data) && data[i+1] == '"' {
					i++
					continue
				}
				inQ = false
			}
			continue
		}
		switch c {
		case '"':
			inQ = fieldStart
			fieldStart = false
		case delim:
			fieldStart = true
		case '\n':
			if first {
				return i + 1
			}
			last = i + 1
			fieldStart = true
		default:
			fieldStart = false
		}
	}
	return last
}

// ingSplitRecord splits one record (with or without its newline) into
// unquoted fields. It is for headers and error messages, not the hot path.
func ingSplitRecord(rec []byte, delim byte) ([]string, error) {
	rec = bytes.TrimSuffix(rec, []byte{'\n'})
	rec = bytes.TrimSuffix(rec, []byte{'\r'})
	var out []string
	i := 0
	for {
		if i < len(rec) && rec[i] == '"' {
			var sb strings.Builder
			j := i + 1
			for {
				k := bytes.IndexByte(rec[j:], '"')
				if k < 0 {
					return nil, errors.New("unterminated quoted field")
				}
				sb.Write(rec[j : j+k])
				j += k + 1
				if j < len(rec) && rec[j] == '"' {
					sb.WriteByte('"')
					j++
					continue
				}
				break
			}
			out = append(out, sb.String())
			if j == len(rec) {
				return out, nil
			}
			if rec[j] != delim {
				return nil, fmt.Errorf("unexpected %q after a closing quote", rec[j])
			}
			i = j + 1
			continue
		}
		k := bytes.IndexByte(rec[i:], delim)
		if k < 0 {
			out = append(out, string(rec[i:]))
			return out, nil
		}
		out = append(out, string(rec[i:i+k]))
		i += k + 1
	}
}

// ingCSVParser parses CSV blocks of one file layout into column builders.
type ingCSVParser struct {
	delim   byte
	b       []*ingBuilder
	scratch []byte
}

// ingFieldEnd returns the end of the unquoted field starting at i.
func ingFieldEnd(data []byte, i int, delim byte) int {
	n := len(data)
	for i < n {
		c := data[i]
		if c == delim || c == '\n' {
			return i
		}
		if c == '\r' && (i+1 == n || data[i+1] == '\n') {
			return i
		}
		i++
	}
	return i
}

func ingTerm(data []byte, j int, delim byte) bool {
	if j >= len(data) {
		return true
	}
	c := data[j]
	return c == delim || c == '\n' || (c == '\r' && (j+1 == len(data) || data[j+1] == '\n'))
}

// field reads the field at i: its end (the index of its terminator), its
// unquoted bytes and the newlines inside its quotes.
func (p *ingCSVParser) field(data []byte, i int) (end int, fld []byte, nl int, err error) {
	if i < len(data) && data[i] == '"' {
		p.scratch = p.scratch[:0]
		j := i + 1
		for {
			k := bytes.IndexByte(data[j:], '"')
			if k < 0 {
				return 0, nil, 0, errors.New("unterminated quoted field")
			}
			seg := data[j : j+k]
			nl += bytes.Count(seg, []byte{'\n'})
			p.scratch = append(p.scratch, seg...)
			j += k + 1
			if j < len(data) && data[j] == '"' {
				p.scratch = append(p.scratch, '"')
				j++
				continue
			}
			break
		}
		if !ingTerm(data, j, p.delim) {
			return 0, nil, nl, fmt.Errorf("unexpected %q after the closing quote of a field", data[j])
		}
		return j, p.scratch, nl, nil
	}
	e := ingFieldEnd(data, i, p.delim)
	return e, data[i:e], 0, nil
}

// countFields counts the fields of the record starting at i, for messages.
func (p *ingCSVParser) countFields(data []byte, i int) int {
	end := len(data)
	if b := ingFirstBoundary(data[i:], p.delim); b >= 0 {
		end = i + b
	}
	f, err := ingSplitRecord(data[i:end], p.delim)
	if err != nil {
		return -1
	}
	return len(f)
}

// parse parses the records of data (starting on file line line) into p.b,
// which reset has prepared. It returns the number of records, or an
// *ingWiden (parse again) or *ingRowError.
func (p *ingCSVParser) parse(data []byte, line int) (int, error) {
	ncol := len(p.b)
	delim := p.delim
	n := len(data)
	rows := 0
	i := 0
	for i < n {
		if c0 := data[i]; c0 == '\n' {
			i++
			line++
			continue
		} else if c0 == '\r' && i+1 < n && data[i+1] == '\n' {
			i += 2
			line++
			continue
		}
		recStart, recLine := i, line
		for c := 0; c < ncol; c++ {
			b := p.b[c]
			j := i
			done := false
			if j < n && data[j] != '"' {
				switch b.kind {
				case ingInt:
					neg := false
					if data[j] == '-' {
						neg = true
						j++
					}
					st := j
					var x int64
					for j < n {
						d := data[j] - '0'
						if d > 9 {
							break
						}
						x = x*10 + int64(d)
						j++
					}
					if j > st && j-st <= 18 && ingTerm(data, j, delim) {
						if neg {
							x = -x
						}
						if x >= b.lo && x <= b.hi {
							b.ints = append(b.ints, x)
							b.n++
							done = true
						}
					}
				case ingFloat:
					e := ingFieldEnd(data, j, delim)
					if e > j {
						if f, faithful, ok := ingParseFloat(data[j:e]); ok {
							b.floats = append(b.floats, f)
							b.n++
							if b.f32ok && !faithful {
								b.f32ok = b.f32mem.faithful(f)
							}
							j, done = e, true
						}
					}
				case ingStr:
					e := ingFieldEnd(data, j, delim)
					if fld := data[j:e]; len(fld) > 0 && (len(b.nulls) <= 1 || !b.nulls[string(fld)]) {
						b.appendStr(fld)
						j, done = e, true
					}
				case ingDate:
					if j+10 <= n && ingTerm(data, j+10, delim) {
						if d, ok := ingParseDate(data[j : j+10]); ok {
							b.dates = append(b.dates, d)
							b.n++
							j, done = j+10, true
						}
					}
				}
			}
			if !done {
				e, fld, nl, err := p.field(data, i)
				if err != nil {
					return rows, &ingRowError{Line: line, Row: rows, Col: c, Msg: err.Error()}
				}
				if err := b.appendText(c, fld, false); err != nil {
					var ve *ingValueError
					if errors.As(err, &ve) {
						return rows, &ingRowError{Line: recLine, Row: rows, Col: c, Msg: ve.Msg}
					}
					return rows, err
				}
				line += nl
				j = e
			}
			if c < ncol-1 {
				if j >= n || data[j] != delim {
					return rows, &ingRowError{Line: recLine, Row: rows, Col: -1, Msg: fmt.Sprintf("the record has %d fields, the header has %d", p.countFields(data, recStart), ncol)}
				}
				i = j + 1
				continue
			}
			if j < n {
				switch data[j] {
				case '\n':
					j++
				case '\r':
					j++
					if j < n {
						j++
					}
				case delim:
					return rows, &ingRowError{Line: recLine, Row: rows, Col: -1, Msg: fmt.Sprintf("the record has %d fields, the header has %d", p.countFields(data, recStart), ncol)}
				}
			}
			i = j
			line++
		}
		rows++
	}
	return rows, nil
}
