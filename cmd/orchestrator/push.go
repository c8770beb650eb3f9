package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/orch-dev/orch/pkg/store"
)

// pushJobs is how many blobs `orch push` uploads at once.
const pushJobs = 8

func newPushCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "push",
		Short: "Upload every local blob and record the remote cache lacks",
		Long: `push uploads to the remote cache (--remote or ORCH_REMOTE) every blob and
record of the local cache that the remote lacks: blobs first, then the
records, so the remote never holds a record whose blobs are missing. Use it
after runs made while the remote was unavailable. What the remote has is
learnt from listings, so a push with nothing to do is quick.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if g.remote == "" {
				return badInput(fmt.Errorf("push: no remote cache; give --remote s3://BUCKET/PREFIX or set ORCH_REMOTE"))
			}
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			t, ok := e.Cache.Store.(*store.Tiered)
			if !ok {
				return fmt.Errorf("push: the cache has no remote store")
			}
			st, err := store.Push(c.Context(), t.Local, t.Remote, pushJobs)
			out := c.OutOrStdout()
			fmt.Fprintf(out, "pushed %s (%s) and %s to %s; the remote already had %s and %s\n",
				plural(st.Blobs, "blob"), fmtBytes(st.Bytes), plural(st.Records, "record"), t.Name,
				plural(st.BlobsPresent, "blob"), plural(st.RecordsPresent, "record"))
			if err != nil {
				msg := strings.TrimPrefix(err.Error(), t.Name+": ")
				return fmt.Errorf("push to %s: %s", t.Name, msg)
			}
			return nil
		},
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
