package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/orch-dev/orch/pkg/stages"
)

func newReleasesCmd(g *globals) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "releases PIPELINE",
		Short: "List a pipeline's deployed releases (the latest marked *)",
		Args:  cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			root, err := g.root()
			if err != nil {
				return err
			}
			rs, err := stages.Releases(filepath.Join(root, dir), args[0])
			if err != nil {
				return badInput(err)
			}
			tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "\tVERSION\tPUBLISHED\tMODEL\tMETRICS")
			for _, r := range rs {
				mark := ""
				if r.Latest {
					mark = "*"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mark, r.Version, r.Published.Local().Format(time.DateTime), r.Model[:12], metrics(r.Metrics))
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&dir, "dir", "models", "release root of the deploy stage (its dir param), relative to the workspace")
	return c
}

func metrics(m map[string]float64) string {
	// The headline metrics when the report has them; all of them otherwise.
	var keys []string
	for _, k := range []string{"auc", "pr_auc", "logloss", "accuracy"} {
		if _, ok := m[k]; ok {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
	}
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%.4g", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func newRollbackCmd(g *globals) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "rollback PIPELINE VERSION",
		Short: "Point a pipeline's latest release back at VERSION",
		Args:  cobra.ExactArgs(2),
		RunE: func(c *cobra.Command, args []string) error {
			root, err := g.root()
			if err != nil {
				return err
			}
			if err := stages.Rollback(filepath.Join(root, dir), args[0], args[1], time.Now()); err != nil {
				return badInput(err)
			}
			fmt.Fprintf(c.OutOrStdout(), "%s: latest → %s\n", args[0], args[1])
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "models", "release root of the deploy stage (its dir param), relative to the workspace")
	return c
}
