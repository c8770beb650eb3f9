package stages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/compute"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/orch-dev/orch/pkg/stages/table"
)

// Ingest reads a data source into the table output, a Parquet file:
// CSV, Parquet or JSON-lines files (one file, a glob, or a directory,
// hive-partitioned or not), or synthetic churn data. Column types are
// declared (param schema) or inferred, and by default narrowed to the
// smallest type that holds every value exactly. See docs/kinds/ingest.md.
type Ingest struct {
	// Workers is the number of goroutines that parse and encode; 0 means
	// GOMAXPROCS.
	Workers int
	// blockSize is the size of the blocks text files are cut into (tests
	// make it small to exercise many blocks); 0 means ingBlockSize.
	blockSize int
}

// NewIngest returns the ingest kind.
func NewIngest() *Ingest { return &Ingest{} }

// IngestParams are the params of an ingest stage.
type IngestParams struct {
	// Source is a workspace path, a glob or a directory to read when the
	// stage has no input src. Its contents do not enter the cache key (only
	// the text of the param does): prefer inputs: {src: PATH}.
	Source string `json:"source"`
	// Format is csv, parquet or jsonl; default from the file extension.
	Format string `json:"format"`
	// Schema declares column types by name (int8..int64, float32, float64,
	// bool, string, category, date); other columns are inferred.
	Schema map[string]string `json:"schema"`
	// Narrow (default true) stores each column in the smallest type that
	// holds its values exactly.
	Narrow *bool `json:"narrow"`
	// Sample keeps a seeded, deterministic subset of the rows.
	Sample *IngestSample `json:"sample"`
	// Partitions filters the key=value directories of a hive-partitioned
	// source: {key: value | [values] | {op: value}}, op one of = != < <= > >=.
	Partitions map[string]any `json:"partitions"`
	// Delimiter is the CSV field separator (default "," or tab for .tsv).
	Delimiter string `json:"delimiter"`
	// NullValues are the field texts read as null (default: the empty field).
	NullValues []string `json:"null_values"`
	// Synthetic names a built-in generator ("churn") used instead of a source.
	Synthetic string `json:"synthetic"`
	// Rows and Seed configure the generator.
	Rows *int64 `json:"rows"`
	Seed *int64 `json:"seed"`
}

// IngestSample is param sample: exactly one of Fraction and Rows.
type IngestSample struct {
	Fraction *float64 `json:"fraction"`
	Rows     *int64   `json:"rows"`
	Seed     int64    `json:"seed"`
}

const (
	ingInput  = "src"
	ingOutput = "table"
	// ingDefaultSynthRows is the default rows of synthetic data.
	ingDefaultSynthRows = 100_000
	ingMaxSynthRows     = 1 << 31
)

// Version implements Kind.
func (*Ingest) Version() string { return "orch.ingest.v3" }

// Check implements Kind.
func (*Ingest) Check(d *Decl) []Problem {
	var p IngestParams
	ps := DecodeParams(d.Params, &p)
	decoded := len(ps) == 0
	hasSrc := false
	for _, in := range d.Inputs {
		if in == ingInput {
			hasSrc = true
			continue
		}
		ps = append(ps, Problem{Field: "inputs", Msg: fmt.Sprintf("unknown input %q: ingest reads one input, %q (a file or directory)", in, ingInput)})
	}
	for _, o := range d.Outputs {
		if o != ingOutput {
			ps = append(ps, Problem{Field: "outputs", Msg: fmt.Sprintf("output %q: ingest writes only %q", o, ingOutput)})
		}
	}
	d.Outputs = []string{ingOutput}
	if !decoded {
		return ps // the params are only partly decoded: checking them would mislead
	}
	return append(ps, p.check(hasSrc)...)
}

func (p *IngestParams) check(hasSrc bool) []Problem {
	var ps []Problem
	bad := func(field, format string, args ...any) {
		ps = append(ps, Problem{Field: field, Msg: fmt.Sprintf(format, args...)})
	}
	if p.Synthetic != "" {
		if p.Synthetic != "churn" {
			bad("params.synthetic", "unknown synthetic data set %q (have: churn)", p.Synthetic)
		}
		if hasSrc {
			bad("inputs", "synthetic data has no input: remove input %q or param synthetic", ingInput)
		}
		for _, x := range []struct {
			name string
			set  bool
		}{{"source", p.Source != ""}, {"format", p.Format != ""}, {"schema", p.Schema != nil}, {"narrow", p.Narrow != nil},
			{"partitions", p.Partitions != nil}, {"delimiter", p.Delimiter != ""}, {"null_values", p.NullValues != nil}} {
			if x.set {
				bad("params."+x.name, "param %s does not apply to synthetic data", x.name)
			}
		}
		if p.Rows != nil && (*p.Rows < 1 || *p.Rows > ingMaxSynthRows) {
			bad("params.rows", "param rows must be between 1 and %d, got %d", int64(ingMaxSynthRows), *p.Rows)
		}
	} else {
		if p.Rows != nil {
			bad("params.rows", "param rows goes with synthetic: churn (to read fewer rows of a file, use sample: {rows: N})")
		}
		if p.Seed != nil {
			bad("params.seed", "param seed goes with synthetic: churn (sampling has its own: sample: {fraction: F, seed: S})")
		}
		switch {
		case hasSrc && p.Source != "":
			bad("params.source", "give the data either as input %q or as param source, not both", ingInput)
		case !hasSrc && p.Source == "":
			bad("inputs", "ingest needs input %q (a workspace file or directory, or STAGE.OUTPUT), param source, or param synthetic", ingInput)
		}
		if p.Source != "" && (filepath.IsAbs(p.Source) || strings.HasPrefix(filepath.Clean(p.Source), "..")) {
			bad("params.source", "param source %q must be a relative path inside the workspace", p.Source)
		}
	}
	switch p.Format {
	case "", "csv", "parquet", "jsonl":
	default:
		bad("params.format", "unknown format %q (have: csv, parquet, jsonl)", p.Format)
	}
	names := make([]string, 0, len(p.Schema))
	for n := range p.Schema {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if _, ok := ingParseDecl(p.Schema[n]); !ok {
			bad("params.schema", "schema: column %q: unknown type %q (have: %s)", n, p.Schema[n], strings.Join(ingDeclTypes, ", "))
		}
	}
	if s := p.Sample; s != nil {
		switch {
		case s.Fraction == nil && s.Rows == nil:
			bad("params.sample", "sample needs fraction (0 < f <= 1) or rows (N >= 1)")
		case s.Fraction != nil && s.Rows != nil:
			bad("params.sample", "sample takes fraction or rows, not both")
		case s.Fraction != nil && !(*s.Fraction > 0 && *s.Fraction <= 1):
			bad("params.sample", "sample fraction must be in (0, 1], got %v", *s.Fraction)
		case s.Rows != nil && *s.Rows < 1:
			bad("params.sample", "sample rows must be at least 1, got %d", *s.Rows)
		}
	}
	if _, err := ingPartFilters(p.Partitions); err != nil {
		bad("params.partitions", "%v", err)
	}
	if p.Delimiter != "" {
		if _, err := ingDelimiter(p.Delimiter); err != nil {
			bad("params.delimiter", "%v", err)
		}
	}
	return ps
}

