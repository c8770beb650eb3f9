package stages

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// ingJSONParser parses JSON lines: one flat object per line. Keys become
// columns in order of first appearance; a missing key is a null. Nested
// objects and arrays are kept as their JSON text (a string column).
type ingJSONParser struct {
	names   []string
	index   map[string]int
	b       []*ingBuilder
	widen   map[string]ingKind
	scratch []byte
}

func (p *ingJSONParser) parse(r *ingRun, data []byte, line int, force map[string]ingKind) ([]string, []ingPiece, int, error) {
	p.widen = map[string]ingKind{}
	for {
		rows, err := p.parseOnce(r, data, line, force)
		var wd *ingWiden
		if errors.As(err, &wd) {
			p.widen[p.names[wd.Col]] = wd.Kind
			continue
		}
		if err != nil {
			return nil, nil, 0, err
		}
		names := append([]string(nil), p.names...)
		pieces := make([]ingPiece, len(names))
		for i := range names {
			pieces[i] = p.b[i].finish()
		}
		if force == nil {
			r.learn(names, pieces, p.b[:len(names)])
		}
		return names, pieces, rows, nil
	}
}

// column returns the index of the builder of key, adding one (null for the
// rows so far) when the key is new in this block.
func (p *ingJSONParser) column(r *ingRun, key []byte, rows int, force map[string]ingKind) int {
	if i, ok := p.index[string(key)]; ok {
		return i
	}
	name := string(key)
	i := len(p.names)
	p.names = append(p.names, name)
	p.index[name] = i
	if len(p.b) <= i {
		p.b = append(p.b, &ingBuilder{})
	}
	var kinds []ingKind
	var high []bool
	kinds, high = r.hintKinds([]string{name}, kinds, high)
	k, forced := force[name]
	if !forced {
		k = kinds[0]
	}
	if w, ok := p.widen[name]; ok {
		k = w
	}
	p.b[i].reset(k, r.decls[name], forced, high[0], r.nulls)
	for range rows {
		p.b[i].appendNull()
	}
	return i
}

func (p *ingJSONParser) parseOnce(r *ingRun, data []byte, line int, force map[string]ingKind) (int, error) {
	p.names = p.names[:0]
	if p.index == nil {
		p.index = map[string]int{}
	}
	clear(p.index)
	rows := 0
	n := len(data)
	i := 0
	for i < n {
		// One line.
		i = ingSkipWS(data, i)
		if i < n && data[i] == '\n' {
			i++
			line++
			continue
		}
		if i == n {
			break
		}
		fail := func(col int, format string, args ...any) error {
			return &ingRowError{Line: line, Row: rows, Col: -1, Name: p.nameOf(col), Msg: fmt.Sprintf(format, args...)}
		}
		if data[i] != '{' {
			return rows, fail(-1, "expected a JSON object ({...}), found %s", ingJSONFound(data, i))
		}
		i = ingSkipWS(data, i+1)
		if i < n && data[i] == '}' {
			i++
		} else {
			for {
				if i >= n || data[i] != '"' {
					return rows, fail(-1, "expected a key string, found %s", ingJSONFound(data, i))
				}
				key, j, err := p.str(data, i)
				if err != nil {
					return rows, fail(-1, "%v", err)
				}
				c := p.column(r, key, rows, force)
				b := p.b[c]
				if b.n > rows {
					return rows, fail(c, "key %q appears twice in one object", key)
				}
				i = ingSkipWS(data, j)
				if i >= n || data[i] != ':' {
					return rows, fail(c, "expected ':' after a key, found %s", ingJSONFound(data, i))
				}
				i = ingSkipWS(data, i+1)
				if i >= n || data[i] == '\n' {
					return rows, fail(c, "missing value")
				}
				var verr error
				switch ch := data[i]; {
				case ch == '"':
					s, j, err := p.str(data, i)
					if err != nil {
						return rows, fail(c, "%v", err)
					}
					verr = b.appendText(c, s, true)
					i = j
				case ch == '-' || (ch >= '0' && ch <= '9'):
					j := i + 1
					for j < n && (data[j] >= '0' && data[j] <= '9' || data[j] == '.' || data[j] == 'e' || data[j] == 'E' || data[j] == '+' || data[j] == '-') {
						j++
					}
					if b.kind == ingStr || b.kind == ingNull || b.kind == ingInt || b.kind == ingFloat {
						verr = b.appendText(c, data[i:j], false)
					} else if b.force {
						verr = b.typeError(data[i:j])
					} else {
						verr = &ingWiden{Col: c, Kind: ingStr}
					}
					i = j
				case ch == 't' || ch == 'f' || ch == 'n':
					lit := ""
					for _, l := range [...]string{"true", "false", "null"} {
						if i+len(l) <= n && string(data[i:i+len(l)]) == l {
							lit = l
						}
					}
					if lit == "" {
						return rows, fail(c, "invalid value %s", ingJSONFound(data, i))
					}
					i += len(lit)
					if lit == "null" {
						b.appendNull()
					} else {
						verr = b.appendJSONBool(c, lit == "true")
					}
				case ch == '{' || ch == '[':
					j, err := ingJSONSkip(data, i)
					if err != nil {
						return rows, fail(c, "%v", err)
					}
					if b.kind == ingStr || b.kind == ingNull {
						if b.kind == ingNull {
							b.setKind(ingStr)
						}
						b.appendStr(data[i:j])
					} else if b.force {
						verr = b.typeError(data[i:j])
					} else {
						verr = &ingWiden{Col: c, Kind: ingStr}
					}
					i = j
				default:
					return rows, fail(c, "invalid value %s", ingJSONFound(data, i))
				}
				if verr != nil {
					var ve *ingValueError
					if errors.As(verr, &ve) {
						return rows, fail(c, "%s", ve.Msg)
					}
					return rows, verr
				}
				i = ingSkipWS(data, i)
				if i < n && data[i] == ',' {
					i = ingSkipWS(data, i+1)
					continue
				}
				if i < n && data[i] == '}' {
					i++
					break
				}
				return rows, fail(c, "expected ',' or '}' after a value, found %s", ingJSONFound(data, i))
			}
		}
		i = ingSkipWS(data, i)
		if i < n && data[i] != '\n' {
			return rows, fail(-1, "unexpected %s after the object (one object per line)", ingJSONFound(data, i))
		}
		i++
		line++
		rows++
		for _, b := range p.b[:len(p.names)] {
			if b.n < rows {
				b.appendNull()
			}
		}
	}
	return rows, nil
}

