package stages_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
)

// Every pipeline the repository ships under pipelines/ loads and validates
// with the kinds orch registers (churn-csv.yaml once broke on an unquoted
// ${params.csv} inside a YAML flow mapping, and nothing ran it).
func TestShippedPipelinesLoad(t *testing.T) {
	r := stages.NewRegistry()
	r.Register("exec", stages.NewExec(0))
	stages.RegisterBuiltins(r)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "pipelines", "*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("pipelines/*.yaml: %v %v", files, err)
	}
	for _, f := range files {
		params := map[string]string{}
		if filepath.Base(f) == "churn-csv.yaml" {
			// Spaces and braces in the path survive substitution.
			csv := filepath.Join(t.TempDir(), "churn {x}.csv")
			if err := os.WriteFile(csv, []byte("customer_id,churned\n1,0\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			params["csv"] = csv
		}
		p, err := pipeline.Load(f, pipeline.Options{Root: root, Params: params, Kinds: r})
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		if p == nil {
			t.Errorf("%s: no pipeline", filepath.Base(f))
		}
	}
}
