// Command orch runs ML pipelines as DAGs of cached stages. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
)

// Exit codes; documented in `orch --help`.
const (
	exitOK          = 0
	exitFailed      = 1   // a stage failed, or orch could not do what was asked
	exitChanges     = 2   // plan --detailed-exitcode: something would run
	exitBadInput    = 3   // invalid pipeline file, flags or arguments
	exitInterrupted = 130 // SIGINT / SIGTERM
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func badInput(err error) error { return &exitError{exitBadInput, err} }

func main() {
	// orch is short-lived and allocates mostly small, short-lived values
	// (records, pre-images): collect less often. GOGC in the environment wins.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	// ...but keep the heap of a data stage (ingest of a 3M-row CSV) under
	// 1 GiB: a soft limit makes the collector work harder only near it.
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(768 << 20)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal, restore the default handling: a second
		// Ctrl-C kills orch at once.
		<-ctx.Done()
		stop()
	}()
	os.Exit(run(ctx, os.Args[1:]))
}

func run(ctx context.Context, args []string) int {
	// ORCH_CPUPROFILE=FILE writes a CPU profile of this invocation, for
	// `go tool pprof` (how the benchmarks' hot spots were found).
	if path := os.Getenv("ORCH_CPUPROFILE"); path != "" {
		if f, err := os.Create(path); err == nil {
			defer f.Close() // after StopCPUProfile has flushed (defers run last-in first-out)
			if err := pprof.StartCPUProfile(f); err == nil {
				defer pprof.StopCPUProfile()
			}
		}
	}
	// ORCH_RUSAGE=1 prints orch's own CPU time (its threads, not the
	// commands it ran) to stderr at exit: what bench/ compares when the
	// machine is too busy for wall-clock figures.
	if os.Getenv("ORCH_RUSAGE") != "" {
		defer func() {
			var self, kids syscall.Rusage
			if syscall.Getrusage(syscall.RUSAGE_SELF, &self) == nil && syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids) == nil {
				tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
				fmt.Fprintf(os.Stderr, "orch rusage: self user %.3f sys %.3f; commands user %.3f sys %.3f\n",
					tv(self.Utime), tv(self.Stime), tv(kids.Utime), tv(kids.Stime))
			}
		}()
	}
	cmd := newRoot()
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(ctx)
	return exitCode(ctx, err)
}

// exitCode is the one place errors become exit codes.
func exitCode(ctx context.Context, err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(os.Stderr, "orch:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "orch:", err)
	if ctx.Err() != nil {
		return exitInterrupted
	}
	return exitFailed
}