func ingDelimiter(s string) (byte, error) {
	switch s {
	case "tab", `\t`:
		return '\t', nil
	}
	if len(s) != 1 || s[0] == '"' || s[0] == '\n' || s[0] == '\r' || s[0] >= 0x80 {
		return 0, fmt.Errorf("delimiter must be one ASCII character other than a quote or newline (or \"tab\"), got %q", s)
	}
	return s[0], nil
}

// ingFile is one source file.
type ingFile struct {
	path    string // absolute
	display string // as named in messages
	format  string
	delim   byte
	parts   []ingPartVal
	header  []string // CSV: the column names
}

type ingPartVal struct {
	key, value string
	null       bool
}

// ingChunk is the result of one block of a source: its columns as pieces.
type ingChunk struct {
	file   int
	off    int64
	size   int
	line   int
	rows   int
	names  []string
	pieces []ingPiece
	err    error
}

// ingRun is one ingest attempt.
type ingRun struct {
	ctx     context.Context
	t       *Task
	p       IngestParams
	decls   map[string]*ingDecl
	narrow  bool
	nulls   map[string]bool
	workers int
	// blockSize is the block size for text files.
	blockSize int
	files     []ingFile
	format    string
	chunks    []*ingChunk
	bytes     int64

	hintMu   sync.Mutex
	hints    map[string]ingKind
	highCard map[string]bool
}

// Run implements Kind.
func (k *Ingest) Run(ctx context.Context, t *Task) (err error) {
	var out string
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("ingest: internal error: %v", p)
			if out != "" {
				os.Remove(out)
			}
		}
	}()
	start := time.Now()
	var p IngestParams
	if ps := DecodeParams(t.Params, &p); len(ps) > 0 {
		return fmt.Errorf("%s", ps[0].Msg)
	}
	_, hasSrc := t.Inputs[ingInput]
	if ps := p.check(hasSrc); len(ps) > 0 {
		return fmt.Errorf("%s", ps[0].Msg)
	}
	out, ok := t.Outputs[ingOutput]
	if !ok {
		return fmt.Errorf("ingest: no output %q", ingOutput)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	r := &ingRun{ctx: ctx, t: t, p: p, narrow: p.Narrow == nil || *p.Narrow, workers: k.Workers, blockSize: k.blockSize,
		decls: map[string]*ingDecl{}, hints: map[string]ingKind{}, highCard: map[string]bool{}}
	if r.workers <= 0 {
		r.workers = runtime.GOMAXPROCS(0)
	}
	if r.blockSize <= 0 {
		r.blockSize = ingBlockSize
	}
	for name, typ := range p.Schema {
		r.decls[name], _ = ingParseDecl(typ)
	}
	r.nulls = map[string]bool{"": true}
	if p.NullValues != nil {
		r.nulls = map[string]bool{}
		for _, v := range p.NullValues {
			r.nulls[v] = true
		}
	}
	var what string
	if p.Synthetic != "" {
		rows, seed := int64(ingDefaultSynthRows), int64(1)
		if p.Rows != nil {
			rows = *p.Rows
		}
		if p.Seed != nil {
			seed = *p.Seed
		}
		if err := r.synthetic(rows, seed); err != nil {
			return err
		}
		what = fmt.Sprintf("synthetic %s data (seed %d)", p.Synthetic, seed)
	} else {
		if err := r.listFiles(); err != nil {
			return err
		}
		var err error
		switch r.format {
		case "parquet":
			err = r.readParquet()
		default:
			err = r.readText()
		}
		if err != nil {
			r.releaseAll()
			return err
		}
		what = r.files[0].display
		if len(r.files) > 1 {
			what = fmt.Sprintf("%d %s files (%s, ...)", len(r.files), r.format, r.files[0].display)
		}
		if r.bytes > 0 {
			what += fmt.Sprintf(", %.1f MB", float64(r.bytes)/1e6)
		}
	}
	read := time.Since(start)
	sum, err := r.finish(out)
	r.releaseAll()
	if err != nil {
		return err
	}
	fmt.Fprintf(t.Log, "ingest: %s: %d rows in, %d rows out, %d columns; read %v, wrote %v\n", what, sum.rowsIn, sum.rowsOut, len(sum.schema.Fields()), read.Round(time.Millisecond), (time.Since(start) - read).Round(time.Millisecond))
	var cols []string
	for _, f := range sum.schema.Fields() {
		cols = append(cols, f.Name+" "+ingTypeName(f.Type))
	}
	fmt.Fprintf(t.Log, "ingest: columns: %s\n", strings.Join(cols, ", "))
	return nil
}

func ingTypeName(dt arrow.DataType) string {
	if d, ok := dt.(*arrow.DictionaryType); ok {
		return "category(" + d.IndexType.String() + ")"
	}
	return dt.String()
}

func (r *ingRun) releaseAll() {
	for _, ch := range r.chunks {
		if ch == nil {
			continue
		}
		for i := range ch.pieces {
			ch.pieces[i].release()
		}
		ch.pieces = nil
	}
}

// display names path in messages: relative to the workspace when inside it.
func (r *ingRun) display(path string) string {
	if rel, err := filepath.Rel(r.t.Dir, path); err == nil && !strings.HasPrefix(rel, "..") && !strings.HasPrefix(rel, ".orch") {
		return filepath.ToSlash(rel)
	}
	return path
}

var ingExtFormats = map[string]string{".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".parq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}

func ingExtFormat(name string) string { return ingExtFormats[strings.ToLower(filepath.Ext(name))] }

