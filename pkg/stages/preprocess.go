package stages

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// Preprocess is the built-in `preprocess` kind: it reads the Parquet table
// at input `table` and writes the cleaned table at output `table`. In this
// order: row filters, dedupe, fill, clip, cast (docs/kinds/preprocess.md).
//
// It streams the input three times at most, each time decoding only the
// columns it needs: rows to keep (filter and dedupe keys), then statistics
// of the fill and clip columns over the kept rows (in the same read when
// dedupe keeps the first row), then every column, transformed batch by
// batch and written while the next batch is computed.
type Preprocess struct{}

// NewPreprocess returns the preprocess kind.
func NewPreprocess() *Preprocess { return &Preprocess{} }

// Version implements Kind.
func (*Preprocess) Version() string { return "orch.preprocess.v2" }

// PreprocessParams are the params of a preprocess stage.
type PreprocessParams struct {
	// Filter keeps the rows passing every comparison.
	Filter []any `json:"filter"`
	// Dedupe drops rows whose key was seen before (or after).
	Dedupe *PreprocessDedupe `json:"dedupe"`
	// Fill maps a column to median, mean, mode, or a constant.
	Fill map[string]any `json:"fill"`
	// Clip limits outliers of numeric columns.
	Clip *PreprocessClip `json:"clip"`
	// Cast maps a column to a type name.
	Cast map[string]string `json:"cast"`
}

// PreprocessDedupe is the dedupe param.
type PreprocessDedupe struct {
	Key  any    `json:"key"`  // a column or a list of columns
	Keep string `json:"keep"` // first (default), last, none
}

// PreprocessClip is the clip param.
type PreprocessClip struct {
	Columns   []string  `json:"columns"`
	Method    string    `json:"method"`    // quantile (default) or iqr
	Quantiles []float64 `json:"quantiles"` // default [0.01, 0.99]
	K         *float64  `json:"k"`         // iqr multiplier, default 1.5
}

// ppPlan is a checked preprocess configuration.
type ppPlan struct {
	filters []*ppCond
	keys    []string
	keep    string
	fills   map[string]ppFill
	clipCol []string
	clipIQR bool
	clipQ   [2]float64
	clipK   float64
	casts   map[string]ppCast
}

type ppFill struct {
	how   string // median mean mode const
	value any    // the constant (float64, string, bool)
}

type ppCast struct {
	name string
	dt   arrow.DataType // nil for "category"
}

// ppTypes are the names a cast may target.
var ppTypes = map[string]arrow.DataType{
	"int8": arrow.PrimitiveTypes.Int8, "int16": arrow.PrimitiveTypes.Int16,
	"int32": arrow.PrimitiveTypes.Int32, "int64": arrow.PrimitiveTypes.Int64,
	"uint8": arrow.PrimitiveTypes.Uint8, "uint16": arrow.PrimitiveTypes.Uint16,
	"uint32": arrow.PrimitiveTypes.Uint32, "uint64": arrow.PrimitiveTypes.Uint64,
	"float32": arrow.PrimitiveTypes.Float32, "float64": arrow.PrimitiveTypes.Float64,
	"bool": arrow.FixedWidthTypes.Boolean, "string": arrow.BinaryTypes.String,
	"date32": arrow.FixedWidthTypes.Date32, "category": nil,
}

