package stages

import (
	"fmt"
	"math"
	"strconv"
	"unicode"
)

// featExpr is a parsed arithmetic expression over columns: numbers, column
// names (`backquoted` when they are not plain identifiers), + - * /, unary
// minus, parentheses and the functions log, log1p, exp, sqrt, abs. It is
// evaluated a batch at a time over float64 slices, NaN marking a missing
// value: any missing operand gives a missing result, and so does division
// by zero.
type featExpr interface {
	// refs appends the column names the expression reads.
	refs(dst []string) []string
	String() string
}

type (
	featNum struct{ v float64 }
	featCol struct {
		name string
		ref  featRef // resolved when the op list is compiled
	}
	featBin struct {
		op   byte
		l, r featExpr
	}
	featNeg  struct{ x featExpr }
	featCall struct {
		fn string
		x  featExpr
	}
)

func (e *featNum) refs(dst []string) []string  { return dst }
func (e *featCol) refs(dst []string) []string  { return append(dst, e.name) }
func (e *featBin) refs(dst []string) []string  { return e.r.refs(e.l.refs(dst)) }
func (e *featNeg) refs(dst []string) []string  { return e.x.refs(dst) }
func (e *featCall) refs(dst []string) []string { return e.x.refs(dst) }
func (e *featNum) String() string              { return strconv.FormatFloat(e.v, 'g', -1, 64) }
func (e *featCol) String() string              { return e.name }
func (e *featBin) String() string {
	return "(" + e.l.String() + " " + string(e.op) + " " + e.r.String() + ")"
}
func (e *featNeg) String() string  { return "-" + e.x.String() }
func (e *featCall) String() string { return e.fn + "(" + e.x.String() + ")" }

var featFuncs = map[string]func(float64) float64{
	"log": math.Log, "log1p": math.Log1p, "exp": math.Exp, "sqrt": math.Sqrt, "abs": math.Abs,
}

// featParseExpr parses src.
func featParseExpr(src string) (featExpr, error) {
	p := &featParser{src: []rune(src)}
	e, err := p.sum()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i < len(p.src) {
		return nil, fmt.Errorf("unexpected %q at position %d", string(p.src[p.i]), p.i+1)
	}
	return e, nil
}

type featParser struct {
	src []rune
	i   int
}

func (p *featParser) space() {
	for p.i < len(p.src) && unicode.IsSpace(p.src[p.i]) {
		p.i++
	}
}

func (p *featParser) peek() rune {
	p.space()
	if p.i < len(p.src) {
		return p.src[p.i]
	}
	return 0
}

func (p *featParser) sum() (featExpr, error) {
	l, err := p.product()
	if err != nil {
		return nil, err
	}
	for {
		c := p.peek()
		if c != '+' && c != '-' {
			return l, nil
		}
		p.i++
		r, err := p.product()
		if err != nil {
			return nil, err
		}
		l = &featBin{op: byte(c), l: l, r: r}
	}
}

func (p *featParser) product() (featExpr, error) {
	l, err := p.unary()
	if err != nil {
		return nil, err
	}
	for {
		c := p.peek()
		if c != '*' && c != '/' {
			return l, nil
		}
		p.i++
		r, err := p.unary()
		if err != nil {
			return nil, err
		}
		l = &featBin{op: byte(c), l: l, r: r}
	}
}

func (p *featParser) unary() (featExpr, error) {
	switch p.peek() {
	case '-':
		p.i++
		x, err := p.unary()
		if err != nil {
			return nil, err
		}
		if n, ok := x.(*featNum); ok {
			return &featNum{v: -n.v}, nil
		}
		return &featNeg{x: x}, nil
	case '+':
		p.i++
		return p.unary()
	}
	return p.primary()
}

func (p *featParser) primary() (featExpr, error) {
	c := p.peek()
	start := p.i
	switch {
	case c == 0:
		return nil, fmt.Errorf("expression ends where a value was expected")
	case c == '(':
		p.i++
		e, err := p.sum()
		if err != nil {
			return nil, err
		}
		if p.peek() != ')' {
			return nil, fmt.Errorf("missing ) for ( at position %d", start+1)
		}
		p.i++
		return e, nil
	case c == '`':
		j := p.i + 1
		for j < len(p.src) && p.src[j] != '`' {
			j++
		}
		if j == len(p.src) {
			return nil, fmt.Errorf("unterminated ` at position %d", start+1)
		}
		name := string(p.src[p.i+1 : j])
		p.i = j + 1
		return &featCol{name: name}, nil
	case unicode.IsDigit(c) || c == '.':
		j := p.i
		for j < len(p.src) && (unicode.IsDigit(p.src[j]) || p.src[j] == '.' || p.src[j] == 'e' || p.src[j] == 'E' ||
			(j > p.i && (p.src[j] == '-' || p.src[j] == '+') && (p.src[j-1] == 'e' || p.src[j-1] == 'E'))) {
			j++
		}
		v, err := strconv.ParseFloat(string(p.src[p.i:j]), 64)
		if err != nil {
			return nil, fmt.Errorf("bad number %q at position %d", string(p.src[p.i:j]), start+1)
		}
		p.i = j
		return &featNum{v: v}, nil
	case unicode.IsLetter(c) || c == '_':
		j := p.i
		for j < len(p.src) && (unicode.IsLetter(p.src[j]) || unicode.IsDigit(p.src[j]) || p.src[j] == '_') {
			j++
		}
		name := string(p.src[p.i:j])
		p.i = j
		if p.peek() == '(' {
			if _, ok := featFuncs[name]; !ok {
				return nil, fmt.Errorf("unknown function %q at position %d (log, log1p, exp, sqrt, abs)", name, start+1)
			}
			p.i++
			x, err := p.sum()
			if err != nil {
				return nil, err
			}
			if p.peek() != ')' {
				return nil, fmt.Errorf("missing ) after the argument of %s", name)
			}
			p.i++
			return &featCall{fn: name, x: x}, nil
		}
		return &featCol{name: name}, nil
	}
	return nil, fmt.Errorf("unexpected %q at position %d", string(c), start+1)
}

