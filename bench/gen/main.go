// Command gen writes a synthetic layered DAG for comparing orch with make,
// go-task and Snakemake on the same work.
//
// The DAG has N stages in layers of W (10 by default). Stage i of layer 0
// reads the workspace files inputs/in(i+1).txt and inputs/in((i+1)%W+1).txt;
// stage i of layer k>0 reads the outputs of stages i and (i+1)%W of layer
// k-1. Every stage runs `cat IN1 IN2 | sha1sum > OUT`. Stage names are
// sK_I (layer K, position I).
//
//	go run ./bench/gen -n 1000 -out DIR          # write DIR/{orch.yaml,Makefile,Taskfile.yml,Snakefile,inputs/}
//	go run ./bench/gen -n 1000 -descendants-of 1 # print the stages below inputs/in1.txt, one a line
//	go run ./bench/gen -n 1000 -list             # print every stage, in layer order
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

type dagSpec struct {
	n, width int
}

func (d dagSpec) layers() int { return (d.n + d.width - 1) / d.width }

// size returns how many stages layer k has (the last may be partial).
func (d dagSpec) size(k int) int { return min(d.width, d.n-k*d.width) }

func name(k, i int) string { return fmt.Sprintf("s%d_%d", k, i) }

func inputFile(j int) string { return fmt.Sprintf("inputs/in%d.txt", j) }

// parents returns the two things stage (k, i) reads: input file numbers
// (1-based) for layer 0, stage positions of layer k-1 otherwise.
func (d dagSpec) parents(i int) (a, b int) { return i, (i + 1) % d.width }

// each calls f for every stage in topological (layer) order.
func (d dagSpec) each(f func(k, i int)) {
	for k := 0; k < d.layers(); k++ {
		for i := 0; i < d.size(k); i++ {
			f(k, i)
		}
	}
}

// descendants returns, in layer order, the stages whose inputs depend on
// inputs/in{input}.txt.
func (d dagSpec) descendants(input int) []string {
	var out []string
	prev := map[int]bool{}
	for k := 0; k < d.layers(); k++ {
		cur := map[int]bool{}
		for i := 0; i < d.size(k); i++ {
			a, b := d.parents(i)
			hit := prev[a] || prev[b]
			if k == 0 {
				hit = a+1 == input || b+1 == input
			}
			if hit {
				cur[i] = true
				out = append(out, name(k, i))
			}
		}
		prev = cur
	}
	return out
}

func main() {
	n := flag.Int("n", 1000, "number of stages")
	width := flag.Int("width", 10, "stages per layer (and number of input files)")
	out := flag.String("out", "", "directory to write the workspace into")
	desc := flag.Int("descendants-of", 0, "print the stages downstream of inputs/inK.txt and exit")
	list := flag.Bool("list", false, "print every stage, in layer order, and exit")
	flag.Parse()
	if *n < 1 || *width < 2 {
		fmt.Fprintln(os.Stderr, "gen: -n must be at least 1 and -width at least 2")
		os.Exit(3)
	}
	d := dagSpec{n: *n, width: *width}
	if *desc != 0 || *list {
		if *desc < 0 || *desc > d.width {
			fmt.Fprintf(os.Stderr, "gen: -descendants-of must be from 1 to %d\n", d.width)
			os.Exit(3)
		}
		names := d.descendants(*desc)
		if *list {
			names = nil
			d.each(func(k, i int) { names = append(names, name(k, i)) })
		}
		w := bufio.NewWriter(os.Stdout)
		for _, s := range names {
			fmt.Fprintln(w, s)
		}
		if err := w.Flush(); err != nil {
			fmt.Fprintln(os.Stderr, "gen:", err)
			os.Exit(1)
		}
		return
	}
	if *out == "" {
		fmt.Fprintln(os.Stderr, "gen: -out DIR is required")
		os.Exit(3)
	}
	if err := d.write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func (d dagSpec) write(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "inputs"), 0o755); err != nil {
		return err
	}
	for j := 1; j <= d.width; j++ {
		if err := os.WriteFile(filepath.Join(dir, inputFile(j)), fmt.Appendf(nil, "input %d\n", j), 0o644); err != nil {
			return err
		}
	}
	files := []struct {
		name string
		gen  func(io.Writer)
	}{
		{"orch.yaml", d.orch},
		{"Makefile", d.makefile},
		{"Taskfile.yml", d.taskfile},
		{"Snakefile", d.snakefile},
	}
	for _, f := range files {
		fh, err := os.Create(filepath.Join(dir, f.name))
		if err != nil {
			return err
		}
		w := bufio.NewWriter(fh)
		f.gen(w)
		if err := w.Flush(); err != nil {
			fh.Close()
			return err
		}
		if err := fh.Close(); err != nil {
			return err
		}
	}
	return nil
}

