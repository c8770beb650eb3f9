package dag

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ErrCycle is wrapped by the error a cycle produces.
var ErrCycle = errors.New("cycle")

// Graph is a directed graph of named nodes. Build it with AddNode and
// AddEdge, then call Check once before reading it.
type Graph struct {
	index map[string]int // node → position in nodes (declaration order)
	nodes []string
	deps  [][]int // by node index: upstream nodes, sorted by index
	downs [][]int // by node index: downstream nodes, sorted by index
	order []int   // topological order, set by Check
}

// New returns an empty graph.
func New() *Graph {
	return &Graph{index: map[string]int{}}
}

// AddNode adds a node; adding it again is a no-op.
func (g *Graph) AddNode(id string) {
	if _, ok := g.index[id]; ok {
		return
	}
	g.index[id] = len(g.nodes)
	g.nodes = append(g.nodes, id)
	g.deps = append(g.deps, nil)
	g.downs = append(g.downs, nil)
}

// AddEdge records that from runs before to. Both must have been added.
// Duplicate edges are ignored.
func (g *Graph) AddEdge(from, to string) {
	f, t := g.index[from], g.index[to]
	for _, d := range g.deps[t] {
		if d == f {
			return
		}
	}
	g.deps[t] = append(g.deps[t], f)
	g.downs[f] = append(g.downs[f], t)
}

// Nodes returns the nodes in declaration order.
func (g *Graph) Nodes() []string { return g.nodes }

// Has reports whether id is a node.
func (g *Graph) Has(id string) bool { _, ok := g.index[id]; return ok }

// Check sorts the graph topologically. If it has a cycle, Check returns an
// error wrapping ErrCycle that names the cycle's path, "a → b → c → a".
func (g *Graph) Check() error {
	for i := range g.nodes {
		sort.Ints(g.deps[i])
		sort.Ints(g.downs[i])
	}
	// Kahn's algorithm, taking ready nodes in declaration order.
	indeg := make([]int, len(g.nodes))
	for i := range g.nodes {
		indeg[i] = len(g.deps[i])
	}
	ready := &intHeap{}
	for i, d := range indeg {
		if d == 0 {
			ready.push(i)
		}
	}
	g.order = g.order[:0]
	for ready.len() > 0 {
		n := ready.pop()
		g.order = append(g.order, n)
		for _, m := range g.downs[n] {
			if indeg[m]--; indeg[m] == 0 {
				ready.push(m)
			}
		}
	}
	if len(g.order) == len(g.nodes) {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrCycle, strings.Join(g.cycle(indeg), " → "))
}

// cycle finds one cycle among the nodes Kahn's algorithm could not order.
func (g *Graph) cycle(indeg []int) []string {
	state := make([]int8, len(g.nodes)) // 0 new, 1 on stack, 2 done
	var stack []int
	var found []int
	var visit func(int) bool
	visit = func(n int) bool {
		state[n] = 1
		stack = append(stack, n)
		for _, m := range g.downs[n] {
			if state[m] == 1 {
				for i, s := range stack {
					if s == m {
						found = append(append([]int(nil), stack[i:]...), m)
						return true
					}
				}
			}
			if state[m] == 0 && visit(m) {
				return true
			}
		}
		stack = stack[:len(stack)-1]
		state[n] = 2
		return false
	}
	for i := range g.nodes {
		if indeg[i] > 0 && state[i] == 0 && visit(i) {
			break
		}
	}
	names := make([]string, len(found))
	for i, n := range found {
		names[i] = g.nodes[n]
	}
	return names
}

// Order returns all nodes in a stable topological order: among nodes that
// are ready together, declaration order wins.
func (g *Graph) Order() []string {
	out := make([]string, len(g.order))
	for i, n := range g.order {
		out[i] = g.nodes[n]
	}
	return out
}

// Deps returns the direct upstream nodes of id, in declaration order.
func (g *Graph) Deps(id string) []string { return g.names(g.deps[g.index[id]]) }

// Dependents returns the direct downstream nodes of id, in declaration order.
func (g *Graph) Dependents(id string) []string { return g.names(g.downs[g.index[id]]) }

func (g *Graph) names(is []int) []string {
	out := make([]string, len(is))
	for i, n := range is {
		out[i] = g.nodes[n]
	}
	return out
}

// Upstream returns ids and everything they transitively depend on.
func (g *Graph) Upstream(ids ...string) map[string]bool {
	seen := map[string]bool{}
	var stack []int
	for _, id := range ids {
		stack = append(stack, g.index[id])
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[g.nodes[n]] {
			continue
		}
		seen[g.nodes[n]] = true
		stack = append(stack, g.deps[n]...)
	}
	return seen
}

// Downstream returns ids and everything that transitively depends on them.
func (g *Graph) Downstream(ids ...string) map[string]bool {
	seen := map[string]bool{}
	var stack []int
	for _, id := range ids {
		stack = append(stack, g.index[id])
	}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[g.nodes[n]] {
			continue
		}
		seen[g.nodes[n]] = true
		stack = append(stack, g.downs[n]...)
	}
	return seen
}

// DOT writes the graph in Graphviz DOT, deterministically: nodes and edges
// in topological order. (graph/draw.DOT iterates maps, so its output
// changes from call to call.)
func (g *Graph) DOT(w io.Writer, name string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %q {\n  rankdir=LR;\n  label=%q;\n  node [shape=box, style=rounded];\n", name, name)
	for _, n := range g.order {
		fmt.Fprintf(&b, "  %q;\n", g.nodes[n])
	}
	for _, n := range g.order {
		for _, m := range g.downs[n] {
			fmt.Fprintf(&b, "  %q -> %q;\n", g.nodes[n], g.nodes[m])
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// Mermaid writes the graph as a Mermaid flowchart.
func (g *Graph) Mermaid(w io.Writer) error {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	id := func(n int) string { return fmt.Sprintf("n%d", n) }
	for _, n := range g.order {
		fmt.Fprintf(&b, "  %s[%q]\n", id(n), g.nodes[n])
	}
	for _, n := range g.order {
		for _, m := range g.downs[n] {
			fmt.Fprintf(&b, "  %s --> %s\n", id(n), id(m))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Text writes one line per node in topological order with its direct
// dependencies: "train ← prepare, split".
func (g *Graph) Text(w io.Writer) error {
	var b strings.Builder
	for _, n := range g.order {
		b.WriteString(g.nodes[n])
		if len(g.deps[n]) > 0 {
			b.WriteString(" ← ")
			b.WriteString(strings.Join(g.names(g.deps[n]), ", "))
		}
		b.WriteByte('\n')
	}
	_, err := io.WriteString(w, b.String())
	return err
}

type intHeap struct{ a []int }

func (h *intHeap) len() int { return len(h.a) }
func (h *intHeap) push(x int) {
	h.a = append(h.a, x)
	i := len(h.a) - 1
	for i > 0 {
		p := (i - 1) / 2
		if h.a[p] <= h.a[i] {
			break
		}
		h.a[p], h.a[i] = h.a[i], h.a[p]
		i = p
	}
}
func (h *intHeap) pop() int {
	top := h.a[0]
	last := len(h.a) - 1
	h.a[0] = h.a[last]
	h.a = h.a[:last]
	i := 0
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(h.a) && h.a[l] < h.a[m] {
			m = l
		}
		if r < len(h.a) && h.a[r] < h.a[m] {
			m = r
		}
		if m == i {
			return top
		}
		h.a[i], h.a[m] = h.a[m], h.a[i]
		i = m
	}
}