// ppCompile checks params and builds the plan, reporting every problem.
func ppCompile(params map[string]Param) (*ppPlan, []Problem) {
	var cfg PreprocessParams
	if ps := DecodeParams(params, &cfg); len(ps) > 0 {
		return nil, ps
	}
	var ps []Problem
	bad := func(field, format string, a ...any) {
		ps = append(ps, Problem{Field: "params." + field, Msg: fmt.Sprintf(format, a...)})
	}
	p := &ppPlan{keep: "first", fills: map[string]ppFill{}, casts: map[string]ppCast{}, clipQ: [2]float64{0.01, 0.99}, clipK: 1.5}
	for _, f := range cfg.Filter {
		c, err := ppParseCond(f)
		if err != nil {
			bad("filter", "%v", err)
			continue
		}
		p.filters = append(p.filters, c)
	}
	if d := cfg.Dedupe; d != nil {
		switch k := d.Key.(type) {
		case string:
			p.keys = []string{k}
		case []any:
			for _, e := range k {
				s, ok := e.(string)
				if !ok || s == "" {
					bad("dedupe", "dedupe key: %v is not a column name", e)
					continue
				}
				p.keys = append(p.keys, s)
			}
		}
		if len(p.keys) == 0 || p.keys[0] == "" {
			bad("dedupe", "dedupe needs key: a column or a list of columns")
		}
		switch d.Keep {
		case "", "first":
		case "last", "none":
			p.keep = d.Keep
		default:
			bad("dedupe", "dedupe keep %q: want first, last or none", d.Keep)
		}
	}
	for _, col := range sortedKeys(cfg.Fill) {
		switch v := cfg.Fill[col].(type) {
		case string:
			switch v {
			case "median", "mean", "mode":
				p.fills[col] = ppFill{how: v}
			default:
				p.fills[col] = ppFill{how: "const", value: v}
			}
		case float64, bool:
			p.fills[col] = ppFill{how: "const", value: v}
		case int:
			p.fills[col] = ppFill{how: "const", value: float64(v)}
		case map[string]any:
			c, ok := v["value"]
			if len(v) != 1 || !ok {
				bad("fill", "fill %s: a mapping must be {value: CONSTANT}", col)
				continue
			}
			switch c.(type) {
			case string, float64, bool:
				p.fills[col] = ppFill{how: "const", value: c}
			default:
				bad("fill", "fill %s: %v is not a number, string or boolean", col, c)
			}
		default:
			bad("fill", "fill %s: want median, mean, mode or a constant, got %v", col, v)
		}
	}
	if c := cfg.Clip; c != nil {
		p.clipCol = c.Columns
		if len(c.Columns) == 0 {
			bad("clip", "clip needs columns: a list of numeric columns")
		}
		switch c.Method {
		case "", "quantile":
			if c.K != nil {
				bad("clip", "clip k applies to method iqr only")
			}
			if c.Quantiles != nil {
				if len(c.Quantiles) != 2 || !(0 <= c.Quantiles[0] && c.Quantiles[0] < c.Quantiles[1] && c.Quantiles[1] <= 1) {
					bad("clip", "clip quantiles must be two numbers 0 <= low < high <= 1, got %v", c.Quantiles)
				} else {
					p.clipQ = [2]float64{c.Quantiles[0], c.Quantiles[1]}
				}
			}
		case "iqr":
			p.clipIQR = true
			if c.Quantiles != nil {
				bad("clip", "clip quantiles apply to method quantile only")
			}
			if c.K != nil {
				if *c.K < 0 || math.IsNaN(*c.K) {
					bad("clip", "clip k must be >= 0, got %v", *c.K)
				}
				p.clipK = *c.K
			}
		default:
			bad("clip", "clip method %q: want quantile or iqr", c.Method)
		}
	}
	for _, col := range sortedKeys(cfg.Cast) {
		name := cfg.Cast[col]
		dt, ok := ppTypes[name]
		if !ok {
			var names []string
			for n := range ppTypes {
				names = append(names, n)
			}
			sort.Strings(names)
			bad("cast", "cast %s: unknown type %q (one of %s)", col, name, strings.Join(names, ", "))
			continue
		}
		p.casts[col] = ppCast{name: name, dt: dt}
	}
	return p, ps
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Check implements Kind.
func (*Preprocess) Check(d *Decl) []Problem {
	_, ps := ppCompile(d.Params)
	return append(ps, fixedIO(d, []string{"table"}, []string{"table"})...)
}

// ppStat gathers what one fill or clip column needs over the kept rows.
type ppStat struct {
	col    string
	vals   []float64 // non-missing values, numeric columns needing median/quantiles
	sum    float64   // mean
	n      int64
	miss   int64             // missing rows
	counts map[float64]int64 // numeric mode
	keys   *opsKeys          // string or bool mode
	kcount []int64
	needV  bool
	// results
	fill   any // float64, string or bool; nil: no fill
	lo, hi float64
	clip   bool
}

// Run implements Kind.
func (*Preprocess) Run(ctx context.Context, t *Task) error {
	start := time.Now()
	p, ps := ppCompile(t.Params)
	if len(ps) > 0 {
		return fmt.Errorf("%s: %s", ps[0].Field, ps[0].Msg)
	}
	in, out := t.Inputs["table"], t.Outputs["table"]
	if in == "" || out == "" {
		return errors.New("preprocess: needs input table and output table")
	}
	schema, err := ppSchema(ctx, in)
	if err != nil {
		return err
	}
	outSchema, stats, err := p.validate(schema, in)
	if err != nil {
		return err
	}

	// Pass 1 (and 2): rows to keep, and statistics over them.
	var keep []bool // nil: every row
	var rowsIn int64
	online := len(p.keys) == 0 || p.keep == "first"
	passCols := append([]string(nil), p.keys...)
	for _, c := range p.filters {
		passCols = append(passCols, c.col)
	}
	if online {
		for _, s := range stats {
			passCols = append(passCols, s.col)
		}
	}
	passCols = opsUnique(passCols)
	held := ppHoldFor(in, schema, passCols, online)
	defer held.release()
	if len(passCols) > 0 {
		keep, rowsIn, err = p.scan(ctx, in, passCols, online, stats, held)
		if err != nil {
			return err
		}
		if !online && len(stats) > 0 {
			var cols []string
			for _, s := range stats {
				cols = append(cols, s.col)
			}
			if err := ppGather(ctx, in, opsUnique(cols), keep, stats); err != nil {
				return err
			}
		}
	}
	// Each column's fill value and clip bounds (quantile selections over
	// millions of values), on all cores.
	errs := make([]error, len(stats))
	mlParallelDo(len(stats), mlParallelism(len(stats)), func(_, i int) { errs[i] = p.finish(stats[i]) })
	for _, err := range errs {
		if err != nil {
			return fmt.Errorf("preprocess %s: %w", in, err)
		}
	}

	// Last pass: transform every column and write.
	rowsOut, err := p.transform(ctx, in, out, schema, outSchema, keep, stats, held)
	if err != nil {
		return err
	}
	if len(passCols) == 0 {
		rowsIn = rowsOut
	}
	if t.Log != nil {
		var notes []string
		for _, s := range stats {
			if s.fill != nil && s.miss > 0 {
				notes = append(notes, fmt.Sprintf("filled %d %s with %v", s.miss, s.col, s.fill))
			}
			if s.clip {
				notes = append(notes, fmt.Sprintf("clipped %s to [%g, %g]", s.col, s.lo, s.hi))
			}
		}
		fmt.Fprintf(t.Log, "preprocess: %d rows in, %d out, %d columns, %s\n", rowsIn, rowsOut, len(outSchema.Fields()), time.Since(start).Round(time.Millisecond))
		for _, n := range notes {
			fmt.Fprintf(t.Log, "preprocess: %s\n", n)
		}
	}
	return nil
}

// ppHoldBytes is the most decoded input preprocess keeps from its first
// pass, so that the last pass decodes only the other columns.
var ppHoldBytes = 256 << 20

// ppHeld keeps the batches the first pass read (columns cols), for the last
// pass to join with the other columns instead of decoding them again.
type ppHeld struct {
	cols    []string
	batches []arrow.RecordBatch
	bytes   int
	budget  int
	off     bool // over budget: the last pass reads every column
}

// ppHoldFor returns where the first pass over path keeps its columns cols,
// or nil when it should not: the pass is not the online one, it reads every
// column (or none), or the columns' estimated size is over ppHoldBytes.
func ppHoldFor(path string, s *arrow.Schema, cols []string, online bool) *ppHeld {
	if !online || len(cols) == 0 || len(cols) >= s.NumFields() {
		return nil
	}
	if !opsFits(path, s, cols, ppHoldBytes) {
		return nil
	}
	return &ppHeld{cols: cols, budget: ppHoldBytes}
}

// add keeps rec, unless the batches outgrow the budget: then it drops them
// all.
func (h *ppHeld) add(rec arrow.RecordBatch) {
	if h == nil || h.off {
		return
	}
	if h.bytes += opsBatchBytes(rec); h.bytes > h.budget {
		h.release()
		h.off = true
		return
	}
	rec.Retain()
	h.batches = append(h.batches, rec)
}

// use reports whether the last pass joins the kept batches.
func (h *ppHeld) use() bool { return h != nil && !h.off }

func (h *ppHeld) release() {
	if h == nil {
		return
	}
	for _, b := range h.batches {
		if b != nil {
			b.Release()
		}
	}
	h.batches = nil
}

// join returns batch i of the input (schema full): the columns in rest,
// with the kept columns of batch i; it releases the kept batch.
func (h *ppHeld) join(full *arrow.Schema, rest arrow.RecordBatch, i int) (arrow.RecordBatch, error) {
	if i >= len(h.batches) || h.batches[i].NumRows() != rest.NumRows() {
		return nil, fmt.Errorf("internal error: batch %d of the last pass does not match the first pass's", i)
	}
	kept := h.batches[i]
	cols := make([]arrow.Array, full.NumFields())
	for j, f := range full.Fields() {
		src := rest
		if opsIndex(kept.Schema(), f.Name) >= 0 {
			src = kept
		}
		cols[j] = src.Column(opsIndex(src.Schema(), f.Name))
	}
	rec := array.NewRecordBatch(full, cols, rest.NumRows())
	kept.Release()
	h.batches[i] = nil
	return rec, nil
}

func opsUnique(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// ppSchema reads the schema of a Parquet table.
func ppSchema(ctx context.Context, path string) (*arrow.Schema, error) {
	r, err := table.Open(ctx, path, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Schema(), nil
}

// validate checks the plan against the input schema and returns the output
// schema and the statistics to gather.
func (p *ppPlan) validate(s *arrow.Schema, path string) (*arrow.Schema, []*ppStat, error) {
	col := func(name, what string) (arrow.DataType, error) {
		i := opsIndex(s, name)
		if i < 0 {
			var names []string
			for _, f := range s.Fields() {
				names = append(names, f.Name)
			}
			return nil, fmt.Errorf("preprocess %s: %s: no column %q (columns: %s)", path, what, name, strings.Join(names, ", "))
		}
		return s.Field(i).Type, nil
	}
	for _, c := range p.filters {
		dt, err := col(c.col, "filter")
		if err != nil {
			return nil, nil, err
		}
		if err := c.check(dt); err != nil {
			return nil, nil, fmt.Errorf("preprocess %s: %w", path, err)
		}
	}
	for _, k := range p.keys {
		dt, err := col(k, "dedupe key")
		if err != nil {
			return nil, nil, err
		}
		if _, err := newOpsKeys(dt); err != nil {
			return nil, nil, fmt.Errorf("preprocess %s: dedupe key %q: %w", path, k, err)
		}
	}
	byCol := map[string]*ppStat{}
	var stats []*ppStat
	stat := func(name string) *ppStat {
		if st := byCol[name]; st != nil {
			return st
		}
		st := &ppStat{col: name}
		byCol[name] = st
		stats = append(stats, st)
		return st
	}
	for _, name := range sortedKeys(p.fills) {
		f := p.fills[name]
		dt, err := col(name, "fill")
		if err != nil {
			return nil, nil, err
		}
		st := stat(name)
		switch {
		case opsIsString(dt):
			switch v := f.value.(type) {
			case string:
			case nil:
				if f.how != "mode" {
					return nil, nil, fmt.Errorf("preprocess %s: fill %s: column holds strings; fill it with mode or a string, not %s", path, name, f.how)
				}
				k, _ := newOpsKeys(dt)
				st.keys = k
			default:
				return nil, nil, fmt.Errorf("preprocess %s: fill %s: column holds strings; fill it with a string, not %v", path, name, v)
			}
		case dt.ID() == arrow.BOOL:
			switch v := f.value.(type) {
			case bool:
			case nil:
				if f.how != "mode" {
					return nil, nil, fmt.Errorf("preprocess %s: fill %s: column is boolean; fill it with mode, true or false, not %s", path, name, f.how)
				}
				k, _ := newOpsKeys(dt)
				st.keys = k
			default:
				return nil, nil, fmt.Errorf("preprocess %s: fill %s: column is boolean; fill it with true or false, not %v", path, name, v)
			}
		case opsIsNumeric(dt):
			switch v := f.value.(type) {
			case float64:
			case nil:
				switch f.how {
				case "median":
					st.needV = true
				case "mode":
					st.counts = map[float64]int64{}
				}
			default:
				return nil, nil, fmt.Errorf("preprocess %s: fill %s: column is numeric (%s); fill it with median, mean, mode or a number, not %q", path, name, dt, v)
			}
		default:
			return nil, nil, fmt.Errorf("preprocess %s: fill %s: cannot fill a column of type %s", path, name, dt)
		}
	}
	for _, name := range p.clipCol {
		dt, err := col(name, "clip")
		if err != nil {
			return nil, nil, err
		}
		if !opsIsNumeric(dt) || dt.ID() == arrow.BOOL {
			return nil, nil, fmt.Errorf("preprocess %s: clip %s: column has type %s; only numeric columns can be clipped", path, name, dt)
		}
		st := stat(name)
		st.needV, st.clip = true, true
	}
	fields := append([]arrow.Field(nil), s.Fields()...)
	for _, name := range sortedKeys(p.casts) {
		c := p.casts[name]
		dt, err := col(name, "cast")
		if err != nil {
			return nil, nil, err
		}
		i := opsIndex(s, name)
		if c.dt == nil { // category
			if !opsIsString(dt) {
				return nil, nil, fmt.Errorf("preprocess %s: cast %s to category: column has type %s; only strings become categories", path, name, dt)
			}
			if dt.ID() != arrow.DICTIONARY {
				fields[i].Type = &arrow.DictionaryType{IndexType: arrow.PrimitiveTypes.Int32, ValueType: dt}
			}
			continue
		}
		from := dt
		if d, ok := dt.(*arrow.DictionaryType); ok {
			from = d.ValueType
		}
		if !compute.CanCast(from, c.dt) {
			return nil, nil, fmt.Errorf("preprocess %s: cast %s: cannot cast %s to %s", path, name, dt, c.name)
		}
		fields[i].Type = c.dt
	}
	md := s.Metadata()
	return arrow.NewSchema(fields, &md), stats, nil
}

// scan reads the filter, key (and, when online, statistics) columns and
// returns which rows survive the filters and dedupe.
// With held, it keeps the batches it reads for the last pass.
func (p *ppPlan) scan(ctx context.Context, path string, cols []string, online bool, stats []*ppStat, held *ppHeld) ([]bool, int64, error) {
	r, err := table.Open(ctx, path, cols)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	sc := r.Schema()
	if online {
		ppReserve(stats, opsNumRows(path))
	}
	// The statistics of a batch's kept rows are collected in a goroutine
	// of their own, overlapping the filters and dedupe of the next batch;
	// batches are collected in order, so the sums are the same.
	var coll *opsPipe[ppCollectItem]
	if online && len(stats) > 0 {
		coll = opsStartPipe(func(it ppCollectItem) error { return ppCollect(it.rec, sc, it.keep, stats) },
			func(it ppCollectItem) { it.rec.Release() })
		defer coll.finish()
	}
	var keys []*opsKeys
	nrows := int(opsNumRows(path))
	for _, k := range p.keys {
		ok, _ := newOpsKeys(sc.Field(opsIndex(sc, k)).Type)
		ok.reserve(nrows)
		keys = append(keys, ok)
	}
	var (
		keep     []bool
		rows     int64
		ids      []int32 // per batch
		comp     []int32
		combined = newOpsIntMap()
		rowIDs   []int32 // per table row, for keep last / none
		seen     []bool  // per id, keep first
		count    []int32 // per id
		last     []int32 // per id
		f64      []float64
		days     []int32
		valid    []bool
	)
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		rec, err := r.Next()
		if err != nil {
			return nil, 0, fmt.Errorf("preprocess %s: %w", path, err)
		}
		if rec == nil {
			break
		}
		n := int(rec.NumRows())
		base := len(keep)
		keep = append(keep, make([]bool, n)...)
		k := keep[base:]
		for i := range k {
			k[i] = true
		}
		for _, c := range p.filters {
			a := rec.Column(opsIndex(sc, c.col))
			if f64, err = c.eval(a, k, f64, days, valid); err != nil {
				return nil, 0, fmt.Errorf("preprocess %s: filter %q: column %q: %w", path, c.text, c.col, opsAtRow(err, rows))
			}
		}
		if len(keys) > 0 {
			ids = keys[0].encode(rec.Column(opsIndex(sc, p.keys[0])), ids, true)
			if len(keys) > 1 {
				// Combine the per-column ids pairwise into one id per distinct tuple.
				for j := 1; j < len(keys); j++ {
					comp = keys[j].encode(rec.Column(opsIndex(sc, p.keys[j])), comp, true)
					for i := range ids {
						ids[i], _ = combined.add(int64(ids[i]+1)<<32 | int64(comp[i]+1))
					}
				}
			} else {
				for i := range ids {
					ids[i]++ // null keys (-1) are one key, like pandas
				}
			}
			for i, id := range ids {
				if !k[i] {
					if !online {
						rowIDs = append(rowIDs, -1)
					}
					continue
				}
				if int(id) >= len(count) {
					// Room for every row's id at once (ids are dense, one
					// per distinct key), not a copy per doubling.
					m := max(int(id)+1, nrows)
					count = slices.Grow(count, m-len(count))[:m]
					if p.keep == "first" {
						seen = slices.Grow(seen, m-len(seen))[:m]
					} else {
						last = slices.Grow(last, m-len(last))[:m]
					}
				}
				count[id]++
				switch p.keep {
				case "first":
					if seen[id] {
						k[i] = false
					}
					seen[id] = true
				default:
					rowIDs = append(rowIDs, id)
					last[id] = int32(base + i)
				}
			}
		}
		if coll != nil {
			// k is final for this batch (later batches append to keep,
			// never write this part again)
			rec.Retain()
			coll.send(ppCollectItem{rec, k})
		}
		held.add(rec)
		rows += int64(n)
	}
	if coll != nil {
		if err := coll.finish(); err != nil {
			return nil, 0, fmt.Errorf("preprocess %s: %w", path, err)
		}
	}
	if rows > math.MaxInt32 && len(keys) > 0 && p.keep != "first" {
		return nil, 0, fmt.Errorf("preprocess %s: dedupe keep %s supports up to %d rows", path, p.keep, math.MaxInt32)
	}
	if !online {
		for r, id := range rowIDs {
			if id < 0 {
				continue
			}
			if p.keep == "last" {
				keep[r] = last[id] == int32(r)
			} else {
				keep[r] = count[id] == 1
			}
		}
	}
	return keep, rows, nil
}

// ppGather reads the statistics columns and gathers them over the kept rows.
func ppGather(ctx context.Context, path string, cols []string, keep []bool, stats []*ppStat) error {
	r, err := table.Open(ctx, path, cols)
	if err != nil {
		return err
	}
	defer r.Close()
	sc := r.Schema()
	kept := 0
	for _, k := range keep {
		if k {
			kept++
		}
	}
	ppReserve(stats, int64(kept))
	off := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		rec, err := r.Next()
		if err != nil {
			return fmt.Errorf("preprocess %s: %w", path, err)
		}
		if rec == nil {
			return nil
		}
		n := int(rec.NumRows())
		if err := ppCollect(rec, sc, keep[off:off+n], stats); err != nil {
			return fmt.Errorf("preprocess %s: %w", path, err)
		}
		off += n
	}
}

// ppReserve makes room for rows values in the statistics that keep them
// (for medians and quantiles), so collecting them does not copy them over
// and over as the slices grow.
func ppReserve(stats []*ppStat, rows int64) {
	for _, s := range stats {
		if s.needV && s.vals == nil {
			s.vals = make([]float64, 0, rows)
		}
	}
}

// ppCollect adds the kept rows of one batch to the statistics.
// ppCollectItem is a batch whose kept rows' statistics are to be collected.
type ppCollectItem struct {
	rec  arrow.RecordBatch // retained by the sender, released by the pipe
	keep []bool
}

func ppCollect(rec arrow.RecordBatch, sc *arrow.Schema, keep []bool, stats []*ppStat) error {
	var f64 []float64
	var ids []int32
	for _, s := range stats {
		a := rec.Column(opsIndex(sc, s.col))
		if s.keys != nil {
			ids = s.keys.encode(a, ids, true)
			for i, id := range ids {
				if !keep[i] {
					continue
				}
				if id < 0 {
					s.miss++
					continue
				}
				for int(id) >= len(s.kcount) {
					s.kcount = append(s.kcount, 0)
				}
				s.kcount[id]++
			}
			continue
		}
		if !opsIsNumeric(a.DataType()) {
			// A string or boolean column filled with a constant: count its
			// missing rows for the log.
			for i := range keep {
				if keep[i] && a.IsNull(i) {
					s.miss++
				}
			}
			continue
		}
		var err error
		if f64, err = opsFloat64s(a, f64); err != nil {
			return fmt.Errorf("column %q: %w", s.col, err)
		}
		// Locals, not the fields of s, in the loop: the compiler keeps them
		// in registers.
		n, sum, miss, vals, needV, counts := s.n, s.sum, s.miss, s.vals, s.needV, s.counts
		keep := keep[:len(f64)]
		for i, v := range f64 {
			if !keep[i] {
				continue
			}
			if v != v {
				miss++
				continue
			}
			n++
			sum += v
			if needV {
				vals = append(vals, v)
			}
			if counts != nil {
				counts[v]++
			}
		}
		s.n, s.sum, s.miss, s.vals = n, sum, miss, vals
	}
	return nil
}

// finish computes the fill value and clip bounds of one column.
func (p *ppPlan) finish(s *ppStat) error {
	if f, ok := p.fills[s.col]; ok && s.n == 0 && f.how != "const" && (s.keys == nil || len(s.kcount) == 0) {
		if s.miss > 0 {
			return fmt.Errorf("fill %s with %s: the column has only missing values (%d), nothing to compute it from", s.col, f.how, s.miss)
		}
		// No values and nothing missing (an empty table): nothing to fill.
	} else if ok {
		switch f.how {
		case "const":
			s.fill = f.value
		case "median":
			if s.n == 0 {
				return fmt.Errorf("fill %s with median: the column has no values", s.col)
			}
			// opsMedian reorders vals; the quantiles below do not mind.
			s.fill = opsMedian(s.vals)
		case "mean":
			if s.n == 0 {
				return fmt.Errorf("fill %s with mean: the column has no values", s.col)
			}
			s.fill = s.sum / float64(s.n)
		case "mode":
			switch {
			case s.keys != nil:
				best := int32(-1)
				for id, c := range s.kcount {
					if best < 0 || c > s.kcount[best] || c == s.kcount[best] && s.keys.name(int32(id)) < s.keys.name(best) {
						best = int32(id)
					}
				}
				if best < 0 {
					return fmt.Errorf("fill %s with mode: the column has no values", s.col)
				}
				if s.keys.isInt { // boolean
					s.fill = s.keys.nums[best] == 1
				} else {
					s.fill = s.keys.name(best)
				}
			default:
				if len(s.counts) == 0 {
					return fmt.Errorf("fill %s with mode: the column has no values", s.col)
				}
				var best float64
				var bc int64 = -1
				for v, c := range s.counts {
					if c > bc || c == bc && v < best {
						best, bc = v, c
					}
				}
				s.fill = best
			}
		}
	}
	if s.clip {
		vals := s.vals
		if fv, ok := s.fill.(float64); ok && s.miss > 0 {
			// Clip bounds are computed after filling, as the pandas reference does.
			for range s.miss {
				vals = append(vals, fv)
			}
		}
		if len(vals) == 0 {
			s.clip = false // nothing to clip
			return nil
		}
		if p.clipIQR {
			q := opsQuantiles(vals, []float64{0.25, 0.75})
			iqr := q[1] - q[0]
			s.lo, s.hi = q[0]-p.clipK*iqr, q[1]+p.clipK*iqr
		} else {
			q := opsQuantiles(vals, p.clipQ[:])
			s.lo, s.hi = q[0], q[1]
		}
		s.vals = nil
	}
	return nil
}

// transform streams every column through fill, clip and cast, dropping the
// rows not kept, and writes the result. With held batches it decodes only
// the columns the first pass did not keep.
func (p *ppPlan) transform(ctx context.Context, in, out string, full, outSchema *arrow.Schema, keep []bool, stats []*ppStat, held *ppHeld) (int64, error) {
	var rest []string // nil: every column
	if held.use() {
		for _, f := range full.Fields() {
			if !slices.Contains(held.cols, f.Name) {
				rest = append(rest, f.Name)
			}
		}
	}
	r, err := table.Open(ctx, in, rest)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	w, err := table.CreateWith(out, outSchema, table.Options{Codec: table.LZ4Raw, Handoff: table.HandoffFrom(ctx)})
	if err != nil {
		return 0, fmt.Errorf("preprocess: create %s: %w", out, err)
	}
	ow := opsStartWriter(w)
	byCol := map[string]*ppStat{}
	for _, s := range stats {
		byCol[s.col] = s
	}
	sc := full
	var rows, off int64
	var mask []bool
	batchNo := 0
	fail := func(err error) (int64, error) {
		_ = ow.finish()
		w.Abort() // no footer over a part of the table
		return 0, err
	}
	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		rec, err := r.Next()
		if err != nil {
			return fail(fmt.Errorf("preprocess %s: %w", in, err))
		}
		if rec == nil {
			if held.use() && batchNo != len(held.batches) {
				return fail(fmt.Errorf("preprocess %s: internal error: %d batches in the last pass, %d in the first", in, batchNo, len(held.batches)))
			}
			break
		}
		n := int64(rec.NumRows())
		batch := rec
		if held.use() {
			if batch, err = held.join(full, rec, batchNo); err != nil {
				return fail(fmt.Errorf("preprocess %s: %w", in, err))
			}
		} else {
			batch.Retain()
		}
		batchNo++
		if keep != nil {
			mask = keep[off : off+n]
			all := true
			for _, k := range mask {
				if !k {
					all = false
					break
				}
			}
			if !all {
				fb, err := ppFilterBatch(ctx, batch, mask)
				batch.Release()
				if err != nil {
					return fail(fmt.Errorf("preprocess %s: %w", in, err))
				}
				batch = fb
			}
		}
		cols := make([]arrow.Array, len(sc.Fields()))
		for i, f := range sc.Fields() {
			a := batch.Column(i)
			a.Retain()
			if s := byCol[f.Name]; s != nil {
				na, err := ppApply(a, s)
				a.Release()
				if err != nil {
					releaseAll(cols)
					batch.Release()
					return fail(fmt.Errorf("preprocess %s: column %q: %w", in, f.Name, err))
				}
				a = na
			}
			if c, ok := p.casts[f.Name]; ok {
				na, err := ppCastArray(ctx, a, c, outSchema.Field(i).Type)
				a.Release()
				if err != nil {
					releaseAll(cols)
					batch.Release()
					return fail(fmt.Errorf("preprocess %s: cast %s to %s: %w", in, f.Name, c.name, ppCastRow(err, off, keep, mask)))
				}
				a = na
			}
			cols[i] = a
		}
		outRec := array.NewRecordBatch(outSchema, cols, batch.NumRows())
		releaseAll(cols)
		rows += batch.NumRows()
		batch.Release()
		ow.send(outRec)
		off += n
	}
	if err := ow.finish(); err != nil {
		w.Abort()
		return 0, fmt.Errorf("preprocess: write %s: %w", out, err)
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("preprocess: write %s: %w", out, err)
	}
	return rows, nil
}

