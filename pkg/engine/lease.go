package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/store"
)

// Across machines that share a remote cache, identical work runs once. On
// one machine the per-key flock of the local store serialises processes;
// across machines, a process that is about to execute a MISS takes the
// key's lease on the remote (see store.Leaser) right after that flock. A
// process that finds another's live lease says so ("waiting for HOST pid N
// computing PIPELINE/STAGE"), polls with backoff for the holder's record,
// and restores it when it appears. It computes the stage itself when the
// holder gives the lease up without a record (its stage failed), when the
// lease expires (its holder died: the lease is taken over), or after
// LeaseOptions.Wait.

// LeaseOptions configure leases on a shared remote cache. Zero fields take
// the defaults.
type LeaseOptions struct {
	// TTL of a lease without renewal (default store.DefaultLeaseTTL, 30s);
	// the holder renews it every TTL/3.
	TTL time.Duration
	// Wait bounds how long a run waits for another process's lease
	// (default 1h); then it computes the stage itself.
	Wait time.Duration
	// Poll is the first delay between looks at a lease and the record
	// (default 100ms); it doubles up to MaxPoll (default 5s).
	Poll, MaxPoll time.Duration
}

func (o LeaseOptions) withDefaults() LeaseOptions {
	if o.TTL <= 0 {
		o.TTL = store.DefaultLeaseTTL
	}
	if o.Wait <= 0 {
		o.Wait = time.Hour
	}
	if o.Poll <= 0 {
		o.Poll = 100 * time.Millisecond
	}
	if o.MaxPoll <= 0 {
		o.MaxPoll = 5 * time.Second
	}
	return o
}

// leaseHolder is implemented by stores that hold leases on a shared remote
// (store.Tiered); LeaseStore returns nil when the remote holds none or is
// unavailable.
type leaseHolder interface {
	LeaseStore() store.LeaseStore
}

// leaseIdentity is this engine's holder identity, made once.
type leaseIdentity struct {
	once sync.Once
	base *store.Leaser
}

func (e *Engine) leaser(ls store.LeaseStore, ttl time.Duration) *store.Leaser {
	e.leaseID.once.Do(func() { e.leaseID.base = store.NewLeaser(nil, ttl) })
	l := *e.leaseID.base
	l.Store, l.TTL, l.Now = ls, ttl, e.Now
	return &l
}

// lease takes key's lease before st executes, or waits for the holder's
// record. hit reports that the record appeared and st was restored. The
// returned release (never nil) gives the lease up; call it after the record
// is written. Errors other than the run's cancellation do not stop the
// stage: it runs without a lease, as it would without a remote.
func (r *runner) lease(ctx context.Context, st *pipeline.Stage, sr *history.StageRun, key digest.Digest) (release func(), hit bool, err error) {
	noop := func() {}
	lh, ok := r.e.Cache.Store.(leaseHolder)
	if !ok {
		return noop, false, nil
	}
	opts := r.e.Lease.withDefaults()
	start := r.e.Now()
	delay := opts.Poll
	var announced, seenTag string
	var seenAt time.Time
	for {
		ls := lh.LeaseStore()
		if ls == nil {
			return noop, false, nil
		}
		l := r.e.leaser(ls, opts.TTL)
		held, other, err := l.Acquire(ctx, key, r.p.Name, st.Name)
		if err != nil {
			return noop, false, r.leaseFailed(ctx, st, err)
		}
		if held != nil {
			if prev := held.TookOver; prev != nil {
				r.emit(Event{Type: EvWarn, Stage: st.Name, Key: key, Reason: fmt.Sprintf(
					"took over the expired lease of %s (computing %s; it expired %s ago); computing it here",
					prev.Who(), prev.What(), roughly(r.e.Now().Sub(prev.Expires)))})
			}
			return func() { r.releaseLease(ctx, st, key, held) }, false, nil
		}

		now := r.e.Now()
		if other.Holder != announced {
			announced = other.Holder
			r.emit(Event{Type: EvWaiting, Stage: st.Name, Key: key, Reason: fmt.Sprintf(
				"waiting for %s computing %s (its lease on the remote cache expires in %s unless renewed)",
				other.Who(), other.What(), roughly(other.Expires.Sub(now)))})
		}
		// A lease nobody renews is dead whatever the clocks say: measured
		// on this machine's clock, it has kept one version for more than
		// two of its holder's TTLs.
		if other.Tag != seenTag {
			seenTag, seenAt = other.Tag, now
		} else if ttl := other.Expires.Sub(other.Renewed); ttl > 0 && now.Sub(seenAt) > 2*ttl {
			held, err := l.TakeOver(ctx, key, r.p.Name, st.Name, other)
			if err != nil {
				return noop, false, r.leaseFailed(ctx, st, err)
			}
			if held != nil {
				r.emit(Event{Type: EvWarn, Stage: st.Name, Key: key, Reason: fmt.Sprintf(
					"the lease of %s was not renewed for %s; took it over, computing it here", other.Who(), roughly(now.Sub(seenAt)))})
				return func() { r.releaseLease(ctx, st, key, held) }, false, nil
			}
			continue
		}
		if now.Sub(start) >= opts.Wait {
			r.emit(Event{Type: EvWarn, Stage: st.Name, Key: key, Reason: fmt.Sprintf(
				"waited %s for %s computing %s; computing it here too", roughly(opts.Wait), other.Who(), other.What())})
			return noop, false, nil
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return noop, false, context.Cause(ctx)
		}
		delay = min(2*delay, opts.MaxPoll)
		if r.tryHit(ctx, st, sr, key) {
			return noop, true, nil
		}
	}
}

// leaseFailed reports a failed lease operation and returns nil (the stage
// runs without a lease), or the cause of the run's cancellation.
func (r *runner) leaseFailed(ctx context.Context, st *pipeline.Stage, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if !errors.Is(err, store.ErrRemoteUnavailable) { // else reported already
		r.emit(Event{Type: EvWarn, Stage: st.Name, Reason: fmt.Sprintf("lease on the remote cache: %v; computing without one", err)})
	}
	return nil
}

func (r *runner) releaseLease(ctx context.Context, st *pipeline.Stage, key digest.Digest, held *store.HeldLease) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	lost, err := held.Release(rctx)
	switch {
	case lost:
		r.emit(Event{Type: EvWarn, Stage: st.Name, Key: key, Reason: "another process took this stage's lease over while it ran (renewals came too late), so it may have computed it too"})
	case err != nil && !errors.Is(err, store.ErrRemoteUnavailable):
		r.emit(Event{Type: EvWarn, Stage: st.Name, Key: key, Reason: fmt.Sprintf("release lease: %v (it expires by itself)", err)})
	}
}

// roughly renders d in its largest unit: "45s", "12m", "5h", "3d".
func roughly(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(max(d, 0).Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
