package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/store"
)

// Garbage collection of a store (the local one, or a remote).
//
// gc decides about records and lets the blobs follow: it deletes records
// by the rules of GCOptions, then every blob that no remaining record
// references (outputs, the Tree blobs of directory outputs and the files
// they list, logs). Records go first, blobs last, so gc never leaves a
// record that names a deleted blob, even when it is interrupted.
//
// A record was last used when it was written, or when a run of this
// workspace's history last restored or produced it, whichever is later.
// (Access times do not tell: explanations, verify and gc read records too.)
// Runs in other workspaces sharing the store are in their own histories.
//
// Whatever the rules say, gc keeps every record of the last successful run
// of each pipeline in this workspace's history, and whatever GCOptions.Roots
// name (deployed releases register one). A remote shared by several
// workspaces knows only this workspace's history: runs elsewhere are
// protected there by --keep-last and by recency.
//
// Concurrent runs: a run writes its blobs before its record, so for a
// moment its blobs are referenced by nothing. Unreferenced blobs younger
// than GCOptions.Grace are kept for that reason. A record written while gc
// runs is read again before blobs are deleted, and its blobs are kept.

// GCOptions say which records gc deletes. With no rule, gc deletes only
// unreadable records, records whose blobs are not all in the store, and
// unreferenced blobs.
type GCOptions struct {
	// KeepLast > 0 keeps the KeepLast most recently used records of each
	// stage. Alone, it deletes every other record of the stage.
	KeepLast int
	// OlderThan > 0 deletes records not used within OlderThan.
	OlderThan time.Duration
	// MaxSize > 0 then deletes records, least recently used first, until
	// the blobs the remaining records reference fit in MaxSize bytes.
	MaxSize int64
	// DryRun reports what would go and deletes nothing.
	DryRun bool
	// Grace keeps unreferenced blobs younger than this (default 1h): a run
	// may be about to write the record that names them.
	Grace time.Duration
	// LeaseGrace: leases expired for longer than this are deleted (default
	// 1h); a lease expires when its holder dies.
	LeaseGrace time.Duration
	// Jobs is how many records and trees are read at once (default 16).
	Jobs int
	// Roots name more records and blobs to keep (deployed releases).
	Roots []GCRoots
	// Now is the time the rules are measured from (default Engine.Now()).
	Now time.Time
}

// GCRoots is implemented by whatever must survive gc beyond the last
// successful runs: `orch gc` registers the deployed releases (the digests of
// their models). Every record that names a root blob is kept with it.
type GCRoots interface {
	// GCRoots returns the record keys and blob digests to keep, with a
	// description for errors ("releases under models/").
	GCRoots(ctx context.Context) (records, blobs []digest.Digest, why string, err error)
}

// GCRecord is a record gc deleted (or would delete).
type GCRecord struct {
	Key      digest.Digest `json:"key"`
	Pipeline string        `json:"pipeline,omitempty"`
	Stage    string        `json:"stage,omitempty"`
	LastUsed time.Time     `json:"last_used,omitzero"`
	// Frees is what deleting it freed: the bytes of the blobs no other
	// remaining record references.
	Frees int64 `json:"frees"`
	// Why names the rule: "older than 720h0m0s", "beyond --keep-last 3",
	// "over --max-size", "unreadable", "incomplete".
	Why string `json:"why"`
}

// GCReport is what gc found and did.
type GCReport struct {
	DryRun bool `json:"dry_run"`
	// Before: what the store held.
	Records int   `json:"records"`
	Blobs   int   `json:"blobs"`
	Bytes   int64 `json:"bytes"`
	// Deleted records, in the order gc chose them.
	Deleted []GCRecord `json:"deleted"`
	// Protected counts records kept because a last successful run or a
	// root (a deployed release) uses them; KeptByRule those --keep-last
	// kept.
	Protected  int `json:"protected"`
	KeptByRule int `json:"kept_by_keep_last"`
	// DeletedBlobs and FreedBytes: the blobs no remaining record references.
	DeletedBlobs int   `json:"deleted_blobs"`
	FreedBytes   int64 `json:"freed_bytes"`
	// YoungBlobs: unreferenced blobs kept for the grace period.
	YoungBlobs int `json:"young_blobs"`
	// DeletedLeases: leases long expired.
	DeletedLeases int `json:"deleted_leases"`
	// Warnings: what the user should know (a --max-size that protected
	// records exceed, records of another record version, ...).
	Warnings []string `json:"warnings,omitempty"`
}