func releaseAll(as []arrow.Array) {
	for _, a := range as {
		if a != nil {
			a.Release()
		}
	}
}

// ppFilterBatch keeps the rows of rec where mask is true (Arrow's filter
// kernel).
func ppFilterBatch(ctx context.Context, rec arrow.RecordBatch, mask []bool) (arrow.RecordBatch, error) {
	b := array.NewBooleanBuilder(memory.DefaultAllocator)
	defer b.Release()
	b.AppendValues(mask, nil)
	m := b.NewBooleanArray()
	defer m.Release()
	return compute.FilterRecordBatch(ctx, rec, m, compute.DefaultFilterOptions())
}

// ppApply fills and clips one column of a batch.
func ppApply(a arrow.Array, s *ppStat) (arrow.Array, error) {
	if s.fill == nil && !s.clip {
		a.Retain()
		return a, nil
	}
	switch c := a.(type) {
	case *array.Int8:
		return ppNumeric(a, c.Int8Values(), s, true), nil
	case *array.Int16:
		return ppNumeric(a, c.Int16Values(), s, true), nil
	case *array.Int32:
		return ppNumeric(a, c.Int32Values(), s, true), nil
	case *array.Int64:
		return ppNumeric(a, c.Int64Values(), s, true), nil
	case *array.Uint8:
		return ppNumeric(a, c.Uint8Values(), s, true), nil
	case *array.Uint16:
		return ppNumeric(a, c.Uint16Values(), s, true), nil
	case *array.Uint32:
		return ppNumeric(a, c.Uint32Values(), s, true), nil
	case *array.Uint64:
		return ppNumeric(a, c.Uint64Values(), s, true), nil
	case *array.Float32:
		return ppNumeric(a, c.Float32Values(), s, false), nil
	case *array.Float64:
		return ppNumeric(a, c.Float64Values(), s, false), nil
	case *array.Boolean:
		v := s.fill.(bool)
		b := array.NewBooleanBuilder(memory.DefaultAllocator)
		defer b.Release()
		b.Reserve(a.Len())
		for i := 0; i < a.Len(); i++ {
			if a.IsNull(i) {
				b.UnsafeAppend(v)
			} else {
				b.UnsafeAppend(c.Value(i))
			}
		}
		return b.NewArray(), nil
	}
	if opsIsString(a.DataType()) {
		v := s.fill.(string)
		if a.NullN() == 0 {
			a.Retain()
			return a, nil
		}
		if d, ok := a.DataType().(*arrow.DictionaryType); ok {
			b := array.NewDictionaryBuilder(memory.DefaultAllocator, d)
			defer b.Release()
			sb := b.(*array.BinaryDictionaryBuilder)
			for i := 0; i < a.Len(); i++ {
				s := v
				if a.IsValid(i) {
					s = opsStringAt(a, i)
				}
				if err := sb.AppendString(s); err != nil {
					return nil, err
				}
			}
			return b.NewArray(), nil
		}
		b := array.NewBuilder(memory.DefaultAllocator, a.DataType())
		defer b.Release()
		b.Reserve(a.Len())
		for i := 0; i < a.Len(); i++ {
			s := v
			if a.IsValid(i) {
				s = opsStringAt(a, i)
			}
			switch sb := b.(type) {
			case *array.StringBuilder:
				sb.Append(s)
			case *array.LargeStringBuilder:
				sb.Append(s)
			}
		}
		return b.NewArray(), nil
	}
	return nil, fmt.Errorf("cannot fill or clip type %s", a.DataType())
}

