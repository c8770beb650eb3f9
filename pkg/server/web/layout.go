package web

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// The DAG drawing: a layered (Sugiyama-style) layout computed here and drawn
// as inline SVG by the run page.
//
//  1. Layers: longest path from a root, so every edge points rightwards.
//  2. Edges that span several layers get a dummy node in each layer between,
//     so they take part in the ordering and bend around nodes.
//  3. Order within layers: barycenter sweeps (down, then up), keeping the
//     order with the fewest crossings seen.
//  4. Coordinates: layers are columns, left to right; each column is centred
//     vertically.

// Geometry of the drawing, in SVG user units (CSS pixels).
const (
	nodeH    = 58
	dummyH   = 14
	gapX     = 72
	gapY     = 22
	pad      = 16
	minNodeW = 170
	maxNodeW = 260
	// charW is a generous width of one character of the node title.
	charW = 8.2
)

// dagNode is one drawn node (a stage).
type dagNode struct {
	Name       string
	X, Y, W, H float64
	Layer      int
}

// dagEdge is one drawn edge: D is the SVG path.
type dagEdge struct {
	From, To string
	D        string
}

// dagLayout is the drawing of a graph.
type dagLayout struct {
	Width, Height float64
	Nodes         []dagNode
	Edges         []dagEdge
	// Crossings is the number of edge crossings between adjacent layers
	// after ordering (the tests check the ordering reduces it).
	Crossings int
}

// vertex is a node of the layered graph: a stage or a dummy.
type vertex struct {
	name  string // "" for a dummy
	layer int
	pos   float64 // position within its layer while ordering
	up    []int   // vertices in layer-1 with an edge to this one
	down  []int   // vertices in layer+1 this one has an edge to
	y, h  float64
}

// layout draws the graph whose nodes are names (in a topological or any
// stable order) and whose edges are deps[n] → n. Deps naming unknown nodes
// are ignored; a cycle (which a loaded pipeline cannot have) is broken.
func layout(names []string, deps map[string][]string) *dagLayout {
	index := make(map[string]int, len(names))
	for _, n := range names {
		if _, dup := index[n]; !dup {
			index[n] = len(index)
		}
	}
	uniq := make([]string, len(index))
	for n, i := range index {
		uniq[i] = n
	}
	names = uniq

	// 1. Longest-path layers (memoised DFS; a node on the stack is a cycle
	// edge and is ignored).
	layer := make([]int, len(names))
	state := make([]int8, len(names)) // 0 new, 1 on stack, 2 done
	var visit func(i int) int
	visit = func(i int) int {
		switch state[i] {
		case 1:
			return -1
		case 2:
			return layer[i]
		}
		state[i] = 1
		l := 0
		for _, d := range deps[names[i]] {
			if j, ok := index[d]; ok && j != i {
				if dl := visit(j); dl >= 0 && dl+1 > l {
					l = dl + 1
				}
			}
		}
		state[i], layer[i] = 2, l
		return l
	}
	nlayers := 0
	for i := range names {
		if l := visit(i) + 1; l > nlayers {
			nlayers = l
		}
	}

	// 2. Vertices and edges, with dummies on long edges.
	vs := make([]*vertex, len(names))
	for i, n := range names {
		vs[i] = &vertex{name: n, layer: layer[i], h: nodeH}
	}
	type edge struct {
		from, to string
		chain    []int // vertex indices from source to target
	}
	var edges []edge
	for _, n := range names {
		to := index[n]
		seen := map[int]bool{}
		for _, d := range deps[n] {
			from, ok := index[d]
			if !ok || seen[from] || layer[from] >= layer[to] {
				continue
			}
			seen[from] = true
			chain := []int{from}
			prev := from
			for l := layer[from] + 1; l < layer[to]; l++ {
				vs = append(vs, &vertex{layer: l, h: dummyH})
				cur := len(vs) - 1
				vs[prev].down = append(vs[prev].down, cur)
				vs[cur].up = append(vs[cur].up, prev)
				chain = append(chain, cur)
				prev = cur
			}
			vs[prev].down = append(vs[prev].down, to)
			vs[to].up = append(vs[to].up, prev)
			edges = append(edges, edge{from: d, to: n, chain: append(chain, to)})
		}
	}
	layers := make([][]int, nlayers)
	for i, v := range vs {
		layers[v.layer] = append(layers[v.layer], i)
	}
	// Dummies were appended after all stages: place each after the nodes
	// it came from, in creation order, which is a fair start.
	setPos := func() {
		for _, l := range layers {
			for p, i := range l {
				vs[i].pos = float64(p)
			}
		}
	}
	setPos()

	// 3. Barycenter ordering.
	best := cloneLayers(layers)
	bestX := crossings(vs, layers)
	for iter := 0; iter < 8 && bestX > 0; iter++ {
		for l := 1; l < nlayers; l++ {
			sortByBarycenter(vs, layers[l], func(v *vertex) []int { return v.up })
		}
		for l := nlayers - 2; l >= 0; l-- {
			sortByBarycenter(vs, layers[l], func(v *vertex) []int { return v.down })
		}
		if x := crossings(vs, layers); x < bestX {
			bestX, best = x, cloneLayers(layers)
		}
	}
	layers = best
	setPos()

	// 4. Coordinates.
	w := minNodeW
	for _, n := range names {
		if nw := int(charW*float64(len([]rune(n)))) + 40; nw > w {
			w = nw
		}
	}
	w = min(w, maxNodeW)
	colH := func(l []int) float64 {
		h := 0.0
		for k, i := range l {
			if k > 0 {
				h += gapY
			}
			h += vs[i].h
		}
		return h
	}
	maxH := 0.0
	for _, l := range layers {
		maxH = math.Max(maxH, colH(l))
	}
	out := &dagLayout{Crossings: bestX}
	for _, l := range layers {
		y := pad + (maxH-colH(l))/2
		for _, i := range l {
			vs[i].y = y
			y += vs[i].h + gapY
		}
	}
	x := func(l int) float64 { return pad + float64(l)*(float64(w)+gapX) }
	for i := range names {
		v := vs[i]
		out.Nodes = append(out.Nodes, dagNode{Name: v.name, X: x(v.layer), Y: v.y, W: float64(w), H: nodeH, Layer: v.layer})
	}
	for _, e := range edges {
		var pts [][2]float64
		for k, i := range e.chain {
			v := vs[i]
			cy := v.y + v.h/2
			switch {
			case k == 0:
				pts = append(pts, [2]float64{x(v.layer) + float64(w), cy})
			case k == len(e.chain)-1:
				pts = append(pts, [2]float64{x(v.layer) - 6, cy}) // room for the arrowhead
			default: // a dummy: pass straight through its column
				pts = append(pts, [2]float64{x(v.layer), cy}, [2]float64{x(v.layer) + float64(w), cy})
			}
		}
		out.Edges = append(out.Edges, dagEdge{From: e.from, To: e.to, D: curve(pts)})
	}
	out.Width = 2*pad + float64(max(nlayers, 1))*float64(w) + float64(max(nlayers-1, 0))*gapX
	out.Height = 2*pad + math.Max(maxH, nodeH)
	return out
}