// After returns the records, blobs and bytes left.
func (r *GCReport) After() (records, blobs int, bytes int64) {
	return r.Records - len(r.Deleted), r.Blobs - r.DeletedBlobs, r.Bytes - r.FreedBytes
}

type gcRecord struct {
	key      digest.Digest
	rec      *cache.Record
	lastUsed time.Time
	blobs    []digest.Digest // every blob it references, once
	bad      string          // "unreadable" or "incomplete": deleted whatever the rules
	foreign  bool            // another record version: kept, its blobs too
	deleted  bool
}

type gcBlob struct {
	size     int64
	modified time.Time
	refs     int
	everRef  bool
}

// GC collects garbage in s by opts; see the package comment above.
func (e *Engine) GC(ctx context.Context, s store.Store, opts GCOptions) (*GCReport, error) {
	if opts.Grace <= 0 {
		opts.Grace = time.Hour
	}
	if opts.LeaseGrace <= 0 {
		opts.LeaseGrace = time.Hour
	}
	if opts.Jobs <= 0 {
		opts.Jobs = 16
	}
	now := opts.Now
	if now.IsZero() {
		now = e.Now()
	}
	rep := &GCReport{DryRun: opts.DryRun}

	protect, lastUse, err := e.historyRoots()
	if err != nil {
		return nil, err
	}
	keepBlobs := map[digest.Digest]bool{}
	for _, r := range opts.Roots {
		recs, bs, why, err := r.GCRoots(ctx)
		if err != nil {
			return nil, fmt.Errorf("gc roots (%s): %w", why, err)
		}
		for _, k := range recs {
			protect[k] = true
		}
		for _, d := range bs {
			keepBlobs[d] = true
		}
	}

	// Records first, blobs second: a run writes blobs before records, so
	// every blob of a listed record is in the blob listing.
	var infos []store.Info
	if err := listRecordInfo(ctx, s, func(i store.Info) error { infos = append(infos, i); return nil }); err != nil {
		return nil, fmt.Errorf("list records: %w", err)
	}
	rep.Records = len(infos)
	blobs := map[digest.Digest]*gcBlob{}
	err = listBlobInfo(ctx, s, func(i store.Info) error {
		blobs[i.Digest] = &gcBlob{size: i.Size, modified: i.Modified}
		rep.Blobs++
		rep.Bytes += i.Size
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	recs, err := e.gcRead(ctx, s, infos, blobs, opts.Jobs)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		r.lastUsed = latest(r.lastUsed, lastUse[r.key])
		if r.bad != "" {
			continue
		}
		for _, d := range r.blobs {
			if b := blobs[d]; b != nil {
				b.refs++
				b.everRef = true
			}
			if keepBlobs[d] {
				protect[r.key] = true // it produced a blob a root keeps
			}
		}
	}

	// Choose the records to delete.
	var order []*gcRecord
	del := func(r *gcRecord, why string) {
		r.deleted = true
		order = append(order, r)
		rep.Deleted = append(rep.Deleted, GCRecord{Key: r.key, LastUsed: r.lastUsed, Why: why})
		if r.rec != nil {
			d := &rep.Deleted[len(rep.Deleted)-1]
			d.Pipeline, d.Stage = r.rec.Pipeline, r.rec.Stage
		}
		if r.bad != "" {
			return
		}
		var freed int64
		for _, d := range r.blobs {
			if b := blobs[d]; b != nil {
				if b.refs--; b.refs == 0 && !keepBlobs[d] {
					freed += b.size
				}
			}
		}
		rep.Deleted[len(rep.Deleted)-1].Frees = freed
	}
	var candidates []*gcRecord // least recently used first
	groups := map[string][]*gcRecord{}
	foreign := 0
	for _, r := range recs {
		switch {
		case r.bad != "":
			del(r, r.bad)
		case r.foreign:
			foreign++
		default:
			g := r.rec.Pipeline + "\x00" + r.rec.Stage
			groups[g] = append(groups[g], r)
		}
	}
	if foreign > 0 {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("kept %d records of another record version (written by another orch version) and the blobs they name", foreign))
	}
	for _, g := range groups {
		sort.Slice(g, func(i, j int) bool {
			if !g[i].lastUsed.Equal(g[j].lastUsed) {
				return g[i].lastUsed.After(g[j].lastUsed)
			}
			return g[i].key.String() < g[j].key.String()
		})
		for i, r := range g {
			switch {
			case protect[r.key]:
				rep.Protected++
			case i < opts.KeepLast:
				rep.KeptByRule++
			default:
				candidates = append(candidates, r)
			}
		}
	}
	sort.Slice(candidates, func(i, j int) bool {
		if !candidates[i].lastUsed.Equal(candidates[j].lastUsed) {
			return candidates[i].lastUsed.Before(candidates[j].lastUsed)
		}
		return candidates[i].key.String() < candidates[j].key.String()
	})
	for _, r := range candidates {
		switch {
		case opts.OlderThan > 0 && r.lastUsed.Before(now.Add(-opts.OlderThan)):
			del(r, fmt.Sprintf("not used for more than %s", fmtAge(opts.OlderThan)))
		case opts.OlderThan <= 0 && opts.MaxSize <= 0 && opts.KeepLast > 0:
			del(r, fmt.Sprintf("beyond --keep-last %d", opts.KeepLast))
		}
	}
	if opts.MaxSize > 0 {
		size := int64(0)
		for d, b := range blobs {
			if b.refs > 0 || keepBlobs[d] || (!b.everRef && now.Sub(b.modified) < opts.Grace) {
				size += b.size
			}
		}
		for _, r := range candidates {
			if size <= opts.MaxSize {
				break
			}
			if r.deleted {
				continue
			}
			del(r, "least recently used, over --max-size")
			size -= rep.Deleted[len(rep.Deleted)-1].Frees
		}
		if size > opts.MaxSize {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("the records gc must keep (last successful runs, --keep-last, releases) reference %d bytes, more than --max-size %d", size, opts.MaxSize))
		}
	}

	// Blobs no remaining record references.
	var doomed []digest.Digest
	for d, b := range blobs {
		if b.refs > 0 || keepBlobs[d] {
			continue
		}
		if !b.everRef && now.Sub(b.modified) < opts.Grace {
			rep.YoungBlobs++
			continue
		}
		doomed = append(doomed, d)
	}
	sort.Slice(doomed, func(i, j int) bool { return doomed[i].String() < doomed[j].String() })

	if opts.DryRun {
		for _, d := range doomed {
			rep.DeletedBlobs++
			rep.FreedBytes += blobs[d].size
		}
		rep.DeletedLeases, err = gcLeases(ctx, s, now, opts.LeaseGrace, true)
		return rep, err
	}

	keys := make([]digest.Digest, len(order))
	for i, r := range order {
		keys[i] = r.key
	}
	if err := deleteAll(ctx, s, keys, false, opts.Jobs); err != nil {
		return rep, fmt.Errorf("delete records: %w", err)
	}
	// Records written meanwhile keep their blobs.
	known := map[digest.Digest]bool{}
	for _, i := range infos {
		known[i.Digest] = true
	}
	var fresh []store.Info
	if err := listRecordInfo(ctx, s, func(i store.Info) error {
		if !known[i.Digest] {
			fresh = append(fresh, i)
		}
		return nil
	}); err != nil {
		return rep, fmt.Errorf("list records: %w", err)
	}
	if len(fresh) > 0 {
		late, err := e.gcRead(ctx, s, fresh, blobs, opts.Jobs)
		if err != nil {
			return rep, err
		}
		keep := map[digest.Digest]bool{}
		for _, r := range late {
			for _, d := range r.blobs {
				keep[d] = true
			}
		}
		doomed = slicesDeleteFunc(doomed, func(d digest.Digest) bool { return keep[d] })
	}
	if err := deleteAll(ctx, s, doomed, true, opts.Jobs); err != nil {
		return rep, fmt.Errorf("delete blobs: %w", err)
	}
	for _, d := range doomed {
		rep.DeletedBlobs++
		rep.FreedBytes += blobs[d].size
	}
	rep.DeletedLeases, err = gcLeases(ctx, s, now, opts.LeaseGrace, false)
	return rep, err
}