// listFiles resolves the source to files, applying the partition filter.
func (r *ingRun) listFiles() error {
	var roots []string
	var rootDisplay []string
	if src, ok := r.t.Inputs[ingInput]; ok {
		roots = []string{src}
		d := r.display(src)
		if d == src {
			d = fmt.Sprintf("input %s", ingInput)
		}
		rootDisplay = []string{d}
	} else {
		pat := filepath.Join(r.t.Dir, filepath.FromSlash(r.p.Source))
		if strings.ContainsAny(r.p.Source, "*?[") {
			m, err := filepath.Glob(pat)
			if err != nil {
				return fmt.Errorf("source %q: %v", r.p.Source, err)
			}
			if len(m) == 0 {
				return fmt.Errorf("source %q matches no files", r.p.Source)
			}
			roots = m
		} else {
			roots = []string{pat}
		}
		for _, p := range roots {
			rootDisplay = append(rootDisplay, r.display(p))
		}
	}
	filters, err := ingPartFilters(r.p.Partitions)
	if err != nil {
		return err
	}
	seenKeys := map[string]bool{}
	anyDir := false
	for i, root := range roots {
		st, err := os.Stat(root)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("%s: no such file or directory", rootDisplay[i])
			}
			return err
		}
		if !st.IsDir() {
			r.files = append(r.files, ingFile{path: root, display: rootDisplay[i]})
			continue
		}
		anyDir = true
		err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path == root {
				return nil
			}
			name := d.Name()
			if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				if key, val, ok := strings.Cut(name, "="); ok {
					seenKeys[key] = true
					if f, has := filters[key]; has {
						v, _ := url.PathUnescape(val)
						if !f.match(v) {
							return filepath.SkipDir
						}
					}
				}
				return nil
			}
			fmtName := ingExtFormat(name)
			if r.p.Format != "" {
				if fmtName != "" && fmtName != r.p.Format {
					return nil
				}
				if fmtName == "" && !(r.p.Format == "jsonl" && strings.HasSuffix(strings.ToLower(name), ".json")) {
					return nil
				}
			} else if fmtName == "" {
				return nil
			}
			rel, _ := filepath.Rel(root, path)
			f := ingFile{path: path, display: rootDisplay[i] + "/" + filepath.ToSlash(rel)}
			for _, seg := range strings.Split(filepath.ToSlash(filepath.Dir(rel)), "/") {
				if key, val, ok := strings.Cut(seg, "="); ok && key != "" {
					v, _ := url.PathUnescape(val)
					f.parts = append(f.parts, ingPartVal{key: key, value: v, null: v == "__HIVE_DEFAULT_PARTITION__"})
				}
			}
			r.files = append(r.files, f)
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s: %w", rootDisplay[i], err)
		}
	}
	var keys []string
	for k := range filters {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !seenKeys[k] {
			if !anyDir {
				return fmt.Errorf("param partitions filters on %q, but the source is not a directory", k)
			}
			return fmt.Errorf("param partitions filters on %q, but no directory under %s is named %s=VALUE", k, strings.Join(rootDisplay, ", "), k)
		}
	}
	if len(r.files) == 0 {
		what := "data files (.csv, .tsv, .parquet, .jsonl, .ndjson)"
		if r.p.Format != "" {
			what = r.p.Format + " files"
		}
		if len(filters) > 0 {
			return fmt.Errorf("%s: no %s match the partition filter", strings.Join(rootDisplay, ", "), what)
		}
		return fmt.Errorf("%s: no %s found", strings.Join(rootDisplay, ", "), what)
	}
	// Formats.
	for i := range r.files {
		f := &r.files[i]
		f.format = r.p.Format
		if f.format == "" {
			f.format = ingExtFormat(f.path)
		}
		if f.format == "" {
			// An upstream output is named after the input ("in/src"):
			// look at the content.
			f.format = ingSniff(f.path)
			if f.format == "" {
				return fmt.Errorf("%s: cannot tell the format from the file name or content: set param format (csv, parquet or jsonl)", f.display)
			}
		}
		if r.format == "" {
			r.format = f.format
		} else if f.format != r.format {
			return fmt.Errorf("%s is %s but %s is %s: read one format per stage, or set param format", r.files[0].display, r.format, f.display, f.format)
		}
		f.delim = ','
		if strings.EqualFold(filepath.Ext(f.path), ".tsv") {
			f.delim = '\t'
		}
		if r.p.Delimiter != "" {
			f.delim, _ = ingDelimiter(r.p.Delimiter)
		}
	}
	return nil
}

// ingSniff guesses a file's format from its first bytes: Parquet's magic,
// a JSON object, or text with a comma or tab in its first line.
func ingSniff(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	buf := make([]byte, 4096)
	n, _ := io.ReadFull(f, buf)
	buf = buf[:n]
	if bytes.HasPrefix(buf, []byte("PAR1")) {
		return "parquet"
	}
	trimmed := bytes.TrimLeft(buf, " \t\r\n\ufeff")
	if len(trimmed) > 0 && trimmed[0] == '{' {
		return "jsonl"
	}
	line, _, _ := bytes.Cut(buf, []byte{'\n'})
	if utf8.Valid(line) && bytes.ContainsAny(line, ",\t") && !bytes.ContainsRune(line, 0) {
		return "csv"
	}
	return ""
}

// ingPartFilter is the param partitions filter of one key.
type ingPartFilter struct {
	allowed []string
	ops     [][2]string // op, value
}

var ingPartOps = map[string]bool{"=": true, "==": true, "!=": true, "<": true, "<=": true, ">": true, ">=": true}

func ingPartText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case bool:
		return strconv.FormatBool(x), true
	case int:
		return strconv.Itoa(x), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), true
	}
	return "", false
}

func ingPartFilters(m map[string]any) (map[string]*ingPartFilter, error) {
	out := map[string]*ingPartFilter{}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := &ingPartFilter{}
		switch v := m[k].(type) {
		case []any:
			if len(v) == 0 {
				return nil, fmt.Errorf("partitions: %s: the list of allowed values is empty", k)
			}
			for _, e := range v {
				s, ok := ingPartText(e)
				if !ok {
					return nil, fmt.Errorf("partitions: %s: list items must be values, got %v", k, e)
				}
				f.allowed = append(f.allowed, s)
			}
		case map[string]any:
			if len(v) == 0 {
				return nil, fmt.Errorf("partitions: %s: give conditions like {\">=\": VALUE}", k)
			}
			ops := make([]string, 0, len(v))
			for op := range v {
				ops = append(ops, op)
			}
			sort.Strings(ops)
			for _, op := range ops {
				if !ingPartOps[op] {
					return nil, fmt.Errorf("partitions: %s: unknown comparison %q (have: =, !=, <, <=, >, >=)", k, op)
				}
				s, ok := ingPartText(v[op])
				if !ok {
					return nil, fmt.Errorf("partitions: %s: %s needs a value, got %v", k, op, v[op])
				}
				f.ops = append(f.ops, [2]string{op, s})
			}
		default:
			s, ok := ingPartText(v)
			if !ok {
				return nil, fmt.Errorf("partitions: %s: give a value, a list of values, or conditions like {\">=\": VALUE}", k)
			}
			f.allowed = []string{s}
		}
		out[k] = f
	}
	return out, nil
}

