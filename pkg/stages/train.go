package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// Train fits a model on the training rows of a features table: a
// deterministic split by a hash of the id column keeps the holdout rows out
// (validate scores them). Params are documented in docs/kinds/train.md; the
// model file in docs/model-format.md.
type Train struct{}

// NewTrain returns the train kind.
func NewTrain() *Train { return &Train{} }

// Version implements Kind.
func (*Train) Version() string { return "orch.train.v3" }

// TrainParams are the params of a train stage. Pointers tell "absent"
// (take the default) from zero.
type TrainParams struct {
	Label    string   `json:"label"`
	ID       string   `json:"id"`
	Features []string `json:"features"`
	Holdout  *float64 `json:"holdout"`
	Seed     *int64   `json:"seed"`
	Model    string   `json:"model"`
	L2       *float64 `json:"l2"`
	// logistic
	MaxIter *int     `json:"max_iter"`
	Tol     *float64 `json:"tol"`
	// gbdt
	Rounds              *int     `json:"rounds"`
	LearningRate        *float64 `json:"learning_rate"`
	MaxDepth            *int     `json:"max_depth"`
	MinSamplesLeaf      *int     `json:"min_samples_leaf"`
	MinSplitGain        *float64 `json:"min_split_gain"`
	MaxBins             *int     `json:"max_bins"`
	EarlyStoppingRounds *int     `json:"early_stopping_rounds"`
	ValidFraction       *float64 `json:"valid_fraction"`
}

// mlTrainConfig is TrainParams with defaults applied.
type mlTrainConfig struct {
	label, id     string
	features      []string // nil: every numeric column
	holdout       float64
	seed          uint64
	model         string
	lr            mlLogisticConfig
	gb            mlGbdtConfig
	validFraction float64
}

var (
	mlLogisticOnly = []string{"max_iter", "tol"}
	mlGbdtOnly     = []string{"rounds", "learning_rate", "max_depth", "min_samples_leaf", "min_split_gain", "max_bins", "early_stopping_rounds", "valid_fraction"}
)

