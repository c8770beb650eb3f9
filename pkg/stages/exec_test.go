package stages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

func TestTemplates(t *testing.T) {
	cases := []struct {
		cmd  string
		want []string
	}{
		{"python train.py", nil},
		{"cp {{inputs.raw}} {{outputs.clean}}", []string{"inputs.raw", "outputs.clean"}},
		{"x {{ params.lr }} {{scratch}}{{inputs.a}}", []string{"params.lr", "scratch", "inputs.a"}},
		{"echo ${params.x} {x} {{", nil},
		{"{{}} {{  }}", []string{"", ""}},
	}
	for _, c := range cases {
		if got := Templates(c.cmd); !reflect.DeepEqual(got, c.want) {
			t.Errorf("Templates(%q) = %q, want %q", c.cmd, got, c.want)
		}
	}
}

// awkward are values that must each reach a command as exactly one argument.
var awkward = []string{
	"", "plain", "/abs/path/file.csv", "with space", "two  spaces", "it's", `"double"`,
	"$HOME", "${HOME}", "`id`", "$(id)", `back\slash`, "new\nline", "tab\there", "*", "?", "[ab]",
	"~", "~root", "semi;colon", "amp&", "pipe|", "redir>x", "<in", "-n", "--", "a=b", "!bang",
	"#hash", "{a,b}", "x'y'z\"w", "ünïcødé", "%s", "@{u}", "'", "''", "\\'",
}

// sh runs script with sh in dir and returns its stdout.
func sh(t *testing.T, dir, script string) string {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sh -c %q: %v\n%s", script, err, out)
	}
	return string(out)
}

