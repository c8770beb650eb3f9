package engine

import (
	"context"
	"errors"
	"sort"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/store"
)

// StoreStats is what a store holds.
type StoreStats struct {
	Records int   `json:"records"`
	Blobs   int   `json:"blobs"`
	Bytes   int64 `json:"bytes"`
	// Leases and LiveLeases count the store's leases (a shared remote's);
	// HasLeases is false for a store that holds none.
	HasLeases  bool `json:"has_leases"`
	Leases     int  `json:"leases"`
	LiveLeases int  `json:"live_leases"`
}

// StatsOf counts the records, blobs, bytes and leases of s, from listings.
func StatsOf(ctx context.Context, s store.Store, now time.Time) (*StoreStats, error) {
	st := &StoreStats{}
	if err := s.ListBlobs(ctx, func(_ digest.Digest, n int64) error {
		st.Blobs++
		st.Bytes += n
		return nil
	}); err != nil {
		return nil, err
	}
	if err := s.ListRecords(ctx, func(digest.Digest) error { st.Records++; return nil }); err != nil {
		return nil, err
	}
	ls, ok := s.(store.LeaseStore)
	if !ok {
		return st, nil
	}
	st.HasLeases = true
	var keys []digest.Digest
	if err := ls.ListLeases(ctx, func(k digest.Digest) error { keys = append(keys, k); return nil }); err != nil {
		return nil, err
	}
	for _, k := range keys {
		data, _, err := ls.GetLease(ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, err
		}
		st.Leases++
		if le, err := store.DecodeLease(data); err == nil && now.Before(le.Expires) {
			st.LiveLeases++
		}
	}
	return st, nil
}

// HitStats summarises recent runs: how many stages the cache restored and
// how many executed.
type HitStats struct {
	Pipeline string `json:"pipeline,omitempty"` // "" for all pipelines
	Runs     int    `json:"runs"`
	// Hits, Ran and Failed count stages that were needed; Skipped ones
	// (not started) are left out of the hit rate.
	Hits    int           `json:"hits"`
	Ran     int           `json:"ran"`
	Failed  int           `json:"failed"`
	Skipped int           `json:"skipped"`
	Saved   time.Duration `json:"saved_ns"`
	From    time.Time     `json:"from,omitzero"`
	To      time.Time     `json:"to,omitzero"`
}

// HitRate is Hits over the stages that were restored or executed; -1 when
// there were none.
func (h *HitStats) HitRate() float64 {
	n := h.Hits + h.Ran + h.Failed
	if n == 0 {
		return -1
	}
	return float64(h.Hits) / float64(n)
}

func (h *HitStats) add(r *history.Run) {
	h.Runs++
	for _, s := range r.Stages {
		switch s.Status {
		case history.Hit:
			h.Hits++
		case history.Ran:
			h.Ran++
		case history.Failed:
			h.Failed++
		default:
			h.Skipped++
		}
	}
	h.Saved += r.Saved
	if h.From.IsZero() || r.Started.Before(h.From) {
		h.From = r.Started
	}
	if r.Started.After(h.To) {
		h.To = r.Started
	}
}

// RecentHits summarises the last n finished runs of this workspace (all of
// them if n <= 0): in total, and per pipeline (sorted by name).
func (e *Engine) RecentHits(n int) (total *HitStats, byPipeline []*HitStats, err error) {
	runs, err := e.History.Runs("", 0)
	if err != nil {
		return nil, nil, err
	}
	total = &HitStats{}
	per := map[string]*HitStats{}
	for _, r := range runs {
		if r.Status == history.RunRunning {
			continue
		}
		if n > 0 && total.Runs >= n {
			break
		}
		total.add(r)
		p := per[r.Pipeline]
		if p == nil {
			p = &HitStats{Pipeline: r.Pipeline}
			per[r.Pipeline] = p
			byPipeline = append(byPipeline, p)
		}
		p.add(r)
	}
	sort.Slice(byPipeline, func(i, j int) bool { return byPipeline[i].Pipeline < byPipeline[j].Pipeline })
	return total, byPipeline, nil
}
