package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/orch-dev/orch/pkg/engine"
)

func newPlanCmd(g *globals) *cobra.Command {
	var (
		asJSON, detailed, forceAll bool
		force, params              []string
	)
	c := &cobra.Command{
		Use:   "plan PIPELINE [STAGE...]",
		Short: "Show what a run would do and why, running nothing",
		Long: `Plan prints one line per stage: HIT (restored from the cache), MISS (will run,
with the reason), or WAIT (below a MISS: its key is known only after the MISS
runs; if the MISS reproduces its output bytes, a WAIT turns into a HIT).` + "\n" + exitCodesHelp,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := g.load(args[0], params)
			if err != nil {
				return err
			}
			sel := engine.Selection{Targets: args[1:], Force: force, ForceAll: forceAll}
			if _, err := engine.Select(p, sel); err != nil {
				return badInput(err)
			}
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			pl, err := e.Plan(c.Context(), p, sel)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(pl); err != nil {
					return err
				}
			} else {
				printPlan(c.OutOrStdout(), pl)
			}
			if _, miss, wait := pl.Counts(); detailed && miss+wait > 0 {
				return &exitError{code: exitChanges, err: fmt.Errorf("")}
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	fl.BoolVar(&detailed, "detailed-exitcode", false, "exit 2 when any stage would run")
	fl.StringArrayVar(&force, "force", nil, "plan STAGE as forced (repeatable)")
	fl.BoolVar(&forceAll, "force-all", false, "plan every stage as forced")
	fl.StringArrayVarP(&params, "param", "p", nil, "override a pipeline param: name=value (repeatable)")
	return c
}

func printPlan(w io.Writer, pl *engine.Plan) {
	width := 5
	for _, s := range pl.Stages {
		width = max(width, len(s.Stage))
	}
	for _, s := range pl.Stages {
		key := "-           "
		if !s.Key.IsZero() {
			key = s.Key.Short()
		}
		why := strings.Join(s.Reasons, "; ")
		if s.Status == engine.Wait {
			why = "after " + strings.Join(s.WaitsFor, ", ") + prefixIf("; ", why)
		}
		line := fmt.Sprintf("%-4s  %-*s  %s  %6s  %s", s.Status, width, s.Stage, key, fmtDur(s.LastDuration), why)
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	hit, miss, wait := pl.Counts()
	fmt.Fprintf(w, "%s: %d stages: %d HIT, %d MISS, %d WAIT\n", pl.Pipeline, len(pl.Stages), hit, miss, wait)
}

func prefixIf(prefix, s string) string {
	if s == "" {
		return ""
	}
	return prefix + s
}
