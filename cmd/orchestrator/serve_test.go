package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/orch-dev/orch/pkg/history"
)

// TestServe runs the end-to-end scripts of `orch serve` in testdata/serve:
// the real binary, real schedules on the wall clock, real HTTP.
//
// Extra script commands, besides those of TestScripts:
//
//	api [-token T] [-save VAR FIELD] STATUS METHOD PATH [BODY]
//	    call serve at the address in $WORK/addr (serve --addr-file addr);
//	    fail unless the response status is STATUS; the body goes to stdout;
//	    -save sets $VAR to the string FIELD of the JSON response
//	waitapi PATH REGEXP
//	    GET PATH until the body matches REGEXP (bounded)
//	ticks PIPELINE MIN
//	    check the runs of PIPELINE with a schedule tick: at least MIN, one
//	    per second with none missing and none twice; runs after the
//	    first are all HIT; prints the ticks' count
//
// Conditions: [exec:promtool] as testscript defines it.
func TestServe(t *testing.T) {
	cmds := scriptCmds()
	cmds["api"], cmds["waitapi"], cmds["ticks"] = cmdAPI, cmdWaitAPI, cmdTicks
	testscript.Run(t, testscript.Params{
		Dir:   filepath.Join("testdata", "serve"),
		Cmds:  cmds,
		Setup: raceEnv,
		Condition: func(cond string) (bool, error) {
			if tool, ok := strings.CutPrefix(cond, "exec:"); ok {
				_, err := exec.LookPath(tool)
				return err == nil, nil
			}
			return false, fmt.Errorf("unknown condition %q", cond)
		},
	})
}

func apiCall(ts *testscript.TestScript, token, method, path, body string) (int, []byte) {
	addr := strings.TrimSpace(ts.ReadFile("addr"))
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, r)
	ts.Check(err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Timeout: waitLimit}
	resp, err := c.Do(req)
	ts.Check(err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	ts.Check(err)
	return resp.StatusCode, b
}

func cmdAPI(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! api")
	}
	token, saveVar, saveField := "", "", ""
	for len(args) >= 2 && strings.HasPrefix(args[0], "-") {
		switch args[0] {
		case "-token":
			token, args = args[1], args[2:]
		case "-save":
			if len(args) < 3 {
				ts.Fatalf("usage: api -save VAR FIELD ...")
			}
			saveVar, saveField, args = args[1], args[2], args[3:]
		default:
			ts.Fatalf("api: unknown flag %s", args[0])
		}
	}
	if len(args) < 3 || len(args) > 4 {
		ts.Fatalf("usage: api [-token T] [-save VAR FIELD] STATUS METHOD PATH [BODY]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	body := ""
	if len(args) == 4 {
		body = args[3]
	}
	got, b := apiCall(ts, token, args[1], args[2], body)
	fmt.Fprintf(ts.Stdout(), "%s", b)
	if got != want {
		ts.Fatalf("%s %s: status %d, want %d\n%s", args[1], args[2], got, want, b)
	}
	if saveVar != "" {
		var m map[string]any
		ts.Check(json.Unmarshal(b, &m))
		v, ok := m[saveField].(string)
		if !ok {
			ts.Fatalf("api: response has no string field %q", saveField)
		}
		ts.Setenv(saveVar, v)
	}
}

func cmdWaitAPI(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitapi PATH REGEXP")
	}
	re, err := regexp.Compile("(?m)" + args[1])
	ts.Check(err)
	deadline := time.Now().Add(waitLimit)
	for {
		_, b := apiCall(ts, "", "GET", args[0], "")
		if re.Match(b) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitapi: GET %s did not match %#q within %s; last body:\n%s", args[0], args[1], waitLimit, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func cmdTicks(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: ticks PIPELINE MIN")
	}
	least, err := strconv.Atoi(args[1])
	ts.Check(err)
	_, b := apiCall(ts, "", "GET", "/api/runs?limit=100000&pipeline="+args[0], "")
	var runs []*history.Run
	ts.Check(json.Unmarshal(b, &runs))
	slices.Reverse(runs) // oldest first
	var ticks []time.Time
	for _, r := range runs {
		if r.Tick.IsZero() {
			continue
		}
		ticks = append(ticks, r.Tick)
		if len(ticks) > 1 && r.Status == history.RunSucceeded {
			for _, s := range r.Stages {
				if s.Status != history.Hit {
					ts.Fatalf("run %s (tick %s): stage %s is %s, want hit", r.ID, r.Tick.Format(time.RFC3339), s.Name, s.Status)
				}
			}
		}
	}
	if err := contiguous(ticks); err != nil {
		ts.Fatalf("%v", err)
	}
	if len(ticks) < least {
		ts.Fatalf("%d runs with a tick, want at least %d", len(ticks), least)
	}
	fmt.Fprintf(ts.Stdout(), "%d ticks, one per second, none missing or doubled\n", len(ticks))
}

// contiguous checks that ticks, sorted, are one second apart.
func contiguous(ticks []time.Time) error {
	slices.SortFunc(ticks, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(ticks); i++ {
		switch d := ticks[i].Sub(ticks[i-1]); {
		case d == 0:
			return fmt.Errorf("tick %s was run twice", ticks[i].Format(time.RFC3339))
		case d != time.Second:
			return fmt.Errorf("ticks %s and %s are %s apart: a tick was lost", ticks[i-1].Format(time.RFC3339), ticks[i].Format(time.RFC3339), d)
		}
	}
	return nil
}

func TestContiguous(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		offsets []int
		err     string
	}{{[]int{2, 0, 1, 3}, ""}, {[]int{0, 1, 1, 2}, "run twice"}, {[]int{0, 1, 3}, "lost"}} {
		var ts []time.Time
		for _, o := range tc.offsets {
			ts = append(ts, base.Add(time.Duration(o)*time.Second))
		}
		err := contiguous(ts)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%v: %v, want %q", tc.offsets, err, tc.err)
		}
	}
}
