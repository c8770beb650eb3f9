package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
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
			// As in main: the first SIGINT/SIGTERM cancels the run, a second
			// one gets the default handling.
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			go func() {
				<-ctx.Done()
				stop()
			}()
			watchdog(hangLimit)
			code := run(ctx, os.Args[1:])
			stop()
			os.Exit(code)
		},
	})
}

const (
	// waitLimit bounds every wait in the scripts' helper commands.
	waitLimit = 60 * time.Second
	// hangLimit is how long one orch invocation may take in a test before it
	// is declared hung. No test comes near it; it turns a deadlock into a
	// failure with every goroutine's stack instead of a stalled suite.
	hangLimit = 90 * time.Second
)

// watchdog makes this process print all goroutine stacks and exit with
// status 124 if it is still running after d.
func watchdog(d time.Duration) {
	time.AfterFunc(d, func() {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		fmt.Fprintf(os.Stderr, "orch (test watchdog): still running after %s; hung? goroutines:\n%s\n", d, buf)
		os.Exit(124)
	})
}

// TestScripts runs the end-to-end scripts in testdata/script, each in a
// fresh temporary workspace ($WORK).
//
// Extra script commands:
//
//	code N CMD [ARGS...]   run CMD; fail unless it exits with status N
//	                       (stdout/stderr are kept for `stdout`/`stderr`)
//	waitfile PATH...       wait (bounded) until every PATH exists
//	waitgrep REGEXP FILE   wait (bounded) until FILE has a line matching REGEXP
//
// Extra conditions: [root] is true when the tests run as uid 0, for whom
// file modes do not stop writes.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:   filepath.Join("testdata", "script"),
		Cmds:  scriptCmds(),
		Setup: raceEnv,
		Condition: func(cond string) (bool, error) {
			switch cond {
			case "root":
				return os.Geteuid() == 0, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
	})
}

// scriptCmds are the extra commands of every script.
func scriptCmds() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"code":     cmdCode,
		"waitfile": cmdWaitfile,
		"waitgrep": cmdWaitgrep,
	}
}

// raceEnv is a testscript Setup for scripts that start orch many times.
// Under -race every orch process would otherwise sleep 1s at exit waiting for
// late race reports (GORACE atexit_sleep_ms); races are still reported.
func raceEnv(env *testscript.Env) error {
	gorace := os.Getenv("GORACE")
	if !strings.Contains(gorace, "atexit_sleep_ms") {
		gorace = strings.TrimSpace(gorace + " atexit_sleep_ms=0")
	}
	env.Setenv("GORACE", gorace)
	// $REPO lets scripts test the repository's own pipelines.
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return err
	}
	env.Setenv("REPO", repo)
	return nil
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

// cmdWaitgrep waits until a file has a line matching a regexp, at most
// waitLimit. It lets a script watch a background command that writes its
// output to a file.
func cmdWaitgrep(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! waitgrep")
	}
	if len(args) != 2 {
		ts.Fatalf("usage: waitgrep REGEXP FILE")
	}
	re, err := regexp.Compile("(?m)" + args[0])
	ts.Check(err)
	p := ts.MkAbs(args[1])
	deadline := time.Now().Add(waitLimit)
	for {
		b, _ := os.ReadFile(p)
		if re.Match(b) {
			return
		}
		if time.Now().After(deadline) {
			ts.Logf("[%s]\n%s", args[1], b)
			ts.Fatalf("waitgrep: no line matching %#q in %s within %s", args[0], args[1], waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
