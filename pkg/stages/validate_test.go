package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/orch-dev/orch/pkg/digest"
)

// mlRunValidate writes m and runs the validate kind in workspace dir.
func mlRunValidate(t *testing.T, dir string, m *Model, tablePath string, params map[string]any) (*Report, string, error) {
	t.Helper()
	mp := filepath.Join(t.TempDir(), "model.json")
	if err := mlWriteJSONFile(mp, m); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "report.json")
	var log bytes.Buffer
	err := NewValidate().Run(context.Background(), &Task{Pipeline: "churn", Stage: "validate", Dir: dir, Params: mlParams(params),
		Inputs: map[string]string{"model": mp, "table": tablePath}, Outputs: map[string]string{"report": out}, Log: &log})
	b, rerr := os.ReadFile(out)
	if rerr != nil {
		return nil, log.String(), err
	}
	var r Report
	if jerr := json.Unmarshal(b, &r); jerr != nil {
		t.Fatalf("report: %v", jerr)
	}
	return &r, log.String(), err
}

func mlValidate(t *testing.T, m *Model, tablePath string, params map[string]any) *Report {
	t.Helper()
	r, log, err := mlRunValidate(t, t.TempDir(), m, tablePath, params)
	if err != nil {
		t.Fatalf("validate: %v\n%s", err, log)
	}
	return r
}

func TestValidateReport(t *testing.T) {
	tbl := mlXOR(t, 3000, 4)
	m, _ := mlMustTrain(t, tbl, map[string]any{"label": "y", "id": "id", "model": "gbdt", "max_depth": 3, "rounds": 40, "learning_rate": 0.3})
	r := mlValidate(t, m, tbl, map[string]any{"threshold": 0.4, "calibration_bins": 5})
	if r.Format != ReportFormat || r.ModelType != "gbdt" || r.Label != "y" || !r.Passed || len(r.Gates) != 0 {
		t.Errorf("report header %+v", r)
	}
	if r.Rows != m.Training.HoldoutRows {
		t.Errorf("validate scored %d rows, train held out %d", r.Rows, m.Training.HoldoutRows)
	}
	c := r.Confusion
	if c.TP+c.FP+c.TN+c.FN != r.Rows || c.TP+c.FN != r.Positives || r.Threshold != 0.4 {
		t.Errorf("confusion %+v for %d rows, %d positives", c, r.Rows, r.Positives)
	}
	if len(r.Calibration) != 5 {
		t.Fatalf("%d calibration bins, want 5", len(r.Calibration))
	}
	n := 0
	for _, b := range r.Calibration {
		n += b.Count
	}
	if n != r.Rows {
		t.Errorf("calibration counts %d, rows %d", n, r.Rows)
	}
	// The report's numbers are top-level, where deploy copies them from.
	var top map[string]any
	b, _ := json.Marshal(r)
	_ = json.Unmarshal(b, &top)
	for _, k := range []string{"auc", "pr_auc", "logloss", "accuracy", "precision", "recall", "f1", "rows"} {
		if _, ok := top[k].(float64); !ok {
			t.Errorf("report has no top-level number %q", k)
		}
	}
}

