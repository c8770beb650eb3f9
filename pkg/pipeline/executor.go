package pipeline

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Executors: where a MISS stage runs.
const (
	ExecLocal = "local" // in the orch process's machine
	ExecSlurm = "slurm" // as a Slurm batch job running `orch worker`
)

// Executors lists the valid `executor:` values.
var Executors = []string{ExecLocal, ExecSlurm}

// Resources is a stage's `resources:`: what it needs to run. The local
// executor treats cpus and memory as concurrency limits; the Slurm executor
// turns every field into sbatch options. None of it enters the cache key.
type Resources struct {
	CPUs      int           // cpus: N (0: unset)
	Memory    int64         // memory: 512M, 8G (bytes; 0: unset)
	GPUs      int           // gpus: N
	Time      time.Duration // time: 2h (Slurm time limit)
	Partition string        // partition: NAME
	Sbatch    []string      // sbatch: [--qos=high, ...] extra flags, verbatim
}

// Slurm is a pipeline's `slurm:` section: how the Slurm executor behaves.
type Slurm struct {
	// Poll is the interval of the batched squeue query.
	Poll time.Duration
	// MemoryFactor multiplies a stage's memory when it is resubmitted after
	// OUT_OF_MEMORY, up to MaxMemory (0: no resubmission for OOM).
	MemoryFactor float64
	MaxMemory    int64
	// Resubmits bounds the resubmissions for failures that are the
	// cluster's (NODE_FAIL, PREEMPTED, OUT_OF_MEMORY) per stage.
	Resubmits int
	// Worker is the path of the orch binary on the compute nodes ("": the
	// orchestrating binary's own path; ORCH_SLURM_WORKER overrides).
	Worker string
	// PendingTimeout bounds how long a job may stay PENDING for a reason
	// that does not resolve on its own (held, partition down or
	// misconfigured, nodes unavailable; slurm.Stuck): then it is cancelled
	// and its stage fails.
	PendingTimeout time.Duration
}

// DefaultSlurm is the `slurm:` section when the pipeline has none.
var DefaultSlurm = Slurm{Poll: 500 * time.Millisecond, MemoryFactor: 2, Resubmits: 3, PendingTimeout: 10 * time.Minute}

var (
	resourceKeys = []string{"cpus", "memory", "gpus", "time", "partition", "sbatch"}
	slurmKeys    = []string{"poll", "memory_factor", "max_memory", "resubmits", "worker", "pending_timeout"}
	memoryRE     = regexp.MustCompile(`^(?i)(\d+(?:\.\d+)?)\s*([KMGT])?(?:i?B)?$`)
	// sbatchOwned are the sbatch options orch sets itself, with the key
	// that sets them instead.
	sbatchOwned = map[string]string{
		"--parsable": "", "--wrap": "", "--output": "", "-o": "", "--error": "", "-e": "",
		"--chdir": "", "-D": "", "--job-name": "", "-J": "", "--no-requeue": "", "--requeue": "",
		"--cpus-per-task": "cpus", "-c": "cpus", "--mem": "memory", "--gpus": "gpus", "-G": "gpus",
		"--gres": "gpus", "--time": "time", "-t": "time", "--partition": "partition", "-p": "partition",
	}
	// sbatchTracking are the sbatch options that break how orch tracks a
	// stage's job (one job, submitted now, watched until it ends), and why.
	sbatchTracking = map[string]string{
		"--array": "makes a job array (orch watches one job per stage)", "-a": "makes a job array (orch watches one job per stage)",
		"--hold": "holds the job, which would pend forever", "-H": "holds the job, which would pend forever",
		"--wait": "makes sbatch wait for the job to end (orch watches it with squeue)", "-W": "makes sbatch wait for the job to end (orch watches it with squeue)",
		"--dependency": "makes the job wait for other jobs (orch orders stages itself)", "-d": "makes the job wait for other jobs (orch orders stages itself)",
	}
)

// sbatchName is the option name of a resources.sbatch entry: "--name" of
// "--name=value" or "--name value", "-x" of "-x", "-xVALUE" or "-x VALUE".
func sbatchName(f string) string {
	if strings.HasPrefix(f, "--") {
		name, _, _ := strings.Cut(f, "=")
		name, _, _ = strings.Cut(name, " ")
		return name
	}
	if len(f) > 2 && f[0] == '-' {
		return f[:2]
	}
	name, _, _ := strings.Cut(f, "=")
	return name
}

// sbatchLong returns the long options orch sets or refuses that name
// abbreviates, as sbatch's getopt_long reads an unambiguous prefix
// ("--arr=0-3" is --array): none for an exact or unrelated name.
func sbatchLong(name string) []string {
	if len(name) < 3 || !strings.HasPrefix(name, "--") {
		return nil
	}
	_, owned := sbatchOwned[name]
	_, tracking := sbatchTracking[name]
	if owned || tracking {
		return nil
	}
	var full []string
	for _, m := range []map[string]string{sbatchOwned, sbatchTracking} {
		for k := range m {
			if strings.HasPrefix(k, name) {
				full = append(full, k)
			}
		}
	}
	slices.Sort(full)
	return full
}

// executorName reads an `executor:` value.
func (l *loader) executorName(v *yaml.Node) string {
	s, ok := l.str(v, "executor")
	if !ok {
		return ""
	}
	if !contains(Executors, s) {
		l.errAt(v, "executor %q: must be one of %s%s", s, strings.Join(Executors, ", "), l.didYouMean(s, Executors))
		return ""
	}
	return s
}

