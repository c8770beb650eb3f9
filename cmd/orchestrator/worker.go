package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/stages"
)

// newWorkerCmd is `orch worker SPEC`, what a Slurm job of the Slurm
// executor runs on its compute node. Hidden: users never type it.
func newWorkerCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    "worker SPEC",
		Short:  "Run one stage for a Slurm job (used by the Slurm executor)",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			spec, err := engine.DecodeWorkerSpec(args[0])
			if err != nil {
				return badInput(err)
			}
			if g.workspace == "" {
				g.workspace = spec.Root
			}
			var params []string
			for k, v := range spec.Params {
				params = append(params, k+"="+v)
			}
			sort.Strings(params)
			p, err := g.load(spec.Pipeline, params)
			if err != nil {
				return err
			}
			// The worker's own state (memo, attempt directories) stays on
			// the node; only the cache is shared.
			g.stateDir, err = os.MkdirTemp("", "orch-worker-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(g.stateDir)
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			log := c.ErrOrStderr()
			err = e.Work(c.Context(), p, spec, func(ev engine.Event) {
				switch ev.Type {
				case engine.EvStart, engine.EvRan, engine.EvWarn:
					// A failure is printed once, with the log's tail, on exit.
					fmt.Fprintf(log, "orch worker: %s %s %s\n", ev.Type, ev.Stage, ev.Reason)
				}
			})
			var ee *stages.ExitError
			var refused *engine.RefusedError
			if errors.As(err, &refused) {
				// The orchestrator reads this line and fails the stage at once.
				fmt.Fprintf(log, "%s%v\n", engine.RefusedMark, refused)
				return &exitError{engine.RefusedExit, nil}
			}
			if errors.As(err, &ee) {
				// The stage's own exit status is the job's.
				return &exitError{ee.Code, fmt.Errorf("stage %q: %w", spec.Stage, err)}
			}
			return err
		},
	}
}

// workerConfig is how Slurm jobs run this orch: the same binary (at the
// same path on the nodes), the same remote, the same kill grace.
func (g *globals) workerConfig() engine.Worker {
	w := engine.Worker{CacheDir: os.Getenv("ORCH_WORKER_CACHE_DIR")}
	if bin := os.Args[0]; strings.Contains(bin, "/") {
		w.Bin, _ = filepath.Abs(bin)
	} else if path, err := exec.LookPath(bin); err == nil {
		w.Bin, _ = filepath.Abs(path)
	}
	if w.Bin == "" {
		w.Bin, _ = os.Executable()
	}
	if g.remote != "" {
		w.Args = append(w.Args, "--remote", g.remote)
	}
	w.Args = append(w.Args, "--kill-grace", g.killGrace.String())
	return w
}
