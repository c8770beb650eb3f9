package pipeline

import (
	"bytes"
	"errors"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"
)

// yamlRefineWindow bounds how far past the line yaml.v3 names a syntax
// error is looked for.
const yamlRefineWindow = 40

// yamlRefineMaxBytes bounds the prefix re-parsed per try.
const yamlRefineMaxBytes = 1 << 20

// refineSyntaxError moves a YAML syntax error to the line it is on and the
// character it is about. yaml.v3 reports parser errors on the line before
// (its marks are 0-based there) or on the line of the enclosing block, and
// never with a column. The first prefix of the document that fails with the
// same message ends at the offending line; a few common messages then say
// which character, with a hint.
func (l *loader) refineSyntaxError(e *ConfigError, msg string) {
	size := 0
	for _, t := range l.lines[:min(len(l.lines), e.Line+yamlRefineWindow)] {
		size += len(t) + 1
	}
	if size > yamlRefineMaxBytes {
		return // each try re-parses the prefix: keep errors in huge files cheap
	}
	line := 0
	for n := max(1, e.Line-1); n <= min(len(l.lines), e.Line+yamlRefineWindow); n++ {
		if m, failed := yamlPrefixError(l.lines[:n]); failed && m == msg {
			line = n
			break
		}
	}
	if line == 0 {
		return
	}
	text := strings.TrimRight(l.lines[line-1], "\r")
	col := len(text) - len(strings.TrimLeft(text, " \t")) + 1
	hint := ""
	switch {
	case strings.Contains(msg, "expected ',' or '}'"):
		if i := strings.LastIndexByte(text, '{'); i >= 0 {
			col, hint = i+1, "is this '{' closed?"
		}
	case strings.Contains(msg, "expected ',' or ']'"):
		if i := strings.LastIndexByte(text, '['); i >= 0 {
			col, hint = i+1, "is this '[' closed?"
		}
	case strings.Contains(msg, "cannot start any token"):
		if i := strings.IndexByte(text, '\t'); i >= 0 && i < col {
			col, hint = i+1, "YAML is indented with spaces, not tabs"
		}
	case strings.Contains(msg, "did not find expected key"):
		hint = "is this line indented like the keys beside it?"
	case strings.Contains(msg, "mapping values are not allowed"):
		i := strings.Index(text, ": ")
		if i < 0 {
			break
		}
		if continuesValue(l.lines[:line-1], col-1) {
			// Indented under "key: value", the line continues that value,
			// where a key cannot be.
			col, hint = i+1, "indented under the value above it; align it with the key above, or quote the value"
		} else if j := strings.Index(text[i+2:], ": "); j >= 0 {
			col, hint = i+2+j+1, `quote a value that contains ": "`
		}
	}
	e.Line, e.Col = line, col
	e.Snippet = snippet(l.lines, line, col)
	if hint != "" {
		e.Msg += " (" + hint + ")"
	}
}

// yamlPrefixError parses lines as a YAML stream and returns its first
// error's message without yaml.v3's "yaml: line N:" prefix.
func yamlPrefixError(lines []string) (msg string, failed bool) {
	dec := yaml.NewDecoder(bytes.NewReader([]byte(strings.Join(lines, "\n"))))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return "", false
		}
		if err != nil {
			return yamlMessage(err), true
		}
	}
}

// yamlMessage is a yaml.v3 error's message without its "yaml: line N:"
// prefix.
func yamlMessage(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimSpace(yamlLineRE.ReplaceAllString(msg, ""))
	return strings.TrimSpace(strings.TrimPrefix(msg, ":"))
}

// continuesValue reports whether a line indented by indent continues the
// plain scalar of the nearest non-blank line above ("key: value" indented
// less than it).
func continuesValue(above []string, indent int) bool {
	for i := len(above) - 1; i >= 0; i-- {
		t := strings.TrimRight(above[i], "\r")
		trimmed := strings.TrimLeft(t, " ")
		if trimmed == "" || strings.HasPrefix(trimmed, "#") {
			continue
		}
		_, value, ok := strings.Cut(trimmed, ": ")
		return len(t)-len(trimmed) < indent && ok && strings.TrimSpace(value) != ""
	}
	return false
}