// ingPartCompare compares partition values numerically when both are
// numbers, else as strings (ISO dates compare correctly as strings).
func ingPartCompare(a, b string) int {
	x, errA := strconv.ParseFloat(a, 64)
	y, errB := strconv.ParseFloat(b, 64)
	if errA == nil && errB == nil {
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	}
	return strings.Compare(a, b)
}

func (f *ingPartFilter) match(v string) bool {
	if f.allowed != nil {
		for _, a := range f.allowed {
			if ingPartCompare(v, a) == 0 {
				return true
			}
		}
		return false
	}
	for _, op := range f.ops {
		c := ingPartCompare(v, op[1])
		var ok bool
		switch op[0] {
		case "=", "==":
			ok = c == 0
		case "!=":
			ok = c != 0
		case "<":
			ok = c < 0
		case "<=":
			ok = c <= 0
		case ">":
			ok = c > 0
		case ">=":
			ok = c >= 0
		}
		if !ok {
			return false
		}
	}
	return true
}

// hintKinds returns the kinds to start parsing columns with, learned from
// the chunks parsed so far, so that a column found to be a string in one
// chunk is parsed as a string by the next.
func (r *ingRun) hintKinds(names []string, kinds []ingKind, high []bool) ([]ingKind, []bool) {
	kinds, high = kinds[:0], high[:0]
	r.hintMu.Lock()
	for _, n := range names {
		kinds = append(kinds, r.hints[n])
		high = append(high, r.highCard[n])
	}
	r.hintMu.Unlock()
	return kinds, high
}

func (r *ingRun) learn(names []string, pieces []ingPiece, b []*ingBuilder) {
	r.hintMu.Lock()
	for i, n := range names {
		if pieces[i].kind != ingOther {
			r.hints[n] = ingJoin(r.hints[n], pieces[i].kind)
		}
		if i < len(b) && b[i].plainStr && r.decls[n] == nil {
			r.highCard[n] = true
		}
	}
	r.hintMu.Unlock()
}

// ingTextWorker is one parsing goroutine's reusable state.
type ingTextWorker struct {
	csv   ingCSVParser
	json  ingJSONParser
	kinds []ingKind
	high  []bool
}

// readText reads CSV or JSON-lines files: one goroutine cuts blocks, the
// workers parse them.
func (r *ingRun) readText() error {
	csv := r.format == "csv"
	br := &ingBlockReader{csv: csv, size: r.blockSize, pool: make(chan []byte, 2*r.workers+2)}
	type job struct {
		seq int
		blk ingBlock
	}
	jobs := make(chan job, r.workers)
	var (
		mu sync.Mutex
		wg sync.WaitGroup
		// errSeq is the first block known to fail: later blocks need not
		// be parsed, earlier ones must be (an earlier error wins, and the
		// row numbers count their rows).
		errSeq atomic.Int64
	)
	errSeq.Store(math.MaxInt64)
	stop := func() bool { return errSeq.Load() != math.MaxInt64 }
	for range r.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := &ingTextWorker{}
			for jb := range jobs {
				var ch *ingChunk
				if int64(jb.seq) > errSeq.Load() || r.ctx.Err() != nil {
					ch = &ingChunk{file: jb.blk.file, err: context.Canceled}
				} else {
					ch = r.safeParse(w, jb.blk)
				}
				br.put(jb.blk.data)
				mu.Lock()
				r.chunks[jb.seq] = ch
				mu.Unlock()
				if ch.err != nil && ch.err != context.Canceled {
					for {
						cur := errSeq.Load()
						if int64(jb.seq) >= cur || errSeq.CompareAndSwap(cur, int64(jb.seq)) {
							break
						}
					}
				}
			}
		}()
	}
	var readErr error
	seq := 0
	for fi := range r.files {
		f := &r.files[fi]
		fh, err := os.Open(f.path)
		if err != nil {
			readErr = fmt.Errorf("%s: %w", f.display, err)
			break
		}
		if st, err := fh.Stat(); err == nil {
			r.bytes += st.Size()
		}
		var off int64
		line := 1
		var bom [3]byte
		if n, _ := fh.ReadAt(bom[:], 0); n == 3 && bom == [3]byte{0xEF, 0xBB, 0xBF} {
			off = 3 // a UTF-8 byte order mark, as Excel writes
		}
		if csv {
			br.delim = f.delim
			f.header, off, line, err = ingCSVHeader(fh, f.display, f.delim, off)
			if err != nil {
				fh.Close()
				readErr = err
				break
			}
		}
		err = br.read(fh, fi, off, line, func(b ingBlock) bool {
			if stop() || r.ctx.Err() != nil {
				br.put(b.data)
				return false
			}
			mu.Lock()
			r.chunks = append(r.chunks, nil)
			mu.Unlock()
			jobs <- job{seq: seq, blk: b}
			seq++
			return true
		})
		fh.Close()
		if err != nil {
			readErr = fmt.Errorf("%s: %w", f.display, err)
			break
		}
		if stop() {
			break
		}
	}
	close(jobs)
	wg.Wait()
	if err := r.ctx.Err(); err != nil {
		return err
	}
	if err := r.firstError(); err != nil {
		return err
	}
	return readErr
}

// safeParse is parseBlock turning a panic (a bug) into the chunk's error,
// so that bad input can never crash orch.
func (r *ingRun) safeParse(w *ingTextWorker, blk ingBlock) (ch *ingChunk) {
	defer func() {
		if p := recover(); p != nil {
			*w = ingTextWorker{}
			ch = &ingChunk{file: blk.file, off: blk.off, line: blk.line, err: fmt.Errorf("internal error parsing the block at line %d: %v", blk.line, p)}
		}
	}()
	return r.parseBlock(w, blk, nil)
}