func TestValidateGates(t *testing.T) {
	tbl := mlXOR(t, 2000, 5)
	m, _ := mlMustTrain(t, tbl, map[string]any{"label": "y", "id": "id"}) // AUC about ½
	dir := t.TempDir()

	r, log, err := mlRunValidate(t, dir, m, tbl, map[string]any{"min_auc": 0.75, "max_logloss": 0.1})
	if err == nil {
		t.Fatal("failing gates: no error")
	}
	for _, want := range []string{"auc 0.", "< min_auc 0.75", "logloss 0.", "> max_logloss 0.1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if r == nil || r.Passed || len(r.Gates) != 2 || r.Gates[0].Passed || r.Gates[1].Passed || *r.Gates[0].Bound != 0.75 {
		t.Errorf("report of failed gates: %+v", r)
	}
	if !strings.Contains(log, "FAIL") {
		t.Errorf("log does not show the failed gate:\n%s", log)
	}

	// max_auc_drop without a deployed model passes, with a note.
	r, _, err = mlRunValidate(t, dir, m, tbl, map[string]any{"max_auc_drop": 0.01})
	if err != nil {
		t.Fatalf("no deployed model: %v", err)
	}
	if g := r.Gates[0]; !g.Passed || g.Bound != nil || !strings.Contains(g.Note, "no deployed model") {
		t.Errorf("gate without deployed model: %+v", g)
	}

	// A deployed report (latest → a release directory, as deploy makes it)
	// with a better AUC fails the gate.
	rel := filepath.Join(dir, "models", "churn", "v-abc")
	if err := os.MkdirAll(rel, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rel, "report.json"), []byte(`{"auc": 0.93, "logloss": 0.2}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("v-abc", filepath.Join(dir, "models", "churn", "latest")); err != nil {
		t.Fatal(err)
	}
	r, _, err = mlRunValidate(t, dir, m, tbl, map[string]any{"max_auc_drop": 0.01})
	if err == nil || !strings.Contains(err.Error(), "< deployed auc 0.9300 - max_auc_drop 0.01 = 0.9200") {
		t.Errorf("worse than deployed: %v", err)
	}
	if r == nil || r.Deployed == nil || r.Deployed.AUC != 0.93 || r.Deployed.Path != "models/churn/latest/report.json" {
		t.Errorf("report's deployed reference: %+v", r)
	}
	// A deployed model that is worse passes.
	if err := os.WriteFile(filepath.Join(rel, "report.json"), []byte(`{"auc": 0.3}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := mlRunValidate(t, dir, m, tbl, map[string]any{"max_auc_drop": 0}); err != nil {
		t.Errorf("better than deployed: %v", err)
	}
	// latest as a pointer file naming the release, under a custom release_dir
	alt := filepath.Join(dir, "rel", "churn")
	if err := os.MkdirAll(filepath.Join(alt, "v2"), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(alt, "v2", "report.json"), []byte(`{"auc": 0.99}`), 0o644)
	_ = os.WriteFile(filepath.Join(alt, "latest"), []byte("v2\n"), 0o644)
	if _, _, err := mlRunValidate(t, dir, m, tbl, map[string]any{"max_auc_drop": 0.05, "release_dir": "rel"}); err == nil || !strings.Contains(err.Error(), "deployed auc 0.9900") {
		t.Errorf("pointer file: %v", err)
	}
	// A deployed report without an auc is an error, not a silent pass.
	_ = os.WriteFile(filepath.Join(alt, "v2", "report.json"), []byte(`{}`), 0o644)
	if _, _, err := mlRunValidate(t, dir, m, tbl, map[string]any{"max_auc_drop": 0.05, "release_dir": "rel"}); err == nil || !strings.Contains(err.Error(), "no auc") {
		t.Errorf("deployed report without auc: %v", err)
	}
}

func TestValidateBadInput(t *testing.T) {
	tbl := mlXOR(t, 1000, 6)
	m, _ := mlMustTrain(t, tbl, map[string]any{"label": "y", "id": "id", "features": []any{"x1", "x2", "x3"}})
	dir := t.TempDir()

	// one class in the holdout
	ids := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	f32 := make([]float32, len(ids))
	one := filepath.Join(dir, "one.parquet")
	mlWriteTable(t, one, mlCol{name: "id", vals: ids}, mlCol{name: "x1", vals: f32}, mlCol{name: "x2", vals: make([]float64, len(ids))}, mlCol{name: "x3", vals: make([]int32, len(ids))}, mlCol{name: "y", vals: make([]int8, len(ids))})
	if _, _, err := mlRunValidate(t, dir, m, one, nil); err == nil || !strings.Contains(err.Error(), `label "y" has only one class (0)`) || !strings.Contains(err.Error(), "AUC is undefined") {
		t.Errorf("one class: %v", err)
	}

	// no holdout rows: ids whose buckets are all above the cut
	var hid []int64
	for id := int64(0); len(hid) < 5; id++ {
		b := make([]uint16, 1)
		a := mlInt64s(id)
		_ = mlIdBuckets(a, "id", 0, 0, b)
		a.Release()
		if b[0] >= m.Split.holdoutCut() {
			hid = append(hid, id)
		}
	}
	none := filepath.Join(dir, "none.parquet")
	z := make([]float32, 5)
	mlWriteTable(t, none, mlCol{name: "id", vals: hid}, mlCol{name: "x1", vals: z}, mlCol{name: "x2", vals: make([]float64, 5)}, mlCol{name: "x3", vals: make([]int32, 5)}, mlCol{name: "y", vals: []int8{0, 1, 0, 1, 0}})
	if _, _, err := mlRunValidate(t, dir, m, none, nil); err == nil || !strings.Contains(err.Error(), "no holdout rows") {
		t.Errorf("no holdout rows: %v", err)
	}

	empty := filepath.Join(dir, "empty.parquet")
	mlWriteTable(t, empty, mlCol{name: "id", vals: []int64{}}, mlCol{name: "x1", vals: []float32{}}, mlCol{name: "x2", vals: []float64{}}, mlCol{name: "x3", vals: []int32{}}, mlCol{name: "y", vals: []int8{}})
	if _, _, err := mlRunValidate(t, dir, m, empty, nil); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty table: %v", err)
	}

	// a feature the model needs is missing
	miss := filepath.Join(dir, "miss.parquet")
	mlWriteTable(t, miss, mlCol{name: "id", vals: ids}, mlCol{name: "x1", vals: f32}, mlCol{name: "y", vals: make([]int8, len(ids))})
	if _, _, err := mlRunValidate(t, dir, m, miss, nil); err == nil || !strings.Contains(err.Error(), `no feature column "x2"`) {
		t.Errorf("missing feature: %v", err)
	}

	// not a model
	bad := filepath.Join(dir, "bad.json")
	_ = os.WriteFile(bad, []byte(`{"format":"something"}`), 0o644)
	err := NewValidate().Run(context.Background(), &Task{Pipeline: "p", Dir: dir, Inputs: map[string]string{"model": bad, "table": tbl},
		Outputs: map[string]string{"report": filepath.Join(dir, "r.json")}, Log: &bytes.Buffer{}})
	if err == nil || !strings.Contains(err.Error(), "input model") {
		t.Errorf("bad model: %v", err)
	}
}

