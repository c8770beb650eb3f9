package pipeline

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/errors/*.golden from the current output")

// TestErrorGoldens loads every testdata/errors/*.yaml in the fixture
// workspace and compares the full rendered Errors with NAME.golden; the
// workspace root renders as $WORKSPACE. Leading comment lines
// "# -p NAME=VALUE" become Options.Params.
//
//	go test ./pkg/pipeline -run TestErrorGoldens -update
func TestErrorGoldens(t *testing.T) {
	files, err := filepath.Glob("testdata/errors/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/errors/*.yaml")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			p, err := Load(file, opts(headerParams(data)))
			if err == nil {
				t.Fatalf("Load(%s) succeeded with stages %v; want errors", file, p.Names())
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("Load returned %T; want Errors", err)
			}
			for _, e := range es {
				if e.File != file {
					t.Errorf("ConfigError.File = %q; want %q", e.File, file)
				}
			}
			got := render(t, err) + "\n"
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("errors for %s differ from %s (-update rewrites it)\n--- got:\n%s--- want:\n%s", file, golden, got, want)
			}
		})
	}
}

// headerParams reads "# -p NAME=VALUE" lines at the top of a test file.
func headerParams(data []byte) map[string]string {
	var params map[string]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "# -p ")
		if !ok {
			break
		}
		name, value, _ := strings.Cut(line, "=")
		if params == nil {
			params = map[string]string{}
		}
		params[name] = value
	}
	return params
}
