package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/orch-dev/orch/pkg/digest"
)

// LeaseStore returns the remote's leases, or nil when the remote holds
// none (it does not implement LeaseStore) or has failed. A remote failure
// in a lease operation opens the breaker, like any other, and comes back
// wrapping ErrRemoteUnavailable.
func (t *Tiered) LeaseStore() LeaseStore {
	ls, ok := t.Remote.(LeaseStore)
	if !ok || !t.remoteUp() {
		return nil
	}
	return tieredLeases{t: t, ls: ls}
}

type tieredLeases struct {
	t  *Tiered
	ls LeaseStore
}

func (tl tieredLeases) check(ctx context.Context, err error) error {
	if err == nil || errors.Is(err, ErrNotFound) {
		return err
	}
	if !tl.t.remoteUp() || tl.t.failed(ctx, err) {
		return fmt.Errorf("%w: %w", ErrRemoteUnavailable, err)
	}
	return err
}

func (tl tieredLeases) CreateLease(ctx context.Context, key digest.Digest, data []byte) (string, bool, error) {
	tag, ok, err := tl.ls.CreateLease(ctx, key, data)
	return tag, ok, tl.check(ctx, err)
}

func (tl tieredLeases) GetLease(ctx context.Context, key digest.Digest) ([]byte, string, error) {
	b, tag, err := tl.ls.GetLease(ctx, key)
	return b, tag, tl.check(ctx, err)
}

func (tl tieredLeases) ReplaceLease(ctx context.Context, key digest.Digest, tag string, data []byte) (string, bool, error) {
	nt, ok, err := tl.ls.ReplaceLease(ctx, key, tag, data)
	return nt, ok, tl.check(ctx, err)
}

func (tl tieredLeases) DeleteLease(ctx context.Context, key digest.Digest, tag string) error {
	return tl.check(ctx, tl.ls.DeleteLease(ctx, key, tag))
}

func (tl tieredLeases) ListLeases(ctx context.Context, fn func(digest.Digest) error) error {
	return tl.check(ctx, tl.ls.ListLeases(ctx, fn))
}

// FetchStats counts what Fetch did.
type FetchStats struct {
	Fetched      int   // blobs downloaded into Local
	Bytes        int64 // their bytes
	Present      int   // blobs Local had already
	PresentBytes int64
}

// Fetch makes Local hold every blob in ds: those it lacks are downloaded
// from Remote, jobs at a time, each verified against its digest as it is
// written. It fails if a blob is on neither store, fails verification, or
// the remote is unavailable; the error names every blob that failed (up to
// ten).
func (t *Tiered) Fetch(ctx context.Context, ds []digest.Digest, jobs int) (FetchStats, error) {
	var (
		st   FetchStats
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		ch   = make(chan digest.Digest)
	)
	seen := map[digest.Digest]bool{}
	var todo []digest.Digest
	for _, d := range ds {
		if seen[d] {
			continue
		}
		seen[d] = true
		if n, err := t.Local.StatBlob(ctx, d); err == nil {
			st.Present++
			st.PresentBytes += n
			continue
		}
		todo = append(todo, d)
	}
	if len(todo) > 0 && !t.remoteUp() {
		return st, fmt.Errorf("%d blobs are not in the local cache and the remote %s is unavailable", len(todo), t.name())
	}
	for range min(max(jobs, 1), len(todo)) {
		wg.Go(func() {
			for d := range ch {
				err := t.fetch(ctx, d, fmt.Errorf("blob %s: %w", d.Short(), ErrNotFound))
				var n int64
				if err == nil {
					n, err = t.Local.StatBlob(ctx, d)
				}
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					st.Fetched++
					st.Bytes += n
				}
				mu.Unlock()
			}
		})
	}
	for _, d := range todo {
		if ctx.Err() != nil || !t.remoteUp() {
			break
		}
		ch <- d
	}
	close(ch)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return st, err
	}
	if !t.remoteUp() {
		return st, fmt.Errorf("remote %s unavailable: %d of %d blobs fetched", t.name(), st.Fetched, len(todo))
	}
	if len(errs) > 0 {
		n := len(errs)
		if n > 10 {
			errs = append(errs[:10], fmt.Errorf("and %d more", n-10))
		}
		return st, fmt.Errorf("%d of %d blobs not fetched: %w", n, len(todo), errors.Join(errs...))
	}
	return st, nil
}
