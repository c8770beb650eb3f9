package dag_test

import (
	"errors"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/orch-dev/orch/pkg/dag"
)

// build returns a graph with nodes in declaration order and edges "a>b"
// (a runs before b). It does not call Check.
func build(nodes string, edges ...string) *dag.Graph {
	g := dag.New()
	for _, n := range strings.Fields(nodes) {
		g.AddNode(n)
	}
	for _, e := range edges {
		from, to, _ := strings.Cut(e, ">")
		g.AddEdge(from, to)
	}
	return g
}

func mustCheck(t *testing.T, g *dag.Graph) *dag.Graph {
	t.Helper()
	if err := g.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
	return g
}

func TestCheckCycles(t *testing.T) {
	cases := []struct {
		name  string
		g     *dag.Graph
		cycle string // the path the error names
	}{
		{"triangle", build("a b c", "a>b", "b>c", "c>a"), "a → b → c → a"},
		{"self loop", build("a b", "a>b", "b>b"), "b → b"},
		{"two nodes", build("x y", "x>y", "y>x"), "x → y → x"},
		{"cycle below a root", build("root a b c", "root>a", "a>b", "b>c", "c>a"), "a → b → c → a"},
		{"cycle declared backwards", build("c b a", "a>b", "b>c", "c>a"), "c → a → b → c"},
		{"node after a cycle", build("z a b", "a>b", "b>a", "b>z"), "a → b → a"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.g.Check()
			if !errors.Is(err, dag.ErrCycle) {
				t.Fatalf("Check = %v, want an error wrapping ErrCycle", err)
			}
			if !strings.Contains(err.Error(), c.cycle) {
				t.Errorf("Check = %q, want it to name the cycle %q", err, c.cycle)
			}
		})
	}

	// Whatever cycle it names is one: consecutive names are edges, and it
	// ends where it starts.
	g := build("p q r s t u", "p>q", "q>r", "r>s", "s>q", "s>t", "t>u", "u>p")
	err := g.Check()
	if !errors.Is(err, dag.ErrCycle) {
		t.Fatalf("Check = %v", err)
	}
	_, path, _ := strings.Cut(err.Error(), ": ")
	names := strings.Split(path, " → ")
	if len(names) < 2 || names[0] != names[len(names)-1] {
		t.Fatalf("cycle %q does not close", path)
	}
	edges := map[string]bool{"p>q": true, "q>r": true, "r>s": true, "s>q": true, "s>t": true, "t>u": true, "u>p": true}
	for i := 0; i+1 < len(names); i++ {
		if !edges[names[i]+">"+names[i+1]] {
			t.Errorf("cycle %q: %s → %s is not an edge", path, names[i], names[i+1])
		}
	}
}

func TestCheckAcyclic(t *testing.T) {
	for _, g := range []*dag.Graph{
		build(""),
		build("a"),
		build("a b c d", "a>b", "a>c", "b>d", "c>d", "a>d"),
		build("a b", "a>b", "a>b"), // duplicate edge
	} {
		if err := g.Check(); err != nil {
			t.Errorf("Check: %v", err)
		}
	}
}

func TestOrder(t *testing.T) {
	cases := []struct {
		name string
		g    *dag.Graph
		want string
	}{
		{"no edges: declaration order", build("c b a"), "c b a"},
		{"chain declared backwards", build("c b a", "a>b", "b>c"), "a b c"},
		{"ready nodes in declaration order", build("a b c d", "c>a"), "b c a d"},
		{"diamond", build("top left right bottom", "top>left", "top>right", "left>bottom", "right>bottom"), "top left right bottom"},
		{"diamond declared oddly", build("bottom right left top", "top>left", "top>right", "left>bottom", "right>bottom"), "top right left bottom"},
		{"two chains", build("a1 b1 a2 b2", "a1>a2", "b1>b2"), "a1 b1 a2 b2"},
		{"late root", build("x y z r", "r>x"), "y z r x"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mustCheck(t, c.g)
			got := strings.Join(c.g.Order(), " ")
			if got != c.want {
				t.Errorf("Order = %q, want %q", got, c.want)
			}
			// Stable: Check again, same order.
			mustCheck(t, c.g)
			if again := strings.Join(c.g.Order(), " "); again != got {
				t.Errorf("second Check: Order = %q, first %q", again, got)
			}
		})
	}
}