func TestValidateCheck(t *testing.T) {
	cases := []struct {
		params map[string]any
		inputs []string
		want   []string
	}{
		{map[string]any{}, []string{"model", "table"}, nil},
		{map[string]any{"min_auc": 0.8, "max_logloss": 0.5, "max_auc_drop": 0.01, "threshold": 0.3, "calibration_bins": 20, "release_dir": "models"}, []string{"table", "model"}, nil},
		{map[string]any{"min_auc": 1.5}, []string{"model", "table"}, []string{"params.min_auc"}},
		{map[string]any{"threshold": -0.1}, []string{"model", "table"}, []string{"params.threshold"}},
		{map[string]any{"max_logloss": 0}, []string{"model", "table"}, []string{"params.max_logloss"}},
		{map[string]any{"calibration_bins": 0}, []string{"model", "table"}, []string{"params.calibration_bins"}},
		{map[string]any{"release_dir": "../x"}, []string{"model", "table"}, []string{"params.release_dir"}},
		{map[string]any{"min_acu": 0.8}, []string{"model", "table"}, []string{"params.min_acu"}},
		{map[string]any{}, []string{"model"}, []string{"inputs"}},
		{map[string]any{}, []string{"model", "table", "stats"}, []string{"inputs"}},
	}
	for i, c := range cases {
		d := &Decl{Stage: "validate", Params: mlParams(c.params), Inputs: c.inputs}
		ps := NewValidate().Check(d)
		var got []string
		for _, p := range ps {
			got = append(got, p.Field)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("case %d: problems %v, want fields %v", i, ps, c.want)
		}
		if !slices.Equal(d.Outputs, []string{"report"}) {
			t.Errorf("case %d: outputs %v", i, d.Outputs)
		}
	}
}

func TestValidateStateNamesTheDeployedModel(t *testing.T) {
	root := t.TempDir()
	rel := filepath.Join(root, "models", "p")
	model := digest.String("model bytes")
	other := digest.String("other model")
	v := NewValidate()
	params := func(drop bool) map[string]Param {
		if !drop {
			return map[string]Param{}
		}
		return map[string]Param{"max_auc_drop": {Text: "0.01", Value: 0.01}}
	}
	state := func(drop bool) string {
		t.Helper()
		s, err := v.State(StateQuery{Root: root, Pipeline: "p", Params: params(drop), Inputs: map[string]digest.Digest{"model": model}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := state(true); s != "" {
		t.Errorf("nothing deployed: state %q", s)
	}
	for _, m := range []digest.Digest{model, other} {
		if err := os.MkdirAll(filepath.Join(rel, releaseVersion(m)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rel, releaseVersion(m), "report.json"), []byte(`{"auc":0.8}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(releaseVersion(model), filepath.Join(rel, "latest")); err != nil {
		t.Fatal(err)
	}
	if s := state(true); s != "" {
		t.Errorf("this model deployed: state %q, want empty", s)
	}
	os.Remove(filepath.Join(rel, "latest"))
	// latest as a file naming the release, as deploy may write it.
	if err := os.WriteFile(filepath.Join(rel, "latest"), []byte(releaseVersion(other)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := state(true)
	if !strings.Contains(s, releaseVersion(other)) || !strings.Contains(s, "report ") {
		t.Errorf("another model deployed: state %q", s)
	}
	if s := state(false); s != "" {
		t.Errorf("no max_auc_drop gate: state %q, want empty", s)
	}
	if err := os.WriteFile(filepath.Join(rel, "latest"), []byte("../x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := v.State(StateQuery{Root: root, Pipeline: "p", Params: params(true)}); err == nil {
		t.Errorf("latest naming no release: no error")
	}
}
