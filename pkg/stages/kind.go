package stages

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/orch-dev/orch/pkg/digest"
)

// Param is one stage parameter after interpolation.
type Param struct {
	// Text is the canonical text: a YAML scalar as written, or canonical
	// JSON for lists and maps. It enters the cache key and the environment.
	Text string
	// Value is the decoded value (string, int, float64, bool, nil, []any,
	// map[string]any), for kinds that want typed params.
	Value any
}

// Decl is what a kind sees of a stage declaration when the pipeline is loaded.
type Decl struct {
	Stage   string
	Run     string // the command template; empty for built-in kinds
	Params  map[string]Param
	Inputs  []string // input names
	Outputs []string // output names
}

// Problem is one thing wrong with a Decl. Field names the offending part as a
// dotted path into the stage ("run", "params.rows", "outputs"), so the loader
// can point at its line.
type Problem struct {
	Field string
	Msg   string
}

// Task is one attempt of a stage.
type Task struct {
	Pipeline string
	Stage    string
	// Dir is the workspace root, the command's working directory.
	Dir string
	// Command is the command with every {{...}} expanded (exec only).
	Command string
	Params  map[string]Param
	// Inputs and Outputs map names to absolute paths. Inputs exist and are
	// read-only; outputs do not exist yet and the kind must create each.
	Inputs  map[string]string
	Outputs map[string]string
	// Scratch is an empty directory for the attempt's temporary files.
	Scratch string
	// Env is the complete environment for child processes.
	Env []string
	// Log receives the stage's output; it is captured into the cache.
	Log io.Writer
}

// Kind is one sort of stage.
type Kind interface {
	// Version enters every key of this kind, e.g. "orch.exec.v1".
	Version() string
	// Check validates a declaration and may fill in fixed outputs. It returns
	// every problem it finds.
	Check(d *Decl) []Problem
	// Run performs one attempt. It must stop promptly when ctx ends.
	Run(ctx context.Context, t *Task) error
}

// Volatile is implemented by kinds whose result depends on workspace state
// besides their declared inputs (validate's gate against the deployed
// model). The engine puts what State returns into the stage's key, so a
// cached result is reused only while that state is the same. "" means that
// nothing outside the inputs matters now.
type Volatile interface {
	State(q StateQuery) (string, error)
}

// StateQuery is what Volatile.State is asked with.
type StateQuery struct {
	Root     string // the workspace root
	Pipeline string
	Params   map[string]Param
	// Inputs are the content digests of the stage's inputs, by name.
	Inputs map[string]digest.Digest
}

// Registry maps kind names to kinds.
type Registry struct {
	kinds map[string]Kind
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{kinds: map[string]Kind{}} }

// Register adds k under name; registering a name twice panics (a programming
// error in main).
func (r *Registry) Register(name string, k Kind) {
	if _, dup := r.kinds[name]; dup {
		panic(fmt.Sprintf("stages: kind %q registered twice", name))
	}
	r.kinds[name] = k
}

// Lookup returns the kind registered under name.
func (r *Registry) Lookup(name string) (Kind, bool) {
	k, ok := r.kinds[name]
	return k, ok
}

// Names returns the registered kind names, sorted.
func (r *Registry) Names() []string {
	ns := make([]string, 0, len(r.kinds))
	for n := range r.kinds {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	return ns
}

// ExitError is returned by a kind whose process exited non-zero.
type ExitError struct {
	Code int
}

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// EnvName turns a name into the upper-case suffix of ORCH_INPUT_X and friends:
// letters and digits upper-cased, anything else '_'.
func EnvName(name string) string {
	var b strings.Builder
	for _, r := range name {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