func slicesDeleteFunc(s []digest.Digest, del func(digest.Digest) bool) []digest.Digest {
	out := s[:0]
	for _, d := range s {
		if !del(d) {
			out = append(out, d)
		}
	}
	return out
}

// historyRoots returns the keys of the last successful run of every
// pipeline in the history, and when each key was last used by a run.
func (e *Engine) historyRoots() (protect map[digest.Digest]bool, lastUse map[digest.Digest]time.Time, err error) {
	runs, err := e.History.Runs("", 0)
	if err != nil {
		return nil, nil, err
	}
	protect = map[digest.Digest]bool{}
	lastUse = map[digest.Digest]time.Time{}
	done := map[string]bool{}
	for _, r := range runs { // newest first
		last := !done[r.Pipeline] && r.Status == history.RunSucceeded
		if last {
			done[r.Pipeline] = true
		}
		for _, s := range r.Stages {
			k, err := digest.Parse(s.Key)
			if err != nil {
				continue
			}
			if last {
				protect[k] = true
			}
			if r.Started.After(lastUse[k]) {
				lastUse[k] = r.Started
			}
		}
	}
	return protect, lastUse, nil
}

// gcRead reads the records in infos, jobs at a time, with the trees of
// their directory outputs, and notes which are unreadable or incomplete
// (name blobs the store lacks).
func (e *Engine) gcRead(ctx context.Context, s store.Store, infos []store.Info, blobs map[digest.Digest]*gcBlob, jobs int) ([]*gcRecord, error) {
	out := make([]*gcRecord, len(infos))
	var (
		mu       sync.Mutex
		trees    = map[digest.Digest]*cache.Tree{}
		firstErr error
		wg       sync.WaitGroup
		ch       = make(chan int)
	)
	tree := func(d digest.Digest) (*cache.Tree, error) {
		mu.Lock()
		t, ok := trees[d]
		mu.Unlock()
		if ok {
			return t, nil
		}
		t, err := readTree(ctx, s, d)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		trees[d] = t
		mu.Unlock()
		return t, nil
	}
	for range min(jobs, len(infos)) {
		wg.Go(func() {
			for i := range ch {
				r, err := gcReadOne(ctx, s, infos[i], blobs, tree)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				out[i] = r
				mu.Unlock()
			}
		})
	}
	for i := range infos {
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
		ch <- i
	}
	close(ch)
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var recs []*gcRecord
	for _, r := range out {
		if r != nil {
			recs = append(recs, r)
		}
	}
	return recs, nil
}