// parseBlock parses one block into a chunk. force, when set, fixes the kind
// of each named column (a second pass after the kinds were joined).
func (r *ingRun) parseBlock(w *ingTextWorker, blk ingBlock, force map[string]ingKind) *ingChunk {
	f := &r.files[blk.file]
	ch := &ingChunk{file: blk.file, off: blk.off, size: len(blk.data), line: blk.line}
	if f.format == "jsonl" {
		ch.names, ch.pieces, ch.rows, ch.err = w.json.parse(r, blk.data, blk.line, force)
		return ch
	}
	p := &w.csv
	p.delim = f.delim
	for len(p.b) < len(f.header) {
		p.b = append(p.b, &ingBuilder{})
	}
	bs := p.b[:len(f.header)]
	p.b = bs
	w.kinds, w.high = r.hintKinds(f.header, w.kinds, w.high)
	for c, n := range f.header {
		if k, ok := force[n]; ok {
			w.kinds[c] = k
		}
	}
	for {
		for c, n := range f.header {
			_, forced := force[n]
			bs[c].reset(w.kinds[c], r.decls[n], forced, w.high[c], r.nulls)
		}
		rows, err := p.parse(blk.data, blk.line)
		var wd *ingWiden
		if errors.As(err, &wd) {
			w.kinds[wd.Col] = wd.Kind
			continue
		}
		if err != nil {
			ch.err = err
			return ch
		}
		ch.rows = rows
		break
	}
	ch.names = f.header
	ch.pieces = make([]ingPiece, len(bs))
	for c, b := range bs {
		ch.pieces[c] = b.finish()
	}
	if force == nil {
		r.learn(ch.names, ch.pieces, bs)
	}
	return ch
}

// firstError returns the error of the first failed chunk in file order,
// naming the file, line, row and column.
func (r *ingRun) firstError() error {
	rowsBefore := map[int]int{}
	for _, ch := range r.chunks {
		if ch == nil {
			continue
		}
		if ch.err == nil {
			rowsBefore[ch.file] += ch.rows
			continue
		}
		if errors.Is(ch.err, context.Canceled) {
			continue
		}
		f := &r.files[ch.file]
		var re *ingRowError
		if errors.As(ch.err, &re) {
			var b strings.Builder
			b.WriteString(f.display + ":")
			if re.Line > 0 {
				fmt.Fprintf(&b, " line %d", re.Line)
			}
			if re.Row >= 0 {
				if re.Line > 0 {
					fmt.Fprintf(&b, " (row %d)", rowsBefore[ch.file]+re.Row+1)
				} else {
					fmt.Fprintf(&b, " row %d", rowsBefore[ch.file]+re.Row+1)
				}
			}
			name := re.Name
			if name == "" && re.Col >= 0 && re.Col < len(f.header) {
				name = f.header[re.Col]
			}
			if name != "" {
				fmt.Fprintf(&b, ", column %q", name)
				if d := r.decls[name]; d != nil {
					fmt.Fprintf(&b, " (declared %s)", d.name)
				}
			}
			fmt.Fprintf(&b, ": %s", re.Msg)
			return errors.New(b.String())
		}
		return fmt.Errorf("%s: %w", f.display, ch.err)
	}
	return nil
}

// what names the source in messages.
func (r *ingRun) what() string {
	switch {
	case len(r.files) == 0:
		return "the " + r.p.Synthetic + " data"
	case len(r.files) == 1:
		return r.files[0].display
	}
	return fmt.Sprintf("%s and %d other files", r.files[0].display, len(r.files)-1)
}

// ingFinal is the final type of one output column.
type ingFinal struct {
	name    string
	kind    ingKind
	typ     arrow.DataType
	dict    bool        // dictionary-encoded strings
	dictArr arrow.Array // the global dictionary
	remap   [][]int32   // per chunk: local dictionary code -> global code
	pdict   bool        // Parquet dictionary encoding worth it
}

type ingSummary struct {
	schema          *arrow.Schema
	rowsIn, rowsOut int64
}

// finish joins the chunks' pieces into final column types, samples, and
// writes the table at out.
func (r *ingRun) finish(out string) (*ingSummary, error) {
	if err := r.ctx.Err(); err != nil {
		return nil, err
	}
	var total int64
	for _, ch := range r.chunks {
		total += int64(ch.rows)
	}
	if total == 0 {
		return nil, fmt.Errorf("%s: no data rows", r.what())
	}
	// Columns by name, in order of first appearance; partition keys last.
	var names []string
	index := map[string]int{}
	for _, ch := range r.chunks {
		for _, n := range ch.names {
			if _, ok := index[n]; !ok {
				index[n] = len(names)
				names = append(names, n)
			}
		}
	}
	ndata := len(names)
	for _, f := range r.files {
		for _, pv := range f.parts {
			if i, ok := index[pv.key]; ok && i < ndata {
				return nil, fmt.Errorf("%s: partition directory %s=%s names column %q, which the file also has", f.display, pv.key, pv.value, pv.key)
			}
			if _, ok := index[pv.key]; !ok {
				index[pv.key] = len(names)
				names = append(names, pv.key)
			}
		}
	}
	var missing []string
	for n := range r.decls {
		if _, ok := index[n]; !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return nil, fmt.Errorf("param schema names column %q, but %s has no such column (columns: %s)", missing[0], r.what(), strings.Join(names, ", "))
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s: the data has no columns", r.what())
	}
	if err := r.addPartitionPieces(names[ndata:]); err != nil {
		return nil, err
	}
	// Align each chunk's pieces with the output columns.
	for _, ch := range r.chunks {
		aligned := make([]ingPiece, len(names))
		for i := range aligned {
			aligned[i] = ingPiece{kind: ingNull, n: ch.rows, nulls: ch.rows}
		}
		for i, n := range ch.names {
			aligned[index[n]] = ch.pieces[i]
		}
		ch.pieces, ch.names = aligned, names
	}
	finals := make([]*ingFinal, len(names))
	for c, name := range names {
		fc, err := r.joinColumn(c, name)
		if err != nil {
			return nil, err
		}
		finals[c] = fc
	}
	if err := r.reconcile(finals); err != nil {
		return nil, err
	}
	for c, fc := range finals {
		if err := r.finalType(c, fc, total); err != nil {
			return nil, err
		}
	}
	fields := make([]arrow.Field, len(finals))
	pdict := make([]bool, len(finals))
	for c, fc := range finals {
		fields[c] = arrow.Field{Name: fc.name, Type: fc.typ, Nullable: true}
		pdict[c] = fc.pdict
	}
	schema := arrow.NewSchema(fields, nil)
	masks, kept, err := r.sampleMasks(total)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, m := range masks {
			if m != nil {
				m.Release()
			}
		}
		for _, fc := range finals {
			if fc.dictArr != nil {
				fc.dictArr.Release()
			}
		}
	}()
	if err := r.write(out, schema, finals, masks, kept); err != nil {
		os.Remove(out)
		return nil, err
	}
	return &ingSummary{schema: schema, rowsIn: total, rowsOut: kept}, nil
}