// curve joins pts with horizontal-tangent cubic Béziers; pairs of points on
// the same line (through a dummy's column) are joined straight.
func curve(pts [][2]float64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "M%.1f %.1f", pts[0][0], pts[0][1])
	for k := 1; k < len(pts); k++ {
		p, q := pts[k-1], pts[k]
		if p[1] == q[1] {
			fmt.Fprintf(&b, " L%.1f %.1f", q[0], q[1])
			continue
		}
		mx := (p[0] + q[0]) / 2
		fmt.Fprintf(&b, " C%.1f %.1f %.1f %.1f %.1f %.1f", mx, p[1], mx, q[1], q[0], q[1])
	}
	return b.String()
}

func cloneLayers(ls [][]int) [][]int {
	out := make([][]int, len(ls))
	for i, l := range ls {
		out[i] = append([]int(nil), l...)
	}
	return out
}

// sortByBarycenter orders one layer by the mean position of each vertex's
// neighbours in the adjacent layer; a vertex without neighbours keeps its
// position. Ties keep the current order.
func sortByBarycenter(vs []*vertex, l []int, nbrs func(*vertex) []int) {
	bc := make(map[int]float64, len(l))
	for _, i := range l {
		ns := nbrs(vs[i])
		if len(ns) == 0 {
			bc[i] = vs[i].pos
			continue
		}
		s := 0.0
		for _, j := range ns {
			s += vs[j].pos
		}
		bc[i] = s / float64(len(ns))
	}
	sort.SliceStable(l, func(a, b int) bool { return bc[l[a]] < bc[l[b]] })
	for p, i := range l {
		vs[i].pos = float64(p)
	}
}

// crossings counts pairs of edges between adjacent layers that cross.
func crossings(vs []*vertex, layers [][]int) int {
	n := 0
	for l := 0; l+1 < len(layers); l++ {
		pos := map[int]int{}
		for p, i := range layers[l] {
			pos[i] = p
		}
		for p, i := range layers[l+1] {
			pos[i] = p
		}
		type seg struct{ a, b int }
		var segs []seg
		for _, i := range layers[l] {
			for _, j := range vs[i].down {
				segs = append(segs, seg{pos[i], pos[j]})
			}
		}
		for a := 0; a < len(segs); a++ {
			for b := a + 1; b < len(segs); b++ {
				s, t := segs[a], segs[b]
				if (s.a < t.a && s.b > t.b) || (s.a > t.a && s.b < t.b) {
					n++
				}
			}
		}
	}
	return n
}
