package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/store"
)

// fetcher is implemented by stores that keep a local store in front of a
// remote (store.Tiered).
type fetcher interface {
	Fetch(ctx context.Context, ds []digest.Digest, jobs int) (store.FetchStats, error)
}

// ErrNoRemote is returned by Pull when the cache has no remote.
var ErrNoRemote = errors.New("no remote cache configured")

// PullReport is what Pull did.
type PullReport struct {
	// Stages are the HIT stages whose outputs were pulled; the others are
	// MISS or WAIT and have nothing to pull yet.
	Stages, Miss int
	store.FetchStats
}

// Pull prefetches into the local store every blob that a run of p (with
// sel) would restore now: the outputs of its HIT stages (the Tree of a
// directory output and every file it lists) and their logs. Records come
// along with the plan. Blobs are downloaded jobs at a time, each verified
// against its digest as it is written; blobs the local store has are not
// fetched again (restores verify them).
func (e *Engine) Pull(ctx context.Context, p *pipeline.Pipeline, sel Selection, jobs int) (*PullReport, error) {
	f, ok := e.Cache.Store.(fetcher)
	if !ok {
		return nil, ErrNoRemote
	}
	pl, err := e.Plan(ctx, p, sel)
	if err != nil {
		return nil, err
	}
	rep := &PullReport{}
	var first []digest.Digest
	var dirs []cache.Output
	for _, sp := range pl.Stages {
		if sp.Status != Hit || sp.record == nil {
			rep.Miss++
			continue
		}
		rep.Stages++
		for _, name := range sortedOutputNames(sp.record) {
			o := sp.record.Outputs[name]
			first = append(first, o.Digest)
			if o.Dir {
				dirs = append(dirs, o)
			}
		}
		if !sp.record.Log.IsZero() {
			first = append(first, sp.record.Log)
		}
	}
	st, err := f.Fetch(ctx, first, jobs)
	if err != nil {
		return rep, err
	}
	rep.FetchStats = st
	// The files of directory outputs, from their (now local) Trees.
	seen := map[digest.Digest]bool{}
	for _, d := range first {
		seen[d] = true
	}
	var files []digest.Digest
	for _, o := range dirs {
		t, err := e.Cache.Tree(ctx, o.Digest)
		if err != nil {
			return rep, fmt.Errorf("tree %s: %w", o.Digest.Short(), err)
		}
		for _, en := range t.Entries {
			if !en.Dir && !seen[en.Digest] {
				seen[en.Digest] = true
				files = append(files, en.Digest)
			}
		}
	}
	st, err = f.Fetch(ctx, files, jobs)
	rep.Fetched += st.Fetched
	rep.Bytes += st.Bytes
	rep.Present += st.Present
	rep.PresentBytes += st.PresentBytes
	return rep, err
}
