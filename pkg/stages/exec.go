package stages

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/orch-dev/orch/pkg/fsx"
)

// Exec runs a shell command (`run:`) in its own process group.
type Exec struct {
	// Grace is how long a cancelled command gets between SIGTERM and SIGKILL.
	Grace time.Duration
}

// NewExec returns the exec kind with the given kill grace period.
func NewExec(grace time.Duration) *Exec { return &Exec{Grace: grace} }

// Version implements Kind.
func (*Exec) Version() string { return "orch.exec.v1" }

// template is one {{ REF }} in a command: cmd[start:end] is the whole
// reference, ref its name without the braces and surrounding whitespace.
type template struct {
	start, end int
	ref        string
}

// templates finds the {{...}} references of cmd, in order: "{{", optional
// whitespace, a name without braces, optional whitespace, "}}" (the regular
// expression \{\{\s*([^{}]*?)\s*\}\}, scanned by hand: a pipeline of a
// thousand stages is checked on every plan).
func templates(cmd string) []template {
	var ts []template
	for i := 0; i+1 < len(cmd); {
		k := strings.Index(cmd[i:], "{{")
		if k < 0 {
			break
		}
		start := i + k
		j := start + 2
		for j < len(cmd) && cmd[j] != '{' && cmd[j] != '}' {
			j++
		}
		if !strings.HasPrefix(cmd[j:], "}}") {
			i = start + 1
			continue
		}
		ref := strings.Trim(cmd[start+2:j], " \t\n\f\r")
		ts = append(ts, template{start: start, end: j + 2, ref: ref})
		i = j + 2
	}
	return ts
}

// Templates returns the {{...}} references of a command, in order.
func Templates(cmd string) []string {
	var refs []string
	for _, t := range templates(cmd) {
		refs = append(refs, t.ref)
	}
	return refs
}

// Check implements Kind.
func (*Exec) Check(d *Decl) []Problem {
	if strings.TrimSpace(d.Run) == "" {
		return []Problem{{Field: "run", Msg: "an exec stage needs a command in run:"}}
	}
	var ps []Problem
	for _, ref := range Templates(d.Run) {
		if msg := checkRef(ref, d); msg != "" {
			ps = append(ps, Problem{Field: "run", Msg: msg})
		}
	}
	return ps
}

func checkRef(ref string, d *Decl) string {
	if ref == "scratch" {
		return ""
	}
	group, name, ok := strings.Cut(ref, ".")
	var have []string
	switch group {
	case "inputs":
		have = d.Inputs
	case "outputs":
		have = d.Outputs
	case "params":
		for k := range d.Params {
			have = append(have, k)
		}
		sort.Strings(have)
	default:
		return fmt.Sprintf("unknown template {{%s}}: use {{inputs.NAME}}, {{outputs.NAME}}, {{params.NAME}} or {{scratch}}", ref)
	}
	if !ok || name == "" {
		return fmt.Sprintf("template {{%s}} needs a name: {{%s.NAME}}", ref, group)
	}
	for _, h := range have {
		if h == name {
			return ""
		}
	}
	return fmt.Sprintf("template {{%s}}: stage declares no %s %q (have: %s)", ref, strings.TrimSuffix(group, "s"), name, strings.Join(have, ", "))
}

// Expand replaces every {{...}} in cmd with its shell-quoted value.
func Expand(cmd string, t *Task) (string, error) {
	var err error
	var out strings.Builder
	last := 0
	for _, tp := range templates(cmd) {
		ref := tp.ref
		group, name, _ := strings.Cut(ref, ".")
		var v string
		var ok bool
		switch group {
		case "inputs":
			v, ok = t.Inputs[name]
		case "outputs":
			v, ok = t.Outputs[name]
		case "params":
			var p Param
			p, ok = t.Params[name]
			v = p.Text
		case "scratch":
			v, ok = t.Scratch, true
		}
		if !ok && err == nil {
			err = fmt.Errorf("unknown template {{%s}}", ref)
		}
		out.WriteString(cmd[last:tp.start])
		out.WriteString(ShellQuote(v))
		last = tp.end
	}
	out.WriteString(cmd[last:])
	return out.String(), err
}

// shellSafe reports whether s is non-empty and holds only characters sh
// takes literally: [A-Za-z0-9_./=:,+@%-]. (A loop, not a regexp: every
// {{...}} of every command passes here.)
func shellSafe(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("_./=:,+@%-", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// ShellQuote quotes s for sh when it holds anything but safe characters.
func ShellQuote(s string) string {
	if shellSafe(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// devNull is /dev/null, opened once for every command's standard input.
var devNull = sync.OnceValues(func() (*os.File, error) { return fsx.Open(os.DevNull, os.O_RDONLY, 0) })

// Run implements Kind: sh -c COMMAND in the workspace, in a new process
// group. When ctx ends, the group gets SIGTERM, then SIGKILL after Grace.
// Whatever the command left running in its group is killed when it exits.
func (e *Exec) Run(ctx context.Context, t *Task) error {
	command, err := Expand(t.Command, t)
	if err != nil {
		return err
	}
	cmd := exec.Command("/bin/sh", "-c", command)
	cmd.Dir = t.Dir
	cmd.Env = t.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Commands read nothing: one /dev/null for all of them, rather than
	// os/exec opening it for each.
	if null, err := devNull(); err == nil {
		cmd.Stdin = null
	}
	// An *os.File is handed to the child as is: no copying goroutine, so a
	// background grandchild holding the descriptor cannot block Wait.
	cmd.Stdout, cmd.Stderr = t.Log, t.Log
	if f, ok := t.Log.(*os.File); ok {
		cmd.Stdout, cmd.Stderr = f, f
	} else {
		// Output goes through a pipe copied by os/exec; do not let a
		// background grandchild that keeps the pipe open hold Wait.
		cmd.WaitDelay = 100 * time.Millisecond
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start: %w", err)
	}
	pgid := cmd.Process.Pid
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	case <-ctx.Done():
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		timer := time.NewTimer(e.Grace)
		select {
		case <-done:
			timer.Stop()
			_ = syscall.Kill(-pgid, syscall.SIGKILL) // leftovers in the group
		case <-timer.C:
			fmt.Fprintf(t.Log, "\norch: still running %s after SIGTERM; sending SIGKILL\n", e.Grace)
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-done
		}
		return context.Cause(ctx)
	}
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		return nil // exited 0; only a grandchild still held the output pipe
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if st, ok := ee.Sys().(syscall.WaitStatus); ok && st.Signaled() {
			return fmt.Errorf("killed by signal %s", st.Signal())
		}
		return &ExitError{Code: ee.ExitCode()}
	}
	return err
}
