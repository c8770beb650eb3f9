package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/history"
)

func newWhyCmd(g *globals) *cobra.Command {
	var params []string
	c := &cobra.Command{
		Use:   "why PIPELINE STAGE",
		Short: "Explain a stage's cache decision against its recorded history",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := g.load(args[0], params)
			if err != nil {
				return err
			}
			if _, ok := p.Stages[args[1]]; !ok {
				return badInput(fmt.Errorf("pipeline %s has no stage %q (stages: %s)", p.Name, args[1], strings.Join(p.Names(), ", ")))
			}
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			w, err := e.Why(c.Context(), p, args[1])
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			sp := w.Plan
			fmt.Fprintf(out, "%s %s: %s", p.Name, sp.Stage, sp.Status)
			if !sp.Key.IsZero() {
				fmt.Fprintf(out, " (key %s)", sp.Key)
			}
			fmt.Fprintln(out)
			switch sp.Status {
			case engine.Wait:
				fmt.Fprintf(out, "  waits for %s: its key is known only after they run\n", strings.Join(sp.WaitsFor, ", "))
			case engine.Hit:
				fmt.Fprintf(out, "  a record for this key is in the cache; its outputs are restored (saves %s)\n", fmtDur(sp.LastDuration))
			}
			for _, r := range sp.Reasons {
				fmt.Fprintf(out, "  reason: %s\n", r)
			}
			if w.Last == nil {
				fmt.Fprintln(out, "no earlier record of this stage is in the cache")
				return nil
			}
			fmt.Fprintf(out, "\nagainst its last record %s (%s, took %s):\n", w.Last.Key.Short(), w.Last.Started.Local().Format(time.DateTime), fmtDur(w.Last.Duration))
			if len(w.Diff) == 0 {
				fmt.Fprintln(out, "  pre-image identical")
			}
			for _, l := range w.Diff {
				fmt.Fprintf(out, "  %s\n", l)
			}
			if w.Nearest != nil {
				fmt.Fprintf(out, "\nnearest other cached record %s (%s):", w.Nearest.Key.Short(), w.Nearest.Started.Local().Format(time.DateTime))
				if len(w.NearestReasons) == 0 {
					fmt.Fprintln(out, " identical pre-image")
				} else {
					fmt.Fprintf(out, " differs only in %s\n", strings.Join(w.NearestReasons, "; "))
				}
			}
			return nil
		},
	}
	c.Flags().StringArrayVarP(&params, "param", "p", nil, "override a pipeline param: name=value (repeatable)")
	return c
}

func newDagCmd(g *globals) *cobra.Command {
	var format string
	c := &cobra.Command{
		Use:   "dag PIPELINE",
		Short: "Print the pipeline's graph as text, Graphviz DOT or Mermaid",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := g.load(args[0], nil)
			if err != nil {
				return err
			}
			switch format {
			case "text":
				return p.Graph.Text(c.OutOrStdout())
			case "dot":
				return p.Graph.DOT(c.OutOrStdout(), p.Name)
			case "mermaid":
				return p.Graph.Mermaid(c.OutOrStdout())
			}
			return badInput(fmt.Errorf("--format %q: must be text, dot or mermaid", format))
		},
	}
	c.Flags().StringVar(&format, "format", "text", "text, dot or mermaid")
	return c
}

func newValidateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "validate PIPELINE",
		Short: "Check a pipeline file and report every problem at once",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			p, err := g.load(args[0], nil)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: ok, %d stages\n", p.Name, len(p.Stages))
			printSchedule(c.OutOrStdout(), p.Schedule, time.Now())
			return nil
		},
	}
}