// addPartitionPieces adds, to every chunk, a constant piece per partition key
// holding the value of the chunk's file.
func (r *ingRun) addPartitionPieces(keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	// The kind of each key: joined over the values of all files.
	kinds := map[string]ingKind{}
	for _, f := range r.files {
		for _, pv := range f.parts {
			if pv.null {
				continue
			}
			k := ingClassify([]byte(pv.value), false)
			if d := r.decls[pv.key]; d != nil {
				k = d.kind
			}
			kinds[pv.key] = ingJoin(kinds[pv.key], k)
		}
	}
	b := &ingBuilder{}
	for _, ch := range r.chunks {
		f := &r.files[ch.file]
		for _, key := range keys {
			var val *ingPartVal
			for i := range f.parts {
				if f.parts[i].key == key {
					val = &f.parts[i]
				}
			}
			b.reset(kinds[key], r.decls[key], true, false, map[string]bool{})
			if val == nil || val.null || ch.rows == 0 {
				for range ch.rows {
					b.appendNull()
				}
			} else {
				if err := b.appendText(0, []byte(val.value), false); err != nil {
					return fmt.Errorf("%s: partition %s=%s: %v", f.display, key, val.value, err)
				}
				b.repeatLast(ch.rows - 1)
			}
			ch.names = append(ch.names[:len(ch.names):len(ch.names)], key)
			ch.pieces = append(ch.pieces, b.finish())
		}
	}
	return nil
}

// repeatLast appends k more copies of the last (non-null) value.
func (b *ingBuilder) repeatLast(k int) {
	for range k {
		switch b.kind {
		case ingInt:
			b.ints = append(b.ints, b.ints[len(b.ints)-1])
		case ingFloat:
			b.floats = append(b.floats, b.floats[len(b.floats)-1])
		case ingBool:
			b.bools = append(b.bools, b.bools[len(b.bools)-1])
		case ingDate:
			b.dates = append(b.dates, b.dates[len(b.dates)-1])
		case ingStr:
			if b.strDict {
				b.codes = append(b.codes, b.codes[len(b.codes)-1])
			} else {
				s := b.sdata[b.offs[len(b.offs)-2]:]
				b.sdata = append(b.sdata, s...)
				b.offs = append(b.offs, int32(len(b.sdata)))
			}
		}
		b.n++
	}
}

// joinColumn joins the kinds of column c's pieces.
func (r *ingRun) joinColumn(c int, name string) (*ingFinal, error) {
	fc := &ingFinal{name: name}
	var other arrow.DataType
	otherFile := -1
	for _, ch := range r.chunks {
		p := &ch.pieces[c]
		if p.kind == ingNull {
			continue
		}
		if p.kind == ingOther || fc.kind == ingOther {
			if fc.kind == ingNull {
				fc.kind, other, otherFile = ingOther, p.arr.DataType(), ch.file
				continue
			}
			if p.kind != ingOther || !arrow.TypeEqual(other, p.arr.DataType()) {
				got := p.kind.String()
				if p.arr != nil {
					got = p.arr.DataType().String()
				}
				want := fc.kind.String()
				if other != nil {
					want = other.String()
				}
				return nil, fmt.Errorf("column %q is %s in %s but %s in %s", name, want, r.files[max(otherFile, 0)].display, got, r.files[ch.file].display)
			}
			continue
		}
		fc.kind = ingJoin(fc.kind, p.kind)
	}
	if d := r.decls[name]; d != nil {
		fc.kind = d.kind
	}
	if fc.kind == ingOther {
		fc.typ = other
	}
	return fc, nil
}

// reconcile re-reads the chunks whose pieces have a kind the final kind
// cannot be cast from (a column inferred as int in one chunk and found to be
// a string in another).
func (r *ingRun) reconcile(finals []*ingFinal) error {
	var force map[string]ingKind
	for _, ch := range r.chunks {
		var bad []int
		for c, fc := range finals {
			p := &ch.pieces[c]
			if p.kind == fc.kind || p.kind == ingNull || (p.kind == ingInt && fc.kind == ingFloat) {
				continue
			}
			bad = append(bad, c)
		}
		if len(bad) == 0 {
			continue
		}
		if r.format == "parquet" || r.format == "" {
			for _, c := range bad {
				np, err := ingCastPiece(r.ctx, &ch.pieces[c], finals[c].kind, r.decls[finals[c].name], r.nulls)
				if err != nil {
					return fmt.Errorf("%s: column %q: %v", r.files[ch.file].display, finals[c].name, err)
				}
				ch.pieces[c].release()
				ch.pieces[c] = np
			}
			continue
		}
		if force == nil {
			force = map[string]ingKind{}
			for _, fc := range finals {
				k := fc.kind
				if k == ingNull {
					k = ingStr
				}
				force[fc.name] = k
			}
		}
		nch, err := r.reparse(ch, force)
		if err != nil {
			return err
		}
		// Keep the partition pieces, replace the rest.
		for i, n := range nch.names {
			for c, fc := range finals {
				if fc.name == n {
					ch.pieces[c].release()
					ch.pieces[c] = nch.pieces[i]
				}
			}
		}
		if nch.rows != ch.rows {
			return fmt.Errorf("%s: line %d: the second read found %d rows, the first %d (did the file change while it was read?)", r.files[ch.file].display, ch.line, nch.rows, ch.rows)
		}
	}
	return nil
}

