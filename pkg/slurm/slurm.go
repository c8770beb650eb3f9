package slurm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Job states orch distinguishes; any other state is passed through.
const (
	Pending     = "PENDING"
	Running     = "RUNNING"
	Completed   = "COMPLETED"
	Failed      = "FAILED"
	Timeout     = "TIMEOUT"
	OutOfMemory = "OUT_OF_MEMORY"
	NodeFail    = "NODE_FAIL"
	Cancelled   = "CANCELLED"
	Preempted   = "PREEMPTED"
	BootFail    = "BOOT_FAIL"
	Deadline    = "DEADLINE"
)

// terminal are the states a job does not leave.
var terminal = map[string]bool{
	Completed: true, Failed: true, Timeout: true, OutOfMemory: true, NodeFail: true,
	Cancelled: true, Preempted: true, BootFail: true, Deadline: true,
}

// Terminal reports whether a job in state s has ended.
func Terminal(s string) bool { return terminal[s] }

// stuckReasons are the reasons of a PENDING job that do not resolve on their
// own: an operator has to release the job, bring a partition or node back,
// or fix an account, a QOS or a limit.
var stuckReasons = []string{
	"JobHeldUser", "JobHeldAdmin", "PartitionDown", "PartitionInactive", "PartitionConfig",
	"PartitionNodeLimit", "PartitionTimeLimit", "ReqNodeNotAvail", "NodeDown", "BadConstraints",
	"DependencyNeverSatisfied", "InvalidAccount", "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed",
}

// Stuck reports whether a PENDING job's reason is one that does not
// resolve on its own ("ReqNodeNotAvail, UnavailableNodes:n1" included).
func Stuck(reason string) bool {
	for _, r := range stuckReasons {
		if reason == r || strings.HasPrefix(reason, r+",") || strings.HasPrefix(reason, r+" ") {
			return true
		}
	}
	return false
}

// Info is what Slurm says about one job.
type Info struct {
	ID     string
	State  string
	Exit   int // the batch script's exit status (0 if killed by a signal)
	Signal int // the signal that ended it, if any
	Reason string
}

