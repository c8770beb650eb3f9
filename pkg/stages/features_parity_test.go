package stages

import (
	"encoding/csv"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	arrowcsv "github.com/apache/arrow-go/v18/arrow/csv"
	"github.com/orch-dev/orch/pkg/stages/table"
)

// Parity with the pandas reference (../shared/baselines/churn_pipeline.py).
// testdata/parity/make_golden.py generated input.csv with gen_churn.py (500
// rows: 2 duplicate ids, missing total_charges) and wrote the reference's
// preprocess and features outputs. These tests run orch's preprocess and
// features configured like the reference on input.csv and compare every
// value:
//   - preprocess: integers and strings exactly; floats exactly after
//     rounding to float32 (both sides clip in float64 with numpy's
//     quantile interpolation, then round to float32);
//   - features: within 1e-5 × max(1, |want|). The reference computes
//     means in float32 and z-scores in float32 arithmetic; orch
//     accumulates in float64, so the last bits differ (observed max
//     difference is reported by the test log).

// featTParityPre is the reference's preprocess as orch params.
var featTParityPre = map[string]any{
	"dedupe": map[string]any{"key": "customer_id", "keep": "first"},
	"fill":   map[string]any{"total_charges": "median"},
	"clip": map[string]any{
		"columns":   []string{"monthly_charges", "total_charges", "avg_session_minutes", "data_usage_gb", "last_login_days_ago"},
		"quantiles": []float64{0.01, 0.99},
	},
	// float64 → float32, and pandas' integer downcast (int8 for every
	// integer column of this fixture; customer_id stays int64).
	"cast": map[string]any{
		"monthly_charges": "float32", "total_charges": "float32", "avg_session_minutes": "float32", "data_usage_gb": "float32",
		"tenure_months": "int8", "num_support_calls": "int8", "last_login_days_ago": "int8", "is_senior": "int8",
		"num_dependents": "int8", "dropped_calls": "int8", "paperless_billing": "int8", "num_devices": "int8",
		"satisfaction_score": "int8", "churned": "int8",
	},
}

// featTParityFeat is the reference's features as orch params.
var featTParityFeat = map[string]any{
	"keep": []string{"customer_id", "churned"},
	"ops": []any{
		map[string]any{"name": "charge_per_month", "expr": "total_charges / tenure_months"},
		map[string]any{"name": "log_usage", "log1p": "data_usage_gb"},
		map[string]any{"group_mean": "monthly_charges", "by": "region", "name": "region_mean_charges"},
		map[string]any{"standardize": []string{"charge_per_month", "log_usage", "region_mean_charges",
			"tenure_months", "monthly_charges", "total_charges", "num_support_calls", "avg_session_minutes",
			"last_login_days_ago", "num_dependents", "dropped_calls", "num_devices", "satisfaction_score"}},
		map[string]any{"name": "is_senior", "expr": "is_senior"},
		map[string]any{"name": "paperless_billing", "expr": "paperless_billing"},
		map[string]any{"onehot": "plan"},
		map[string]any{"onehot": "region"},
		map[string]any{"onehot": "contract"},
		map[string]any{"onehot": "payment_method"},
	},
}

