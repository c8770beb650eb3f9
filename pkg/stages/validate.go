package stages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
)

// Validate scores a model on the holdout rows of a features table (the
// rows train left out, found again by the model's hash split), writes a
// JSON report and applies the gates: a failed gate fails the stage, so
// nothing downstream (deploy) runs. Params are documented in
// docs/kinds/validate.md.
type Validate struct{}

// NewValidate returns the validate kind.
func NewValidate() *Validate { return &Validate{} }

// Version implements Kind.
func (*Validate) Version() string { return "orch.validate.v1" }

// ReportFormat tags every report validate writes.
const ReportFormat = "orch.report.v1"

// ValidateParams are the params of a validate stage.
type ValidateParams struct {
	Threshold       *float64 `json:"threshold"`
	CalibrationBins *int     `json:"calibration_bins"`
	MinAUC          *float64 `json:"min_auc"`
	MaxLogLoss      *float64 `json:"max_logloss"`
	MaxAUCDrop      *float64 `json:"max_auc_drop"`
	// ReleaseDir is deploy's release root (its `dir` param), relative to
	// the workspace; the deployed report is RELEASE_DIR/PIPELINE/latest/report.json.
	ReleaseDir string `json:"release_dir"`
}

// Report is the JSON report of a validate stage. Its top-level numbers are
// what deploy copies into a release's metrics.
type Report struct {
	Format      string           `json:"format"`
	ModelType   string           `json:"model_type"`
	Label       string           `json:"label"`
	Rows        int              `json:"rows"` // holdout rows scored
	Positives   int              `json:"positives"`
	BaseRate    float64          `json:"base_rate"`
	AUC         float64          `json:"auc"`
	PRAUC       float64          `json:"pr_auc"` // average precision
	LogLoss     float64          `json:"logloss"`
	Brier       float64          `json:"brier"`
	Accuracy    float64          `json:"accuracy"`
	Precision   float64          `json:"precision"`
	Recall      float64          `json:"recall"`
	F1          float64          `json:"f1"`
	Threshold   float64          `json:"threshold"`
	ECE         float64          `json:"ece"`
	MeanPred    float64          `json:"mean_predicted"`
	Confusion   Confusion        `json:"confusion"`
	Calibration []CalibrationBin `json:"calibration"`
	Gates       []GateResult     `json:"gates"`
	Passed      bool             `json:"passed"`
	// Deployed is the report of the model deployed when this one was
	// validated, if any.
	Deployed *DeployedRef `json:"deployed,omitempty"`
}

// GateResult is the outcome of one gate.
type GateResult struct {
	Gate   string   `json:"gate"`
	Metric string   `json:"metric"`
	Value  float64  `json:"value"`
	Bound  *float64 `json:"bound"` // null when the gate could not be evaluated
	Passed bool     `json:"passed"`
	Note   string   `json:"note,omitempty"`
}

// DeployedRef names the deployed report a max_auc_drop gate compared with.
type DeployedRef struct {
	Path string  `json:"path"` // relative to the workspace
	AUC  float64 `json:"auc"`
}

type mlValidateConfig struct {
	threshold                   float64
	bins                        int
	minAUC, maxLogLoss, maxDrop *float64
	releaseDir                  string
}

func mlValidateConfigOf(params map[string]Param) (mlValidateConfig, []Problem) {
	var p ValidateParams
	ps := DecodeParams(params, &p)
	if len(ps) > 0 {
		return mlValidateConfig{}, ps
	}
	bad := func(name, format string, a ...any) {
		ps = append(ps, Problem{Field: "params." + name, Msg: fmt.Sprintf("param %s: ", name) + fmt.Sprintf(format, a...)})
	}
	c := mlValidateConfig{threshold: 0.5, bins: 10, minAUC: p.MinAUC, maxLogLoss: p.MaxLogLoss, maxDrop: p.MaxAUCDrop, releaseDir: p.ReleaseDir}
	if p.Threshold != nil {
		c.threshold = *p.Threshold
	}
	if !(c.threshold >= 0 && c.threshold <= 1) {
		bad("threshold", "%v: must be in [0, 1]", c.threshold)
	}
	if p.CalibrationBins != nil {
		c.bins = *p.CalibrationBins
	}
	if c.bins < 1 || c.bins > 1000 {
		bad("calibration_bins", "%d: must be 1 to 1000", c.bins)
	}
	if v := c.minAUC; v != nil && !(*v >= 0 && *v <= 1) {
		bad("min_auc", "%v: must be in [0, 1]", *v)
	}
	if v := c.maxLogLoss; v != nil && !(*v > 0) {
		bad("max_logloss", "%v: must be more than 0", *v)
	}
	if v := c.maxDrop; v != nil && !(*v >= 0 && *v <= 1) {
		bad("max_auc_drop", "%v: must be in [0, 1]", *v)
	}
	if c.releaseDir == "" {
		c.releaseDir = "models"
	} else if filepath.IsAbs(c.releaseDir) || strings.HasPrefix(filepath.Clean(c.releaseDir), "..") {
		bad("release_dir", "%q must be a relative path inside the workspace", c.releaseDir)
	}
	return c, ps
}

