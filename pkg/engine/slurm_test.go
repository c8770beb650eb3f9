package engine

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/slurm"
)

func TestSlurmOptions(t *testing.T) {
	x := &slurmExec{r: &runner{p: &pipeline.Pipeline{Name: "p", Root: "/ws"}}}
	st := &pipeline.Stage{Name: "train", Timeout: 90 * time.Second, Resources: pipeline.Resources{
		CPUs: 4, GPUs: 1, Partition: "gpu", Sbatch: []string{"--qos=high"},
	}}
	got := strings.Join(x.options(st, 1536<<20, "/ws/.orch/tmp/R/train"), " ")
	want := "--job-name=orch.p.train --output=/ws/.orch/tmp/R/train/job-%j.log --chdir=/ws --no-requeue " +
		"--cpus-per-task=4 --mem=1536M --gres=gpu:1 --time=3 --partition=gpu --qos=high"
	if got != want {
		t.Errorf("options:\n got %s\nwant %s", got, want)
	}
	// resources.time wins over the stage timeout, rounded up to minutes.
	st = &pipeline.Stage{Name: "s", Timeout: time.Hour, Resources: pipeline.Resources{Time: 61 * time.Second}}
	if got := strings.Join(x.options(st, 0, "/d"), " "); !strings.HasSuffix(got, "--no-requeue --time=2") {
		t.Errorf("options with time: %s", got)
	}
}

func TestSlurmGrow(t *testing.T) {
	for _, tc := range []struct {
		factor    float64
		max, from int64
		want      int64
	}{
		{2, 0, 100 << 20, 200 << 20},         // no limit
		{4, 1 << 30, 100 << 20, 400 << 20},   // under the limit
		{4, 150 << 20, 100 << 20, 150 << 20}, // capped at the limit
		{4, 150 << 20, 150 << 20, 150 << 20}, // at the limit: cannot grow
		{2, 0, 0, 0},                         // no memory asked: nothing to grow
		{1, 0, 100 << 20, 100 << 20},         // factor 1: no growth
		{4, 0, 3 << 60, math.MaxInt64},       // no overflow past the largest size
	} {
		x := &slurmExec{cfg: pipeline.Slurm{MemoryFactor: tc.factor, MaxMemory: tc.max}}
		if got := x.grow(tc.from); got != tc.want {
			t.Errorf("grow(%d) with factor %v, max %d = %d, want %d", tc.from, tc.factor, tc.max, got, tc.want)
		}
	}
}

func TestSlurmDescribe(t *testing.T) {
	for in, want := range map[slurm.Info]string{
		{State: slurm.Failed, Exit: 3, Reason: "NonZeroExitCode"}:      "FAILED (exit 3)",
		{State: slurm.Failed, Signal: 9, Reason: "JobLaunchFailure"}:   "FAILED (signal 9)",
		{State: slurm.OutOfMemory, Signal: 125, Reason: "OutOfMemory"}: "OUT_OF_MEMORY (OutOfMemory)",
		{State: slurm.Timeout, Signal: 15, Reason: "TimeLimit"}:        "TIMEOUT (TimeLimit)",
		{State: slurm.Completed, Reason: "None"}:                       "COMPLETED",
	} {
		if got := describe(in); got != want {
			t.Errorf("describe(%+v) = %q, want %q", in, got, want)
		}
	}
}

func TestWorkerSpecRoundTrip(t *testing.T) {
	s := &WorkerSpec{Pipeline: "/ws/p.yaml", Root: "/ws", Stage: "b", Key: strings.Repeat("ab", 32), Params: map[string]string{"q": "it's"}}
	got, err := DecodeWorkerSpec(s.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Pipeline != s.Pipeline || got.Stage != s.Stage || got.Key != s.Key || got.Params["q"] != "it's" {
		t.Errorf("round trip: %+v", got)
	}
	if strings.ContainsAny(s.Encode(), "'\" \n$") {
		t.Errorf("encoded spec is not one shell-safe word: %s", s.Encode())
	}
	if _, err := DecodeWorkerSpec("e30"); err == nil { // "{}"
		t.Error("empty spec: no error")
	}
}