func TestShellQuote(t *testing.T) {
	// Files a glob would match, so an unquoted glob shows.
	dir := t.TempDir()
	for _, f := range []string{"a", "b", "x"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range awkward {
		q := ShellQuote(v)
		got := sh(t, dir, "set -- "+q+`; printf '%s:%s' "$#" "$1"`)
		if want := "1:" + v; got != want {
			t.Errorf("ShellQuote(%q) = %s: sh sees %q, want %q", v, q, got, want)
		}
	}
	for _, v := range []string{"plain", "/abs/path/file.csv", "a=b", "0.1", "x-y_z.csv"} {
		if q := ShellQuote(v); q != v {
			t.Errorf("ShellQuote(%q) = %s, want it unquoted", v, q)
		}
	}
}

// shellSafe is the byte loop that replaced this regexp; every byte value
// must be classified the same, alone and inside longer strings.
func TestShellSafeMatchesRegexp(t *testing.T) {
	re := regexp.MustCompile(`^[A-Za-z0-9_./=:,+@%-]+$`)
	check := func(s string) {
		if got, want := shellSafe(s), re.MatchString(s); got != want {
			t.Errorf("shellSafe(%q) = %v, the regexp says %v", s, got, want)
		}
	}
	check("")
	for c := 0; c < 256; c++ {
		check(string([]byte{byte(c)}))
		check("a/b" + string([]byte{byte(c)}) + "c.d")
	}
}

func task(t *testing.T) *Task {
	dir := t.TempDir()
	return &Task{
		Pipeline: "p", Stage: "s", Dir: dir,
		Inputs:  map[string]string{"data": filepath.Join(dir, "my data", "it's \"raw\".csv"), "plain": "/data/x.csv"},
		Outputs: map[string]string{"model": filepath.Join(dir, "out dir", "model $1.bin")},
		Params:  map[string]Param{"lr": {Text: "0.1", Value: 0.1}, "name": {Text: "a b; rm -rf /", Value: "a b; rm -rf /"}, "empty": {Text: ""}},
		Scratch: filepath.Join(dir, "scratch`x`"),
		Env:     []string{"PATH=" + os.Getenv("PATH")},
	}
}

func TestExpand(t *testing.T) {
	tk := task(t)
	cmd := `printf '[%s]\n' {{inputs.data}} {{ inputs.plain }} {{outputs.model}} {{params.lr}} {{params.name}} {{params.empty}} {{scratch}}`
	got, err := Expand(cmd, tk)
	if err != nil {
		t.Fatalf("Expand: %v", err)
	}
	out := sh(t, tk.Dir, got)
	want := fmt.Sprintf("[%s]\n[%s]\n[%s]\n[0.1]\n[a b; rm -rf /]\n[]\n[%s]\n",
		tk.Inputs["data"], tk.Inputs["plain"], tk.Outputs["model"], tk.Scratch)
	if out != want {
		t.Errorf("expanded %q\nsh printed:\n%s\nwant:\n%s", got, out, want)
	}
	if strings.Contains(got, "{{") {
		t.Errorf("Expand left a template: %q", got)
	}

	for _, bad := range []string{"{{inputs.nope}}", "{{outputs.nope}}", "{{params.nope}}", "{{env.HOME}}", "{{inputs}}", "{{}}"} {
		if s, err := Expand("echo "+bad, tk); err == nil {
			t.Errorf("Expand(%q) = %q, no error", bad, s)
		} else if !strings.Contains(err.Error(), "unknown template") {
			t.Errorf("Expand(%q): %v", bad, err)
		}
	}
	if s, err := Expand("echo no templates", tk); err != nil || s != "echo no templates" {
		t.Errorf("Expand without templates = %q, %v", s, err)
	}
}

func TestExecCheck(t *testing.T) {
	decl := func(run string) *Decl {
		return &Decl{
			Stage: "train", Run: run,
			Inputs: []string{"features", "labels"}, Outputs: []string{"model"},
			Params: map[string]Param{"lr": {Text: "0.1"}, "epochs": {Text: "3"}},
		}
	}
	cases := []struct {
		run  string
		want []string // substrings of each problem, in order; nil for none
	}{
		{"python train.py {{inputs.features}} {{ inputs.labels }} {{outputs.model}} {{params.lr}} {{scratch}}", nil},
		{"", []string{"needs a command"}},
		{"   \n", []string{"needs a command"}},
		{"cat {{inputs.featurs}}", []string{`{{inputs.featurs}}: stage declares no input "featurs" (have: features, labels)`}},
		{"cat {{outputs.metrics}}", []string{`stage declares no output "metrics" (have: model)`}},
		{"x {{params.l2}}", []string{`stage declares no param "l2" (have: epochs, lr)`}},
		{"x {{env.HOME}}", []string{"unknown template {{env.HOME}}"}},
		{"x {{input.features}}", []string{"unknown template {{input.features}}"}},
		{"x {{inputs}}", []string{"{{inputs}} needs a name"}},
		{"x {{inputs.}}", []string{"needs a name"}},
		{"x {{}}", []string{"unknown template"}},
		{"x {{scratch.dir}}", []string{"unknown template"}},
		{"{{inputs.a}} {{outputs.b}} {{params.c}}", []string{`no input "a"`, `no output "b"`, `no param "c"`}},
	}
	e := NewExec(time.Second)
	for _, c := range cases {
		ps := e.Check(decl(c.run))
		if len(ps) != len(c.want) {
			t.Errorf("Check(%q) = %+v, want %d problem(s)", c.run, ps, len(c.want))
			continue
		}
		for i, p := range ps {
			if p.Field != "run" || !strings.Contains(p.Msg, c.want[i]) {
				t.Errorf("Check(%q) problem %d = %+v, want field run and %q", c.run, i, p, c.want[i])
			}
		}
	}
	if v := e.Version(); v != "orch.exec.v1" {
		t.Errorf("Version() = %q", v)
	}
}

// logFile returns a log file for a task and a func that reads it.
func logFile(t *testing.T) (*os.File, func() string) {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, func() string { b, _ := os.ReadFile(f.Name()); return string(b) }
}

func TestExecRunExitCode(t *testing.T) {
	e := NewExec(time.Second)
	for _, c := range []struct {
		cmd  string
		code int // -1: no error
	}{
		{"true", -1},
		{"exit 0", -1},
		{"exit 3", 3},
		{"false", 1},
		{"exit 255", 255},
		{"no-such-command-orch-test", 127},
	} {
		tk := task(t)
		tk.Command = c.cmd
		tk.Log = &bytes.Buffer{}
		err := e.Run(t.Context(), tk)
		if c.code < 0 {
			if err != nil {
				t.Errorf("Run(%q) = %v, want nil", c.cmd, err)
			}
			continue
		}
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Code != c.code {
			t.Errorf("Run(%q) = %v (%T), want *ExitError{Code: %d}", c.cmd, err, err, c.code)
		} else if ee.Error() != "exit status "+strconv.Itoa(c.code) {
			t.Errorf("ExitError.Error() = %q", ee.Error())
		}
	}
	// Killed by a signal: an error, but not an exit code.
	tk := task(t)
	tk.Command, tk.Log = "kill -KILL $$", &bytes.Buffer{}
	err := e.Run(t.Context(), tk)
	var ee *ExitError
	if err == nil || errors.As(err, &ee) || !strings.Contains(err.Error(), "signal") {
		t.Errorf("Run of a command killed by SIGKILL = %v, want a signal error", err)
	}
	// A command with an unknown template does not start.
	tk = task(t)
	marker := filepath.Join(tk.Dir, "ran")
	tk.Command, tk.Log = "touch "+marker+" {{inputs.nope}}", &bytes.Buffer{}
	if err := e.Run(t.Context(), tk); err == nil {
		t.Errorf("Run with an unknown template: no error")
	}
	if _, err := os.Stat(marker); err == nil {
		t.Errorf("Run with an unknown template started the command")
	}
}

func TestExecRunEnvDirLog(t *testing.T) {
	t.Setenv("ORCH_TEST_PARENT_ONLY", "leaked")
	for _, kind := range []string{"file", "buffer"} {
		t.Run(kind, func(t *testing.T) {
			tk := task(t)
			tk.Env = append(tk.Env, "FOO=bar baz", "ORCH_STAGE=s")
			tk.Command = `pwd; printf '%s\n' "$FOO" "$ORCH_STAGE" "${ORCH_TEST_PARENT_ONLY-unset}"; echo to-stderr >&2; cat {{inputs.data}}`
			if err := os.MkdirAll(filepath.Dir(tk.Inputs["data"]), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(tk.Inputs["data"], []byte("rows\n"), 0o444); err != nil {
				t.Fatal(err)
			}
			var read func() string
			if kind == "file" {
				f, r := logFile(t)
				tk.Log, read = f, r
			} else {
				var b bytes.Buffer
				tk.Log, read = &b, b.String
			}
			if err := NewExec(time.Second).Run(t.Context(), tk); err != nil {
				t.Fatalf("Run: %v", err)
			}
			want := tk.Dir + "\nbar baz\ns\nunset\nto-stderr\nrows\n"
			if got := read(); got != want {
				t.Errorf("log:\n%q\nwant:\n%q", got, want)
			}
		})
	}
}

// waitFor waits until every file exists, failing if Run returns first.
func waitFor(t *testing.T, runErr <-chan error, files ...string) {
	t.Helper()
	for _, f := range files {
		for {
			if _, err := os.Stat(f); err == nil {
				break
			}
			select {
			case err := <-runErr:
				t.Fatalf("Run returned before %s appeared: %v", filepath.Base(f), err)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
}

// waitRun returns Run's result once it is known that the command has ended
// (ended reports true; nil: already known). Run should then return at once; a
// Run that does not within hangAfter is reported as hung rather than hanging
// the test.
func waitRun(t *testing.T, runErr <-chan error, what string, ended func() bool) error {
	t.Helper()
	const hangAfter = 3 * time.Second // a hang guard, not a timing claim
	for ended != nil && !ended() {
		select {
		case err := <-runErr:
			return err
		case <-time.After(5 * time.Millisecond):
		}
	}
	select {
	case err := <-runErr:
		return err
	case <-time.After(hangAfter):
		t.Errorf("Run hangs: %s, and Run has not returned %v later", what, hangAfter)
		return errHung
	}
}

func exists(path string) func() bool {
	return func() bool { _, err := os.Stat(path); return err == nil }
}

var errHung = errors.New("Run hung")

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z' && b[i+2] != 'X'
}

func readPid(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("pid file %s: %q", path, b)
	}
	return pid
}

// waitDead waits for pid to die (a SIGKILL lands asynchronously).
func waitDead(t *testing.T, pid int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second) // a hang guard, not a timing claim
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscallKill(pid)
			t.Errorf("%s (pid %d) is still running after Run returned", what, pid)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Cancelling ctx sends SIGTERM to the whole process group: the command and
// its child both trap it.
func TestExecRunCancelTerminatesGroup(t *testing.T) {
	tk := task(t)
	d := tk.Dir
	tk.Env = append(tk.Env, "D="+d)
	tk.Command = `
trap 'wait $child; echo term > "$D/parent-term"; exit 0' TERM
( trap 'echo term > "$D/child-term"; exit 0' TERM; touch "$D/child-ready"; while :; do sleep 0.05; done ) &
child=$!
touch "$D/parent-ready"
wait`
	f, read := logFile(t)
	tk.Log = f
	ctx, cancel := context.WithCancelCause(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- NewExec(time.Minute).Run(ctx, tk) }()
	waitFor(t, runErr, filepath.Join(d, "parent-ready"), filepath.Join(d, "child-ready"))
	cause := errors.New("user pressed Ctrl-C")
	cancel(cause)
	// The command exits on SIGTERM (it writes parent-term just before); Run
	// must then return, well before the one-minute grace ends.
	err := waitRun(t, runErr, "the command exited on SIGTERM", exists(filepath.Join(d, "parent-term")))
	if err != errHung && !errors.Is(err, cause) {
		t.Errorf("Run after cancel = %v, want the cancel cause", err)
	}
	for _, f := range []string{"parent-term", "child-term"} {
		if b, err := os.ReadFile(filepath.Join(d, f)); err != nil || string(b) != "term\n" {
			t.Errorf("%s: %q, %v: the process did not get SIGTERM", f, b, err)
		}
	}
	if strings.Contains(read(), "SIGKILL") {
		t.Errorf("SIGKILL sent to a command that exited on SIGTERM:\n%s", read())
	}
}

// The common case: a command that just dies of SIGTERM (as a stage timeout or
// Ctrl-C makes it). Run returns the cause once it is gone.
func TestExecRunCancelPlainCommand(t *testing.T) {
	tk := task(t)
	d := tk.Dir
	tk.Env = append(tk.Env, "D="+d)
	tk.Command = `echo $$ > "$D/pid"; sleep 30`
	tk.Log = &bytes.Buffer{}
	ctx, cancel := context.WithTimeout(t.Context(), time.Hour)
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- NewExec(time.Minute).Run(ctx, tk) }()
	waitFor(t, runErr, filepath.Join(d, "pid"))
	pid := readPid(t, filepath.Join(d, "pid"))
	cancel()
	err := waitRun(t, runErr, "the command died of SIGTERM", func() bool { return !alive(pid) })
	if err != errHung && !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want context.Canceled", err)
	}
}

// A command that ignores SIGTERM is killed after the grace period.
func TestExecRunKillsAfterGrace(t *testing.T) {
	tk := task(t)
	d := tk.Dir
	tk.Env = append(tk.Env, "D="+d)
	tk.Command = `trap '' TERM; echo $$ > "$D/pid"; ( while :; do sleep 1; done ) & echo $! > "$D/child"; while :; do sleep 1; done`
	f, read := logFile(t)
	tk.Log = f
	ctx, cancel := context.WithCancel(t.Context())
	runErr := make(chan error, 1)
	go func() { runErr <- NewExec(50*time.Millisecond).Run(ctx, tk) }()
	waitFor(t, runErr, filepath.Join(d, "pid"), filepath.Join(d, "child"))
	cancel()
	if err := waitRun(t, runErr, "the group was sent SIGKILL after a 50ms grace", nil); err != errHung && !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v, want context.Canceled", err)
	}
	if !strings.Contains(read(), "sending SIGKILL") {
		t.Errorf("log does not say SIGKILL was sent:\n%s", read())
	}
	waitDead(t, readPid(t, filepath.Join(d, "pid")), "the command")
	waitDead(t, readPid(t, filepath.Join(d, "child")), "its child")
}

