package pipeline

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzParse feeds arbitrary bytes to Parse with the real exec kind and a
// small workspace, and checks what must hold for every input:
//   - no panic;
//   - exactly one of a Pipeline and a non-empty Errors;
//   - every ConfigError has File set, Line >= 0, Col >= 0, a message, and
//     errors come sorted by line;
//   - on success every stage has a kind and Graph.Order lists every stage
//     once, after its upstream stages;
//   - the same input gives the same result twice.
//
// Seeds are in testdata/fuzz/FuzzParse; run with
//
//	go test -fuzz=FuzzParse ./pkg/pipeline
func FuzzParse(f *testing.F) {
	root := f.TempDir()
	for _, file := range []string{"data/raw.csv", "scripts/train.py", "prep.csv"} {
		full := filepath.Join(root, file)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x\n"), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	reg := registry()
	f.Add([]byte(churn))

	f.Fuzz(func(t *testing.T, data []byte) {
		o := Options{Root: root, Kinds: reg}
		p, err := Parse("fuzz.yaml", data, o)
		if (p == nil) == (err == nil) {
			t.Fatalf("Parse returned pipeline %v and error %v; want exactly one", p != nil, err)
		}
		if err != nil {
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T; want Errors", err)
			}
			if len(es) == 0 {
				t.Fatal("empty Errors")
			}
			for i, e := range es {
				if e == nil {
					t.Fatalf("Errors[%d] is nil", i)
				}
				if e.File != "fuzz.yaml" || e.Line < 0 || e.Col < 0 || e.Msg == "" {
					t.Fatalf("bad ConfigError %+v", *e)
				}
				if i > 0 && e.Line < es[i-1].Line {
					t.Fatalf("errors out of line order:\n%v", es)
				}
			}
			_ = es.Error()
		} else {
			if p.Stages == nil || p.Graph == nil {
				t.Fatalf("pipeline without stages or graph: %+v", p)
			}
			checkInvariants(t, p)
		}

		// Deterministic: the same bytes, the same answer.
		p2, err2 := Parse("fuzz.yaml", data, o)
		switch {
		case (err == nil) != (err2 == nil):
			t.Fatalf("second Parse disagrees: %v then %v", err, err2)
		case err != nil && err.Error() != err2.Error():
			t.Fatalf("error text changes between runs:\n--- first:\n%v\n--- second:\n%v", err, err2)
		case err == nil && !slices.Equal(p.Graph.Order(), p2.Graph.Order()):
			t.Fatalf("order changes between runs: %v then %v", p.Graph.Order(), p2.Graph.Order())
		}
	})
}
