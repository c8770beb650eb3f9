package pipeline

import (
	"time"

	"github.com/orch-dev/orch/pkg/dag"
	"github.com/orch-dev/orch/pkg/stages"
	"github.com/orch-dev/orch/pkg/store"
)

// Pipeline is a loaded, validated pipeline.
type Pipeline struct {
	Name   string
	File   string // absolute path of the YAML file
	Root   string // absolute workspace root
	Params map[string]stages.Param
	// Overrides are the -p values the pipeline was loaded with, as given.
	Overrides map[string]string
	Stages    map[string]*Stage
	// Graph has one node per stage, in declaration order; it has no cycle.
	Graph *dag.Graph
	// Cache is the top-level `cache:` section.
	Cache Cache
	// Description is the top-level `description:`.
	Description string
	// Schedule is the `schedule:` section (schedule.go), nil if none.
	Schedule *Schedule
	// OnFailure is the `on_failure:` section, nil if none.
	OnFailure *OnFailure
	// Executor is the top-level `executor:` ("" if absent); each stage's
	// Executor is resolved from it.
	Executor string
	// Slurm is the `slurm:` section (DefaultSlurm if absent).
	Slurm Slurm
}

// Cache is a pipeline's `cache:` section.
type Cache struct {
	// Remote is the shared cache behind the local one (`remote:` with its
	// settings), nil if none. --remote and ORCH_REMOTE take precedence.
	Remote *store.Remote
}

// Names returns the stage names in declaration order.
func (p *Pipeline) Names() []string { return p.Graph.Nodes() }

// Stage is one validated stage.
type Stage struct {
	Name     string
	KindName string
	Kind     stages.Kind
	Run      string   // command template (exec)
	Code     []string // workspace-relative files and globs, as declared
	Inputs   []Input  // sorted by name
	Outputs  []Output // sorted by name
	Params   map[string]stages.Param
	Env      []string // declared environment variable names, sorted
	Timeout  time.Duration
	Retries  int
	Cache    bool
	Needs    []string // order-only upstream stages
	// Executor is where a MISS runs: ExecLocal or ExecSlurm.
	Executor  string
	Resources Resources
}

// Input is a named input of a stage.
type Input struct {
	Name   string
	Source string // as written: "prepare.data" or "data/raw.csv"
	// Stage and Output are set when the input is an upstream output.
	Stage  string
	Output string
	// Path is set when the input is a workspace path: relative to Root, or
	// absolute, as written (cleaned).
	Path string
}

// IsRef reports whether the input is an upstream output.
func (in Input) IsRef() bool { return in.Stage != "" }

// Output is a named output of a stage.
type Output struct {
	Name string
	// Path is where, relative to the attempt's output directory, the command
	// writes it; {{outputs.NAME}} expands to its absolute form.
	Path string
}