// A background grandchild does not keep Run waiting once the command has
// exited, and is killed with its group.
func TestExecRunBackgroundGrandchild(t *testing.T) {
	for _, kind := range []string{"file", "buffer"} {
		t.Run(kind, func(t *testing.T) {
			tk := task(t)
			d := tk.Dir
			tk.Env = append(tk.Env, "D="+d)
			// The grandchild holds the log open and, if it lives 3 s, says so.
			tk.Command = `( sleep 3; echo outlived > "$D/outlived" ) & echo $! > "$D/bg"; echo started`
			var read func() string
			if kind == "file" {
				f, r := logFile(t)
				tk.Log, read = f, r
			} else {
				var b bytes.Buffer
				tk.Log, read = &b, b.String
			}
			if err := NewExec(time.Second).Run(t.Context(), tk); err != nil {
				t.Fatalf("Run: %v", err)
			}
			if _, err := os.Stat(filepath.Join(d, "outlived")); err == nil {
				t.Errorf("Run returned only after the background grandchild finished (3 s), not when the command exited")
			}
			waitDead(t, readPid(t, filepath.Join(d, "bg")), "the background grandchild")
			if got := read(); got != "started\n" {
				t.Errorf("log %q", got)
			}
		})
	}
}

type fakeKind struct{ v string }