// featVec is an expression's value over a batch: a vector, or a scalar when
// vec is nil.
type featVec struct {
	vec    []float64
	scalar float64
	owned  bool // vec may be overwritten
}

// featEval evaluates e over a batch of n rows; col returns a column's values
// (not to be modified).
func featEval(e featExpr, n int, col func(featRef) ([]float64, error)) (featVec, error) {
	switch e := e.(type) {
	case *featNum:
		return featVec{scalar: e.v}, nil
	case *featCol:
		v, err := col(e.ref)
		return featVec{vec: v}, err
	case *featNeg:
		x, err := featEval(e.x, n, col)
		if err != nil {
			return x, err
		}
		if x.vec == nil {
			return featVec{scalar: -x.scalar}, nil
		}
		out := featOut(x, n)
		for i, v := range x.vec {
			out[i] = -v
		}
		return featVec{vec: out, owned: true}, nil
	case *featCall:
		x, err := featEval(e.x, n, col)
		if err != nil {
			return x, err
		}
		f := featFuncs[e.fn]
		if x.vec == nil {
			return featVec{scalar: f(x.scalar)}, nil
		}
		out := featOut(x, n)
		for i, v := range x.vec {
			out[i] = f(v)
		}
		return featVec{vec: out, owned: true}, nil
	case *featBin:
		l, err := featEval(e.l, n, col)
		if err != nil {
			return l, err
		}
		r, err := featEval(e.r, n, col)
		if err != nil {
			return r, err
		}
		if l.vec == nil && r.vec == nil {
			return featVec{scalar: featApply(e.op, l.scalar, r.scalar)}, nil
		}
		var out []float64
		switch {
		case l.owned:
			out = l.vec
		case r.owned:
			out = r.vec
		default:
			out = make([]float64, n)
		}
		switch {
		case l.vec != nil && r.vec != nil:
			featBinVV(e.op, out, l.vec, r.vec)
		case l.vec != nil:
			featBinVS(e.op, out, l.vec, r.scalar)
		default:
			featBinSV(e.op, out, l.scalar, r.vec)
		}
		return featVec{vec: out, owned: true}, nil
	}
	return featVec{}, fmt.Errorf("unknown expression %T", e)
}

func featOut(x featVec, n int) []float64 {
	if x.owned {
		return x.vec
	}
	return make([]float64, n)
}

func featApply(op byte, a, b float64) float64 {
	switch op {
	case '+':
		return a + b
	case '-':
		return a - b
	case '*':
		return a * b
	}
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// The three shapes of a binary operation, each a tight loop per operator.
func featBinVV(op byte, out, a, b []float64) {
	b = b[:len(a)]
	out = out[:len(a)]
	switch op {
	case '+':
		for i := range a {
			out[i] = a[i] + b[i]
		}
	case '-':
		for i := range a {
			out[i] = a[i] - b[i]
		}
	case '*':
		for i := range a {
			out[i] = a[i] * b[i]
		}
	case '/':
		nan := math.NaN()
		for i := range a {
			if b[i] == 0 {
				out[i] = nan
			} else {
				out[i] = a[i] / b[i]
			}
		}
	}
}

func featBinVS(op byte, out, a []float64, b float64) {
	out = out[:len(a)]
	switch op {
	case '+':
		for i := range a {
			out[i] = a[i] + b
		}
	case '-':
		for i := range a {
			out[i] = a[i] - b
		}
	case '*':
		for i := range a {
			out[i] = a[i] * b
		}
	case '/':
		if b == 0 {
			nan := math.NaN()
			for i := range out {
				out[i] = nan
			}
			return
		}
		for i := range a {
			out[i] = a[i] / b
		}
	}
}

func featBinSV(op byte, out []float64, a float64, b []float64) {
	out = out[:len(b)]
	switch op {
	case '+':
		for i := range b {
			out[i] = a + b[i]
		}
	case '-':
		for i := range b {
			out[i] = a - b[i]
		}
	case '*':
		for i := range b {
			out[i] = a * b[i]
		}
	case '/':
		nan := math.NaN()
		for i := range b {
			if b[i] == 0 {
				out[i] = nan
			} else {
				out[i] = a / b[i]
			}
		}
	}
}
