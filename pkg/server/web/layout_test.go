package web

import (
	"strings"
	"testing"
)

func TestLayout(t *testing.T) {
	for _, tc := range []struct {
		name      string
		nodes     []string
		deps      map[string][]string
		crossings int
		layers    map[string]int
	}{
		{name: "empty"},
		{name: "barycenter untangles", nodes: []string{"a", "b", "c", "d"},
			deps:   map[string][]string{"c": {"b"}, "d": {"a"}},
			layers: map[string]int{"a": 0, "b": 0, "c": 1, "d": 1}},
		{name: "K2,2 has one unavoidable crossing", nodes: []string{"a", "b", "c", "d"},
			deps: map[string][]string{"c": {"a", "b"}, "d": {"a", "b"}}, crossings: 1},
		{name: "longest path", nodes: []string{"a", "b", "c", "d"},
			deps:   map[string][]string{"b": {"a"}, "c": {"b"}, "d": {"a", "c"}},
			layers: map[string]int{"a": 0, "b": 1, "c": 2, "d": 3}},
		{name: "long edges untangle through dummies", nodes: []string{"r", "x1", "x2", "y1", "y2", "z"},
			// r→x1→x2→z and r→y1→y2 with a long edge y1→z: the dummy of
			// y1→z must sit beside x2 without crossing x1→x2.
			deps: map[string][]string{"x1": {"r"}, "y1": {"r"}, "x2": {"x1"}, "y2": {"y1"}, "z": {"x2", "y1"}}},
		{name: "cycle is broken", nodes: []string{"a", "b"}, deps: map[string][]string{"a": {"b"}, "b": {"a"}}},
		{name: "unknown deps and duplicates ignored", nodes: []string{"a", "a", "b"},
			deps: map[string][]string{"b": {"a", "a", "ghost"}}, layers: map[string]int{"a": 0, "b": 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := layout(tc.nodes, tc.deps)
			if g.Crossings != tc.crossings {
				t.Errorf("crossings %d, want %d", g.Crossings, tc.crossings)
			}
			seen := map[string]bool{}
			for _, n := range g.Nodes {
				seen[n.Name] = true
				if n.X < 0 || n.Y < 0 || n.X+n.W > g.Width || n.Y+n.H > g.Height {
					t.Errorf("node %s at (%v,%v) outside %vx%v", n.Name, n.X, n.Y, g.Width, g.Height)
				}
				if want, ok := tc.layers[n.Name]; ok && n.Layer != want {
					t.Errorf("node %s in layer %d, want %d", n.Name, n.Layer, want)
				}
			}
			for _, n := range tc.nodes {
				if !seen[n] {
					t.Errorf("node %s not drawn", n)
				}
			}
			if len(g.Nodes) != len(seen) {
				t.Errorf("%d nodes drawn for %d names", len(g.Nodes), len(seen))
			}
			// No two nodes overlap.
			for i, a := range g.Nodes {
				for _, b := range g.Nodes[i+1:] {
					if a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H {
						t.Errorf("nodes %s and %s overlap", a.Name, b.Name)
					}
				}
			}
		})
	}

	// A long edge runs straight through each dummy's column.
	g := layout([]string{"a", "b", "c"}, map[string][]string{"b": {"a"}, "c": {"a", "b"}})
	for _, e := range g.Edges {
		if long := e.From == "a" && e.To == "c"; long != strings.Contains(e.D, " L") {
			t.Errorf("edge %s→%s: path %q", e.From, e.To, e.D)
		}
	}
}
