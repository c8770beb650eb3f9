package pipeline

import (
	"strings"
	"testing"
	"time"
)

func TestParseExecutors(t *testing.T) {
	src := `name: p
executor: slurm
slurm:
  poll: 2s
  memory_factor: 1.5
  max_memory: 64G
  resubmits: 5
  worker: /shared/bin/orch
  pending_timeout: 1h
stages:
  a:
    run: echo a
    resources:
      cpus: 4
      memory: 1.5G
      gpus: 1
      time: 2h
      partition: gpu
      sbatch: [--qos=high, "--account=ml"]
  b:
    run: echo b
    executor: local
    resources: {memory: 512}
`
	p := parse(t, src, nil)
	if got, want := p.Slurm, (Slurm{Poll: 2 * time.Second, MemoryFactor: 1.5, MaxMemory: 64 << 30, Resubmits: 5, Worker: "/shared/bin/orch", PendingTimeout: time.Hour}); got != want {
		t.Errorf("slurm: got %+v, want %+v", got, want)
	}
	a, b := p.Stages["a"], p.Stages["b"]
	if a.Executor != ExecSlurm || b.Executor != ExecLocal {
		t.Errorf("executors: a %q, b %q; want slurm, local", a.Executor, b.Executor)
	}
	want := Resources{CPUs: 4, Memory: 3 << 29, GPUs: 1, Time: 2 * time.Hour, Partition: "gpu", Sbatch: []string{"--qos=high", "--account=ml"}}
	if got := a.Resources; got.CPUs != want.CPUs || got.Memory != want.Memory || got.GPUs != want.GPUs ||
		got.Time != want.Time || got.Partition != want.Partition || strings.Join(got.Sbatch, " ") != strings.Join(want.Sbatch, " ") {
		t.Errorf("resources: got %+v, want %+v", got, want)
	}
	if b.Resources.Memory != 512<<20 {
		t.Errorf("memory: 512 is %d bytes, want 512 MiB", b.Resources.Memory)
	}

	// No executor anywhere: local, and the default slurm settings.
	p = parse(t, "name: p\nstages:\n  a:\n    run: echo a\n", nil)
	if p.Stages["a"].Executor != ExecLocal || p.Slurm != DefaultSlurm {
		t.Errorf("defaults: executor %q, slurm %+v", p.Stages["a"].Executor, p.Slurm)
	}

	// --executor overrides the pipeline's and the stages'.
	o := opts(nil)
	o.Executor = ExecLocal
	p, err := Parse("pipeline.yaml", []byte(src), o)
	if err != nil {
		t.Fatal(err)
	}
	if p.Stages["a"].Executor != ExecLocal {
		t.Errorf("--executor local: a runs on %q", p.Stages["a"].Executor)
	}
	o.Executor = "slurrm"
	if _, err := Parse("pipeline.yaml", []byte(src), o); err == nil || !strings.Contains(err.Error(), `--executor "slurrm": must be one of local, slurm (did you mean "slurm"?)`) {
		t.Errorf("--executor slurrm: %v", err)
	}
}