// ppNumeric replaces missing values (null, and NaN in float columns) with
// the fill value and limits values to [lo, hi]. Integer columns keep their
// type: the fill value is rounded to the nearest integer and the bounds
// inward (ceil(lo), floor(hi)).
func ppNumeric[T opsNumber](a arrow.Array, vals []T, s *ppStat, integer bool) arrow.Array {
	out := make([]T, len(vals))
	copy(out, vals)
	var valid []bool
	bm, off := a.NullBitmapBytes(), a.Data().Offset()
	if a.NullN() == 0 {
		bm = nil
	}
	fv, hasFill := s.fill.(float64)
	if integer && hasFill {
		fv = math.RoundToEven(fv)
	}
	if !hasFill && bm != nil {
		valid = make([]bool, len(vals))
		for i := range valid {
			valid[i] = opsValid(bm, off, i)
		}
	}
	if hasFill {
		f := T(fv)
		if bm != nil {
			for i := range out {
				if !opsValid(bm, off, i) {
					out[i] = f
				}
			}
		}
		if !integer {
			for i, v := range out {
				if v != v {
					out[i] = f
				}
			}
		}
	}
	if s.clip {
		lo, hi := s.lo, s.hi
		if integer {
			lo, hi = math.Ceil(lo), math.Floor(hi)
		}
		tl, th := T(lo), T(hi)
		for i, v := range out {
			x := float64(v)
			if x < lo {
				out[i] = tl
			} else if x > hi {
				out[i] = th
			}
		}
	}
	return opsPrimitiveArray(a.DataType(), out, valid)
}