// featTChurnSchema is gen_churn.py's CSV as pandas reads it.
var featTChurnSchema = arrow.NewSchema([]arrow.Field{
	{Name: "customer_id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "signup_date", Type: arrow.BinaryTypes.String},
	{Name: "tenure_months", Type: arrow.PrimitiveTypes.Int64},
	{Name: "plan", Type: arrow.BinaryTypes.String},
	{Name: "region", Type: arrow.BinaryTypes.String},
	{Name: "monthly_charges", Type: arrow.PrimitiveTypes.Float64},
	{Name: "total_charges", Type: arrow.PrimitiveTypes.Float64, Nullable: true},
	{Name: "num_support_calls", Type: arrow.PrimitiveTypes.Int64},
	{Name: "avg_session_minutes", Type: arrow.PrimitiveTypes.Float64},
	{Name: "last_login_days_ago", Type: arrow.PrimitiveTypes.Int64},
	{Name: "payment_method", Type: arrow.BinaryTypes.String},
	{Name: "contract", Type: arrow.BinaryTypes.String},
	{Name: "is_senior", Type: arrow.PrimitiveTypes.Int64},
	{Name: "num_dependents", Type: arrow.PrimitiveTypes.Int64},
	{Name: "data_usage_gb", Type: arrow.PrimitiveTypes.Float64},
	{Name: "dropped_calls", Type: arrow.PrimitiveTypes.Int64},
	{Name: "paperless_billing", Type: arrow.PrimitiveTypes.Int64},
	{Name: "num_devices", Type: arrow.PrimitiveTypes.Int64},
	{Name: "satisfaction_score", Type: arrow.PrimitiveTypes.Int64},
	{Name: "churned", Type: arrow.PrimitiveTypes.Int64},
}, nil)

// featTCSVToParquet converts a gen_churn.py CSV to a Parquet table with
// Arrow's CSV reader (the ingest kind is not needed for this test).
func featTCSVToParquet(t testing.TB, src, dst string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := arrowcsv.NewReader(f, featTChurnSchema, arrowcsv.WithHeader(true), arrowcsv.WithNullReader(true, ""), arrowcsv.WithChunk(64*1024))
	defer r.Release()
	w, err := table.Create(dst, featTChurnSchema)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		if err := w.Write(r.RecordBatch()); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// featTGolden reads a golden CSV: header and rows of text.
func featTGolden(t *testing.T, name string) ([]string, map[string][]string) {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "parity", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	cols := map[string][]string{}
	for _, row := range recs[1:] {
		for j, v := range row {
			cols[recs[0][j]] = append(cols[recs[0][j]], v)
		}
	}
	return recs[0], cols
}

func TestParityWithPandas(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "input.parquet")
	featTCSVToParquet(t, filepath.Join("testdata", "parity", "input.csv"), in)

	// preprocess
	outs, log, err := opsTRun(t, NewPreprocess(), in, featTParityPre, "table")
	if err != nil {
		t.Fatalf("preprocess: %v\n%s", err, log)
	}
	pre := opsTRead(t, outs["table"])
	names, want := featTGolden(t, "preprocess.csv")
	if pre.rows != len(want["customer_id"]) {
		t.Fatalf("preprocess: %d rows, want %d", pre.rows, len(want["customer_id"]))
	}
	if len(pre.names) != len(names) {
		t.Errorf("preprocess columns %v, want %v", pre.names, names)
	}
	for _, name := range names {
		dt := pre.types[name]
		if dt == nil {
			t.Errorf("preprocess: no column %s", name)
			continue
		}
		for i, w := range want[name] {
			switch {
			case opsIsString(dt):
				if g := pre.strs[name][i]; g != w {
					t.Errorf("preprocess %s[%d] = %q, want %q", name, i, g, w)
				}
			default:
				wf, err := strconv.ParseFloat(w, 64)
				if err != nil {
					t.Fatalf("golden %s[%d] %q: %v", name, i, w, err)
				}
				if dt.ID() == arrow.FLOAT32 {
					wf = float64(float32(wf))
				}
				if g := pre.nums[name][i]; g != wf {
					t.Errorf("preprocess %s[%d] = %v, want %v", name, i, g, wf)
				}
			}
		}
	}
	for name, want := range map[string]arrow.Type{"customer_id": arrow.INT64, "tenure_months": arrow.INT8, "monthly_charges": arrow.FLOAT32, "last_login_days_ago": arrow.INT8} {
		if pre.types[name].ID() != want {
			t.Errorf("preprocess %s: type %v, want %v", name, pre.types[name], want)
		}
	}

	// features, on orch's preprocess output
	fouts, log, err := opsTRun(t, NewFeatures(), outs["table"], featTParityFeat, "table", "stats")
	if err != nil {
		t.Fatalf("features: %v\n%s", err, log)
	}
	feat := opsTRead(t, fouts["table"])
	names, want = featTGolden(t, "features.csv")
	if len(feat.names) != len(names) {
		t.Errorf("features: %d columns %v, want %d %v", len(feat.names), feat.names, len(names), names)
	}
	worst, worstAt := 0.0, ""
	for j, name := range names {
		if j < len(feat.names) && feat.names[j] != name {
			t.Errorf("features column %d is %s, want %s", j, feat.names[j], name)
		}
		got := feat.nums[name]
		if got == nil {
			t.Errorf("features: no column %s", name)
			continue
		}
		// One-hot columns are booleans (pandas' get_dummies gives 0/1
		// too); every other feature is float32.
		wantT := arrow.FLOAT32
		for _, prefix := range []string{"plan_", "region_region_", "contract_", "payment_method_"} {
			if strings.HasPrefix(name, prefix) {
				wantT = arrow.BOOL
			}
		}
		if name != "customer_id" && name != "churned" && feat.types[name].ID() != wantT {
			t.Errorf("features %s: type %v, want %v", name, feat.types[name], wantT)
		}
		for i, w := range want[name] {
			wf, err := strconv.ParseFloat(w, 64)
			if err != nil {
				t.Fatalf("golden %s[%d] %q: %v", name, i, w, err)
			}
			d := math.Abs(got[i]-wf) / math.Max(1, math.Abs(wf))
			if d > worst {
				worst, worstAt = d, name
			}
			if !(d <= 1e-5) {
				t.Errorf("features %s[%d] = %v, want %v", name, i, got[i], wf)
			}
		}
	}
	t.Logf("features: %d rows × %d columns; largest difference from pandas %.3g (%s)", feat.rows, len(feat.names), worst, worstAt)
}
