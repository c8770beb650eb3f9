package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
	"github.com/orch-dev/orch/pkg/store"
)

type globals struct {
	workspace string
	cacheDir  string
	killGrace time.Duration
	remote    string
	// pipelineRemote is the `cache: {remote: ...}` of the pipeline last
	// loaded; --remote and ORCH_REMOTE take precedence.
	pipelineRemote *store.Remote
	// executor overrides every stage's executor (run --executor).
	executor string
	// stateDir replaces WORKSPACE/.orch (orch worker).
	stateDir string
}

const exitCodesHelp = `
Exit codes:
  0    success: every selected stage succeeded or was cached
  1    a stage failed, or orch could not do what was asked
  2    plan --detailed-exitcode: some stage would run
  3    invalid pipeline file, flags or arguments
  130  interrupted (SIGINT or SIGTERM)
`

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "orch",
		Short: "Run ML pipelines as DAGs of cached stages",
		Long: `orch runs a YAML pipeline of stages as a DAG. Every stage result goes into a
content-addressed cache, so a rerun executes only the stages whose inputs, code
or params changed, and restores the rest.` + "\n" + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return badInput(fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
	})
	pf := root.PersistentFlags()
	pf.StringVarP(&g.workspace, "workspace", "w", "", "workspace root (default: the current directory)")
	pf.StringVar(&g.cacheDir, "cache-dir", os.Getenv("ORCH_CACHE_DIR"), "local cache directory (default: WORKSPACE/.orch/cache; env ORCH_CACHE_DIR)")
	pf.DurationVar(&g.killGrace, "kill-grace", 10*time.Second, "on cancel or timeout, time between SIGTERM and SIGKILL of a stage's processes")
	pf.StringVar(&g.remote, "remote", os.Getenv("ORCH_REMOTE"), "shared cache behind the local one: s3://BUCKET/PREFIX[?endpoint=URL&region=R&path_style=true], file:///PATH or a directory (env ORCH_REMOTE)")
	root.AddCommand(newPushCmd(g), newPullCmd(g), newGCCmd(g), newCacheCmd(g))
	root.AddCommand(newRunCmd(g), newPlanCmd(g), newWhyCmd(g), newDagCmd(g), newValidateCmd(g),
		newRunsCmd(g), newLogsCmd(g), newVerifyCmd(g), newReleasesCmd(g), newRollbackCmd(g), newServeCmd(g), newWorkerCmd(g))
	// Wrong argument counts are bad input (exit 3), like bad flags.
	for _, c := range root.Commands() {
		if check := c.Args; check != nil {
			c.Args = func(c *cobra.Command, args []string) error {
				if err := check(c, args); err != nil {
					return badInput(fmt.Errorf("%s: %w (usage: %s)", c.CommandPath(), err, c.UseLine()))
				}
				return nil
			}
		}
	}
	return root
}

func (g *globals) root() (string, error) {
	ws := g.workspace
	if ws == "" {
		ws = "."
	}
	abs, err := filepath.Abs(ws)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil || !fi.IsDir() {
		return "", badInput(fmt.Errorf("--workspace %s: not a directory", ws))
	}
	return abs, nil
}

func (g *globals) registry() *stages.Registry {
	r := stages.NewRegistry()
	r.Register("exec", stages.NewExec(g.killGrace))
	stages.RegisterBuiltins(r)
	return r
}

// load reads a pipeline file. A relative path is looked up in the current
// directory, then in the workspace.
func (g *globals) load(file string, params []string) (*pipeline.Pipeline, error) {
	root, err := g.root()
	if err != nil {
		return nil, err
	}
	overrides := map[string]string{}
	for _, kv := range params {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, badInput(fmt.Errorf("-p %q: expected name=value", kv))
		}
		overrides[k] = v
	}
	if _, err := os.Stat(file); err != nil && !filepath.IsAbs(file) {
		if _, err2 := os.Stat(filepath.Join(root, file)); err2 == nil {
			file = filepath.Join(root, file)
		}
	}
	opts := pipeline.Options{Root: root, Params: overrides, Kinds: g.registry(), Executor: g.executor}
	// Parsed pipelines are kept under the state directory once it exists
	// (so a validate in a fresh directory still writes nothing).
	state := g.stateDir
	if state == "" {
		state = filepath.Join(root, ".orch")
	}
	if fi, err := os.Stat(state); err == nil && fi.IsDir() {
		opts.SnapshotDir = filepath.Join(state, "pipelines")
	}
	p, err := pipeline.Load(file, opts)
	if err != nil {
		return nil, badInput(err)
	}
	g.pipelineRemote = p.Cache.Remote
	return p, nil
}

func (g *globals) engine() (*engine.Engine, error) { return g.engineFor(g.pipelineRemote) }

// engineFor opens the engine with --remote / ORCH_REMOTE, else the
// pipeline's remote r (nil: none).
func (g *globals) engineFor(r *store.Remote) (*engine.Engine, error) {
	root, err := g.root()
	if err != nil {
		return nil, err
	}
	opts := engine.Options{Root: root, CacheDir: g.cacheDir, StateDir: g.stateDir, Worker: g.workerConfig()}
	if g.remote != "" {
		if r, err = store.ParseRemote(g.remote); err != nil {
			return nil, badInput(fmt.Errorf("--remote: %w", err))
		}
	}
	if r != nil {
		opts.Store = func(local *store.Local) (store.Store, error) {
			// The first remote failure is reported once; the run goes on
			// with the local cache, and `orch push` uploads what it made.
			name := r.String()
			t, err := r.Tiered(context.Background(), local, func(err error) {
				msg := strings.TrimPrefix(err.Error(), name+": ")
				fmt.Fprintf(os.Stderr, "orch: remote %s unavailable: %s; continuing with the local cache\n", name, msg)
			})
			if err != nil {
				return nil, fmt.Errorf("remote %s: %w", name, err)
			}
			return t, nil
		}
	}
	return engine.Open(opts)
}

func fmtDur(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}
