package server

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/server/web"
	"github.com/orch-dev/orch/pkg/store"
)

// Source is the web page's view of the server (web.Source): the loaded
// pipelines, the run history with live state overlaid, and stage logs.
func (s *Server) Source() web.Source { return source{s} }

type source struct{ s *Server }

var _ web.Source = source{}

// defaultLimit is the number of runs listed when no limit is given.
const defaultLimit = 50

// Pipelines implements web.Source.
func (src source) Pipelines() []web.Pipeline {
	s := src.s
	var out []web.Pipeline
	for _, l := range s.catalog.snapshot() {
		wp := web.Pipeline{File: l.file, Error: l.err}
		if l.p == nil {
			out = append(out, wp)
			continue
		}
		p := l.p
		wp.Name, wp.Description, wp.Stages = p.Name, p.Description, graphStages(p)
		if sc := p.Schedule; sc != nil {
			wp.Schedule, wp.Timezone = sc.Cron, sc.Timezone
			for _, t := range sc.NextN(s.opts.Now(), 5) {
				wp.Next = append(wp.Next, t.In(sc.Location))
			}
		}
		if runs, err := s.db.ListRuns(p.Name, "", 1); err == nil && len(runs) > 0 {
			wp.LastRun = s.live.Overlay(runs[0])
		}
		out = append(out, wp)
	}
	return out
}

// graphStages lists p's stages in topological order with their upstreams.
func graphStages(p *pipeline.Pipeline) []web.Stage {
	var out []web.Stage
	for _, name := range p.Graph.Order() {
		st := p.Stages[name]
		deps := slices.Clone(p.Graph.Deps(name))
		sort.Strings(deps)
		out = append(out, web.Stage{Name: name, Kind: st.KindName, Deps: deps})
	}
	return out
}

// Runs implements web.Source.
func (src source) Runs(pipeline, status string, limit int) ([]*history.Run, error) {
	if limit <= 0 {
		limit = defaultLimit
	}
	runs, err := src.s.db.ListRuns(pipeline, status, limit)
	if err != nil {
		return nil, err
	}
	for i, r := range runs {
		runs[i] = src.s.live.Overlay(r)
	}
	return runs, nil
}

// Run implements web.Source.
func (src source) Run(id string) (*history.Run, error) {
	r, err := src.s.db.Run(id)
	if err != nil {
		return nil, err
	}
	return src.s.live.Overlay(r), nil
}

// Log implements web.Source.
func (src source) Log(runID, stage string) ([]byte, error) {
	r, err := src.Run(runID)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(r.Stages, func(sr history.StageRun) bool { return sr.Name == stage })
	if i < 0 {
		var names []string
		for _, sr := range r.Stages {
			names = append(names, sr.Name)
		}
		return nil, notFound(fmt.Sprintf("run %s has no stage %q (stages: %s)", r.ID, stage, strings.Join(names, ", ")))
	}
	sr := r.Stages[i]
	if sr.Log == "" {
		return nil, notFound(fmt.Sprintf("run %s stage %s has no log (status %s)", r.ID, stage, orDash(sr.Status)))
	}
	d, err := digest.Parse(sr.Log)
	if err != nil {
		return nil, err
	}
	b, size, err := src.s.reader.Cache.ReadBlobTail(context.Background(), d, maxLogBytes)
	if err != nil {
		if store.IsNotFound(err) {
			return nil, notFound(fmt.Sprintf("run %s stage %s: log %s is no longer in the cache", r.ID, stage, d.Short()))
		}
		return nil, fmt.Errorf("run %s stage %s: log: %w", r.ID, stage, err)
	}
	if size > int64(len(b)) {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:] // from a line's start
		}
		note := fmt.Sprintf("[orch: the first %d of %d bytes are left out; `orch logs %s %s` prints them all]\n", size-int64(len(b)), size, r.ID, stage)
		b = append([]byte(note), b...)
	}
	return b, nil
}

// maxLogBytes bounds what serve reads of one log for the page or the API:
// the end of it, however large the log.
const maxLogBytes = 8 << 20

// notFound is an error that wraps history.ErrNotFound with its own text.
type notFound string

func (e notFound) Error() string { return string(e) }
func (e notFound) Unwrap() error { return history.ErrNotFound }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