// mlTrainConfigOf decodes and checks params; it returns every problem.
func mlTrainConfigOf(params map[string]Param) (mlTrainConfig, []Problem) {
	var p TrainParams
	ps := DecodeParams(params, &p)
	if len(ps) > 0 {
		return mlTrainConfig{}, ps
	}
	bad := func(name, format string, a ...any) {
		ps = append(ps, Problem{Field: "params." + name, Msg: fmt.Sprintf("param %s: ", name) + fmt.Sprintf(format, a...)})
	}
	c := mlTrainConfig{label: p.Label, id: p.ID, features: p.Features, model: p.Model}
	if c.label == "" {
		bad("label", "required: the 0/1 column to predict")
	}
	if c.id == "" {
		bad("id", "required: the id column whose hash splits train and holdout rows")
	} else if c.id == c.label {
		bad("id", "%q is also the label", c.id)
	}
	if p.Features != nil && len(p.Features) == 0 {
		bad("features", "an empty list: leave it out to use every numeric column")
	}
	if c.model == "" {
		c.model = "logistic"
	}
	if c.model != "logistic" && c.model != "gbdt" {
		bad("model", "%q: must be logistic or gbdt", c.model)
	}
	for _, name := range mlLogisticOnly {
		if _, ok := params[name]; ok && c.model != "logistic" {
			bad(name, "applies to model: logistic only")
		}
	}
	for _, name := range mlGbdtOnly {
		if _, ok := params[name]; ok && c.model != "gbdt" {
			bad(name, "applies to model: gbdt only")
		}
	}
	fl := func(v *float64, def float64) float64 {
		if v == nil {
			return def
		}
		return *v
	}
	in := func(v *int, def int) int {
		if v == nil {
			return def
		}
		return *v
	}
	c.holdout = fl(p.Holdout, 0.2)
	if !(c.holdout > 0 && c.holdout < 1) {
		bad("holdout", "%v: must be between 0 and 1 (exclusive)", c.holdout)
	}
	if p.Seed != nil {
		if *p.Seed < 0 {
			bad("seed", "%d: must be 0 or more", *p.Seed)
		}
		c.seed = uint64(*p.Seed)
	}
	l2 := fl(p.L2, 1)
	if !(l2 >= 0) {
		bad("l2", "%v: must be 0 or more", l2)
	}
	c.lr = mlLogisticConfig{L2: l2, MaxIter: in(p.MaxIter, 100), Tol: fl(p.Tol, 1e-6)}
	if c.lr.MaxIter < 1 {
		bad("max_iter", "%d: must be at least 1", c.lr.MaxIter)
	}
	if !(c.lr.Tol > 0) {
		bad("tol", "%v: must be more than 0", c.lr.Tol)
	}
	c.gb = mlGbdtConfig{
		Rounds:         in(p.Rounds, 100),
		LearningRate:   fl(p.LearningRate, 0.1),
		MaxDepth:       in(p.MaxDepth, 6),
		MinSamplesLeaf: in(p.MinSamplesLeaf, 20),
		L2:             l2,
		MinSplitGain:   fl(p.MinSplitGain, 0),
		MaxBins:        in(p.MaxBins, 255),
		EarlyStopping:  in(p.EarlyStoppingRounds, 10),
	}
	c.validFraction = fl(p.ValidFraction, 0.1)
	g := c.gb
	if g.Rounds < 1 {
		bad("rounds", "%d: must be at least 1", g.Rounds)
	}
	if !(g.LearningRate > 0 && g.LearningRate <= 1) {
		bad("learning_rate", "%v: must be in (0, 1]", g.LearningRate)
	}
	if g.MaxDepth < 1 || g.MaxDepth > 12 {
		bad("max_depth", "%d: must be 1 to 12", g.MaxDepth)
	}
	if g.MinSamplesLeaf < 1 {
		bad("min_samples_leaf", "%d: must be at least 1", g.MinSamplesLeaf)
	}
	if !(g.MinSplitGain >= 0) {
		bad("min_split_gain", "%v: must be 0 or more", g.MinSplitGain)
	}
	if g.MaxBins < 2 || g.MaxBins > 255 {
		bad("max_bins", "%d: must be 2 to 255", g.MaxBins)
	}
	if g.EarlyStopping < 0 {
		bad("early_stopping_rounds", "%d: must be 0 (off) or more", g.EarlyStopping)
	}
	if !(c.validFraction >= 0 && c.validFraction < 1) {
		bad("valid_fraction", "%v: must be in [0, 1)", c.validFraction)
	}
	return c, ps
}

// resolvedParams is the params block of the model file.
func (c mlTrainConfig) resolvedParams() map[string]any {
	m := map[string]any{"model": c.model, "label": c.label, "id": c.id, "holdout": c.holdout, "seed": c.seed, "l2": c.lr.L2}
	if c.features != nil {
		m["features"] = c.features
	}
	if c.model == "logistic" {
		m["max_iter"], m["tol"] = c.lr.MaxIter, c.lr.Tol
	} else {
		g := c.gb
		m["rounds"], m["learning_rate"], m["max_depth"], m["min_samples_leaf"] = g.Rounds, g.LearningRate, g.MaxDepth, g.MinSamplesLeaf
		m["min_split_gain"], m["max_bins"], m["early_stopping_rounds"], m["valid_fraction"] = g.MinSplitGain, g.MaxBins, g.EarlyStopping, c.validFraction
	}
	return m
}

// Check implements Kind.
func (*Train) Check(d *Decl) []Problem {
	_, ps := mlTrainConfigOf(d.Params)
	ps = append(ps, mlCheckIO(d, []string{"table"}, []string{"stats"}, []string{"model"})...)
	return ps
}