// ParseSqueue reads `squeue --json` output (the openapi v0.0.38 dump of
// Slurm 22.05 and later) into jobs by ID.
func ParseSqueue(b []byte) (map[string]Info, error) {
	var doc struct {
		Errors []json.RawMessage `json:"errors"`
		Jobs   []struct {
			ID       json.Number `json:"job_id"`
			State    json.RawMessage
			JobState json.RawMessage `json:"job_state"`
			Exit     json.RawMessage `json:"exit_code"`
			Reason   string          `json:"state_reason"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("squeue --json: %w", err)
	}
	if doc.Jobs == nil || (len(doc.Jobs) == 0 && len(doc.Errors) > 0) {
		return nil, fmt.Errorf("squeue --json: no \"jobs\" in the output (errors: %s)", joinRaw(doc.Errors))
	}
	jobs := make(map[string]Info, len(doc.Jobs))
	for _, j := range doc.Jobs {
		in := Info{ID: j.ID.String(), State: jsonState(j.JobState), Reason: j.Reason}
		in.Exit, in.Signal = jsonExit(j.Exit)
		jobs[in.ID] = in
	}
	return jobs, nil
}

// jsonState reads job_state: a string (22.05) or a list of strings (23.x).
func jsonState(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var l []string
	if json.Unmarshal(raw, &l) == nil && len(l) > 0 {
		return l[0]
	}
	return ""
}

// jsonExit reads exit_code: a wait(2) status (22.05) or an object with
// return_code and signal (23.x).
func jsonExit(raw json.RawMessage) (code, sig int) {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		if n&0x7f != 0 {
			return 0, n & 0x7f
		}
		return (n >> 8) & 0xff, 0
	}
	var o struct {
		Return json.RawMessage `json:"return_code"`
		Signal struct {
			ID json.RawMessage `json:"id"`
		} `json:"signal"`
	}
	if json.Unmarshal(raw, &o) == nil {
		code, sig = jsonInt(o.Return), jsonInt(o.Signal.ID)
	}
	return code, sig
}

// jsonInt reads an integer or Slurm's {"set":…, "number":…}.
func jsonInt(raw json.RawMessage) int {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return n
	}
	var o struct {
		Number int `json:"number"`
	}
	_ = json.Unmarshal(raw, &o)
	return o.Number
}

func joinRaw(rs []json.RawMessage) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = string(r)
	}
	return strings.Join(parts, "; ")
}

// ParseScontrol reads `scontrol show job -o` output: one job per line of
// Key=Value fields.
func ParseScontrol(b []byte) (map[string]Info, error) {
	jobs := map[string]Info{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var in Info
		for _, f := range strings.Fields(line) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			switch k {
			case "JobId":
				in.ID = v
			case "JobState":
				in.State = v
			case "Reason":
				in.Reason = v
			case "ExitCode":
				c, s, _ := strings.Cut(v, ":")
				in.Exit, _ = strconv.Atoi(c)
				in.Signal, _ = strconv.Atoi(s)
			}
		}
		if in.ID == "" || in.State == "" {
			return nil, fmt.Errorf("scontrol show job: no JobId or JobState in %q", truncate(line, 120))
		}
		jobs[in.ID] = in
	}
	return jobs, sc.Err()
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// ErrBusy marks a refusal that is the controller's, not the job's: it is
// down, busy or timing out. Submitting again later may succeed.
var ErrBusy = errors.New("slurm controller busy or unreachable")

// busyMarks are the messages of sbatch and friends for transient refusals.
var busyMarks = []string{
	"Socket timed out", "Unable to contact slurm controller", "temporarily unable",
	"Resource temporarily unavailable", "Connection refused", "Transport endpoint",
	"Zero Bytes were transmitted", "slurm_persist_conn", "Slurmctld is busy",
	"Too many pending jobs", "Communication connection failure",
}

// isBusy reports whether a command's error output is a transient refusal.
func isBusy(stderr string) bool {
	for _, m := range busyMarks {
		if strings.Contains(stderr, m) {
			return true
		}
	}
	return false
}

// Client runs the Slurm commands; the zero value uses them from PATH
// with this process's environment (SLURM_CONF included).
type Client struct {
	// Env, if set, is the commands' environment.
	Env []string
}

// CommandError is a Slurm command that failed, with what it printed.
type CommandError struct {
	Cmd    string
	Err    error
	Stderr string
	busy   bool
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" {
		msg = e.Err.Error()
	}
	return e.Cmd + ": " + msg
}

func (e *CommandError) Is(target error) bool { return target == ErrBusy && e.busy }
func (e *CommandError) Unwrap() error        { return e.Err }

func (c *Client) command(ctx context.Context, stdin string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.Env
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, &CommandError{Cmd: name, Err: err, Stderr: stderr.String(), busy: isBusy(stderr.String())}
	}
	return out, nil
}

// Submit submits a batch script with sbatch --parsable and the given
// options and returns the job ID. A refusal for a busy or unreachable
// controller is errors.Is(err, ErrBusy).
func (c *Client) Submit(ctx context.Context, opts []string, script string) (string, error) {
	out, err := c.command(ctx, script, "sbatch", append([]string{"--parsable"}, opts...)...)
	if err != nil {
		return "", err
	}
	id, _, _ := strings.Cut(strings.TrimSpace(string(out)), ";") // "ID;CLUSTER" on federations
	if _, err := strconv.ParseUint(id, 10, 64); err != nil {
		return "", fmt.Errorf("sbatch --parsable printed %q, not a job ID", strings.TrimSpace(string(out)))
	}
	return id, nil
}

// Queue returns the jobs of this user the controller lists (pending,
// running and recently ended), in one `squeue --json --me`.
func (c *Client) Queue(ctx context.Context) (map[string]Info, error) {
	out, err := c.command(ctx, "", "squeue", "--json", "--me")
	if err != nil {
		return nil, err
	}
	return ParseSqueue(out)
}

// Show returns what `scontrol show job -o ID` says of one job; ok is false
// when the controller no longer knows it.
func (c *Client) Show(ctx context.Context, id string) (in Info, ok bool, err error) {
	out, err := c.command(ctx, "", "scontrol", "show", "job", "-o", id)
	if err != nil {
		var ce *CommandError
		if errors.As(err, &ce) && strings.Contains(ce.Stderr, "Invalid job id") {
			return Info{}, false, nil
		}
		return Info{}, false, err
	}
	jobs, err := ParseScontrol(out)
	if err != nil {
		return Info{}, false, err
	}
	in, ok = jobs[id]
	return in, ok, nil
}

// Cancel cancels jobs with one scancel.
func (c *Client) Cancel(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := c.command(ctx, "", "scancel", ids...)
	return err
}

// Backoff returns the delay before submission attempt n (from 1) after a
// busy refusal: 1s, 2s, 4s, ... up to 30s.
func Backoff(n int) time.Duration {
	d := time.Second << min(n-1, 5)
	return min(d, 30*time.Second)
}
