package pipeline

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/orch-dev/orch/pkg/stages"
)

// wsDir is the fixture workspace: data/raw.csv, data/labels.csv,
// scripts/prep.py, scripts/train.py and prep.csv.
const wsDir = "testdata/ws"

// registry returns a registry with the real exec kind, as main builds it.
func registry() *stages.Registry {
	r := stages.NewRegistry()
	r.Register("exec", stages.NewExec(0))
	return r
}

// opts returns Options rooted at the fixture workspace.
func opts(params map[string]string) Options {
	return Options{Root: wsDir, Params: params, Kinds: registry()}
}

// wsAbs is the absolute fixture workspace, as it appears in messages.
func wsAbs(t testing.TB) string {
	t.Helper()
	abs, err := filepath.Abs(wsDir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// parse parses src as "pipeline.yaml" in the fixture workspace and fails
// the test on any error.
func parse(t *testing.T, src string, params map[string]string) *Pipeline {
	t.Helper()
	p, err := Parse("pipeline.yaml", []byte(src), opts(params))
	if err != nil {
		t.Fatalf("Parse: unexpected error:\n%v", err)
	}
	return p
}

// parseErrs parses src and returns its Errors, failing the test if it
// loaded or returned some other error type.
func parseErrs(t *testing.T, src string, params map[string]string) Errors {
	t.Helper()
	p, err := Parse("pipeline.yaml", []byte(src), opts(params))
	if err == nil {
		t.Fatalf("Parse succeeded (stages %v); want errors", p.Names())
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("Parse returned %T %v; want Errors", err, err)
	}
	if len(es) == 0 {
		t.Fatalf("Parse returned empty Errors")
	}
	return es
}

// render is Errors.Error with the workspace root replaced, so text is the
// same on every machine.
func render(t testing.TB, err error) string {
	return strings.ReplaceAll(err.Error(), wsAbs(t), "$WORKSPACE")
}