// mlCheckIO checks a built-in stage's input names (required and optional)
// and sets its fixed outputs.
func mlCheckIO(d *Decl, required, optional, outputs []string) []Problem {
	var ps []Problem
	known := append(append([]string{}, required...), optional...)
	have := map[string]bool{}
	for _, in := range d.Inputs {
		have[in] = true
		if !slices.Contains(known, in) {
			ps = append(ps, Problem{Field: "inputs", Msg: fmt.Sprintf("unknown input %q (this kind reads: %s)", in, strings.Join(known, ", "))})
		}
	}
	for _, in := range required {
		if !have[in] {
			ps = append(ps, Problem{Field: "inputs", Msg: fmt.Sprintf("missing input %q (this kind reads: %s)", in, strings.Join(known, ", "))})
		}
	}
	for _, o := range d.Outputs {
		if !slices.Contains(outputs, o) {
			ps = append(ps, Problem{Field: "outputs", Msg: fmt.Sprintf("output %q: this kind writes only %s", o, strings.Join(outputs, ", "))})
		}
	}
	d.Outputs = append([]string(nil), outputs...)
	return ps
}

// Run implements Kind.
func (k *Train) Run(ctx context.Context, t *Task) error {
	start := time.Now()
	c, ps := mlTrainConfigOf(t.Params)
	if len(ps) > 0 {
		return errors.New(ps[0].Msg)
	}
	path := t.Inputs["table"]
	var stats json.RawMessage
	if sp, ok := t.Inputs["stats"]; ok {
		var err error
		if stats, err = mlReadStats(ctx, sp); err != nil {
			return fmt.Errorf("input stats: %w", err)
		}
	}
	schema, err := mlTableSchema(ctx, path)
	if err != nil {
		return fmt.Errorf("input table: %w", err)
	}
	mc := &mlModelColumns{features: c.features, label: c.label, id: c.id}
	if err := mlResolveFeatures(schema, mc, path); err != nil {
		return err
	}
	split := Split{ID: c.id, Holdout: c.holdout, Seed: c.seed, Hash: mlSplitHash, Buckets: mlSplitBuckets}
	cut := split.holdoutCut()
	// gbdt's early-stopping fold: the first valid_fraction of the training
	// buckets
	vcut := cut
	if c.model == "gbdt" {
		vcut = cut + uint16(float64(mlSplitBuckets-int(cut))*c.validFraction+0.5)
	}
	// gbdt's columns live outside the Go heap (mlArena); logistic's, a
	// third of the size with its boolean features listed, on the heap.
	d := len(mc.features)
	arena := mlArena{heap: c.model == "logistic"}
	defer arena.free()
	if !arena.heap {
		// The stages before this one in the process (features,
		// preprocess) leave their freed heap resident until the runtime's
		// scavenger gets to it; hand it back before mapping the columns,
		// so the two do not add up in the pipeline's peak.
		debug.FreeOSMemory()
	}
	// logistic takes boolean features as lists of their true rows
	rows, err := mlLoadRows(ctx, path, mc, c.seed, func(b uint16) bool { return b >= cut }, &arena, c.model == "logistic")
	if err != nil {
		return err
	}
	total := rows.total
	valid := &mlRows{cols: make([][]float32, d)}
	if vcut > cut {
		valid = rows.split(func(b uint16) bool { return b < vcut }, &arena)
	}
	cols, fitY := rows.cols, rows.y
	vcols, validY := valid.cols, valid.y
	n := len(fitY) + len(validY)
	loaded := time.Since(start)
	fmt.Fprintf(t.Log, "train: read %d rows (%d columns) in %s: %d train, %d holdout (%.0f%% by hash of %s)\n",
		total, d+2, loaded.Round(time.Millisecond), n, total-n, c.holdout*100, c.id)
	if total == 0 {
		return fmt.Errorf("%s: the table is empty: no rows to train on", path)
	}
	if n == 0 {
		return fmt.Errorf("%s: no training rows: all %d rows hash into the holdout", path, total)
	}
	pos := 0
	for _, v := range fitY {
		pos += int(v)
	}
	for _, v := range validY {
		pos += int(v)
	}
	if pos == 0 || pos == n {
		return fmt.Errorf("label %q has only one class (%d) in the %d training rows: there is nothing to learn", c.label, min(pos, 1), n)
	}
	m := &Model{
		Format: ModelFormat, Type: c.model, Label: c.label, Features: mc.features, Split: split,
		Stats: stats, Params: c.resolvedParams(),
		Training: TrainingSummary{Rows: n, Positives: pos, HoldoutRows: total - n},
	}
	logf := func(format string, a ...any) { fmt.Fprintf(t.Log, format+"\n", a...) }
	switch c.model {
	case "logistic":
		// the early-stopping fold is empty for logistic (vcut == cut)
		fit, err := mlFitLogistic(ctx, cols, rows.ones, fitY, c.lr)
		if err != nil {
			return err
		}
		m.Logistic = &fit.weights
		m.Training.Iterations, m.Training.Converged, m.Training.TrainLogLoss = fit.iterations, fit.converged, fit.loss
		logf("train: logistic: %d steps (%d Newton steps on a %d-row sample, then %d on all rows), converged %v, train logloss %.5f",
			fit.iterations, fit.warmSteps, fit.sampleRows, fit.iterations-fit.warmSteps, fit.converged, fit.loss)
	case "gbdt":
		fit, err := mlFitGBDT(ctx, cols, fitY, vcols, validY, c.gb, arena.free, logf)
		if err != nil {
			return err
		}
		m.GBDT = &fit.model
		m.Training.Rows = len(fitY)
		m.Training.ValidRows = len(validY)
		m.Training.Positives = 0
		for _, v := range fitY {
			m.Training.Positives += int(v)
		}
		m.Training.Iterations, m.Training.Rounds, m.Training.Converged = fit.iterations, len(fit.model.Trees), fit.stopped
		m.Training.TrainLogLoss, m.Training.ValidLogLoss = fit.trainLoss, fit.validLoss
		vl := "none (no valid rows)"
		if fit.validLoss != nil {
			vl = fmt.Sprintf("%.5f", *fit.validLoss)
		}
		logf("train: gbdt: %d rounds run, %d trees kept, train logloss %.5f, valid logloss %s", fit.iterations, len(fit.model.Trees), fit.trainLoss, vl)
	}
	if err := mlWriteJSONFile(t.Outputs["model"], m); err != nil {
		return err
	}
	logf("train: %s model on %d features in %s (fit %s)", c.model, d, time.Since(start).Round(time.Millisecond), (time.Since(start) - loaded).Round(time.Millisecond))
	return nil
}

