package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/stages"
	"github.com/orch-dev/orch/pkg/store"
)

// gcListed is how many deleted records gc lists without --verbose.
const gcListed = 20

func newGCCmd(g *globals) *cobra.Command {
	var (
		keepLast           int
		olderThan, maxSize string
		grace              time.Duration
		dryRun, localOnly  bool
		verbose            bool
		releases           string
	)
	c := &cobra.Command{
		Use:   "gc",
		Short: "Delete old cache entries from the local cache and the remote",
		Long: `gc deletes cached stage results (records) by the rules given, then every blob
no remaining record references: records first, blobs last, so no record is ever
left naming a deleted blob.

  --keep-last N         keep the N most recently used records of each stage;
                        alone, delete every other record
  --older-than AGE      delete records not used for AGE (90m, 36h, 30d, 2w)
  --max-size SIZE       then delete the least recently used records until the
                        cache fits in SIZE (500MiB, 20GiB)

Whatever the rules, gc keeps every record of the last successful run of each
pipeline in this workspace's history, and every record that produced the model
of a deployed release (under --releases, as orch releases lists them). With no rule,
gc deletes only unreferenced blobs, unreadable records and records whose blobs
are missing. Unreferenced blobs younger than --grace are kept: a run may be
about to write the record that names them.

With --remote or ORCH_REMOTE, gc collects the remote after the local cache
(--local-only skips it). A remote shared by many workspaces knows only this
workspace's history: use --keep-last to protect what others ran.` + "\n" + exitCodesHelp,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, args []string) error {
			opts := engine.GCOptions{KeepLast: keepLast, DryRun: dryRun, Grace: grace}
			if keepLast < 0 {
				return badInput(fmt.Errorf("--keep-last %d: must be 1 or more", keepLast))
			}
			if olderThan != "" {
				d, err := parseAge(olderThan)
				if err != nil {
					return badInput(fmt.Errorf("--older-than %q: %w", olderThan, err))
				}
				opts.OlderThan = d
			}
			if maxSize != "" {
				n, err := store.ParseSize(maxSize)
				if err != nil || n <= 0 {
					return badInput(fmt.Errorf("--max-size %q: want a size above 0 such as 500MiB or 20GiB (units: B, KiB, MiB, GiB, KB, MB, GB)", maxSize))
				}
				opts.MaxSize = n
			}
			if grace < 0 {
				return badInput(fmt.Errorf("--grace %s: must not be negative", grace))
			}
			e, err := g.engine()
			if err != nil {
				return err
			}
			defer e.Close()
			ctx := c.Context()
			out := c.OutOrStdout()
			opts.Now = e.Now()
			opts.Roots = []engine.GCRoots{releaseRoots{filepath.Join(e.Root, releases)}}

			rep, err := e.GC(ctx, e.Local, opts)
			if rep != nil {
				printGC(out, "local "+e.Local.Root(), rep, opts.Now, verbose)
			}
			if err != nil {
				return fmt.Errorf("gc of the local cache: %w", err)
			}
			t := tieredOf(e)
			if t == nil || localOnly {
				return nil
			}
			rep, err = e.GC(ctx, t.Remote, opts)
			if rep != nil {
				printGC(out, "remote "+t.Name, rep, opts.Now, verbose)
			}
			if err != nil {
				return fmt.Errorf("gc of the remote %s: %s", t.Name, remoteMsg(t, err))
			}
			return nil
		},
	}
	fl := c.Flags()
	fl.IntVar(&keepLast, "keep-last", 0, "keep the N most recently used records of each stage")
	fl.StringVar(&olderThan, "older-than", "", "delete records not used for this long (90m, 36h, 30d, 2w)")
	fl.StringVar(&maxSize, "max-size", "", "delete least recently used records until the cache fits (500MiB, 20GiB)")
	fl.DurationVar(&grace, "grace", time.Hour, "keep unreferenced blobs younger than this")
	fl.BoolVarP(&dryRun, "dry-run", "n", false, "print what would be deleted and the bytes it would free; delete nothing")
	fl.BoolVar(&localOnly, "local-only", false, "collect the local cache only, not the remote")
	fl.BoolVarP(&verbose, "verbose", "v", false, fmt.Sprintf("list every deleted record (default: the first %d)", gcListed))
	fl.StringVar(&releases, "releases", "models", "release root of the deploy stages (their dir param), relative to the workspace")
	return c
}

