package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the test binary act as the orch command: testscript puts
// an `orch` on PATH that re-executes this binary, which then runs the real
// CLI entry point with the same signal handling as main.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"orch": func() {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			code := run(ctx, os.Args[1:])
			stop()
			os.Exit(code)
		},
	})
}

// waitLimit bounds every wait in the scripts' helper commands.
const waitLimit = 60 * time.Second

// TestScripts runs the end-to-end scripts in testdata/script, each in a
// fresh temporary workspace ($WORK).
//
// Extra script commands:
//
//	code N CMD [ARGS...]   run CMD; fail unless it exits with status N
//	                       (stdout/stderr are kept for `stdout`/`stderr`)
//	waitfile PATH...       wait (bounded) until every PATH exists
//
// Extra conditions: [root] is true when the tests run as uid 0, for whom
// file modes do not stop writes.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: filepath.Join("testdata", "script"),
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"code":     cmdCode,
			"waitfile": cmdWaitfile,
		},
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
		Setup: func(env *testscript.Env) error {
			// A stray cache directory from the developer's environment must
			// not leak into the tests.
			env.Setenv("ORCH_CACHE_DIR", "")
			return nil
		},
	})
}

// cmdCode runs a command and checks its exact exit status.
func cmdCode(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! code")
	}
	if len(args) < 2 {
		ts.Fatalf("usage: code N CMD [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("code: bad exit status %q", args[0])
	}
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("code: %s: %v", args[1], err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// cmdWaitfile waits until every named file exists, at most waitLimit.
func cmdWaitfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! waitfile")
	}
	if len(args) == 0 {
		ts.Fatalf("usage: waitfile PATH...")
	}
	deadline := time.Now().Add(waitLimit)
	for _, a := range args {
		p := ts.MkAbs(a)
		for {
			if _, err := os.Stat(p); err == nil {
				break
			}
			if time.Now().After(deadline) {
				ts.Fatalf("waitfile: %s did not appear within %s", a, waitLimit)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
