package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// Features is the built-in `features` kind: it reads the Parquet table at
// input `table`, applies a list of feature ops, and writes the feature table
// at output `table` and the fitted statistics (JSON) at output `stats`, so
// that serving can reproduce every transform (docs/kinds/features.md).
//
// Ops that need statistics of the whole table (standardize, one-hot
// categories, group aggregates, lags and rolling windows) are fitted in
// streaming passes before the output is written; an op that needs another
// fitted op's output is fitted one pass later. Each pass decodes only the
// columns it needs; the last pass computes every output column a batch at a
// time and writes it while the next batch is computed.
type Features struct{}

// NewFeatures returns the features kind.
func NewFeatures() *Features { return &Features{} }

// Version implements Kind.
func (*Features) Version() string { return "orch.features.v3" }

// FeaturesParams are the params of a features stage.
type FeaturesParams struct {
	// Ops is the list of feature ops, applied in order.
	Ops []json.RawMessage `json:"ops"`
	// Keep lists input columns written unchanged before the op outputs.
	// Omitted: customer_id and churned, those of them the input has.
	Keep []string `json:"keep"`
}

// featDefaultKeep is what keep means when it is omitted: the id column
// train splits on and the label it learns.
var featDefaultKeep = []string{"customer_id", "churned"}

// featRef names a column an op reads: an input column (op < 0) or the
// output of an earlier op.
type featRef struct {
	op  int
	col string
}

// featOp is one compiled op with its fitted state.
type featOp struct {
	i     int
	kind  string
	label string // "ops[3] (onehot plan)", for messages
	name  string // output name; onehot: the prefix
	src   featRef
	by    *featRef
	order *featRef
	expr  featExpr
	text  string // expr as written

	topK   int
	other  bool
	cats   []any
	bounds []float64
	part   string
	ref    int32
	refTxt string
	n      int
	window int
	minP   int

	stateful bool
	fitLevel int
	level    int
	outType  arrow.DataType

	// fitted state
	keys    *opsKeys
	count   []int64
	catCol  []int32  // key id → output column, -1 none
	catVals []string // the kept categories, in output order
	outs    []string // onehot output names (other last)
	boolKey bool
	mom     opsMoments
	mean    float64
	std     float64
	gsum    []float64
	gcnt    []int64
	gval    []float64
	win     *featWindow
}

// featSlot is one output position: a kept input column (op < 0) or an
// op's output.
type featSlot struct {
	name string
	op   int
}

type featPlan struct {
	ops   []*featOp
	slots []featSlot
	keep  []string
	dflt  bool // keep was omitted
	bufs  featBufs
}

// featBufs recycles the scratch buffers of batches (columns as float64,
// category ids): a batch takes them as it computes and gives them back when
// released, so that the next batches reuse them instead of allocating and
// zeroing tens of MB per pass. Batches are released by the goroutine that
// fits them, hence the lock.
type featBufs struct {
	mu  sync.Mutex
	f64 [][]float64
	ids [][]int32
}

func featPop[T any](mu *sync.Mutex, free *[][]T, n int) []T {
	mu.Lock()
	var buf []T
	if k := len(*free); k > 0 {
		buf = (*free)[k-1]
		*free = (*free)[:k-1]
	}
	mu.Unlock()
	return opsGrow(buf, n)
}

// ids returns a buffer of n category ids for batch b.
func (b *featBatch) idBuf() []int32 {
	buf := featPop(&b.plan.bufs.mu, &b.plan.bufs.ids, b.n)
	b.ids = append(b.ids, buf)
	return buf
}

// featSpec is every key an op may have; featKeys says which ones each op
// accepts.
type featSpec struct {
	Name        string    `json:"name"`
	Expr        string    `json:"expr"`
	Log1p       string    `json:"log1p"`
	Sqrt        string    `json:"sqrt"`
	Onehot      string    `json:"onehot"`
	TopK        *int      `json:"top_k"`
	Other       bool      `json:"other"`
	Categories  []any     `json:"categories"`
	Prefix      string    `json:"prefix"`
	Bucketize   string    `json:"bucketize"`
	Bounds      []float64 `json:"bounds"`
	Standardize any       `json:"standardize"`
	GroupMean   string    `json:"group_mean"`
	GroupSum    string    `json:"group_sum"`
	GroupCount  string    `json:"group_count"`
	By          string    `json:"by"`
	DatePart    string    `json:"date_part"`
	Part        string    `json:"part"`
	DaysSince   string    `json:"days_since"`
	Ref         string    `json:"ref"`
	Lag         string    `json:"lag"`
	Order       string    `json:"order"`
	N           *int      `json:"n"`
	RollingMean string    `json:"rolling_mean"`
	Window      int       `json:"window"`
	MinPeriods  *int      `json:"min_periods"`
}

// featKeys maps each op key to the other keys it accepts.
var featKeys = map[string][]string{
	"expr":         {"name"},
	"log1p":        {"name"},
	"sqrt":         {"name"},
	"onehot":       {"top_k", "other", "categories", "prefix"},
	"bucketize":    {"name", "bounds"},
	"standardize":  {},
	"group_mean":   {"name", "by"},
	"group_sum":    {"name", "by"},
	"group_count":  {"name", "by"},
	"date_part":    {"name", "part"},
	"days_since":   {"name", "ref"},
	"lag":          {"name", "by", "order", "n"},
	"rolling_mean": {"name", "by", "order", "window", "min_periods"},
}

