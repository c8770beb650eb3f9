package stages

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
)

// ppCond is one row filter: a comparison of a column with a value. Rows
// where the column is null fail every comparison except is_null.
type ppCond struct {
	text string // as written, for messages
	col  string
	op   string // == != < <= > >= in not_in is_null not_null
	vals []ppValue
}

// ppValue is a literal in a filter: a number, a string or a boolean.
type ppValue struct {
	num   float64
	str   string
	isStr bool
}

func (v ppValue) String() string {
	if v.isStr {
		return strconv.Quote(v.str)
	}
	return strconv.FormatFloat(v.num, 'g', -1, 64)
}

var ppOps = map[string]string{
	"==": "==", "=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
	"in": "in", "not_in": "not_in", "is_null": "is_null", "not_null": "not_null",
}

// ppParseCond reads one filter entry: a string "COLUMN OP VALUE" ("tenure_months
// >= 1", "plan == 'Basic'", "region in [a, b]", "total_charges is null") or a
// mapping {column, op, value}.
func ppParseCond(raw any) (*ppCond, error) {
	switch v := raw.(type) {
	case string:
		return ppParseCondText(v)
	case map[string]any:
		c := &ppCond{}
		b, _ := json.Marshal(v)
		c.text = string(b)
		for k := range v {
			if k != "column" && k != "op" && k != "value" {
				return nil, fmt.Errorf("filter %s: unknown key %q (want column, op, value)", c.text, k)
			}
		}
		col, _ := v["column"].(string)
		if col == "" {
			return nil, fmt.Errorf("filter %s: column must be a column name", c.text)
		}
		c.col = col
		opText, _ := v["op"].(string)
		op, ok := ppOps[opText]
		if !ok {
			return nil, fmt.Errorf("filter %s: op %q is not one of ==, !=, <, <=, >, >=, in, not_in, is_null, not_null", c.text, opText)
		}
		c.op = op
		val, has := v["value"]
		switch {
		case op == "is_null" || op == "not_null":
			if has {
				return nil, fmt.Errorf("filter %s: %s takes no value", c.text, op)
			}
		case !has:
			return nil, fmt.Errorf("filter %s: value is missing", c.text)
		case op == "in" || op == "not_in":
			list, ok := val.([]any)
			if !ok {
				return nil, fmt.Errorf("filter %s: %s needs a list value", c.text, op)
			}
			for _, e := range list {
				pv, err := ppLiteral(e)
				if err != nil {
					return nil, fmt.Errorf("filter %s: %v", c.text, err)
				}
				c.vals = append(c.vals, pv)
			}
		default:
			pv, err := ppLiteral(val)
			if err != nil {
				return nil, fmt.Errorf("filter %s: %v", c.text, err)
			}
			c.vals = []ppValue{pv}
		}
		return c, nil
	}
	return nil, fmt.Errorf("filter entry %v: want a string like \"tenure_months >= 1\" or a mapping {column, op, value}", raw)
}

func ppLiteral(v any) (ppValue, error) {
	switch x := v.(type) {
	case float64:
		return ppValue{num: x}, nil
	case int:
		return ppValue{num: float64(x)}, nil
	case int64:
		return ppValue{num: float64(x)}, nil
	case bool:
		if x {
			return ppValue{num: 1}, nil
		}
		return ppValue{num: 0}, nil
	case string:
		return ppValue{str: x, isStr: true}, nil
	}
	return ppValue{}, fmt.Errorf("value %v is not a number, string or boolean", v)
}