// ppCastArray casts one column with Arrow's cast kernel (safe: overflow and
// truncation are errors).
func ppCastArray(ctx context.Context, a arrow.Array, c ppCast, to arrow.DataType) (arrow.Array, error) {
	if arrow.TypeEqual(a.DataType(), to) {
		a.Retain()
		return a, nil
	}
	if c.dt == nil { // category
		return compute.DictionaryEncodeArray(ctx, compute.DictionaryEncodeOptions{}, a)
	}
	src := a
	if d, ok := a.(*array.Dictionary); ok {
		dec, err := compute.TakeArray(ctx, d.Dictionary(), d.Indices())
		if err != nil {
			return nil, err
		}
		defer dec.Release()
		src = dec
	}
	out, err := compute.CastArray(ctx, src, compute.SafeCastOptions(to))
	if err != nil {
		return nil, ppBadRow(ctx, src, to, err)
	}
	return out, nil
}

// ppBadRow finds the first row whose value fails the cast, by bisection
// over slices, so the error names it.
func ppBadRow(ctx context.Context, a arrow.Array, to arrow.DataType, err error) error {
	lo, hi := 0, a.Len()
	fails := func(i, j int) bool {
		s := array.NewSlice(a, int64(i), int64(j))
		defer s.Release()
		out, err := compute.CastArray(ctx, s, compute.SafeCastOptions(to))
		if err != nil {
			return true
		}
		out.Release()
		return false
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if fails(lo, mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	if hi-lo == 1 && fails(lo, hi) {
		return &opsRowError{Row: lo, Err: fmt.Errorf("value %s: %v", a.ValueStr(lo), err)}
	}
	return err
}

// ppCastRow names the input table row of a cast error at a row of the
// (filtered) batch that started at input row off.
func ppCastRow(err error, off int64, keep, mask []bool) error {
	var re *opsRowError
	if !errors.As(err, &re) {
		return err
	}
	row := re.Row
	if keep != nil {
		// Map the filtered row back to the input row.
		seen := -1
		for i, k := range mask {
			if k {
				seen++
			}
			if seen == row {
				row = i
				break
			}
		}
	}
	return fmt.Errorf("row %d: %w", off+int64(row)+1, re.Err)
}