// A wider random-ish graph: Order is a topological order and contains every
// node once.
func TestOrderIsTopological(t *testing.T) {
	g := dag.New()
	var nodes []string
	for i := range 40 {
		n := string(rune('A'+i%26)) + strings.Repeat("'", i/26)
		nodes = append(nodes, n)
		g.AddNode(n)
	}
	type edge struct{ from, to string }
	var edges []edge
	for i := range nodes {
		for j := i + 1; j < len(nodes); j++ {
			if (i*7+j*13)%5 == 0 {
				// Declared backwards half the time: the edge goes from the
				// later-declared node.
				from, to := nodes[i], nodes[j]
				if (i+j)%2 == 0 {
					from, to = to, from
				}
				edges = append(edges, edge{from, to})
			}
		}
	}
	// Keep it acyclic: orient every edge from the smaller to the larger of
	// a fixed permutation.
	rank := map[string]int{}
	for i, n := range nodes {
		rank[n] = (i * 17) % len(nodes)
	}
	for _, e := range edges {
		if rank[e.from] < rank[e.to] {
			g.AddEdge(e.from, e.to)
		} else {
			g.AddEdge(e.to, e.from)
		}
	}
	mustCheck(t, g)
	order := g.Order()
	pos := map[string]int{}
	for i, n := range order {
		if _, dup := pos[n]; dup {
			t.Fatalf("%s twice in Order", n)
		}
		pos[n] = i
	}
	if len(order) != len(nodes) {
		t.Fatalf("Order has %d nodes, want %d", len(order), len(nodes))
	}
	for _, n := range nodes {
		for _, d := range g.Deps(n) {
			if pos[d] >= pos[n] {
				t.Errorf("%s comes before its dependency %s", n, d)
			}
		}
	}
}

func TestDepsAndClosures(t *testing.T) {
	// ingest → clean → features → train → validate → deploy
	//                 ↘ stats ↗              report ← validate
	g := mustCheck(t, build("ingest clean stats features train validate deploy report other",
		"ingest>clean", "clean>features", "clean>stats", "stats>train", "features>train",
		"train>validate", "validate>deploy", "validate>report"))
	if got := g.Deps("train"); !reflect.DeepEqual(got, []string{"stats", "features"}) {
		t.Errorf("Deps(train) = %v, want [stats features] (declaration order)", got)
	}
	if got := g.Dependents("clean"); !reflect.DeepEqual(got, []string{"stats", "features"}) {
		t.Errorf("Dependents(clean) = %v, want [stats features]", got)
	}
	if got := g.Deps("ingest"); len(got) != 0 {
		t.Errorf("Deps(ingest) = %v", got)
	}
	set := func(m map[string]bool) string {
		var s []string
		for k, v := range m {
			if v {
				s = append(s, k)
			}
		}
		sort.Strings(s)
		return strings.Join(s, " ")
	}
	cases := []struct {
		name string
		got  map[string]bool
		want string
	}{
		{"Upstream(train)", g.Upstream("train"), "clean features ingest stats train"},
		{"Upstream(ingest)", g.Upstream("ingest"), "ingest"},
		{"Upstream(deploy, stats)", g.Upstream("deploy", "stats"), "clean deploy features ingest stats train validate"},
		{"Upstream(other)", g.Upstream("other"), "other"},
		{"Downstream(stats)", g.Downstream("stats"), "deploy report stats train validate"},
		{"Downstream(clean)", g.Downstream("clean"), "clean deploy features report stats train validate"},
		{"Downstream(deploy)", g.Downstream("deploy"), "deploy"},
		{"Downstream(deploy, report)", g.Downstream("deploy", "report"), "deploy report"},
		{"Upstream()", g.Upstream(), ""},
	}
	for _, c := range cases {
		if got := set(c.got); got != c.want {
			t.Errorf("%s = %q, want %q", c.name, got, c.want)
		}
	}
	if !g.Has("train") || g.Has("nope") {
		t.Errorf("Has is wrong")
	}
	if got := strings.Join(g.Nodes(), " "); got != "ingest clean stats features train validate deploy report other" {
		t.Errorf("Nodes = %q", got)
	}
}

