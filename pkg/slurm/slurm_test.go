package slurm

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The testdata files are real output of Slurm 22.05.8 (Debian's
// slurm-wlm), captured on the cluster of scripts/slurm.sh: jobs that
// completed, exited 3, exceeded --mem under cgroup enforcement, hit
// --time, were cancelled, and ran on a node set down under them
// (squeue-running.json keeps 5 of the jobs it listed).

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseSqueue(t *testing.T) {
	for _, tc := range []struct {
		file string
		want map[string]Info
	}{
		{"squeue-running.json", map[string]Info{
			"30": {ID: "30", State: Running, Reason: "None"},
			"32": {ID: "32", State: Pending, Reason: "Resources"},
			"20": {ID: "20", State: OutOfMemory, Signal: 125, Reason: "OutOfMemory"},
		}},
		{"squeue-done.json", map[string]Info{
			"1": {ID: "1", State: Completed, Reason: "None"},
			"2": {ID: "2", State: Failed, Exit: 3, Reason: "NonZeroExitCode"},
			"5": {ID: "5", State: Cancelled, Reason: "Priority"},
			"6": {ID: "6", State: Pending, Reason: "DependencyNeverSatisfied"},
		}},
		{"squeue-timeout.json", map[string]Info{
			"3": {ID: "3", State: OutOfMemory, Signal: 125, Reason: "OutOfMemory"},
			"7": {ID: "7", State: NodeFail, Signal: 15, Reason: "NodeDown"},
			"8": {ID: "8", State: Timeout, Signal: 15, Reason: "TimeLimit"},
		}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			jobs, err := ParseSqueue(read(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			for id, want := range tc.want {
				if got := jobs[id]; got != want {
					t.Errorf("job %s: got %+v, want %+v", id, got, want)
				}
			}
		})
	}
}

func TestParseScontrol(t *testing.T) {
	jobs := map[string]Info{}
	for _, f := range []string{"scontrol.txt", "scontrol-failures.txt", "scontrol-timeout.txt"} {
		js, err := ParseScontrol(read(t, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for id, in := range js {
			jobs[f+":"+id] = in
		}
	}
	for key, want := range map[string]Info{
		"scontrol.txt:1":          {ID: "1", State: Completed, Reason: "None"},
		"scontrol.txt:2":          {ID: "2", State: Failed, Exit: 3, Reason: "NonZeroExitCode"},
		"scontrol.txt:3":          {ID: "3", State: Pending, Reason: "Resources"},
		"scontrol-failures.txt:3": {ID: "3", State: OutOfMemory, Signal: 125, Reason: "OutOfMemory"},
		"scontrol-failures.txt:7": {ID: "7", State: NodeFail, Signal: 15, Reason: "NodeDown"},
		"scontrol-timeout.txt:8":  {ID: "8", State: Timeout, Signal: 15, Reason: "TimeLimit"},
	} {
		if got := jobs[key]; got != want {
			t.Errorf("%s: got %+v, want %+v", key, got, want)
		}
	}
	if len(jobs) != 10 {
		t.Errorf("parsed %d jobs, want 10", len(jobs))
	}
}

func TestParseErrors(t *testing.T) {
	if _, err := ParseSqueue([]byte(`{"errors": [{"error": "Unable to contact slurm controller"}], "jobs": []}`)); err == nil {
		t.Error("squeue output with errors and no jobs: no error")
	}
	if _, err := ParseSqueue([]byte(`not json`)); err == nil {
		t.Error("squeue garbage: no error")
	}
	if _, err := ParseScontrol([]byte("Some=Thing Else=1\n")); err == nil {
		t.Error("scontrol line without JobId: no error")
	}
}

func TestBusy(t *testing.T) {
	for msg, want := range map[string]bool{
		// Captured from sbatch 22.05 with slurmctld stopped.
		"sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n": true,
		"sbatch: error: Batch job submission failed: Socket timed out on send/recv operation\n":              true,
		"sbatch: error: Slurm temporarily unable to accept job, sleeping and retrying\n":                     true,
		"sbatch: error: Batch job submission failed: Invalid partition name specified\n":                     false,
		"sbatch: error: Batch job submission failed: Requested node configuration is not available\n":        false,
	} {
		err := error(&CommandError{Cmd: "sbatch", Err: errors.New("exit status 1"), Stderr: msg, busy: isBusy(msg)})
		if got := errors.Is(err, ErrBusy); got != want {
			t.Errorf("%q: busy = %v, want %v", msg, got, want)
		}
	}
	if Backoff(1) >= Backoff(2) || Backoff(100) > 30*time.Second {
		t.Errorf("Backoff: %v %v %v", Backoff(1), Backoff(2), Backoff(100))
	}
}

func TestStuck(t *testing.T) {
	for reason, want := range map[string]bool{
		"JobHeldUser": true, "JobHeldAdmin": true, "PartitionDown": true, "PartitionConfig": true,
		"ReqNodeNotAvail, UnavailableNodes:n[1-2]": true, "ReqNodeNotAvail": true,
		"Priority": false, "Resources": false, "None": false, "BeginTime": false, "Dependency": false,
		"ReqNodeNotAvailable": false, "": false,
	} {
		if got := Stuck(reason); got != want {
			t.Errorf("Stuck(%q) = %v, want %v", reason, got, want)
		}
	}
}
