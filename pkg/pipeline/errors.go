package pipeline

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"
)

// ConfigError is one problem in a pipeline file.
type ConfigError struct {
	File    string
	Line    int // 1-based; 0 when unknown
	Col     int // 1-based; 0 when unknown
	Msg     string
	Snippet string // the offending line with a caret under the column
}

func (e *ConfigError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.Snippet != "" {
		b.WriteString("\n")
		b.WriteString(e.Snippet)
	}
	return b.String()
}

// Errors is every problem found in a pipeline file, in file order.
type Errors []*ConfigError

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	s := strings.Join(parts, "\n")
	if len(es) > 1 {
		s += fmt.Sprintf("\n%d problems", len(es))
	}
	return s
}

func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Col < es[j].Col
	})
	return es
}

func snippet(lines []string, line, col int) string {
	if line < 1 || line > len(lines) {
		return ""
	}
	text := strings.TrimRight(lines[line-1], "\r")
	if len(text) > 200 {
		cut := 200
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut] + "…"
	}
	num := fmt.Sprintf("%5d | ", line)
	pad := strings.Repeat(" ", len(num)-2) + "| "
	caret := ""
	if col >= 1 && col <= len(text)+1 {
		caret = strings.Repeat(" ", col-1) + "^"
	}
	return num + text + "\n" + pad + caret
}

// suggest returns the candidate closest to s if it is close enough to be a
// plausible typo.
// Cost is bounded: names longer than 64 bytes get no suggestion, only
// candidates of similar length are compared, and at most maxSuggestCells
// edit-distance cells are computed per file (hostile files get no more
// suggestions once it is spent).
func (l *loader) suggest(s string, candidates []string) string {
	if s == "" || len(s) > 64 || l.suggestCells > maxSuggestCells {
		return ""
	}
	best, bestD := "", 1<<30
	for _, c := range candidates {
		if len(c) > 64 || len(c)-len(s) > 3 || len(s)-len(c) > 3 {
			continue
		}
		l.suggestCells += len(s) * len(c)
		d := levenshtein(strings.ToLower(s), strings.ToLower(c))
		if d < bestD {
			best, bestD = c, d
		}
	}
	limit := 2
	if len(s) <= 3 {
		limit = 1
	}
	if bestD <= limit || (bestD <= 3 && len(s) >= 8) {
		return best
	}
	return ""
}

const maxSuggestCells = 20_000_000

func (l *loader) didYouMean(s string, candidates []string) string {
	if m := l.suggest(s, candidates); m != "" {
		return fmt.Sprintf(" (did you mean %q?)", m)
	}
	return ""
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
