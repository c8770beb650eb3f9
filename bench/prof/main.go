// Command prof times and profiles orch's engine in-process on a workspace
// made by bench/gen, phase by phase, so a slow `orch plan` or no-op `orch
// run` can be traced to a file and line.
//
//	go run ./bench/gen -n 1000 -out /tmp/w && (cd /tmp/w && orch run orch.yaml)
//	go run ./bench/prof -w /tmp/w -op plan -count 20 -cpuprofile plan.pprof
//	go tool pprof -top -nodecount 30 plan.pprof
//	go run ./bench/prof -w /tmp/w -op run -count 1 -trace run.trace    # on a fresh copy: the first run
//	go tool trace -pprof=syscall run.trace > syscall.pprof             # where goroutines block in syscalls
//	go tool trace -pprof=sched run.trace > sched.pprof                 # and wait for a CPU
//
// Each iteration does what one CLI invocation does: load the pipeline, open
// the engine, plan or run, close the engine. -op run on a fully cached
// workspace is the no-op rerun.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"runtime/trace"
	"sort"
	"syscall"
	"time"

	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
)

type phases map[string][]time.Duration

func (p phases) add(name string, d time.Duration) { p[name] = append(p[name], d) }

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func main() {
	ws := flag.String("w", ".", "workspace (made by bench/gen)")
	file := flag.String("f", "orch.yaml", "pipeline file, relative to the workspace")
	op := flag.String("op", "plan", "plan, run or load")
	count := flag.Int("count", 10, "iterations")
	jobs := flag.Int("j", 2, "jobs for -op run")
	cpu := flag.String("cpuprofile", "", "write a CPU profile of all iterations here")
	tr := flag.String("trace", "", "write an execution trace of all iterations here")
	flag.Parse()
	if err := run(*ws, *file, *op, *count, *jobs, *cpu, *tr); err != nil {
		fmt.Fprintln(os.Stderr, "prof:", err)
		os.Exit(1)
	}
}

func run(ws, file, op string, count, jobs int, cpu, tr string) error {
	root, err := filepath.Abs(ws)
	if err != nil {
		return err
	}
	reg := stages.NewRegistry()
	reg.Register("exec", stages.NewExec(10*time.Second))
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if tr != "" {
		f, err := os.Create(tr)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := trace.Start(f); err != nil {
			return err
		}
		defer trace.Stop()
	}
	ctx := context.Background()
	ph := phases{}
	order := []string{"load", "open", op, "close", "total"}
	for range count {
		t0 := time.Now()
		p, err := pipeline.Load(filepath.Join(root, file), pipeline.Options{Root: root, Kinds: reg})
		if err != nil {
			return err
		}
		t1 := time.Now()
		ph.add("load", t1.Sub(t0))
		if op == "load" {
			continue
		}
		e, err := engine.Open(engine.Options{Root: root})
		if err != nil {
			return err
		}
		t2 := time.Now()
		ph.add("open", t2.Sub(t1))
		switch op {
		case "plan":
			pl, err := e.Plan(ctx, p, engine.Selection{})
			if err != nil {
				return err
			}
			if _, miss, wait := pl.Counts(); miss+wait > 0 {
				fmt.Fprintf(os.Stderr, "prof: note: plan has %d MISS and %d WAIT\n", miss, wait)
			}
		case "run":
			res, err := e.Run(ctx, p, engine.RunOptions{Jobs: jobs, Trigger: "bench"})
			if err != nil {
				return err
			}
			if res.Err != nil {
				return res.Err
			}
		default:
			return fmt.Errorf("-op %q: want plan, run or load", op)
		}
		t3 := time.Now()
		ph.add(op, t3.Sub(t2))
		if err := e.Close(); err != nil {
			return err
		}
		t4 := time.Now()
		ph.add("close", t4.Sub(t3))
		ph.add("total", t4.Sub(t0))
	}
	if op == "load" {
		order = []string{"load"}
	}
	fmt.Printf("%d iterations of %s on %s (median per phase)\n", count, op, root)
	for _, name := range order {
		if ds := ph[name]; len(ds) > 0 {
			fmt.Printf("  %-6s %8.2f ms\n", name, float64(median(ds).Microseconds())/1000)
		}
	}
	self, children := cpuTime(syscall.RUSAGE_SELF), cpuTime(syscall.RUSAGE_CHILDREN)
	fmt.Printf("CPU, all iterations: orch %s user %s system; commands %s user %s system\n",
		self[0], self[1], children[0], children[1])
	return nil
}

func cpuTime(who int) [2]time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(who, &ru); err != nil {
		return [2]time.Duration{}
	}
	return [2]time.Duration{
		time.Duration(ru.Utime.Nano()).Round(time.Millisecond),
		time.Duration(ru.Stime.Nano()).Round(time.Millisecond),
	}
}