// reparse reads a chunk's block again and parses it with fixed kinds.
func (r *ingRun) reparse(ch *ingChunk, force map[string]ingKind) (*ingChunk, error) {
	f := &r.files[ch.file]
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.display, err)
	}
	defer fh.Close()
	data := make([]byte, ch.size)
	if _, err := fh.ReadAt(data, ch.off); err != nil {
		return nil, fmt.Errorf("%s: %w", f.display, err)
	}
	nch := r.parseBlock(&ingTextWorker{}, ingBlock{file: ch.file, off: ch.off, line: ch.line, data: data}, force)
	if nch.err != nil {
		saved := r.chunks
		r.chunks = []*ingChunk{nch}
		err := r.firstError()
		r.chunks = saved
		return nil, err
	}
	return nch, nil
}

// finalType decides the Arrow type of a column from its pieces.
func (r *ingRun) finalType(c int, fc *ingFinal, total int64) error {
	d := r.decls[fc.name]
	fc.pdict = false
	switch fc.kind {
	case ingNull:
		fc.kind, fc.typ = ingStr, arrow.BinaryTypes.String
	case ingBool:
		fc.typ = arrow.FixedWidthTypes.Boolean
	case ingDate:
		fc.typ = arrow.FixedWidthTypes.Date32
	case ingOther:
	case ingInt:
		lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
		for _, ch := range r.chunks {
			if p := &ch.pieces[c]; p.kind == ingInt && p.nulls < p.n {
				lo, hi = min(lo, p.min), max(hi, p.max)
			}
		}
		switch {
		case d != nil:
			fc.typ = d.typ
		case r.narrow && lo <= hi:
			fc.typ = ingIntType(ingIntWidth(lo, hi))
		default:
			fc.typ = arrow.PrimitiveTypes.Int64
		}
		fc.pdict = false
	case ingFloat:
		f32 := r.narrow
		for _, ch := range r.chunks {
			if p := &ch.pieces[c]; p.kind != ingNull && !p.f32ok {
				f32 = false
			}
		}
		switch {
		case d != nil:
			fc.typ = d.typ
		case f32:
			fc.typ = arrow.PrimitiveTypes.Float32
		default:
			fc.typ = arrow.PrimitiveTypes.Float64
		}
	case ingStr:
		return r.finalStrings(c, fc, d, total)
	}
	return nil
}

// finalStrings decides between a dictionary and plain strings, and builds
// the global dictionary (values in order of first appearance).
func (r *ingRun) finalStrings(c int, fc *ingFinal, d *ingDecl, total int64) error {
	plain := (d != nil && !d.dict) || (d == nil && !r.narrow)
	for _, ch := range r.chunks {
		if p := &ch.pieces[c]; p.kind == ingStr && p.dict == nil {
			plain = true
		}
	}
	var (
		global []string
		index  map[string]int32
	)
	if !plain {
		index = map[string]int32{}
		fc.remap = make([][]int32, len(r.chunks))
		for k, ch := range r.chunks {
			p := &ch.pieces[c]
			if p.kind != ingStr {
				continue
			}
			m := make([]int32, len(p.dict))
			for i, v := range p.dict {
				g, ok := index[v]
				if !ok {
					g = int32(len(global))
					index[v] = g
					global = append(global, v)
				}
				m[i] = g
			}
			fc.remap[k] = m
			if d == nil && len(global) > ingDictMax {
				plain = true
				break
			}
		}
		if d == nil && int64(len(global))*4 > total {
			plain = true
		}
	}
	if plain {
		fc.remap = nil
		fc.typ = arrow.BinaryTypes.String
		fc.pdict = false
		for _, ch := range r.chunks {
			if p := &ch.pieces[c]; p.kind == ingStr && p.dict != nil {
				// Distinct values are few per chunk: Parquet's own dictionary pays.
				fc.pdict = true
				break
			}
		}
		return nil
	}
	if len(global) == 0 {
		global = []string{""}
	}
	idx := arrow.PrimitiveTypes.Int32
	switch {
	case len(global) <= math.MaxInt8+1:
		idx = arrow.PrimitiveTypes.Int8
	case len(global) <= math.MaxInt16+1:
		idx = arrow.PrimitiveTypes.Int16
	}
	fc.dict = true
	fc.pdict = true
	fc.typ = &arrow.DictionaryType{IndexType: idx, ValueType: arrow.BinaryTypes.String}
	bld := array.NewStringBuilder(memory.DefaultAllocator)
	bld.AppendValues(global, nil)
	fc.dictArr = bld.NewArray()
	bld.Release()
	return nil
}

// sampleMasks returns, per chunk, the rows param sample keeps (nil: all)
// and the number of rows kept. A row is kept when a hash of the seed and
// its ordinal in the source is small enough: the same rows whatever the
// parallelism, and a fraction sample is a subset of a larger one.
func (r *ingRun) sampleMasks(total int64) ([]*array.Boolean, int64, error) {
	s := r.p.Sample
	masks := make([]*array.Boolean, len(r.chunks))
	if s == nil || (s.Fraction != nil && *s.Fraction >= 1) || (s.Rows != nil && *s.Rows >= total) {
		return masks, total, nil
	}
	seed := s.Seed
	var thr uint64
	var ties int64 = -1 // rows with hash == thr still to keep, or -1: none
	if s.Fraction != nil {
		thr = uint64(math.Ldexp(*s.Fraction, 64))
	} else {
		hs := make([]uint64, total)
		for i := range hs {
			hs[i] = ingSampleHash(seed, int64(i))
		}
		k := *s.Rows
		opsSelect(hs, int(k-1))
		thr = hs[k-1]
		// Keep every hash < thr, and as many == thr as make k in all.
		var below int64
		for i := int64(0); i < total; i++ {
			if h := ingSampleHash(seed, i); h < thr {
				below++
			}
		}
		ties = k - below
	}
	var ord, kept int64
	for k, ch := range r.chunks {
		bld := array.NewBooleanBuilder(memory.DefaultAllocator)
		bld.Reserve(ch.rows)
		for range ch.rows {
			h := ingSampleHash(seed, ord)
			keep := h < thr
			if !keep && ties > 0 && h == thr {
				keep = true
				ties--
			}
			if keep {
				kept++
			}
			bld.UnsafeAppend(keep)
			ord++
		}
		masks[k] = bld.NewBooleanArray()
		bld.Release()
	}
	if kept == 0 {
		for _, m := range masks {
			m.Release()
		}
		return nil, 0, fmt.Errorf("param sample kept none of the %d rows: raise the fraction", total)
	}
	return masks, kept, nil
}