func ppParseCondText(s string) (*ppCond, error) {
	c := &ppCond{text: s}
	toks, err := ppTokens(s)
	if err != nil {
		return nil, fmt.Errorf("filter %q: %v", s, err)
	}
	bad := func(why string) error {
		return fmt.Errorf("filter %q: %s (want COLUMN OP VALUE, e.g. \"tenure_months >= 1\")", s, why)
	}
	if len(toks) < 2 || toks[0].kind != 'w' {
		return nil, bad("no column")
	}
	c.col = toks[0].text
	rest := toks[1:]
	if rest[0].kind == 'w' && rest[0].text == "is" {
		switch {
		case len(rest) == 2 && rest[1].text == "null":
			c.op = "is_null"
		case len(rest) == 3 && rest[1].text == "not" && rest[2].text == "null":
			c.op = "not_null"
		default:
			return nil, bad("after \"is\" write null or not null")
		}
		return c, nil
	}
	opText := rest[0].text
	rest = rest[1:]
	if opText == "not" && len(rest) > 0 && rest[0].text == "in" {
		opText, rest = "not_in", rest[1:]
	}
	op, ok := ppOps[opText]
	if !ok || op == "is_null" || op == "not_null" {
		return nil, bad(fmt.Sprintf("unknown operator %q", opText))
	}
	c.op = op
	if op == "in" || op == "not_in" {
		if len(rest) < 2 || rest[0].text != "[" || rest[len(rest)-1].text != "]" {
			return nil, bad("in needs a list like [a, b]")
		}
		items := rest[1 : len(rest)-1]
		for i, t := range items {
			if i%2 == 1 {
				if t.text != "," {
					return nil, bad("list items are separated by commas")
				}
				continue
			}
			v, err := ppTokValue(t)
			if err != nil {
				return nil, bad(err.Error())
			}
			c.vals = append(c.vals, v)
		}
		if len(c.vals) == 0 {
			return nil, bad("empty list")
		}
		return c, nil
	}
	if len(rest) != 1 {
		return nil, bad("one value after the operator")
	}
	v, err := ppTokValue(rest[0])
	if err != nil {
		return nil, bad(err.Error())
	}
	c.vals = []ppValue{v}
	return c, nil
}

type ppTok struct {
	kind rune // 'w' word, 'n' number, 's' quoted string, 'p' punctuation or operator
	text string
}

func ppTokValue(t ppTok) (ppValue, error) {
	switch t.kind {
	case 'n':
		f, err := strconv.ParseFloat(t.text, 64)
		if err != nil {
			return ppValue{}, fmt.Errorf("bad number %q", t.text)
		}
		return ppValue{num: f}, nil
	case 's':
		return ppValue{str: t.text, isStr: true}, nil
	case 'w':
		switch t.text {
		case "true":
			return ppValue{num: 1}, nil
		case "false":
			return ppValue{num: 0}, nil
		}
		return ppValue{str: t.text, isStr: true}, nil
	}
	return ppValue{}, fmt.Errorf("unexpected %q", t.text)
}

func ppTokens(s string) ([]ppTok, error) {
	var out []ppTok
	r := []rune(s)
	for i := 0; i < len(r); {
		c := r[i]
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '\'' || c == '"':
			j := i + 1
			for j < len(r) && r[j] != c {
				j++
			}
			if j == len(r) {
				return nil, fmt.Errorf("unterminated string")
			}
			out = append(out, ppTok{'s', string(r[i+1 : j])})
			i = j + 1
		case unicode.IsDigit(c) || c == '.' || ((c == '-' || c == '+') && i+1 < len(r) && (unicode.IsDigit(r[i+1]) || r[i+1] == '.')):
			j := i + 1
			for j < len(r) && (unicode.IsDigit(r[j]) || r[j] == '.' || r[j] == 'e' || r[j] == 'E' ||
				((r[j] == '-' || r[j] == '+') && (r[j-1] == 'e' || r[j-1] == 'E'))) {
				j++
			}
			out = append(out, ppTok{'n', string(r[i:j])})
			i = j
		case unicode.IsLetter(c) || c == '_':
			j := i + 1
			for j < len(r) && (unicode.IsLetter(r[j]) || unicode.IsDigit(r[j]) || r[j] == '_' || r[j] == '-' && j+1 < len(r) && unicode.IsLetter(r[j+1])) {
				j++
			}
			out = append(out, ppTok{'w', string(r[i:j])})
			i = j
		case strings.ContainsRune("<>=!", c):
			j := i + 1
			if j < len(r) && r[j] == '=' {
				j++
			}
			out = append(out, ppTok{'p', string(r[i:j])})
			i = j
		case c == '[' || c == ']' || c == ',':
			out = append(out, ppTok{'p', string(c)})
			i++
		default:
			return nil, fmt.Errorf("unexpected character %q", c)
		}
	}
	return out, nil
}

// check reports a problem with applying the filter to a column of type dt.
func (c *ppCond) check(dt arrow.DataType) error {
	if c.op == "is_null" || c.op == "not_null" {
		return nil
	}
	switch {
	case opsIsString(dt):
		for _, v := range c.vals {
			if !v.isStr {
				return fmt.Errorf("filter %q: column %q holds strings; compare it with a quoted string, not %s", c.text, c.col, v)
			}
		}
	case opsIsDate(dt):
		for _, v := range c.vals {
			if !v.isStr {
				return fmt.Errorf("filter %q: column %q holds dates; compare it with a date like '2024-01-31'", c.text, c.col)
			}
			if _, err := opsParseDate(v.str); err != nil {
				return fmt.Errorf("filter %q: %v", c.text, err)
			}
		}
	case opsIsNumeric(dt):
		for _, v := range c.vals {
			if v.isStr {
				return fmt.Errorf("filter %q: column %q is numeric (%s); compare it with a number, not %s", c.text, c.col, dt, v)
			}
		}
	default:
		return fmt.Errorf("filter %q: column %q has type %s, which filters cannot compare", c.text, c.col, dt)
	}
	return nil
}