func (f fakeKind) Version() string                { return f.v }
func (fakeKind) Check(*Decl) []Problem            { return nil }
func (fakeKind) Run(context.Context, *Task) error { return nil }

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	if _, ok := r.Lookup("exec"); ok {
		t.Errorf("empty registry has exec")
	}
	if len(r.Names()) != 0 {
		t.Errorf("empty registry names %v", r.Names())
	}
	r.Register("train", fakeKind{"orch.train.v1"})
	r.Register("exec", NewExec(time.Second))
	r.Register("ingest", fakeKind{"orch.ingest.v3"})
	if k, ok := r.Lookup("train"); !ok || k.Version() != "orch.train.v1" {
		t.Errorf("Lookup(train) = %v, %v", k, ok)
	}
	if k, ok := r.Lookup("exec"); !ok || k.Version() != "orch.exec.v1" {
		t.Errorf("Lookup(exec) = %v, %v", k, ok)
	}
	if _, ok := r.Lookup("Exec"); ok {
		t.Errorf("Lookup is not case-sensitive")
	}
	if got := r.Names(); !reflect.DeepEqual(got, []string{"exec", "ingest", "train"}) {
		t.Errorf("Names() = %v, want sorted", got)
	}
	func() {
		defer func() {
			p := recover()
			if p == nil || !strings.Contains(fmt.Sprint(p), `"train" registered twice`) {
				t.Errorf("second Register of train: panic %v", p)
			}
		}()
		r.Register("train", fakeKind{"other"})
	}()
	if k, _ := r.Lookup("train"); k.Version() != "orch.train.v1" {
		t.Errorf("duplicate Register replaced the kind")
	}
}

func TestEnvName(t *testing.T) {
	for in, want := range map[string]string{
		"features":    "FEATURES",
		"rawData":     "RAWDATA",
		"my-input.v2": "MY_INPUT_V2",
		"a b":         "A_B",
		"x_1":         "X_1",
		"ü":           "_",
		"":            "",
	} {
		if got := EnvName(in); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", in, got, want)
		}
	}
}