func ingSampleHash(seed, i int64) uint64 {
	x := (uint64(i)+1)*0x9E3779B97F4A7C15 ^ uint64(seed)*0xC2B2AE3D27D4EB4F
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// write converts the pieces to the final types and writes them, a row
// group at a time, each row group's columns concurrently. A row group's
// pieces are released once written.
func (r *ingRun) write(out string, schema *arrow.Schema, finals []*ingFinal, masks []*array.Boolean, kept int64) error {
	dict := make([]bool, len(finals))
	for i, fc := range finals {
		dict[i] = fc.pdict
	}
	w, err := table.CreateWith(out, schema, table.Options{Dict: dict, Workers: r.workers, Handoff: table.HandoffFrom(r.ctx)})
	if err != nil {
		return err
	}
	type seg struct{ chunk, start, end int } // rows of a chunk after sampling
	var groups [][]seg
	var cur []seg
	curRows := 0
	for k, ch := range r.chunks {
		n := ch.rows
		if masks[k] != nil {
			n = ingCountTrue(masks[k])
		}
		for start := 0; start < n; {
			take := min(n-start, table.MaxRowGroup-curRows)
			cur = append(cur, seg{k, start, start + take})
			curRows += take
			start += take
			if curRows == table.MaxRowGroup {
				groups = append(groups, cur)
				cur, curRows = nil, 0
			}
		}
	}
	if len(cur) > 0 {
		groups = append(groups, cur)
	}
	for gi, g := range groups {
		rows := 0
		for _, s := range g {
			rows += s.end - s.start
		}
		err := w.WriteRowGroup(r.ctx, rows, func(ctx context.Context, c int, put func(arrow.Array) error) error {
			for _, s := range g {
				ch := r.chunks[s.chunk]
				a, err := finals[c].convert(ctx, &ch.pieces[c], s.chunk, masks[s.chunk])
				if err != nil {
					return err
				}
				if s.start != 0 || s.end != a.Len() {
					sl := array.NewSlice(a, int64(s.start), int64(s.end))
					a.Release()
					a = sl
				}
				err = put(a)
				a.Release()
				if err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			w.Abort()
			return err
		}
		// Release the pieces no later group needs.
		for _, s := range g {
			if gi+1 < len(groups) && groups[gi+1][0].chunk == s.chunk {
				continue
			}
			ch := r.chunks[s.chunk]
			for i := range ch.pieces {
				ch.pieces[i].release()
			}
		}
	}
	return w.Close()
}

// convert turns piece p (of chunk k) into the final type, keeping the rows
// of mask.
func (fc *ingFinal) convert(ctx context.Context, p *ingPiece, k int, mask *array.Boolean) (arrow.Array, error) {
	n := p.n
	if p.kind == ingNull {
		if mask != nil {
			n = ingCountTrue(mask)
		}
		return array.MakeArrayOfNull(memory.DefaultAllocator, fc.typ, n), nil
	}
	src := p.arr
	src.Retain()
	if mask != nil {
		f, err := compute.FilterArray(ctx, src, mask, *compute.DefaultFilterOptions())
		src.Release()
		if err != nil {
			return nil, err
		}
		src = f
	}
	defer src.Release()
	switch {
	case fc.dict:
		return ingRemap(src, fc.remap[k], fc.typ.(*arrow.DictionaryType), fc.dictArr), nil
	case fc.kind == ingStr && p.dict != nil:
		return ingDecode(src, p.dict), nil
	case arrow.TypeEqual(src.DataType(), fc.typ):
		src.Retain()
		return src, nil
	}
	return compute.CastArray(ctx, src, compute.UnsafeCastOptions(fc.typ))
}

// ingRemap maps a piece's local dictionary codes to global ones.
func ingRemap(codes arrow.Array, remap []int32, dt *arrow.DictionaryType, dict arrow.Array) arrow.Array {
	n := codes.Len()
	get := func(i int) int32 {
		switch a := codes.(type) {
		case *array.Int16:
			return int32(a.Value(i))
		case *array.Int32:
			return a.Value(i)
		}
		return 0
	}
	var vals []byte
	switch dt.IndexType.ID() {
	case arrow.INT8:
		out := make([]int8, n)
		if a, ok := codes.(*array.Int16); ok {
			for i, v := range a.Int16Values() {
				out[i] = int8(remap[v])
			}
		} else {
			for i := range out {
				out[i] = int8(remap[get(i)])
			}
		}
		vals = arrow.Int8Traits.CastToBytes(out)
	case arrow.INT16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(remap[get(i)])
		}
		vals = arrow.Int16Traits.CastToBytes(out)
	default:
		out := make([]int32, n)
		for i := range out {
			out[i] = remap[get(i)]
		}
		vals = arrow.Int32Traits.CastToBytes(out)
	}
	bufs := codes.Data().Buffers()
	var valid *memory.Buffer
	if codes.NullN() > 0 {
		valid = bufs[0]
	}
	// vals start at 0; only a validity bitmap taken over from codes starts
	// at codes' offset.
	off := 0
	if valid != nil {
		off = codes.Data().Offset()
	}
	d := array.NewData(dt.IndexType, n, []*memory.Buffer{valid, memory.NewBufferBytes(vals)}, nil, codes.NullN(), off)
	if off != 0 {
		// vals start at 0 but the validity bitmap at the offset: rebuild it.
		d.Release()
		bits := make([]byte, (n+7)/8)
		for i := range n {
			if codes.IsValid(i) {
				bits[i/8] |= 1 << (i % 8)
			}
		}
		d = array.NewData(dt.IndexType, n, []*memory.Buffer{memory.NewBufferBytes(bits), memory.NewBufferBytes(vals)}, nil, codes.NullN(), 0)
	}
	idx := array.MakeFromData(d)
	d.Release()
	out := array.NewDictionaryArray(dt, idx, dict)
	idx.Release()
	return out
}

// ingDecode turns dictionary codes into plain strings.
func ingDecode(codes arrow.Array, dict []string) arrow.Array {
	b := array.NewStringBuilder(memory.DefaultAllocator)
	defer b.Release()
	b.Reserve(codes.Len())
	for i := range codes.Len() {
		if codes.IsNull(i) {
			b.AppendNull()
			continue
		}
		var c int
		switch a := codes.(type) {
		case *array.Int16:
			c = int(a.Value(i))
		case *array.Int32:
			c = int(a.Value(i))
		}
		b.Append(dict[c])
	}
	return b.NewArray()
}

func ingCountTrue(mask *array.Boolean) int {
	n := 0
	for i := range mask.Len() {
		if mask.Value(i) {
			n++
		}
	}
	return n
}