var featParts = map[string]arrow.DataType{
	"year": arrow.PrimitiveTypes.Int16, "month": arrow.PrimitiveTypes.Int8, "day": arrow.PrimitiveTypes.Int8,
	"dow": arrow.PrimitiveTypes.Int8, "dayofyear": arrow.PrimitiveTypes.Int16, "quarter": arrow.PrimitiveTypes.Int8,
}

// featCompile checks params and builds the plan, reporting every problem.
func featCompile(params map[string]Param) (*featPlan, []Problem) {
	var cfg FeaturesParams
	if ps := DecodeParams(params, &cfg); len(ps) > 0 {
		return nil, ps
	}
	var ps []Problem
	plan := &featPlan{keep: cfg.Keep}
	if cfg.Keep == nil {
		plan.keep, plan.dflt = featDefaultKeep, true
	}
	if len(cfg.Ops) == 0 {
		ps = append(ps, Problem{Field: "params.ops", Msg: "ops: give a list of feature ops (expr, log1p, sqrt, onehot, bucketize, standardize, group_mean, group_sum, group_count, date_part, days_since, lag, rolling_mean)"})
	}
	sym := map[string]int{} // name → op producing it
	slotOf := map[string]int{}
	for _, k := range plan.keep {
		if _, dup := slotOf[k]; dup {
			ps = append(ps, Problem{Field: "params.keep", Msg: fmt.Sprintf("keep: %q is listed twice", k)})
			continue
		}
		slotOf[k] = len(plan.slots)
		plan.slots = append(plan.slots, featSlot{name: k, op: -1})
	}
	resolve := func(name string) featRef {
		if j, ok := sym[name]; ok {
			return featRef{op: j, col: name}
		}
		return featRef{op: -1, col: name}
	}
	for i, raw := range cfg.Ops {
		label := fmt.Sprintf("ops[%d]", i)
		bad := func(format string, a ...any) {
			ps = append(ps, Problem{Field: "params.ops", Msg: label + ": " + fmt.Sprintf(format, a...)})
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(raw, &keys); err != nil {
			bad("each op is a mapping like {name: x, expr: \"a / b\"}")
			continue
		}
		var kind string
		for k := range keys {
			if _, ok := featKeys[k]; ok {
				if kind != "" {
					bad("one op per entry; this one has both %s and %s", kind, k)
				}
				if kind == "" || k < kind {
					kind = k
				}
			}
		}
		if kind == "" {
			bad("no op key (one of %s)", strings.Join(sortedKeys(featKeys), ", "))
			continue
		}
		for k := range keys {
			if k != kind && !contains(featKeys[kind], k) {
				bad("%s does not take %q (it takes %s)", kind, k, strings.Join(append([]string{kind}, featKeys[kind]...), ", "))
			}
		}
		var s featSpec
		dec := json.NewDecoder(bytes.NewReader(raw))
		if err := dec.Decode(&s); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				bad("%s: expected %s", te.Field, typeName(te.Type.Kind().String()))
			} else {
				bad("%v", err)
			}
			continue
		}
		src := func(v string) string {
			if v == "" {
				bad("%s needs a column name", kind)
			}
			return v
		}
		named := func(dflt string) string {
			if s.Name != "" {
				return s.Name
			}
			return dflt
		}
		var newOps []*featOp
		op := &featOp{kind: kind}
		switch kind {
		case "expr":
			op.text = s.Expr
			e, err := featParseExpr(s.Expr)
			if err != nil {
				bad("expr %q: %v", s.Expr, err)
				continue
			}
			op.expr = e
			if s.Name == "" {
				bad("expr needs a name for its output column")
			}
			op.name = s.Name
		case "log1p", "sqrt":
			col := s.Log1p
			if kind == "sqrt" {
				col = s.Sqrt
			}
			op.src.col = src(col)
			op.name = named(col + "_" + kind)
		case "onehot":
			op.src.col = src(s.Onehot)
			op.name = s.Onehot
			if s.Prefix != "" {
				op.name = s.Prefix
			}
			if s.TopK != nil {
				if *s.TopK < 1 {
					bad("top_k must be at least 1, got %d", *s.TopK)
				}
				op.topK = *s.TopK
			}
			op.other = s.Other
			if s.Categories != nil {
				if len(s.Categories) == 0 {
					bad("categories is empty")
				}
				if s.TopK != nil {
					bad("give categories or top_k, not both")
				}
				op.cats = s.Categories
			}
		case "bucketize":
			op.src.col = src(s.Bucketize)
			op.name = named(s.Bucketize + "_bucket")
			if len(s.Bounds) == 0 {
				bad("bucketize needs bounds: an increasing list of numbers")
			}
			for j := 1; j < len(s.Bounds); j++ {
				if !(s.Bounds[j] > s.Bounds[j-1]) {
					bad("bounds must increase strictly: %v", s.Bounds)
					break
				}
			}
			if len(s.Bounds) > 32766 {
				bad("at most 32766 bounds")
			}
			op.bounds = s.Bounds
		case "standardize":
			var cols []string
			switch v := s.Standardize.(type) {
			case string:
				cols = []string{v}
			case []any:
				for _, e := range v {
					c, ok := e.(string)
					if !ok || c == "" {
						bad("standardize: %v is not a column name", e)
						continue
					}
					cols = append(cols, c)
				}
			}
			if len(cols) == 0 {
				bad("standardize needs a column or a list of columns")
			}
			for _, c := range cols {
				newOps = append(newOps, &featOp{kind: kind, src: featRef{col: c}, name: c})
			}
		case "group_mean", "group_sum", "group_count":
			col := map[string]string{"group_mean": s.GroupMean, "group_sum": s.GroupSum, "group_count": s.GroupCount}[kind]
			op.src.col = src(col)
			if s.By == "" {
				bad("%s needs by: the column to group by", kind)
			}
			op.by = &featRef{col: s.By}
			op.name = named(fmt.Sprintf("%s_%s_by_%s", col, strings.TrimPrefix(kind, "group_"), s.By))
		case "date_part":
			op.src.col = src(s.DatePart)
			if _, ok := featParts[s.Part]; !ok {
				bad("part %q: want one of year, month, day, dow, dayofyear, quarter", s.Part)
			}
			op.part = s.Part
			op.name = named(s.DatePart + "_" + s.Part)
		case "days_since":
			op.src.col = src(s.DaysSince)
			d, err := opsParseDate(s.Ref)
			if err != nil {
				bad("days_since needs ref, a date like 2024-12-31: %v", err)
			}
			op.ref, op.refTxt = d, s.Ref
			op.name = named("days_since_" + s.DaysSince)
		case "lag", "rolling_mean":
			col := s.Lag
			if kind == "rolling_mean" {
				col = s.RollingMean
			}
			op.src.col = src(col)
			if s.By != "" {
				op.by = &featRef{col: s.By}
			}
			if s.Order != "" {
				op.order = &featRef{col: s.Order}
			}
			if kind == "lag" {
				op.n = 1
				if s.N != nil {
					op.n = *s.N
				}
				if op.n < 1 {
					bad("n must be at least 1, got %d", op.n)
				}
				op.name = named(fmt.Sprintf("%s_lag%d", col, op.n))
			} else {
				if s.Window < 1 {
					bad("rolling_mean needs window: a number of rows, at least 1")
				}
				op.window, op.minP = s.Window, s.Window
				if s.MinPeriods != nil {
					op.minP = *s.MinPeriods
					if op.minP < 1 || op.minP > s.Window {
						bad("min_periods must be between 1 and window (%d), got %d", s.Window, op.minP)
					}
				}
				op.name = named(fmt.Sprintf("%s_rolling_mean%d", col, op.window))
			}
		}
		if newOps == nil {
			newOps = []*featOp{op}
		}
		for _, o := range newOps {
			o.i = len(plan.ops)
			o.label = fmt.Sprintf("%s (%s %s)", label, o.kind, o.name)
			// Resolve what the op reads against the ops before it.
			if o.expr != nil {
				featResolveExpr(o.expr, resolve)
				o.src = featRef{op: -1}
			} else {
				o.src = resolve(o.src.col)
			}
			if o.by != nil {
				r := resolve(o.by.col)
				o.by = &r
			}
			if o.order != nil {
				r := resolve(o.order.col)
				o.order = &r
			}
			switch o.kind {
			case "onehot", "standardize", "group_mean", "group_sum", "group_count", "lag", "rolling_mean":
				o.stateful = o.kind != "onehot" || o.cats == nil
			}
			plan.ops = append(plan.ops, o)
			// Its output: standardize of an earlier op's output takes over that
			// output's place; every other output is a new column.
			if o.kind == "standardize" && o.src.op >= 0 {
				if j, ok := slotOf[o.name]; ok && plan.slots[j].op >= 0 {
					plan.slots[j].op = o.i
					sym[o.name] = o.i
					continue
				}
			}
			if o.kind != "onehot" {
				if _, dup := slotOf[o.name]; dup {
					what := "an earlier op's output"
					if plan.slots[slotOf[o.name]].op < 0 {
						what = "a kept column"
					}
					bad("output %q is already %s", o.name, what)
					continue
				}
				slotOf[o.name] = len(plan.slots)
				sym[o.name] = o.i
			}
			plan.slots = append(plan.slots, featSlot{name: o.name, op: o.i})
		}
	}
	// Levels: an op's output is available from the pass after its own fit;
	// a fitted op is fitted in the pass after its inputs are available.
	for _, o := range plan.ops {
		lvl := 0
		for _, r := range o.deps() {
			if r.op >= 0 && plan.ops[r.op].level > lvl {
				lvl = plan.ops[r.op].level
			}
		}
		o.level = lvl
		if o.stateful {
			o.fitLevel = lvl + 1
			o.level = o.fitLevel
		}
	}
	return plan, ps
}