func (p *ingJSONParser) nameOf(c int) string {
	if c >= 0 && c < len(p.names) {
		return p.names[c]
	}
	return ""
}

// appendJSONBool appends a JSON true/false.
func (b *ingBuilder) appendJSONBool(col int, v bool) error {
	switch b.kind {
	case ingNull:
		b.setKind(ingBool)
		b.appendBool(v)
	case ingBool:
		b.appendBool(v)
	case ingStr:
		b.appendStr([]byte(strconv.FormatBool(v)))
	default:
		if b.force {
			return b.typeError([]byte(strconv.FormatBool(v)))
		}
		return &ingWiden{Col: col, Kind: ingStr}
	}
	return nil
}

func ingSkipWS(data []byte, i int) int {
	for i < len(data) {
		switch data[i] {
		case ' ', '\t', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

func ingJSONFound(data []byte, i int) string {
	if i >= len(data) || data[i] == '\n' {
		return "the end of the line"
	}
	end := min(i+20, len(data))
	for k := i; k < end; k++ {
		if data[k] == '\n' {
			end = k
			break
		}
	}
	return strconv.Quote(string(data[i:end]))
}

// str reads the JSON string at data[i] ('"'), returning its unescaped bytes
// (valid until the next call) and the index after the closing quote.
func (p *ingJSONParser) str(data []byte, i int) ([]byte, int, error) {
	j := i + 1
	start := j
	for j < len(data) {
		c := data[j]
		if c == '"' {
			return data[start:j], j + 1, nil
		}
		if c == '\\' {
			break
		}
		if c == '\n' {
			return nil, 0, errors.New("unterminated string")
		}
		j++
	}
	p.scratch = append(p.scratch[:0], data[start:j]...)
	for j < len(data) {
		c := data[j]
		switch {
		case c == '"':
			return p.scratch, j + 1, nil
		case c == '\n':
			return nil, 0, errors.New("unterminated string")
		case c != '\\':
			p.scratch = append(p.scratch, c)
			j++
			continue
		}
		if j+1 >= len(data) {
			return nil, 0, errors.New("unterminated string")
		}
		e := data[j+1]
		j += 2
		switch e {
		case '"', '\\', '/':
			p.scratch = append(p.scratch, e)
		case 'b':
			p.scratch = append(p.scratch, '\b')
		case 'f':
			p.scratch = append(p.scratch, '\f')
		case 'n':
			p.scratch = append(p.scratch, '\n')
		case 'r':
			p.scratch = append(p.scratch, '\r')
		case 't':
			p.scratch = append(p.scratch, '\t')
		case 'u':
			r, ok := ingHex4(data, j)
			if !ok {
				return nil, 0, errors.New(`invalid \u escape`)
			}
			j += 4
			if utf16.IsSurrogate(r) {
				if r2, ok := ingHex4(data, j+2); ok && j+1 < len(data) && data[j] == '\\' && data[j+1] == 'u' {
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						r = d
						j += 6
					}
				}
			}
			p.scratch = utf8.AppendRune(p.scratch, r)
		default:
			return nil, 0, fmt.Errorf("invalid escape \\%c", e)
		}
	}
	return nil, 0, errors.New("unterminated string")
}

func ingHex4(data []byte, j int) (rune, bool) {
	if j+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[j : j+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r*16 + rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r*16 + rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r*16 + rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// ingJSONSkip returns the index after the object or array at data[i].
func ingJSONSkip(data []byte, i int) (int, error) {
	depth := 0
	for j := i; j < len(data); j++ {
		switch data[j] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1, nil
			}
		case '"':
			j++
			for j < len(data) && data[j] != '"' {
				if data[j] == '\\' {
					j++
				}
				if j < len(data) && data[j] == '\n' {
					return 0, errors.New("unterminated string")
				}
				j++
			}
		case '\n':
			return 0, errors.New("unterminated object or array")
		}
	}
	return 0, errors.New("unterminated object or array")
}