// mlReadStats reads the features stage's stats: JSON is embedded as is
// (compacted); a Parquet table becomes a JSON array of row objects.
func mlReadStats(ctx context.Context, path string) (json.RawMessage, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if bytes.HasPrefix(b, []byte("PAR1")) {
		tbl, err := table.ReadAll(ctx, path)
		if err != nil {
			return nil, err
		}
		defer tbl.Release()
		var buf bytes.Buffer
		buf.WriteByte('[')
		tr := array.NewTableReader(tbl, -1)
		first := true
		for tr.Next() {
			js, err := tr.RecordBatch().MarshalJSON()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			js = bytes.TrimSpace(js)
			js = bytes.TrimSuffix(bytes.TrimPrefix(js, []byte("[")), []byte("]"))
			if len(bytes.TrimSpace(js)) == 0 {
				continue
			}
			if !first {
				buf.WriteByte(',')
			}
			first = false
			buf.Write(js)
		}
		tr.Release()
		buf.WriteByte(']')
		b = buf.Bytes()
	}
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return nil, fmt.Errorf("%s: neither JSON nor Parquet: %w", path, err)
	}
	return out.Bytes(), nil
}

// mlWriteJSONFile writes v as indented JSON with a final newline.
func mlWriteJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// mlParallelism is the number of workers for n tasks.
func mlParallelism(n int) int { return max(1, min(runtime.GOMAXPROCS(0), n)) }

// mlParallelDo runs fn(worker, i) for i in [0, n) on workers goroutines;
// worker is in [0, workers) and no two concurrent calls share one.
func mlParallelDo(n, workers int, fn func(worker, i int)) {
	if workers <= 1 || n <= 1 {
		for i := range n {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(w, i)
			}
		}()
	}
	wg.Wait()
}