func featResolveExpr(e featExpr, resolve func(string) featRef) {
	switch e := e.(type) {
	case *featCol:
		e.ref = resolve(e.name)
	case *featBin:
		featResolveExpr(e.l, resolve)
		featResolveExpr(e.r, resolve)
	case *featNeg:
		featResolveExpr(e.x, resolve)
	case *featCall:
		featResolveExpr(e.x, resolve)
	}
}

// deps returns every column the op reads.
func (o *featOp) deps() []featRef {
	var rs []featRef
	if o.expr != nil {
		var walk func(e featExpr)
		walk = func(e featExpr) {
			switch e := e.(type) {
			case *featCol:
				rs = append(rs, e.ref)
			case *featBin:
				walk(e.l)
				walk(e.r)
			case *featNeg:
				walk(e.x)
			case *featCall:
				walk(e.x)
			}
		}
		walk(o.expr)
	} else {
		rs = append(rs, o.src)
	}
	if o.by != nil {
		rs = append(rs, *o.by)
	}
	if o.order != nil {
		rs = append(rs, *o.order)
	}
	return rs
}

// Check implements Kind.
func (*Features) Check(d *Decl) []Problem {
	_, ps := featCompile(d.Params)
	return append(ps, fixedIO(d, []string{"table"}, []string{"table", "stats"})...)
}