// releaseRoots keeps what the deployed releases under dir were made from:
// the blob of every release's model, and so the records that produced it.
type releaseRoots struct{ dir string }

func (r releaseRoots) GCRoots(context.Context) (records, blobs []digest.Digest, why string, err error) {
	why = "releases under " + r.dir
	ents, err := os.ReadDir(r.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, why, nil
	}
	if err != nil {
		return nil, nil, why, err
	}
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		rs, err := stages.Releases(r.dir, e.Name())
		if err != nil {
			return nil, nil, why, err
		}
		for _, rel := range rs {
			if d, err := digest.Parse(rel.Model); err == nil {
				blobs = append(blobs, d)
			}
		}
	}
	return nil, blobs, why, nil
}

// parseAge parses a Go duration, or a whole number of days (30d) or weeks
// (2w).
func parseAge(s string) (time.Duration, error) {
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.Atoi(n)
			if err != nil || v <= 0 {
				break
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("want a positive duration such as 90m, 36h, 30d or 2w")
	}
	return d, nil
}

func printGC(w io.Writer, name string, r *engine.GCReport, now time.Time, verbose bool) {
	fmt.Fprintf(w, "%s: %s, %s, %s\n", name, plural(r.Records, "record"), plural(r.Blobs, "blob"), fmtBytes(r.Bytes))
	verb := "delete"
	if r.DryRun {
		verb = "would delete"
	}
	for i, d := range r.Deleted {
		if i == gcListed && !verbose {
			fmt.Fprintf(w, "  … and %d more records (--verbose lists them)\n", len(r.Deleted)-gcListed)
			break
		}
		what := d.Pipeline + "/" + d.Stage
		if d.Pipeline == "" {
			what = "?"
		}
		fmt.Fprintf(w, "  %s record %s %-24s last used %-8s frees %-9s (%s)\n", verb, d.Key.Short(), what, fmtAgo(now, d.LastUsed), fmtBytes(d.Frees), d.Why)
	}
	var kept []string
	if r.Protected > 0 {
		kept = append(kept, fmt.Sprintf("%s of the last successful runs and releases", plural(r.Protected, "record")))
	}
	if r.KeptByRule > 0 {
		kept = append(kept, fmt.Sprintf("%d by --keep-last", r.KeptByRule))
	}
	if r.YoungBlobs > 0 {
		kept = append(kept, fmt.Sprintf("%s younger than --grace that no record names yet", plural(r.YoungBlobs, "blob")))
	}
	if len(kept) > 0 {
		fmt.Fprintf(w, "  kept %s\n", strings.Join(kept, ", "))
	}
	for _, warn := range r.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", warn)
	}
	recs, blobs, bytes := r.After()
	leases := ""
	if r.DeletedLeases > 0 {
		leases = fmt.Sprintf(" and %s of dead processes", plural(r.DeletedLeases, "expired lease"))
	}
	if r.DryRun {
		fmt.Fprintf(w, "  would delete %s and %s%s, freeing %s; would leave %s, %s, %s (dry run: nothing deleted)\n",
			plural(len(r.Deleted), "record"), plural(r.DeletedBlobs, "blob"), leases, fmtBytes(r.FreedBytes),
			plural(recs, "record"), plural(blobs, "blob"), fmtBytes(bytes))
		return
	}
	fmt.Fprintf(w, "  deleted %s and %s%s, freed %s; left %s, %s, %s\n",
		plural(len(r.Deleted), "record"), plural(r.DeletedBlobs, "blob"), leases, fmtBytes(r.FreedBytes),
		plural(recs, "record"), plural(blobs, "blob"), fmtBytes(bytes))
}