// eval ANDs the filter's result for each row of a into keep.
func (c *ppCond) eval(a arrow.Array, keep []bool, f64 []float64, days []int32, valid []bool) ([]float64, error) {
	n := a.Len()
	bm, off := a.NullBitmapBytes(), a.Data().Offset()
	if a.NullN() == 0 {
		bm = nil
	}
	switch c.op {
	case "is_null", "not_null":
		want := c.op == "is_null"
		for i := 0; i < n; i++ {
			if !opsValid(bm, off, i) != want {
				keep[i] = false
			}
		}
		return f64, nil
	}
	dt := a.DataType()
	switch {
	case opsIsString(dt):
		if d, ok := a.(*array.Dictionary); ok {
			// Decide once per dictionary entry, then per row by index.
			dict := d.Dictionary()
			res := make([]bool, dict.Len())
			for j := range res {
				res[j] = dict.IsValid(j) && c.strTest(opsStringAt(dict, j))
			}
			idx := opsDictIndices(d, nil)
			for i := 0; i < n; i++ {
				if !opsValid(bm, off, i) || !res[idx[i]] {
					keep[i] = false
				}
			}
			return f64, nil
		}
		for i := 0; i < n; i++ {
			if !opsValid(bm, off, i) || !c.strTest(opsStringAt(a, i)) {
				keep[i] = false
			}
		}
		return f64, nil
	case opsIsDate(dt):
		ds, ok, err := opsDays(a, days, valid)
		if err != nil {
			return f64, err
		}
		vals := make([]float64, len(c.vals))
		for j, v := range c.vals {
			d, _ := opsParseDate(v.str)
			vals[j] = float64(d)
		}
		for i := 0; i < n; i++ {
			if !ok[i] || !c.numTest(float64(ds[i]), vals) {
				keep[i] = false
			}
		}
		return f64, nil
	}
	xs, err := opsFloat64s(a, f64)
	if err != nil {
		return f64, err
	}
	vals := make([]float64, len(c.vals))
	for j, v := range c.vals {
		vals[j] = v.num
	}
	if len(vals) == 1 {
		// The common case, one comparison with a constant, in a tight loop.
		v := vals[0]
		switch c.op {
		case "==":
			for i, x := range xs {
				keep[i] = keep[i] && x == v
			}
		case "!=":
			for i, x := range xs {
				keep[i] = keep[i] && x != v && x == x
			}
		case "<":
			for i, x := range xs {
				keep[i] = keep[i] && x < v
			}
		case "<=":
			for i, x := range xs {
				keep[i] = keep[i] && x <= v
			}
		case ">":
			for i, x := range xs {
				keep[i] = keep[i] && x > v
			}
		case ">=":
			for i, x := range xs {
				keep[i] = keep[i] && x >= v
			}
		default:
			for i, x := range xs {
				keep[i] = keep[i] && x == x && c.numTest(x, vals)
			}
		}
		return xs, nil
	}
	for i, x := range xs {
		keep[i] = keep[i] && x == x && c.numTest(x, vals)
	}
	return xs, nil
}

func (c *ppCond) numTest(x float64, vals []float64) bool {
	switch c.op {
	case "==":
		return x == vals[0]
	case "!=":
		return x != vals[0]
	case "<":
		return x < vals[0]
	case "<=":
		return x <= vals[0]
	case ">":
		return x > vals[0]
	case ">=":
		return x >= vals[0]
	case "in", "not_in":
		in := false
		for _, v := range vals {
			if x == v {
				in = true
				break
			}
		}
		return in == (c.op == "in")
	}
	return math.IsNaN(x)
}

func (c *ppCond) strTest(s string) bool {
	v := c.vals[0].str
	switch c.op {
	case "==":
		return s == v
	case "!=":
		return s != v
	case "<":
		return s < v
	case "<=":
		return s <= v
	case ">":
		return s > v
	case ">=":
		return s >= v
	case "in", "not_in":
		in := false
		for _, w := range c.vals {
			if s == w.str {
				in = true
				break
			}
		}
		return in == (c.op == "in")
	}
	return false
}