// Check implements Kind.
func (*Validate) Check(d *Decl) []Problem {
	_, ps := mlValidateConfigOf(d.Params)
	return append(ps, mlCheckIO(d, []string{"model", "table"}, nil, []string{"report"})...)
}

// Run implements Kind.
func (*Validate) Run(ctx context.Context, t *Task) error {
	start := time.Now()
	c, ps := mlValidateConfigOf(t.Params)
	if len(ps) > 0 {
		return errors.New(ps[0].Msg)
	}
	m, err := ReadModel(t.Inputs["model"])
	if err != nil {
		return fmt.Errorf("input model: %w", err)
	}
	path := t.Inputs["table"]
	schema, err := mlTableSchema(ctx, path)
	if err != nil {
		return fmt.Errorf("input table: %w", err)
	}
	mc := &mlModelColumns{features: m.Features, label: m.Label, id: m.Split.ID}
	if err := mlResolveFeatures(schema, mc, path); err != nil {
		return fmt.Errorf("the model's columns: %w", err)
	}
	cut := m.Split.holdoutCut()
	arena := mlArena{heap: m.Type == "logistic"} // as train's
	defer arena.free()
	// a logistic model takes boolean features as lists of their true rows
	rows, err := mlLoadRows(ctx, path, mc, m.Split.Seed, func(b uint16) bool { return b < cut }, &arena, m.Type == "logistic")
	if err != nil {
		return err
	}
	total, ys := rows.total, rows.y
	preds := make([]float64, len(ys))
	m.predictParallel(rows.cols, rows.ones, len(ys), preds)
	if total == 0 {
		return fmt.Errorf("%s: the table is empty: no holdout rows to validate on", path)
	}
	if len(ys) == 0 {
		return fmt.Errorf("%s: no holdout rows: none of the %d rows hash into the holdout (%.4g of %s)", path, total, m.Split.Holdout, m.Split.ID)
	}
	met, err := mlComputeMetrics(preds, ys, c.threshold, c.bins)
	if errors.Is(err, errMLOneClass) {
		return fmt.Errorf("label %q has only one class (%d) in the %d holdout rows: AUC is undefined", m.Label, ys[0], len(ys))
	}
	if err != nil {
		return err
	}
	rep := &Report{
		Format: ReportFormat, ModelType: m.Type, Label: m.Label,
		Rows: met.rows, Positives: met.positives, BaseRate: float64(met.positives) / float64(met.rows),
		AUC: met.auc, PRAUC: met.ap, LogLoss: met.logloss, Brier: met.brier,
		Accuracy: met.accuracy, Precision: met.precision, Recall: met.recall, F1: met.f1,
		Threshold: c.threshold, ECE: met.ece, MeanPred: met.meanP,
		Confusion: met.confusion, Calibration: met.calibration, Gates: []GateResult{},
	}
	fmt.Fprintf(t.Log, "validate: %s model on %d holdout rows of %d (%d positive): auc %.4f, pr_auc %.4f, logloss %.4f, accuracy %.4f, f1@%g %.4f (%s)\n",
		m.Type, met.rows, total, met.positives, met.auc, met.ap, met.logloss, met.accuracy, c.threshold, met.f1, time.Since(start).Round(time.Millisecond))

	var failed []string
	gate := func(g GateResult, msg string) {
		rep.Gates = append(rep.Gates, g)
		if !g.Passed {
			failed = append(failed, msg)
		}
	}
	if b := c.minAUC; b != nil {
		gate(GateResult{Gate: "min_auc", Metric: "auc", Value: met.auc, Bound: b, Passed: met.auc >= *b},
			fmt.Sprintf("auc %.4f < min_auc %g", met.auc, *b))
	}
	if b := c.maxLogLoss; b != nil {
		gate(GateResult{Gate: "max_logloss", Metric: "logloss", Value: met.logloss, Bound: b, Passed: met.logloss <= *b},
			fmt.Sprintf("logloss %.4f > max_logloss %g", met.logloss, *b))
	}
	if drop := c.maxDrop; drop != nil {
		rel := filepath.Join(c.releaseDir, t.Pipeline, "latest", "report.json")
		dep, note, err := mlDeployedAUC(t.Dir, c.releaseDir, t.Pipeline)
		if err != nil {
			return err
		}
		if dep != nil {
			// The deployed model may be this one (deployed by an earlier
			// run): there is nothing else to compare with, as State says.
			self, err := releaseVersionOf(t.Inputs["model"])
			if err != nil {
				return fmt.Errorf("input model: %w", err)
			}
			if v, _ := deployedVersion(t.Dir, c.releaseDir, t.Pipeline); v == self {
				dep, note = nil, fmt.Sprintf("the deployed model (%s) is this model: gate passes", self)
			}
		}
		g := GateResult{Gate: "max_auc_drop", Metric: "auc", Value: met.auc, Passed: true, Note: note}
		msg := ""
		if dep != nil {
			rep.Deployed = &DeployedRef{Path: filepath.ToSlash(rel), AUC: *dep}
			bound := *dep - *drop
			g.Bound = &bound
			g.Passed = met.auc >= bound-1e-12
			g.Note = fmt.Sprintf("deployed auc %.4f", *dep)
			msg = fmt.Sprintf("auc %.4f < deployed auc %.4f - max_auc_drop %g = %.4f", met.auc, *dep, *drop, bound)
		}
		gate(g, msg)
	}
	rep.Passed = len(failed) == 0
	for _, g := range rep.Gates {
		status := "pass"
		if !g.Passed {
			status = "FAIL"
		}
		bound := "-"
		if g.Bound != nil {
			bound = fmt.Sprintf("%.4g", *g.Bound)
		}
		fmt.Fprintf(t.Log, "validate: gate %s: %s %.4f, bound %s: %s %s\n", g.Gate, g.Metric, g.Value, bound, status, g.Note)
	}
	if err := mlWriteJSONFile(t.Outputs["report"], rep); err != nil {
		return err
	}
	if len(failed) > 0 {
		return fmt.Errorf("validation gate failed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// State implements Volatile: with a max_auc_drop gate, the result depends on
// the model deploy currently publishes, unless that model is this one (or
// there is none): then it is "" and a rerun after deploying this model hits.
// Otherwise it names the deployed release and the digest of its report, so
// deploying or rolling back another model makes validate run again.
func (*Validate) State(q StateQuery) (string, error) {
	c, ps := mlValidateConfigOf(q.Params)
	if len(ps) > 0 || c.maxDrop == nil {
		return "", nil // Check reports bad params
	}
	v, err := deployedVersion(q.Root, c.releaseDir, q.Pipeline)
	if err != nil || v == "" {
		return "", err
	}
	if m, ok := q.Inputs["model"]; ok && v == releaseVersion(m) {
		return "", nil
	}
	report := "missing"
	if d, _, err := digest.File(filepath.Join(q.Root, c.releaseDir, q.Pipeline, v, "report.json")); err == nil {
		report = d.Short()
	}
	return fmt.Sprintf("deployed model %s (report %s)", v, report), nil
}

// releaseVersion is the version deploy publishes a model of digest d under.
func releaseVersion(d digest.Digest) string { return "v-" + d.Short() }

func releaseVersionOf(modelPath string) (string, error) {
	d, _, err := digest.File(modelPath)
	if err != nil {
		return "", err
	}
	return releaseVersion(d), nil
}

// deployedVersion returns the release DIR/RELEASE_DIR/PIPELINE/latest names,
// "" when nothing is deployed: latest is deploy's symlink, or a file naming
// the release.
func deployedVersion(dir, releaseDir, pipeline string) (string, error) {
	latest := filepath.Join(dir, releaseDir, pipeline, "latest")
	if v, err := os.Readlink(latest); err == nil {
		return filepath.Base(v), nil
	}
	if fi, err := os.Stat(latest); err == nil && fi.IsDir() {
		return "latest", nil // a release directory itself: named by its report's digest
	}
	b, err := os.ReadFile(latest)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", nil
	case err != nil:
		return "", fmt.Errorf("deployed model: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" || strings.ContainsAny(v, `/\`) || v == "." || v == ".." {
		return "", fmt.Errorf("deployed model: %s names no release (%q)", latest, v)
	}
	return v, nil
}

// mlDeployedAUC reads the auc of the deployed model's report,
// DIR/RELEASE_DIR/PIPELINE/latest/report.json, where latest is a symlink to a
// release directory (as deploy makes it) or a file naming one. A missing
// release is no error: it returns a nil auc and a note.
func mlDeployedAUC(dir, releaseDir, pipeline string) (*float64, string, error) {
	root := filepath.Join(dir, releaseDir, pipeline)
	latest := filepath.Join(root, "latest")
	fi, err := os.Stat(latest)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Sprintf("no deployed model (%s does not exist): gate passes", filepath.ToSlash(filepath.Join(releaseDir, pipeline, "latest"))), nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("deployed model: %w", err)
	}
	reportPath := filepath.Join(latest, "report.json")
	if !fi.IsDir() {
		b, err := os.ReadFile(latest)
		if err != nil {
			return nil, "", fmt.Errorf("deployed model: %w", err)
		}
		v := strings.TrimSpace(string(b))
		if v == "" || strings.ContainsAny(v, `/\`) || v == "." || v == ".." {
			return nil, "", fmt.Errorf("deployed model: %s names no release (%q)", latest, v)
		}
		reportPath = filepath.Join(root, v, "report.json")
	}
	b, err := os.ReadFile(reportPath)
	if err != nil {
		return nil, "", fmt.Errorf("deployed model's report: %w", err)
	}
	var r struct {
		AUC *float64 `json:"auc"`
	}
	if err := json.Unmarshal(b, &r); err != nil || r.AUC == nil || math.IsNaN(*r.AUC) {
		return nil, "", fmt.Errorf("deployed model's report %s has no auc", reportPath)
	}
	return r.AUC, "", nil
}
