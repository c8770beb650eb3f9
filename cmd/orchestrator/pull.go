package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/orch-dev/orch/pkg/engine"
)

// pullJobs is how many blobs `orch pull` downloads at once.
const pullJobs = 16

func newPullCmd(g *globals) *cobra.Command {
	var (
		params []string
		jobs   int
	)
	c := &cobra.Command{
		Use:   "pull PIPELINE [STAGE...]",
		Short: "Prefetch from the remote cache every blob a run would restore",
		Long: `pull plans PIPELINE (as orch plan does) and downloads into the local cache every
blob its HIT stages would restore: their outputs, the files of directory
outputs, and their logs, several at a time, each verified against its digest.
A run afterwards restores them without the network. The remote is --remote,
ORCH_REMOTE or the pipeline's cache: {remote: ...}.` + "\n" + exitCodesHelp,
		Args: cobra.MinimumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			if jobs < 1 {
				return badInput(fmt.Errorf("-j %d: must be at least 1", jobs))
			}
			p, err := g.load(args[0], params)
			if err != nil {
				return err
			}
			sel := engine.Selection{Targets: args[1:]}
			if _, err := engine.Select(p, sel); err != nil {
				return badInput(err)
			}
			if g.remote == "" && g.pipelineRemote == nil {
				return badInput(fmt.Errorf("pull: no remote cache; give --remote s3://BUCKET/PREFIX, set ORCH_REMOTE, or add cache: {remote: ...} to %s", args[0]))
			}
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			t := tieredOf(e)
			rep, err := e.Pull(c.Context(), p, sel, jobs)
			if errors.Is(err, engine.ErrNoRemote) || t == nil {
				return fmt.Errorf("pull: the cache has no remote store")
			}
			if rep != nil {
				fmt.Fprintf(c.OutOrStdout(), "pulled %s (%s) for %s from %s; %s (%s) already local; %d MISS or WAIT (nothing to pull)\n",
					plural(rep.Fetched, "blob"), fmtBytes(rep.Bytes), plural(rep.Stages, "HIT stage"), t.Name,
					plural(rep.Present, "blob"), fmtBytes(rep.PresentBytes), rep.Miss)
			}
			if err != nil {
				return fmt.Errorf("pull from %s: %s", t.Name, remoteMsg(t, err))
			}
			if t.RemoteDown() {
				return fmt.Errorf("pull: the remote %s was unavailable (see above); nothing more could be pulled", t.Name)
			}
			return nil
		},
	}
	c.Flags().StringArrayVarP(&params, "param", "p", nil, "override a pipeline param: name=value (repeatable)")
	c.Flags().IntVarP(&jobs, "jobs", "j", pullJobs, "blobs to download at once")
	return c
}