func gcReadOne(ctx context.Context, s store.Store, info store.Info, blobs map[digest.Digest]*gcBlob, tree func(digest.Digest) (*cache.Tree, error)) (*gcRecord, error) {
	r := &gcRecord{key: info.Digest, lastUsed: info.Modified}
	rec, err := cache.GetRecord(ctx, s, info.Digest)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, nil // deleted meanwhile
	case errors.Is(err, store.ErrCorrupt):
		// Another orch's record version is kept, with what it names;
		// anything else that does not check out is unreadable.
		b, gerr := s.GetRecord(ctx, info.Digest)
		var other *cache.Record
		if gerr == nil {
			other, gerr = cache.DecodeRecord(b)
		}
		if gerr != nil || other.Version <= cache.RecordVersion {
			r.bad = "unreadable"
			return r, nil
		}
		rec, r.foreign = other, true
	case err != nil:
		return nil, fmt.Errorf("read record %s: %w", info.Digest.Short(), err)
	}
	r.rec = rec
	r.lastUsed = latest(r.lastUsed, rec.Started.Add(rec.Duration))
	seen := map[digest.Digest]bool{}
	add := func(d digest.Digest) {
		if !d.IsZero() && !seen[d] {
			seen[d] = true
			r.blobs = append(r.blobs, d)
			if blobs[d] == nil && !r.foreign {
				r.bad = "incomplete"
			}
		}
	}
	for _, name := range sortedOutputNames(rec) {
		o := rec.Outputs[name]
		add(o.Digest)
		if !o.Dir || blobs[o.Digest] == nil {
			continue
		}
		t, err := tree(o.Digest)
		if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrCorrupt) {
			r.bad = "incomplete"
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range t.Entries {
			if !e.Dir {
				add(e.Digest)
			}
		}
	}
	add(rec.Log)
	return r, nil
}