func newRunsCmd(g *globals) *cobra.Command {
	var (
		limit int
		pipe  string
	)
	c := &cobra.Command{
		Use:   "runs [RUN]",
		Short: "List recent runs, or the stages of one (RUN may be a prefix or \"last\")",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			if len(args) == 1 {
				return printRunStages(c, e, args[0])
			}
			runs, err := e.History.Runs(pipe, limit)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RUN\tPIPELINE\tSTATUS\tSTARTED\tDURATION\tHIT\tRAN\tFAILED\tSKIPPED")
			for _, r := range runs {
				res := engine.Result{Run: r}
				hit, ran, failed, skipped := res.Counts()
				dur := "-"
				if !r.Ended.IsZero() {
					dur = fmtDur(r.Ended.Sub(r.Started))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", r.ID, r.Pipeline, r.Status,
					r.Started.Local().Format(time.DateTime), dur, hit, ran, failed, skipped)
			}
			return tw.Flush()
		},
	}
	c.Flags().IntVarP(&limit, "limit", "n", 20, "how many runs to list (0: all)")
	c.Flags().StringVar(&pipe, "pipeline", "", "only runs of this pipeline")
	return c
}

// printRunStages prints what each stage of one run did, with its Slurm job.
func printRunStages(c *cobra.Command, e *engine.Engine, id string) error {
	r, err := e.History.Run(id)
	if err != nil {
		return badInput(err)
	}
	tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "run %s of %s: %s\n", r.ID, r.Pipeline, r.Status)
	fmt.Fprintln(tw, "STAGE\tSTATUS\tDURATION\tATTEMPTS\tSLURM JOB\tSLURM STATE\tKEY")
	for _, s := range r.Stages {
		job, state, key := "-", "-", "-"
		if s.Job != "" {
			job, state = s.Job, s.SlurmState
		}
		if len(s.Key) >= 12 {
			key = s.Key[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.Name, s.Status, fmtDur(s.Duration), s.Attempts, job, state, key)
	}
	return tw.Flush()
}

func newLogsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "logs RUN STAGE",
		Short: "Print a stage's captured output from a run (RUN may be a prefix or \"last\")",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			r, err := e.History.Run(args[0])
			if err != nil {
				return badInput(err)
			}
			var sr *history.StageRun
			var names []string
			for i := range r.Stages {
				names = append(names, r.Stages[i].Name)
				if r.Stages[i].Name == args[1] {
					sr = &r.Stages[i]
				}
			}
			if sr == nil {
				return badInput(fmt.Errorf("run %s has no stage %q (stages: %s)", r.ID, args[1], strings.Join(names, ", ")))
			}
			if sr.Job != "" {
				fmt.Fprintf(c.ErrOrStderr(), "orch: run %s stage %s: Slurm job %s, %s\n", r.ID, sr.Name, sr.Job, sr.SlurmState)
			}
			if sr.Log == "" {
				return fmt.Errorf("run %s stage %s: no log captured (status %s)", r.ID, sr.Name, sr.Status)
			}
			d, err := digest.Parse(sr.Log)
			if err != nil {
				return err
			}
			b, err := e.Cache.ReadBlob(c.Context(), d)
			if err != nil {
				return fmt.Errorf("run %s stage %s: log: %w", r.ID, sr.Name, err)
			}
			_, err = c.OutOrStdout().Write(b)
			return err
		},
	}
}

func newVerifyCmd(g *globals) *cobra.Command {
	var repair bool
	c := &cobra.Command{
		Use:   "verify",
		Short: "Re-hash every cached blob and check every record",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			rep, err := e.Verify(c.Context(), repair)
			if err != nil {
				return err
			}
			out := c.OutOrStdout()
			for _, s := range rep.Corrupt {
				fmt.Fprintln(out, "CORRUPT", s)
			}
			fmt.Fprintf(out, "verified %d blobs (%s) and %d records: %d corrupt", rep.Blobs, fmtBytes(rep.Bytes), rep.Records, len(rep.Corrupt))
			if repair {
				fmt.Fprintf(out, ", %d evicted", rep.Removed)
			}
			fmt.Fprintln(out)
			if len(rep.Corrupt) > 0 && !repair {
				return &exitError{exitFailed, fmt.Errorf("cache has corrupt entries; `orch verify --repair` evicts them")}
			}
			return nil
		},
	}
	c.Flags().BoolVar(&repair, "repair", false, "evict corrupt blobs and records")
	return c
}

func fmtBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
