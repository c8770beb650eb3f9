package stages

import (
	"reflect"
	"regexp"
	"testing"
)

// templateRE is the definition the hand-written scanner implements.
var templateRE = regexp.MustCompile(`\{\{\s*([^{}]*?)\s*\}\}`)

func checkTemplates(t *testing.T, cmd string) {
	t.Helper()
	var want []template
	for _, m := range templateRE.FindAllStringSubmatchIndex(cmd, -1) {
		want = append(want, template{start: m[0], end: m[1], ref: cmd[m[2]:m[3]]})
	}
	if got := templates(cmd); !reflect.DeepEqual(got, want) {
		t.Fatalf("templates(%q) = %+v, want %+v", cmd, got, want)
	}
}

func TestTemplatesMatchTheRegexp(t *testing.T) {
	for _, cmd := range []string{
		"", "{{", "}}", "{{}}", "{{ }}", "{{a}}", "{{ inputs.raw }} > {{outputs.x}}", "{{{a}}", "{{a}}}",
		"{{a}b}}", "{{a{b}}", "{{ a b }}", "{{\ta\n}}", "x{{y", "{{a}} {{", "{ {a}}", "{{\va}}",
		"cat {{inputs.a}} {{inputs.b}} | sha1sum > {{outputs.out}}", "${params.x} {{params.seed}}", "{{{{a}}}}",
	} {
		checkTemplates(t, cmd)
	}
}

func FuzzTemplates(f *testing.F) {
	f.Add("cat {{inputs.a}} {{ outputs.b }} {{{x}}")
	f.Fuzz(checkTemplates)
}