// readTree reads and checks the Tree blob d.
func readTree(ctx context.Context, s store.Store, d digest.Digest) (*cache.Tree, error) {
	rc, err := s.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("read tree %s: %w", d.Short(), err)
	}
	if digest.Bytes(b) != d {
		return nil, fmt.Errorf("tree %s: %w", d.Short(), store.ErrCorrupt)
	}
	t, err := cache.DecodeTree(b)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %v: %w", d.Short(), err, store.ErrCorrupt)
	}
	return t, nil
}

func listBlobInfo(ctx context.Context, s store.Store, fn func(store.Info) error) error {
	if il, ok := s.(store.InfoLister); ok {
		return il.ListBlobInfo(ctx, fn)
	}
	return s.ListBlobs(ctx, func(d digest.Digest, n int64) error { return fn(store.Info{Digest: d, Size: n}) })
}

func listRecordInfo(ctx context.Context, s store.Store, fn func(store.Info) error) error {
	if il, ok := s.(store.InfoLister); ok {
		return il.ListRecordInfo(ctx, fn)
	}
	return s.ListRecords(ctx, func(d digest.Digest) error { return fn(store.Info{Digest: d}) })
}

// deleteAll deletes blobs or records: in batches where the store has them,
// else jobs at a time.
func deleteAll(ctx context.Context, s store.Store, ds []digest.Digest, blobs bool, jobs int) error {
	if len(ds) == 0 {
		return nil
	}
	if bd, ok := s.(store.BatchDeleter); ok {
		if blobs {
			return bd.DeleteBlobs(ctx, ds)
		}
		return bd.DeleteRecords(ctx, ds)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, d := range ds {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			if blobs {
				return s.DeleteBlob(gctx, d)
			}
			return s.DeleteRecord(gctx, d)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

// gcLeases deletes the leases of s expired for longer than grace (their
// holders died), each only if it is still the version read.
func gcLeases(ctx context.Context, s store.Store, now time.Time, grace time.Duration, dry bool) (int, error) {
	ls, ok := s.(store.LeaseStore)
	if !ok {
		return 0, nil
	}
	var keys []digest.Digest
	if err := ls.ListLeases(ctx, func(k digest.Digest) error { keys = append(keys, k); return nil }); err != nil {
		return 0, fmt.Errorf("list leases: %w", err)
	}
	n := 0
	for _, k := range keys {
		data, tag, err := ls.GetLease(ctx, k)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return n, err
		}
		le, err := store.DecodeLease(data)
		if err == nil && now.Sub(le.Expires) < grace {
			continue
		}
		if !dry {
			if err := ls.DeleteLease(ctx, k, tag); err != nil {
				return n, err
			}
		}
		n++
	}
	return n, nil
}

func latest(ts ...time.Time) time.Time {
	var t time.Time
	for _, x := range ts {
		if x.After(t) {
			t = x
		}
	}
	return t
}

// fmtAge renders a duration in days where it is whole days ("30d").
func fmtAge(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.String()
}
