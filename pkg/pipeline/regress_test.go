package pipeline

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// Targeted tests for loader behaviour that was found wrong; each says what
// is expected. See also the goldens missing_reference, several and
// unknown_param_in_params, which hold the expected (not the current) text.

// TestRejectsDocumentsWithoutStages: a document that is null, or whose
// stages: is null, is not a pipeline. `stages: {}` is already refused with
// "the pipeline has no stages"; these must be refused too.
func TestRejectsDocumentsWithoutStages(t *testing.T) {
	for _, tc := range []struct{ name, src string }{
		{"document start only", "---\n"},
		{"null document", "null\n"},
		{"tilde document", "~\n"},
		{"explicit null document", "--- ~\n"},
		{"stages empty", "name: x\nstages:\n"},
		{"stages tilde", "name: x\nstages: ~\n"},
		{"stages null", "name: x\nstages: null\n"},
	} {
		src := tc.src
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("pipeline.yaml", []byte(src), opts(nil))
			if err == nil {
				t.Errorf("BUG: Parse(%q) accepted a pipeline named %q with %d stages; want an error", src, p.Name, len(p.Stages))
			}
		})
	}
}

// TestRejectsEmptyInput: an input must name a file, directory or upstream
// output; "" silently became the whole workspace (".orch" included).
func TestRejectsEmptyInput(t *testing.T) {
	src := "name: x\nstages:\n  a:\n    run: \"true\"\n    inputs:\n      i: \"\"\n"
	p, err := Parse("pipeline.yaml", []byte(src), opts(nil))
	if err == nil {
		t.Errorf("BUG: empty input accepted as %+v; want an error like outputs give (`is empty`)", p.Stages["a"].Inputs)
	}
}

// TestDotInputsGetNoStageSuggestion: for "./x.csv" or "../x.csv" the text
// before the first dot is empty, which is not a stage name; a missing file
// must not be explained as `no stage named ""` with a suggestion.
func TestDotInputsGetNoStageSuggestion(t *testing.T) {
	for _, in := range []string{"./missing.csv", "../missing.csv", ".hidden"} {
		t.Run(in, func(t *testing.T) {
			src := "name: x\nstages:\n  a:\n    run: \"true\"\n    inputs:\n      i: " + in + "\n"
			es := parseErrs(t, src, nil)
			if len(es) != 1 {
				t.Fatalf("got %d errors:\n%v", len(es), es)
			}
			if strings.Contains(es[0].Msg, `no stage named ""`) {
				t.Errorf("BUG: got %q; want the plain `does not exist` message", es[0].Msg)
			} else if !strings.Contains(es[0].Msg, "does not exist") {
				t.Errorf("got %q; want it to say the file does not exist", es[0].Msg)
			}
		})
	}
}

// TestFailedReferenceReportedOnce: an input that names a stage but a missing
// output gets one error, not also `no stage named "prepare" (did you mean
// "prepare"?)` from the workspace-path check.
func TestFailedReferenceReportedOnce(t *testing.T) {
	src := `name: x
stages:
  prepare:
    run: echo > {{outputs.table}}
    outputs: {table: t}
  train:
    run: "true"
    inputs: {a: prepare.tabel, b: train.self}
`
	es := parseErrs(t, src, nil)
	for _, e := range es {
		if strings.Contains(e.Msg, "no stage named") {
			t.Errorf("BUG: spurious error: %s", e.Msg)
		}
	}
	if len(es) != 2 {
		t.Errorf("got %d errors; want 2 (a: no output tabel; b: own output):\n%v", len(es), es)
	}
}

// TestUnknownParamInStageParamsReportedOnce: ${params.x} with an unknown x
// in a stage param was reported twice (interp runs twice on it).
func TestUnknownParamInStageParamsReportedOnce(t *testing.T) {
	for _, v := range []string{"${params.nope}", "x=${params.nope}", "[${params.nope}]"} {
		t.Run(v, func(t *testing.T) {
			src := "name: x\nparams: {lr: 1}\nstages:\n  a:\n    run: \"true\"\n    params:\n      p: \"" + v + "\"\n"
			es := parseErrs(t, src, nil)
			if len(es) != 1 {
				t.Errorf("BUG: got %d errors; want 1:\n%v", len(es), es)
			}
		})
	}
}

// TestErrorOrderDeterministic: Errors are "in file order"; problems without
// a line (-p) or on the same line (an output overlapping two others) must
// come out in the same order every time, not in map order.
func TestErrorOrderDeterministic(t *testing.T) {
	src := `name: x
params: {lr: 1}
stages:
  a:
    run: "true"
    outputs:
      one: m
      two: m/a
      three: m/a/b
      four: m/a/b/c
`
	params := map[string]string{"aa": "1", "bb": "2", "cc": "3", "dd": "4"}
	first := render(t, parseErrs(t, src, params))
	for range 30 {
		if got := render(t, parseErrs(t, src, params)); got != first {
			t.Fatalf("BUG: error order changes between runs (map iteration):\n--- first:\n%s\n--- now:\n%s", first, got)
		}
	}
}

// TestSnippetIsValidUTF8: long lines are cut at 200 bytes, which may split
// a multi-byte character.
func TestSnippetIsValidUTF8(t *testing.T) {
	line := "    run: echo {{foo}} " + strings.Repeat("a", 177) + strings.Repeat("é", 10)
	src := "name: x\nstages:\n  a:\n" + line + "\n"
	es := parseErrs(t, src, nil)
	if !utf8.ValidString(es.Error()) {
		t.Errorf("BUG: rendered error is not valid UTF-8:\n%q", es[0].Snippet)
	}
}

// TestSnippetCaret pins the snippet format: line number gutter, the line,
// and a caret under the column.
func TestSnippetCaret(t *testing.T) {
	src := "name: x\nstages:\n  a:\n    run: \"true\"\n    retries: lots\n"
	es := parseErrs(t, src, nil)
	want := "    5 |     retries: lots\n      |              ^"
	if len(es) != 1 || es[0].Snippet != want {
		t.Errorf("snippet:\n%s\nwant:\n%s", es[0].Snippet, want)
	}
	if es[0].Line != 5 || es[0].Col != 14 || es[0].File != "pipeline.yaml" {
		t.Errorf("position %s:%d:%d", es[0].File, es[0].Line, es[0].Col)
	}
}