func TestParseExecutorErrors(t *testing.T) {
	src := `name: p
executor: slrum
slurm:
  poll: soon
  memory_factor: 0.5
  max_memory: lots
  retries: 2
stages:
  a:
    run: echo a
    executor: [slurm]
    resources:
      cpus: -1
      memory: 2X
      gpus: two
      time: 0s
      sbatch: [--mem=4G, --qos=high, qos=low, --wrap=ls]
      disk: 10G
`
	got := render(t, parseErrs(t, src, nil))
	want := `pipeline.yaml:2:11: executor "slrum": must be one of local, slurm (did you mean "slurm"?)
    2 | executor: slrum
      |           ^
pipeline.yaml:4:9: slurm.poll "soon" is not a positive duration (examples: 90s, 10m, 1h30m)
    4 |   poll: soon
      |         ^
pipeline.yaml:5:18: slurm.memory_factor must be a number from 1 to 64, got "0.5"
    5 |   memory_factor: 0.5
      |                  ^
pipeline.yaml:6:15: slurm.max_memory: memory "lots" is not a size (examples: 512M, 8G, 1.5G)
    6 |   max_memory: lots
      |               ^
pipeline.yaml:7:3: unknown key "retries" in slurm
    7 |   retries: 2
      |   ^
pipeline.yaml:11:15: executor must be a string, got a list
   11 |     executor: [slurm]
      |               ^
pipeline.yaml:13:13: resources.cpus must be a whole number from 0 to 4096, got "-1"
   13 |       cpus: -1
      |             ^
pipeline.yaml:14:15: resources.memory: memory "2X" is not a size (examples: 512M, 8G, 1.5G)
   14 |       memory: 2X
      |               ^
pipeline.yaml:15:13: resources.gpus must be a whole number from 0 to 64, got "two"
   15 |       gpus: two
      |             ^
pipeline.yaml:16:13: resources.time "0s" is not a positive duration (examples: 90s, 10m, 1h30m)
   16 |       time: 0s
      |             ^
pipeline.yaml:17:16: resources.sbatch: --mem is set by orch from resources.memory; set that instead
   17 |       sbatch: [--mem=4G, --qos=high, qos=low, --wrap=ls]
      |                ^
pipeline.yaml:17:38: resources.sbatch: "qos=low" is not an sbatch option (write --name=value)
   17 |       sbatch: [--mem=4G, --qos=high, qos=low, --wrap=ls]
      |                                      ^
pipeline.yaml:17:47: resources.sbatch: --wrap is set by orch itself
   17 |       sbatch: [--mem=4G, --qos=high, qos=low, --wrap=ls]
      |                                               ^
pipeline.yaml:18:7: unknown key "disk" in resources
   18 |       disk: 10G
      |       ^
14 problems`
	if got != want {
		t.Errorf("errors:\n%s\n\nwant:\n%s", got, want)
	}
}

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]int64{"512M": 512 << 20, "8G": 8 << 30, "1.5G": 3 << 29, "100": 100 << 20, "2048K": 2 << 20, "1T": 1 << 40, "4GiB": 4 << 30, "4gb": 4 << 30} {
		if got, err := ParseMemory(in); err != nil || got != want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "-1G", "1X", "12K", "1.5.2G"} {
		if _, err := ParseMemory(in); err == nil {
			t.Errorf("ParseMemory(%q): no error", in)
		}
	}
}

// sbatch options that break orch's tracking of a stage's one job (arrays,
// holds, sbatch --wait, dependencies) are refused in every spelling.
func TestParseSbatchTrackingOptions(t *testing.T) {
	src := `name: p
stages:
  a:
    run: echo a
    resources:
      sbatch:
        - --array=0-3
        - -a1-3
        - --hold
        - -H
        - --wait
        - -W
        - --dependency=afterok:1
        - -d afterok:1
        - -o/tmp/x
        - --qos=high
        - -q high
        - --arr=0-3
        - --dep afterok:1
        - --w
        - --out=/tmp/x
        - --mem-per-cpu=2G
        - --qo=high
`
	got := render(t, parseErrs(t, src, nil))
	for i, want := range []string{
		`pipeline.yaml:7:11: resources.sbatch: --array makes a job array (orch watches one job per stage); orch cannot track such a job`,
		`pipeline.yaml:8:11: resources.sbatch: -a makes a job array`,
		`pipeline.yaml:9:11: resources.sbatch: --hold holds the job, which would pend forever`,
		`pipeline.yaml:10:11: resources.sbatch: -H holds the job`,
		`pipeline.yaml:11:11: resources.sbatch: --wait makes sbatch wait for the job to end`,
		`pipeline.yaml:12:11: resources.sbatch: -W makes sbatch wait`,
		`pipeline.yaml:13:11: resources.sbatch: --dependency makes the job wait for other jobs`,
		`pipeline.yaml:14:11: resources.sbatch: -d makes the job wait for other jobs`,
		`pipeline.yaml:15:11: resources.sbatch: -o is set by orch itself`,
		`pipeline.yaml:18:11: resources.sbatch: --arr (an abbreviation of --array) makes a job array`,
		`pipeline.yaml:19:11: resources.sbatch: --dep (an abbreviation of --dependency) makes the job wait`,
		`pipeline.yaml:20:11: resources.sbatch: --w abbreviates --wait and --wrap, which orch sets or refuses`,
		`pipeline.yaml:21:11: resources.sbatch: --out (an abbreviation of --output) is set by orch itself`,
		"13 problems",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("%d: errors lack %q:\n%s", i, want, got)
		}
	}
	if strings.Contains(got, "qo") || strings.Contains(got, "-q") || strings.Contains(got, "mem-per-cpu") {
		t.Errorf("--qos, --qo, -q or --mem-per-cpu are refused:\n%s", got)
	}
}