// ParseMemory reads a memory size: a number with an optional K, M, G or T
// suffix (binary units, as sbatch --mem); a bare number is megabytes.
func ParseMemory(s string) (int64, error) {
	m := memoryRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("memory %q is not a size (examples: 512M, 8G, 1.5G)", s)
	}
	f, _ := strconv.ParseFloat(m[1], 64)
	shift := map[string]uint{"": 20, "K": 10, "M": 20, "G": 30, "T": 40}[strings.ToUpper(m[2])]
	b := int64(f * float64(int64(1)<<shift))
	if b < 1<<20 {
		return 0, fmt.Errorf("memory %q is less than 1M", s)
	}
	return b, nil
}

func (l *loader) count(v *yaml.Node, what string, max int) int {
	vv := resolve(v)
	n, err := strconv.Atoi(vv.Value)
	if vv.Kind != yaml.ScalarNode || err != nil || n < 0 || n > max {
		l.errAt(v, "%s must be a whole number from 0 to %d, got %s", what, max, kindName(vv))
		return 0
	}
	return n
}

func (l *loader) duration(v *yaml.Node, what string) time.Duration {
	t, ok := l.str(v, what)
	if !ok {
		return 0
	}
	d, err := time.ParseDuration(t)
	if err != nil || d <= 0 {
		l.errAt(v, "%s %q is not a positive duration (examples: 90s, 10m, 1h30m)", what, t)
		return 0
	}
	return d
}

func (l *loader) memory(v *yaml.Node, what string) int64 {
	s, ok := l.str(v, what)
	if !ok {
		return 0
	}
	b, err := ParseMemory(s)
	if err != nil {
		l.errAt(v, "%s: %v", what, err)
	}
	return b
}

// resources reads a stage's `resources:`.
func (l *loader) resources(n *yaml.Node) Resources {
	var r Resources
	l.mapping(n, "resources", resourceKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "cpus":
			r.CPUs = l.count(v, "resources.cpus", 4096)
		case "gpus":
			r.GPUs = l.count(v, "resources.gpus", 64)
		case "memory":
			r.Memory = l.memory(v, "resources.memory")
		case "time":
			r.Time = l.duration(v, "resources.time")
		case "partition":
			r.Partition, _ = l.str(v, "resources.partition")
		case "sbatch":
			for _, f := range l.strList(v, "resources.sbatch") {
				name := sbatchName(f.Value)
				if !strings.HasPrefix(name, "-") {
					l.errAt(f, "resources.sbatch: %q is not an sbatch option (write --name=value)", f.Value)
					continue
				}
				shown := name
				switch full := sbatchLong(name); {
				case len(full) == 1:
					shown, name = name+" (an abbreviation of "+full[0]+")", full[0]
				case len(full) > 1:
					l.errAt(f, "resources.sbatch: %s abbreviates %s, which orch sets or refuses", name, strings.Join(full, " and "))
					continue
				}
				if instead, owned := sbatchOwned[name]; owned {
					if instead != "" {
						l.errAt(f, "resources.sbatch: %s is set by orch from resources.%s; set that instead", shown, instead)
					} else {
						l.errAt(f, "resources.sbatch: %s is set by orch itself", shown)
					}
					continue
				}
				if why, ok := sbatchTracking[name]; ok {
					l.errAt(f, "resources.sbatch: %s %s; orch cannot track such a job", shown, why)
					continue
				}
				r.Sbatch = append(r.Sbatch, f.Value)
			}
		}
	})
	return r
}

// slurmSection reads the top-level `slurm:` section.
func (l *loader) slurmSection(n *yaml.Node) Slurm {
	s := DefaultSlurm
	l.mapping(n, "slurm", slurmKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "poll":
			s.Poll = l.duration(v, "slurm.poll")
		case "memory_factor":
			vv := resolve(v)
			f, err := strconv.ParseFloat(vv.Value, 64)
			if vv.Kind != yaml.ScalarNode || err != nil || f < 1 || f > 64 {
				l.errAt(v, "slurm.memory_factor must be a number from 1 to 64, got %s", kindName(vv))
			}
			s.MemoryFactor = f
		case "max_memory":
			s.MaxMemory = l.memory(v, "slurm.max_memory")
		case "resubmits":
			s.Resubmits = l.count(v, "slurm.resubmits", 100)
		case "worker":
			s.Worker, _ = l.str(v, "slurm.worker")
		case "pending_timeout":
			s.PendingTimeout = l.duration(v, "slurm.pending_timeout")
		}
	})
	return s
}

// executors gives every stage its executor: the --executor override, else
// its own `executor:`, else the pipeline's, else local.
func (l *loader) executors(p *Pipeline) {
	if o := l.opts.Executor; o != "" && !contains(Executors, o) {
		l.errs = append(l.errs, &ConfigError{File: l.file, Msg: fmt.Sprintf("--executor %q: must be one of %s%s", o, strings.Join(Executors, ", "), l.didYouMean(o, Executors))})
		return
	}
	for _, st := range p.Stages {
		switch {
		case l.opts.Executor != "":
			st.Executor = l.opts.Executor
		case st.Executor == "" && p.Executor != "":
			st.Executor = p.Executor
		case st.Executor == "":
			st.Executor = ExecLocal
		}
	}
}
