package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/store"
)

// tieredOf returns the engine's tiered store, or nil without a remote.
func tieredOf(e *engine.Engine) *store.Tiered {
	t, _ := e.Cache.Store.(*store.Tiered)
	return t
}

// remoteMsg strips the remote's name from the front of err's text (the
// caller names it already).
func remoteMsg(t *store.Tiered, err error) string {
	return strings.TrimPrefix(err.Error(), t.Name+": ")
}

func newCacheCmd(g *globals) *cobra.Command {
	c := &cobra.Command{
		Use:   "cache",
		Short: "Inspect the cache (see also gc, push, pull, verify)",
	}
	c.AddCommand(newCacheStatsCmd(g))
	return c
}

type statsJSON struct {
	Local      *engine.StoreStats `json:"local"`
	LocalDir   string             `json:"local_dir"`
	Remote     *engine.StoreStats `json:"remote,omitempty"`
	RemoteName string             `json:"remote_name,omitempty"`
	RemoteErr  string             `json:"remote_error,omitempty"`
	Runs       *engine.HitStats   `json:"runs"`
	Pipelines  []*engine.HitStats `json:"pipelines"`
}

func newCacheStatsCmd(g *globals) *cobra.Command {
	var (
		runs   int
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "stats",
		Short: "Entries and bytes of the local and remote caches, and the hit rate of recent runs",
		Long: `stats counts the records (one per cached stage result), blobs and bytes of
the local cache and, with --remote or ORCH_REMOTE, of the remote cache with its
leases (stages being computed right now). The hit rate is over the stages of
this workspace's recent runs: restored / (restored + executed).`,
		Args: func(c *cobra.Command, args []string) error {
			if err := cobra.NoArgs(c, args); err != nil {
				return badInput(fmt.Errorf("%s: %w", c.CommandPath(), err))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if runs < 0 {
				return badInput(fmt.Errorf("--runs %d: must be 0 (all) or more", runs))
			}
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			ctx := c.Context()
			out := statsJSON{LocalDir: e.Local.Root()}
			if out.Local, err = engine.StatsOf(ctx, e.Local, e.Now()); err != nil {
				return fmt.Errorf("local cache: %w", err)
			}
			var remoteErr error
			if t := tieredOf(e); t != nil {
				out.RemoteName = t.Name
				if out.Remote, remoteErr = engine.StatsOf(ctx, t.Remote, e.Now()); remoteErr != nil {
					out.RemoteErr = remoteMsg(t, remoteErr)
				}
			}
			if out.Runs, out.Pipelines, err = e.RecentHits(runs); err != nil {
				return err
			}
			w := c.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				printStats(w, &out, runs)
			}
			if remoteErr != nil {
				return fmt.Errorf("remote %s unavailable: %s", out.RemoteName, out.RemoteErr)
			}
			return nil
		},
	}
	c.Flags().IntVar(&runs, "runs", 20, "how many recent runs the hit rate covers (0: all)")
	c.Flags().BoolVar(&asJSON, "json", false, "print the statistics as JSON")
	return c
}

func printStats(w io.Writer, s *statsJSON, runs int) {
	line := func(st *engine.StoreStats) string {
		return fmt.Sprintf("%s, %s, %s", plural(st.Records, "record"), plural(st.Blobs, "blob"), fmtBytes(st.Bytes))
	}
	fmt.Fprintf(w, "local  %s: %s\n", s.LocalDir, line(s.Local))
	switch {
	case s.RemoteErr != "":
		fmt.Fprintf(w, "remote %s: unavailable: %s\n", s.RemoteName, s.RemoteErr)
	case s.Remote != nil:
		fmt.Fprintf(w, "remote %s: %s", s.RemoteName, line(s.Remote))
		if s.Remote.HasLeases {
			fmt.Fprintf(w, "; %s", plural(s.Remote.Leases, "lease"))
			if s.Remote.Leases > 0 {
				fmt.Fprintf(w, " (%d live: stages being computed)", s.Remote.LiveLeases)
			}
		}
		fmt.Fprintln(w)
	}
	r := s.Runs
	if r.Runs == 0 {
		fmt.Fprintln(w, "runs   none recorded in this workspace")
		return
	}
	which := fmt.Sprintf("last %s", plural(r.Runs, "run"))
	if runs == 0 || r.Runs < runs {
		which = fmt.Sprintf("all %s", plural(r.Runs, "run"))
	}
	fmt.Fprintf(w, "runs   %s: %s\n", which, hitLine(r))
	if len(s.Pipelines) > 1 {
		for _, p := range s.Pipelines {
			fmt.Fprintf(w, "  %s: %s, %s\n", p.Pipeline, plural(p.Runs, "run"), hitLine(p))
		}
	}
}

func hitLine(h *engine.HitStats) string {
	rate := "no stage needed"
	if hr := h.HitRate(); hr >= 0 {
		rate = fmt.Sprintf("hit rate %.0f%%", 100*hr)
	}
	return fmt.Sprintf("%s (%d of %d stages restored, %d ran, %d failed); the cache saved %s",
		rate, h.Hits, h.Hits+h.Ran+h.Failed, h.Ran, h.Failed, fmtDur(h.Saved))
}

// fmtAgo renders how long ago t was: "45s", "3m", "5h", "12d".
func fmtAgo(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}