// sources returns the two files stage (k, i) reads, as paths of the
// make-like tools (outputs under out/).
func (d dagSpec) sources(k, i int) (string, string) {
	a, b := d.parents(i)
	if k == 0 {
		return inputFile(a + 1), inputFile(b + 1)
	}
	return "out/" + name(k-1, a) + ".txt", "out/" + name(k-1, b) + ".txt"
}

func (d dagSpec) orch(w io.Writer) {
	fmt.Fprintf(w, "name: bench\nversion: 1\ndescription: synthetic layered DAG, %d stages in layers of %d\nstages:\n", d.n, d.width)
	d.each(func(k, i int) {
		fmt.Fprintf(w, "  %s:\n    run: cat {{inputs.a}} {{inputs.b}} | sha1sum > {{outputs.out}}\n    inputs:\n", name(k, i))
		a, b := d.parents(i)
		if k == 0 {
			fmt.Fprintf(w, "      a: %s\n      b: %s\n", inputFile(a+1), inputFile(b+1))
		} else {
			fmt.Fprintf(w, "      a: %s.out\n      b: %s.out\n", name(k-1, a), name(k-1, b))
		}
		fmt.Fprintf(w, "    outputs:\n      out: out.txt\n")
	})
}

func (d dagSpec) all() []string {
	var all []string
	d.each(func(k, i int) { all = append(all, "out/"+name(k, i)+".txt") })
	return all
}

func (d dagSpec) makefile(w io.Writer) {
	fmt.Fprintf(w, "# synthetic layered DAG, %d stages in layers of %d\n.PHONY: all\nall: \\\n", d.n, d.width)
	all := d.all()
	for j, f := range all {
		sep := " \\"
		if j == len(all)-1 {
			sep = ""
		}
		fmt.Fprintf(w, "\t%s%s\n", f, sep)
	}
	fmt.Fprintf(w, "\nout:\n\tmkdir -p out\n\n")
	d.each(func(k, i int) {
		a, b := d.sources(k, i)
		fmt.Fprintf(w, "out/%s.txt: %s %s | out\n\tcat %s %s | sha1sum > $@\n", name(k, i), a, b, a, b)
	})
}

func (d dagSpec) taskfile(w io.Writer) {
	// run: once, or go-task would run a stage once per path that reaches it.
	fmt.Fprintf(w, "# synthetic layered DAG, %d stages in layers of %d\nversion: '3'\nrun: once\ntasks:\n  default:\n    deps:\n", d.n, d.width)
	d.each(func(k, i int) { fmt.Fprintf(w, "      - %s\n", name(k, i)) })
	d.each(func(k, i int) {
		a, b := d.sources(k, i)
		fmt.Fprintf(w, "  %s:\n", name(k, i))
		if k > 0 {
			pa, pb := d.parents(i)
			fmt.Fprintf(w, "    deps: [%s, %s]\n", name(k-1, pa), name(k-1, pb))
		}
		fmt.Fprintf(w, "    method: checksum\n    sources: [%s, %s]\n    generates: [out/%s.txt]\n", a, b, name(k, i))
		fmt.Fprintf(w, "    cmds:\n      - mkdir -p out && cat %s %s | sha1sum > out/%s.txt\n", a, b, name(k, i))
	})
}

func (d dagSpec) snakefile(w io.Writer) {
	// One rule with an input function: the idiomatic Snakemake form.
	fmt.Fprintf(w, "# synthetic layered DAG, %d stages in layers of %d\nN = %d\nW = %d\n\n", d.n, d.width, d.n, d.width)
	fmt.Fprint(w, strings.TrimLeft(`
STAGES = [f"out/s{j // W}_{j % W}.txt" for j in range(N)]

wildcard_constraints:
    k=r"\d+",
    i=r"\d+",

rule all:
    input: STAGES

def parents(wc):
    k, i = int(wc.k), int(wc.i)
    a, b = i, (i + 1) % W
    if k == 0:
        return [f"inputs/in{a + 1}.txt", f"inputs/in{b + 1}.txt"]
    return [f"out/s{k - 1}_{a}.txt", f"out/s{k - 1}_{b}.txt"]

rule stage:
    input: parents
    output: "out/s{k}_{i}.txt"
    shell: "cat {input} | sha1sum > {output}"
`, "\n"))
}
