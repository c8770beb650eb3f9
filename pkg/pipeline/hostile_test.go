package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Hostile documents must be refused with a clear message, quickly and in
// little memory. None of these tests measures time; they are sized so a
// correct loader finishes each in well under a second.

func TestHostileAliasBomb(t *testing.T) {
	// Billion laughs: 10^9 scalars once aliases are expanded.
	var b strings.Builder
	b.WriteString(`a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]` + "\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d,", i-1), 10), ","))
	}
	b.WriteString("name: bomb\nstages:\n  s:\n    run: \"true\"\n    params:\n      p: *a9\n")
	es := parseErrs(t, b.String(), nil)
	wantOne(t, es, "document expands to more than 200000 nodes (through aliases?); refusing to expand it")
}

func TestHostileAliasBombInStageParams(t *testing.T) {
	// The same bomb built inside a valid-looking pipeline's params, where
	// the loader would expand it into a Param.
	var b strings.Builder
	b.WriteString("name: bomb\nparams:\n")
	b.WriteString(`  a0: &a0 [x,x,x,x,x,x,x,x,x,x]` + "\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "  a%d: &a%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*a%d,", i-1), 10), ","))
	}
	b.WriteString("stages:\n  s:\n    run: echo ${params.a9}\n")
	es := parseErrs(t, b.String(), nil)
	wantOne(t, es, "refusing to expand it")
}

func TestHostileDeepNesting(t *testing.T) {
	const depth = 10_000
	for _, tc := range []struct{ name, value string }{
		{"list", strings.Repeat("[", depth) + strings.Repeat("]", depth)},
		{"mapping", strings.Repeat("{a: ", depth) + "x" + strings.Repeat("}", depth)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "name: deep\nstages:\n  s:\n    run: \"true\"\n    params:\n      p: " + tc.value + "\n"
			es := parseErrs(t, src, nil)
			wantOne(t, es, "document is nested more than 64 levels deep")
			if es[0].Line != 6 {
				t.Errorf("error at line %d; want 6", es[0].Line)
			}
			// The snippet of a 20,000-byte line is cut short.
			if len(es[0].Snippet) > 600 {
				t.Errorf("snippet is %d bytes long", len(es[0].Snippet))
			}
		})
	}
}

func TestHostileAliasChainDepth(t *testing.T) {
	// Each level is shallow, but following aliases nests 200 deep.
	var b strings.Builder
	b.WriteString("name: chain\nx0: &x0 leaf\n")
	for i := 1; i <= 200; i++ {
		fmt.Fprintf(&b, "x%d: &x%d [*x%d]\n", i, i, i-1)
	}
	es := parseErrs(t, b.String(), nil)
	wantOne(t, es, "nested more than 64 levels deep")
}

func TestHostileLargeFile(t *testing.T) {
	dir := t.TempDir()
	head := "name: big\nstages:\n  a:\n    run: \"true\"\n"
	pad := func(n int) string {
		// Comment lines of 100 bytes.
		line := "#" + strings.Repeat("x", 98) + "\n"
		s := strings.Repeat(line, n/len(line))
		return s + strings.Repeat("#", n%len(line))
	}

	// Exactly MaxFileSize is read and parsed; a tab on the first line stops
	// the parser at once, so the test stays fast.
	ok := filepath.Join(dir, "ok.yaml")
	if err := os.WriteFile(ok, []byte("\t"+head+pad(MaxFileSize-len(head)-1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(ok, opts(nil)); err == nil || !strings.Contains(err.Error(), "invalid YAML: found character that cannot start any token") {
		t.Errorf("Load of a %d-byte file: got %v; want it parsed (and refused for its tab)", MaxFileSize, err)
	}

	// One byte more is refused without parsing.
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(head+pad(MaxFileSize+1-len(head))), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(big, opts(nil))
	want := big + ": pipeline file is larger than 8 MiB"
	if err == nil || err.Error() != want {
		t.Errorf("Load of a %d-byte file: got %v; want %q", MaxFileSize+1, err, want)
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Errorf("error is %T; want Errors", err)
	}
}

// TestHostileSuggestionCost: "did you mean" compares every unknown name with
// every stage name by edit distance, which costs len(a)*len(b) per pair and
// #unknown*#stages pairs. A sub-8 MiB file with long names, or with many
// stages that each need a missing stage, must still be answered promptly.
//
// The deadline below is a hang guard, not a performance assertion: a
// loader that bounds the work answers in about a second (a few under
// -race); the unbounded one needs hours for this input.
func TestHostileSuggestionCost(t *testing.T) {
	var b strings.Builder
	b.WriteString("name: costly\nstages:\n")
	// Two names of 1 MiB that are not each other: 10^12 cells of edit
	// distance.
	fmt.Fprintf(&b, "  ? %s\n  : {run: \"true\"}\n", strings.Repeat("a", 1<<20))
	fmt.Fprintf(&b, "  long:\n    run: \"true\"\n    needs: [%s]\n", strings.Repeat("b", 1<<20))
	// 10,000 stages, each needing a missing one: 10^8 comparisons.
	for i := range 10_000 {
		fmt.Fprintf(&b, "  s%d: {run: e, needs: [q%d]}\n", i, i)
	}
	src := b.String()
	if len(src) > MaxFileSize {
		t.Fatalf("input is %d bytes; Load would refuse it before parsing", len(src))
	}

	done := make(chan error, 1)
	go func() {
		_, err := Parse("costly.yaml", []byte(src), opts(nil))
		done <- err
	}()
	select {
	case err := <-done:
		var es Errors
		if !errors.As(err, &es) || len(es) < 10_001 {
			t.Fatalf("want an error per missing needs; got %d errors", len(es))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("BUG: Parse has not returned after 60s on a 2.4 MiB file: suggest/levenshtein is unbounded " +
			"(O(len(a)*len(b)) per pair, O(#stages) pairs per unknown name)")
	}
}

// wantOne checks es is exactly one error whose message contains want.
func wantOne(t *testing.T, es Errors, want string) {
	t.Helper()
	if len(es) != 1 {
		t.Fatalf("got %d errors; want 1:\n%v", len(es), es)
	}
	if !strings.Contains(es[0].Msg, want) {
		t.Errorf("got %q; want it to contain %q", es[0].Msg, want)
	}
	if es[0].File != "pipeline.yaml" || es[0].Line < 1 {
		t.Errorf("error has no position: %+v", es[0])
	}
}