// Run implements Kind.
func (*Features) Run(ctx context.Context, t *Task) error {
	start := time.Now()
	plan, ps := featCompile(t.Params)
	if len(ps) > 0 {
		return fmt.Errorf("%s: %s", ps[0].Field, ps[0].Msg)
	}
	in, out, statsPath := t.Inputs["table"], t.Outputs["table"], t.Outputs["stats"]
	if in == "" || out == "" || statsPath == "" {
		return errors.New("features: needs input table and outputs table and stats")
	}
	schema, err := ppSchema(ctx, in)
	if err != nil {
		return err
	}
	if err := plan.bind(schema, in); err != nil {
		return err
	}
	maxFit := 0
	for _, o := range plan.ops {
		maxFit = max(maxFit, o.fitLevel)
	}
	all := make([]int, len(plan.ops))
	for i := range all {
		all[i] = i
	}
	src := featSourceFor(in, schema, plan.inputs(all, plan.keep), maxFit+1)
	defer src.drop()
	for pass := 1; pass <= maxFit; pass++ {
		var fit []int
		for _, o := range plan.ops {
			if o.fitLevel == pass {
				fit = append(fit, o.i)
			}
		}
		if err := plan.fitPass(ctx, src, fit); err != nil {
			return err
		}
	}
	outSchema, err := plan.schema(schema, in)
	if err != nil {
		return err
	}
	rows, err := plan.transform(ctx, src, out, outSchema)
	if err != nil {
		return err
	}
	if err := plan.writeStats(statsPath, outSchema, rows); err != nil {
		return err
	}
	if t.Log != nil {
		fmt.Fprintf(t.Log, "features: %d rows, %d columns (%d kept, %d ops), %d passes, %s\n",
			rows, len(outSchema.Fields()), len(plan.keep), len(plan.ops), maxFit+1, time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// bind checks the ops against the input schema and prepares their state.
func (p *featPlan) bind(s *arrow.Schema, path string) error {
	typeOf := func(o *featOp, r featRef, what string) (arrow.DataType, error) {
		if r.op >= 0 {
			return p.ops[r.op].outType, nil
		}
		i := opsIndex(s, r.col)
		if i < 0 {
			var names []string
			for _, f := range s.Fields() {
				names = append(names, f.Name)
			}
			return nil, fmt.Errorf("features %s: %s: %s: no column %q (columns: %s)", path, o.label, what, r.col, strings.Join(names, ", "))
		}
		return s.Field(i).Type, nil
	}
	if p.dflt {
		var keep []string
		var slots []featSlot
		for _, sl := range p.slots {
			if sl.op < 0 && opsIndex(s, sl.name) < 0 {
				continue // a default kept column the input does not have
			}
			if sl.op < 0 {
				keep = append(keep, sl.name)
			}
			slots = append(slots, sl)
		}
		p.keep, p.slots = keep, slots
	}
	for _, k := range p.keep {
		if opsIndex(s, k) < 0 {
			return fmt.Errorf("features %s: keep: no column %q", path, k)
		}
	}
	for _, o := range p.ops {
		for _, r := range o.deps() {
			if _, err := typeOf(o, r, "reads"); err != nil {
				return err
			}
		}
		srcT, _ := typeOf(o, o.src, "")
		numeric := func() error {
			if !opsIsNumeric(srcT) {
				return fmt.Errorf("features %s: %s: column %q has type %s; it needs numbers", path, o.label, o.src.col, srcT)
			}
			return nil
		}
		o.outType = arrow.PrimitiveTypes.Float32
		switch o.kind {
		case "expr":
			for _, r := range o.deps() {
				t, _ := typeOf(o, r, "")
				if !opsIsNumeric(t) {
					return fmt.Errorf("features %s: %s: column %q has type %s; expressions need numbers", path, o.label, r.col, t)
				}
			}
		case "log1p", "sqrt", "standardize", "bucketize", "lag", "rolling_mean", "group_mean", "group_sum":
			if err := numeric(); err != nil {
				return err
			}
		case "group_count":
		case "date_part", "days_since":
			if !opsIsDate(srcT) && !opsIsString(srcT) {
				return fmt.Errorf("features %s: %s: column %q has type %s; it needs dates", path, o.label, o.src.col, srcT)
			}
			o.outType = arrow.PrimitiveTypes.Int32
			if o.kind == "date_part" {
				o.outType = featParts[o.part]
			}
		case "onehot":
			k, err := newOpsKeys(srcT)
			if err != nil {
				return fmt.Errorf("features %s: %s: column %q: %w", path, o.label, o.src.col, err)
			}
			o.keys, o.boolKey = k, srcT.ID() == arrow.BOOL
			if o.cats != nil {
				if err := o.seedCategories(); err != nil {
					return fmt.Errorf("features %s: %s: %w", path, o.label, err)
				}
			}
		}
		if o.kind == "bucketize" {
			o.outType = arrow.PrimitiveTypes.Int8
			if len(o.bounds) > 126 {
				o.outType = arrow.PrimitiveTypes.Int16
			}
		}
		if o.by != nil {
			bt, _ := typeOf(o, *o.by, "")
			k, err := newOpsKeys(bt)
			if err != nil {
				return fmt.Errorf("features %s: %s: by %q: %w", path, o.label, o.by.col, err)
			}
			o.keys = k
		}
		if o.order != nil {
			ot, _ := typeOf(o, *o.order, "")
			if !opsIsNumeric(ot) && !opsIsDate(ot) && !opsIsString(ot) {
				return fmt.Errorf("features %s: %s: order %q has type %s; order by numbers or dates", path, o.label, o.order.col, ot)
			}
		}
	}
	return nil
}

// seedCategories sets up one-hot columns from an explicit category list.
func (o *featOp) seedCategories() error {
	for _, c := range o.cats {
		var text string
		switch v := c.(type) {
		case string:
			text = v
		case float64:
			text = fmt.Sprint(v)
		case bool:
			text = fmt.Sprint(v)
		default:
			return fmt.Errorf("category %v is not a string or number", c)
		}
		if o.keys.isInt {
			var n int64
			switch {
			case o.boolKey && (text == "true" || text == "True"):
				n = 1
			case o.boolKey && (text == "false" || text == "False"):
				n = 0
			default:
				if _, err := fmt.Sscan(text, &n); err != nil {
					return fmt.Errorf("category %q: the column holds integers", text)
				}
			}
			id, isNew := o.keys.ints.add(n)
			if isNew {
				o.keys.nums = append(o.keys.nums, n)
			} else {
				return fmt.Errorf("category %q is listed twice", text)
			}
			_ = id
		} else {
			if _, dup := o.keys.str[text]; dup {
				return fmt.Errorf("category %q is listed twice", text)
			}
			o.keys.lookupString(text, true)
		}
	}
	ids := make([]int32, o.keys.len())
	for i := range ids {
		ids[i] = int32(i)
	}
	o.setCategories(ids)
	return nil
}

// setCategories makes one output column per id in ids, in that order, then
// other if asked for.
func (o *featOp) setCategories(ids []int32) {
	o.catCol = make([]int32, o.keys.len())
	for i := range o.catCol {
		o.catCol[i] = -1
	}
	o.catVals, o.outs = nil, nil
	for j, id := range ids {
		o.catCol[id] = int32(j)
		v := o.keys.name(id)
		if o.boolKey {
			v = map[string]string{"0": "False", "1": "True"}[v]
		}
		o.catVals = append(o.catVals, v)
		o.outs = append(o.outs, o.name+"_"+v)
	}
	if o.other {
		o.outs = append(o.outs, o.name+"_other")
	}
}

// need returns the ops needed to compute the given ones (themselves
// included), in order.
func (p *featPlan) need(ops []int) []int {
	want := make([]bool, len(p.ops))
	var mark func(i int)
	mark = func(i int) {
		if want[i] {
			return
		}
		want[i] = true
		for _, r := range p.ops[i].deps() {
			if r.op >= 0 {
				mark(r.op)
			}
		}
	}
	for _, i := range ops {
		mark(i)
	}
	var out []int
	for i, w := range want {
		if w {
			out = append(out, i)
		}
	}
	return out
}

// inputs returns the input columns the given ops read (plus extra).
func (p *featPlan) inputs(ops []int, extra []string) []string {
	cols := append([]string(nil), extra...)
	for _, i := range ops {
		for _, r := range p.ops[i].deps() {
			if r.op < 0 {
				cols = append(cols, r.col)
			}
		}
	}
	return opsUnique(cols)
}

// featBatch is one batch being computed: the input columns, and each op's
// outputs once computed.
type featBatch struct {
	plan *featPlan
	rec  arrow.RecordBatch
	sc   *arrow.Schema
	off  int64
	n    int
	out  []arrow.Array
	// onehot outputs
	multi [][]arrow.Array
	f64   map[featRef][]float64
	ids   [][]int32 // id buffers taken from plan.bufs
	// src keeps the outputs of batch idx that later passes compute again
	// (nil: it does not).
	src   *featSource
	idx   int
	store bool // keep the outputs computed (a fitting pass)
}

// release releases the batch's outputs and gives its scratch buffers back.
func (b *featBatch) release() {
	releaseAll(b.out)
	for _, m := range b.multi {
		releaseAll(m)
	}
	bufs := &b.plan.bufs
	bufs.mu.Lock()
	for _, v := range b.f64 {
		bufs.f64 = append(bufs.f64, v)
	}
	bufs.ids = append(bufs.ids, b.ids...)
	bufs.mu.Unlock()
	b.f64, b.ids = nil, nil
}

func (b *featBatch) array(r featRef) arrow.Array {
	if r.op >= 0 {
		return b.out[r.op]
	}
	return b.rec.Column(opsIndex(b.sc, r.col))
}

// floats returns a column's values as float64 (NaN: missing), converted
// once per batch. Callers must not modify the slice.
func (b *featBatch) floats(r featRef) ([]float64, error) {
	if v, ok := b.f64[r]; ok {
		return v, nil
	}
	a := b.array(r)
	v, err := opsFloat64s(a, featPop(&b.plan.bufs.mu, &b.plan.bufs.f64, a.Len()))
	if err != nil {
		return nil, fmt.Errorf("column %q: %w", r.col, err)
	}
	b.f64[r] = v
	return v, nil
}

// run computes the given ops (in order: inputs first).
func (b *featBatch) run(ops []int) error {
	for _, i := range ops {
		o := b.plan.ops[i]
		if o.kind == "onehot" {
			outs, err := o.onehot(b)
			if err != nil {
				return fmt.Errorf("%s: %w", o.label, opsAtRow(err, b.off))
			}
			b.multi[i] = outs
			continue
		}
		if a := b.src.output(b.idx, i); a != nil {
			b.out[i] = a
			continue
		}
		a, err := o.eval(b)
		if err != nil {
			return fmt.Errorf("%s: %w", o.label, opsAtRow(err, b.off))
		}
		b.out[i] = a
		if b.store {
			b.src.keepOutput(b.idx, i, a)
		}
	}
	return nil
}

// featCacheBytes is the most decoded input a features run keeps in memory
// so that its passes read the input table once: the fit passes and the
// output pass then walk the kept batches instead of decoding the file again.
// Larger inputs are streamed from the file by every pass.
var featCacheBytes = 256 << 20

// featSource is the input table the passes read.
type featSource struct {
	path string
	// all lists every input column any pass reads, while the first pass
	// may still keep the batches; nil: stream every pass from the file.
	all []string
	// batches holds the input's batches (columns all) once a whole pass
	// has kept them; done says it has.
	batches []arrow.RecordBatch
	done    bool
	budget  int // the most decoded bytes kept
	// outs[k][i] is op i's output for batch k, computed by a fitting pass
	// (an op evaluated there is fitted already, so its output is final)
	// and kept for the later passes, which would compute it again; kept
	// counts their bytes, at most budget/4.
	outs [][]arrow.Array
	kept int
}

// output returns (retained) op i's kept output for batch k, or nil.
func (src *featSource) output(k, i int) arrow.Array {
	if src == nil || k >= len(src.outs) || i >= len(src.outs[k]) || src.outs[k][i] == nil {
		return nil
	}
	a := src.outs[k][i]
	a.Retain()
	return a
}

// keepOutput keeps op i's output a of batch k for the later passes.
func (src *featSource) keepOutput(k, i int, a arrow.Array) {
	if src == nil {
		return
	}
	n := 0
	for _, buf := range a.Data().Buffers() {
		if buf != nil {
			n += buf.Len()
		}
	}
	if src.kept+n > src.budget/4 {
		return
	}
	for len(src.outs) <= k {
		src.outs = append(src.outs, nil)
	}
	if src.outs[k] == nil {
		src.outs[k] = make([]arrow.Array, i+1)
	}
	for len(src.outs[k]) <= i {
		src.outs[k] = append(src.outs[k], nil)
	}
	if src.outs[k][i] != nil {
		return
	}
	a.Retain()
	src.outs[k][i] = a
	src.kept += n
}

// dropOutputs releases the kept outputs of batch k.
func (src *featSource) dropOutputs(k int) {
	if k < len(src.outs) {
		releaseAll(src.outs[k])
		src.outs[k] = nil
	}
}

// featSourceFor returns the source of a run whose passes read the columns
// all (of schema s), keeping the decoded batches when passes > 1 and their
// estimated size is within featCacheBytes.
func featSourceFor(path string, s *arrow.Schema, all []string, passes int) *featSource {
	src := &featSource{path: path, budget: featCacheBytes}
	if passes < 2 {
		return src
	}
	if opsFits(path, s, all, src.budget) {
		src.all = all
	}
	return src
}

// drop releases the kept batches.
func (src *featSource) drop() {
	for _, rec := range src.batches {
		if rec != nil {
			rec.Release()
		}
	}
	for k := range src.outs {
		src.dropOutputs(k)
	}
	src.batches, src.all, src.done, src.outs, src.kept = nil, nil, false, nil, 0
}

// scanInput streams the given input columns, calling fn with each batch
// after computing the given ops.
// When src keeps its batches, the first pass reads every column any pass
// needs and keeps them; later passes walk the kept batches, and the last
// (final) releases each batch once done with it.
func (p *featPlan) scanInput(ctx context.Context, src *featSource, cols []string, ops []int, final bool, fn func(*featBatch) error) error {
	if len(cols) == 0 {
		return fmt.Errorf("features %s: no input column to read", src.path)
	}
	var off int64
	// A fitting pass (not final) fits a batch in a goroutine of its own
	// while the next batch's inputs are computed; batches are fitted in
	// order, so the fitted values are the same.
	var fits *opsPipe[*featBatch]
	if !final {
		fits = opsStartPipe(fn, func(b *featBatch) {
			b.release()
			b.rec.Release() // retained when sent
		})
		defer fits.finish()
	}
	// each computes batch rec; k is its index among the kept batches, or
	// -1 when the batches are not kept (then neither are op outputs).
	each := func(rec arrow.RecordBatch, k int) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := &featBatch{plan: p, rec: rec, sc: rec.Schema(), off: off, n: int(rec.NumRows()),
			out: make([]arrow.Array, len(p.ops)), multi: make([][]arrow.Array, len(p.ops)), f64: map[featRef][]float64{},
			idx: k, store: !final}
		if k >= 0 {
			b.src = src
		}
		err := b.run(ops)
		switch {
		case err != nil && fits != nil:
			b.release()
			if ferr := fits.finish(); ferr != nil {
				err = ferr // an earlier batch's error comes first
			}
		case err != nil:
			b.release()
		case fits != nil:
			rec.Retain() // a reader's batch is valid until its next one
			fits.send(b)
		default:
			err = fn(b)
			b.release()
		}
		if err != nil {
			return fmt.Errorf("features %s: %w", src.path, err)
		}
		off += int64(b.n)
		return nil
	}
	finish := func() error {
		if fits == nil {
			return nil
		}
		if err := fits.finish(); err != nil {
			return fmt.Errorf("features %s: %w", src.path, err)
		}
		return nil
	}
	if src.done {
		for i, rec := range src.batches {
			err := each(rec, i)
			if final {
				rec.Release()
				src.batches[i] = nil
				src.dropOutputs(i)
			}
			if err != nil {
				return err
			}
		}
		if final {
			src.drop()
		}
		return finish()
	}
	keep := src.all != nil && !final
	if keep {
		cols = src.all
	}
	r, err := table.Open(ctx, src.path, cols)
	if err != nil {
		return err
	}
	defer r.Close()
	kept := 0
	for {
		rec, err := r.Next()
		if err != nil {
			return fmt.Errorf("features %s: %w", src.path, err)
		}
		if rec == nil {
			src.done = keep
			return finish()
		}
		k := -1
		if keep {
			if kept += opsBatchBytes(rec); kept > src.budget {
				src.drop() // larger than estimated: stream every pass
				keep = false
			} else {
				rec.Retain()
				src.batches = append(src.batches, rec)
				k = len(src.batches) - 1
			}
		}
		if err := each(rec, k); err != nil {
			return err
		}
	}
}

// fitPass streams the input once and fits the given ops.
func (p *featPlan) fitPass(ctx context.Context, src *featSource, fit []int) error {
	var deps []int
	for _, i := range fit {
		for _, r := range p.ops[i].deps() {
			if r.op >= 0 {
				deps = append(deps, r.op)
			}
		}
	}
	need := p.need(deps)
	cols := p.inputs(append(append([]int(nil), need...), fit...), nil)
	err := p.scanInput(ctx, src, cols, need, false, func(b *featBatch) error {
		for _, i := range fit {
			if err := p.ops[i].fit(b); err != nil {
				return fmt.Errorf("%s: %w", p.ops[i].label, opsAtRow(err, b.off))
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, i := range fit {
		if err := p.ops[i].finish(); err != nil {
			return fmt.Errorf("features %s: %s: %w", src.path, p.ops[i].label, err)
		}
	}
	return nil
}

// schema returns the output schema: kept columns, then each op's outputs.
func (p *featPlan) schema(in *arrow.Schema, path string) (*arrow.Schema, error) {
	var fields []arrow.Field
	seen := map[string]string{}
	add := func(f arrow.Field, who string) error {
		if prev, dup := seen[f.Name]; dup {
			return fmt.Errorf("features %s: output column %q comes from both %s and %s", path, f.Name, prev, who)
		}
		seen[f.Name] = who
		fields = append(fields, f)
		return nil
	}
	for _, sl := range p.slots {
		if sl.op < 0 {
			if err := add(in.Field(opsIndex(in, sl.name)), "keep"); err != nil {
				return nil, err
			}
			continue
		}
		o := p.ops[sl.op]
		if o.kind == "onehot" {
			for _, name := range o.outs {
				if err := add(arrow.Field{Name: name, Type: arrow.FixedWidthTypes.Boolean}, o.label); err != nil {
					return nil, err
				}
			}
			continue
		}
		if err := add(arrow.Field{Name: sl.name, Type: o.outType, Nullable: true}, o.label); err != nil {
			return nil, err
		}
	}
	return arrow.NewSchema(fields, nil), nil
}

// transform computes every output column batch by batch and writes them.
func (p *featPlan) transform(ctx context.Context, src *featSource, out string, outSchema *arrow.Schema) (int64, error) {
	var roots []int
	for _, sl := range p.slots {
		if sl.op >= 0 {
			roots = append(roots, sl.op)
		}
	}
	need := p.need(roots)
	cols := p.inputs(need, p.keep)
	// One-hot columns are 0/1 by construction: min/max statistics would
	// tell a reader nothing.
	var noStats []bool
	for _, sl := range p.slots {
		onehot := sl.op >= 0 && p.ops[sl.op].kind == "onehot"
		n := 1
		if onehot {
			n = len(p.ops[sl.op].outs)
		}
		for range n {
			noStats = append(noStats, onehot)
		}
	}
	if len(noStats) != outSchema.NumFields() {
		noStats = nil // slots and schema disagree: keep every statistic
	}
	w, err := table.CreateWith(out, outSchema, table.Options{NoStats: noStats, Codec: table.LZ4Raw, Handoff: table.HandoffFrom(ctx)})
	if err != nil {
		return 0, fmt.Errorf("features: create %s: %w", out, err)
	}
	ow := opsStartWriter(w)
	var rows int64
	err = p.scanInput(ctx, src, cols, need, true, func(b *featBatch) error {
		var arrs []arrow.Array
		for _, sl := range p.slots {
			switch {
			case sl.op < 0:
				arrs = append(arrs, b.array(featRef{op: -1, col: sl.name}))
			case p.ops[sl.op].kind == "onehot":
				arrs = append(arrs, b.multi[sl.op]...)
			default:
				arrs = append(arrs, b.out[sl.op])
			}
		}
		ow.send(array.NewRecordBatch(outSchema, arrs, int64(b.n)))
		rows += int64(b.n)
		return nil
	})
	werr := ow.finish()
	if err != nil || werr != nil {
		// No footer over a part of the table: a failed stage leaves a
		// file no reader takes for a whole one, and nothing kept in memory.
		w.Abort()
	}
	if err != nil {
		return 0, err
	}
	if werr != nil {
		return 0, fmt.Errorf("features: write %s: %w", out, werr)
	}
	if cerr := w.Close(); cerr != nil {
		return 0, fmt.Errorf("features: write %s: %w", out, cerr)
	}
	return rows, nil
}

// featStats is the JSON written at output `stats`: everything serving needs
// to recompute the feature table from a preprocessed row.
type featStats struct {
	Format  string        `json:"format"`
	Version int           `json:"version"`
	Rows    int64         `json:"rows"`
	Keep    []string      `json:"keep"`
	Columns []featStatCol `json:"columns"`
	Ops     []featStatOp  `json:"ops"`
}

type featStatCol struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

type featStatOp struct {
	Op         string              `json:"op"`
	Name       string              `json:"name,omitempty"`
	Column     string              `json:"column,omitempty"`
	Expr       string              `json:"expr,omitempty"`
	By         string              `json:"by,omitempty"`
	Order      string              `json:"order,omitempty"`
	Mean       *float64            `json:"mean,omitempty"`
	Std        *float64            `json:"std,omitempty"`
	Count      int64               `json:"count,omitempty"`
	Categories []string            `json:"categories,omitempty"`
	Other      bool                `json:"other,omitempty"`
	Outputs    []string            `json:"outputs,omitempty"`
	Bounds     []float64           `json:"bounds,omitempty"`
	Part       string              `json:"part,omitempty"`
	Ref        string              `json:"ref,omitempty"`
	N          int                 `json:"n,omitempty"`
	Window     int                 `json:"window,omitempty"`
	MinPeriods int                 `json:"min_periods,omitempty"`
	Groups     map[string]*float64 `json:"groups,omitempty"`
}

func featFinite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func (p *featPlan) writeStats(path string, outSchema *arrow.Schema, rows int64) error {
	st := featStats{Format: "orch.features.stats", Version: 1, Rows: rows, Keep: p.keep}
	if st.Keep == nil {
		st.Keep = []string{}
	}
	for _, f := range outSchema.Fields() {
		st.Columns = append(st.Columns, featStatCol{Name: f.Name, Type: f.Type.String()})
	}
	for _, o := range p.ops {
		s := featStatOp{Op: o.kind, Name: o.name, Column: o.src.col}
		if o.by != nil {
			s.By = o.by.col
		}
		if o.order != nil {
			s.Order = o.order.col
		}
		switch o.kind {
		case "expr":
			s.Column, s.Expr = "", o.text
		case "standardize":
			s.Mean, s.Std, s.Count = featFinite(o.mean), featFinite(o.std), int64(o.mom.n)
		case "onehot":
			s.Name = ""
			s.Categories, s.Other, s.Outputs = o.catVals, o.other, o.outs
			if s.Categories == nil {
				s.Categories = []string{}
			}
		case "bucketize":
			s.Bounds = o.bounds
		case "date_part":
			s.Part = o.part
		case "days_since":
			s.Ref = o.refTxt
		case "lag":
			s.N = o.n
		case "rolling_mean":
			s.Window, s.MinPeriods = o.window, o.minP
		case "group_mean", "group_sum", "group_count":
			s.Groups = make(map[string]*float64, len(o.gval))
			for id, v := range o.gval {
				s.Groups[o.keys.name(int32(id))] = featFinite(v)
			}
		}
		st.Ops = append(st.Ops, s)
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("features: stats: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("features: write stats: %w", err)
	}
	return nil
}

// sortCategories orders one-hot categories: by count (most first) with ties
// by value to pick the top k, then the kept ones by value.
func (o *featOp) sortCategories() []int32 {
	var ids []int32
	for id, c := range o.count {
		if c > 0 {
			ids = append(ids, int32(id))
		}
	}
	less := func(a, b int32) bool {
		if o.keys.isInt {
			return o.keys.nums[a] < o.keys.nums[b]
		}
		return o.keys.names[a] < o.keys.names[b]
	}
	if o.topK > 0 && len(ids) > o.topK {
		sort.Slice(ids, func(i, j int) bool {
			ci, cj := o.count[ids[i]], o.count[ids[j]]
			if ci != cj {
				return ci > cj
			}
			return less(ids[i], ids[j])
		})
		ids = ids[:o.topK]
	}
	sort.Slice(ids, func(i, j int) bool { return less(ids[i], ids[j]) })
	return ids
}