func edgeSet(edges ...string) map[string]bool {
	m := map[string]bool{}
	for _, e := range edges {
		m[e] = true
	}
	return m
}

func TestDOT(t *testing.T) {
	g := mustCheck(t, build("prepare train eval lonely", "prepare>train", "train>eval", "prepare>eval"))
	var b strings.Builder
	if err := g.DOT(&b, "churn"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "digraph") {
		t.Errorf("DOT output is not a digraph:\n%s", out)
	}
	got := map[string]bool{}
	for _, m := range regexp.MustCompile(`"([^"]+)"\s*->\s*"([^"]+)"`).FindAllStringSubmatch(out, -1) {
		got[m[1]+">"+m[2]] = true
	}
	if want := edgeSet("prepare>train", "train>eval", "prepare>eval"); !reflect.DeepEqual(got, want) {
		t.Errorf("DOT edges %v, want %v:\n%s", got, want, out)
	}
	for _, n := range []string{"prepare", "train", "eval", "lonely"} {
		if !strings.Contains(out, `"`+n+`"`) {
			t.Errorf("DOT output does not name node %s", n)
		}
	}
	if !strings.Contains(out, `label="churn"`) {
		t.Errorf("DOT output does not carry the graph's name")
	}
}

// `orch dag --format dot` prints the same bytes every time (diffable, golden).
func TestDOTDeterministic(t *testing.T) {
	g := mustCheck(t, build("a b c d e f g h", "a>b", "a>c", "b>d", "c>d", "d>e", "e>f", "e>g", "g>h"))
	var first string
	for i := range 30 {
		var b strings.Builder
		if err := g.DOT(&b, "p"); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = b.String()
		} else if b.String() != first {
			t.Fatalf("DOT output differs between calls:\n%s\n---\n%s", first, b.String())
		}
	}
}

func TestMermaid(t *testing.T) {
	g := mustCheck(t, build("prepare train eval lonely", "prepare>train", "train>eval", "prepare>eval"))
	var b strings.Builder
	if err := g.Mermaid(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.HasPrefix(out, "flowchart") {
		t.Errorf("Mermaid output does not start with flowchart:\n%s", out)
	}
	names := map[string]string{}
	for _, m := range regexp.MustCompile(`(?m)^\s*(\w+)\["([^"]+)"\]`).FindAllStringSubmatch(out, -1) {
		names[m[1]] = m[2]
	}
	if len(names) != 4 {
		t.Errorf("Mermaid names %d nodes, want 4:\n%s", len(names), out)
	}
	got := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\s*(\w+)\s*-->\s*(\w+)`).FindAllStringSubmatch(out, -1) {
		got[names[m[1]]+">"+names[m[2]]] = true
	}
	if want := edgeSet("prepare>train", "train>eval", "prepare>eval"); !reflect.DeepEqual(got, want) {
		t.Errorf("Mermaid edges %v, want %v:\n%s", got, want, out)
	}
	var again strings.Builder
	_ = g.Mermaid(&again)
	if again.String() != out {
		t.Errorf("Mermaid output differs between calls")
	}
}

func TestText(t *testing.T) {
	g := mustCheck(t, build("prepare split train", "prepare>train", "split>train", "prepare>split"))
	var b strings.Builder
	if err := g.Text(&b); err != nil {
		t.Fatal(err)
	}
	want := "prepare\nsplit ← prepare\ntrain ← prepare, split\n"
	if b.String() != want {
		t.Errorf("Text:\n%s\nwant:\n%s", b.String(), want)
	}
}
