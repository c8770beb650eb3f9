package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
)

// A lease says which process computes a key, so that identical work on
// several machines sharing a remote cache runs once. It is a small object
// PREFIX/leases/ab/HEX next to the key's (future) record, written with a
// conditional PUT: of several processes that want to compute a key, one
// creates the lease and computes; the others see it, wait, and restore the
// record the holder writes. The holder renews the lease while it works
// (every TTL/3) and deletes it once the record is written. A lease whose
// expiry has passed belongs to a process that died: another process takes
// it over by replacing it on the condition that it is still the very
// object it read (If-Match: ETag), so of several takers one wins.

// LeaseStore is implemented by stores that can hold leases (the S3 store
// with conditional writes, a local store used as a shared directory). A
// tag identifies one version of a lease object (an S3 ETag).
type LeaseStore interface {
	// CreateLease stores data as the lease of key unless key has a lease
	// already; then it returns created == false and a nil error.
	CreateLease(ctx context.Context, key digest.Digest, data []byte) (tag string, created bool, err error)
	// GetLease returns the lease of key and its tag, or an error wrapping
	// ErrNotFound.
	GetLease(ctx context.Context, key digest.Digest) (data []byte, tag string, err error)
	// ReplaceLease replaces the lease of key with data if its tag is still
	// tag; ok == false (and a nil error) when another process replaced or
	// deleted it meanwhile.
	ReplaceLease(ctx context.Context, key digest.Digest, tag string, data []byte) (newTag string, ok bool, err error)
	// DeleteLease deletes the lease of key if its tag is still tag. A
	// missing lease, or one another process replaced, is left alone and
	// nil is returned.
	DeleteLease(ctx context.Context, key digest.Digest, tag string) error
	// ListLeases calls fn for every lease key, in no particular order.
	ListLeases(ctx context.Context, fn func(key digest.Digest) error) error
}

// ErrRemoteUnavailable wraps errors of a remote that the tiered store has
// stopped using (it reported the failure once already).
var ErrRemoteUnavailable = errors.New("remote unavailable")

// Lease is the content of a lease object.
type Lease struct {
	// Holder is a random identifier of the holding process.
	Holder   string    `json:"holder"`
	Host     string    `json:"host"`
	PID      int       `json:"pid"`
	Pipeline string    `json:"pipeline,omitempty"`
	Stage    string    `json:"stage,omitempty"`
	Acquired time.Time `json:"acquired"`
	// Renewed is when the holder last renewed it; Expires is Renewed + TTL.
	Renewed time.Time `json:"renewed"`
	Expires time.Time `json:"expires"`
}

// Who names the holder for messages: "HOST pid N".
func (l *Lease) Who() string { return fmt.Sprintf("%s pid %d", l.Host, l.PID) }

// What names the leased work for messages: "PIPELINE/STAGE" or "STAGE".
func (l *Lease) What() string {
	if l.Pipeline == "" {
		return l.Stage
	}
	return l.Pipeline + "/" + l.Stage
}

// LeaseState is a lease another process holds, as read.
type LeaseState struct {
	Lease
	// Tag is the version read; TakeOver replaces exactly that version.
	Tag string
	// Expired: the expiry has passed, or the object does not parse (a
	// torn or foreign write); either way nobody is renewing it.
	Expired bool
}

// DefaultLeaseTTL is how long a lease lives without renewal.
const DefaultLeaseTTL = 30 * time.Second

// Leaser takes leases in a LeaseStore on behalf of one process.
type Leaser struct {
	Store LeaseStore
	// TTL of a lease without renewal; DefaultLeaseTTL if zero. The holder
	// renews every TTL/3.
	TTL time.Duration
	// Holder identifies this process (NewLeaser makes a random one); Host
	// and PID are shown to waiting processes.
	Holder string
	Host   string
	PID    int
	// Now is the clock.
	Now func() time.Time
}

// NewLeaser returns a Leaser on s for this process: a random holder id,
// the host name and pid.
func NewLeaser(s LeaseStore, ttl time.Duration) *Leaser {
	var b [8]byte
	_, _ = rand.Read(b[:])
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown-host"
	}
	return &Leaser{Store: s, TTL: ttl, Holder: hex.EncodeToString(b[:]), Host: host, PID: os.Getpid(), Now: time.Now}
}

func (l *Leaser) ttl() time.Duration {
	if l.TTL <= 0 {
		return DefaultLeaseTTL
	}
	return l.TTL
}

func (l *Leaser) now() time.Time {
	if l.Now == nil {
		return time.Now()
	}
	return l.Now()
}

func (l *Leaser) lease(pipeline, stage string, acquired time.Time) Lease {
	now := l.now()
	if acquired.IsZero() {
		acquired = now
	}
	return Lease{
		Holder: l.Holder, Host: l.Host, PID: l.PID, Pipeline: pipeline, Stage: stage,
		Acquired: acquired.UTC(), Renewed: now.UTC(), Expires: now.Add(l.ttl()).UTC(),
	}
}

func encodeLease(le Lease) []byte {
	b, err := json.Marshal(le)
	if err != nil {
		panic(fmt.Sprintf("store: encode lease: %v", err))
	}
	return b
}

// DecodeLease parses a lease object.
func DecodeLease(data []byte) (Lease, error) {
	var le Lease
	if err := json.Unmarshal(data, &le); err != nil {
		return le, fmt.Errorf("lease: %v: %w", err, ErrCorrupt)
	}
	if le.Holder == "" || le.Expires.IsZero() {
		return le, fmt.Errorf("lease: no holder or expiry: %w", ErrCorrupt)
	}
	return le, nil
}

// Acquire tries once to take the lease of key for pipeline/stage. It
// returns the held lease, or, when another process holds a live lease, its
// state (held == nil). An expired lease is taken over (HeldLease.TookOver
// names the previous holder). Acquire does not wait.
func (l *Leaser) Acquire(ctx context.Context, key digest.Digest, pipeline, stage string) (*HeldLease, *LeaseState, error) {
	for attempt := 0; ; attempt++ {
		le := l.lease(pipeline, stage, time.Time{})
		tag, created, err := l.Store.CreateLease(ctx, key, encodeLease(le))
		if err != nil {
			return nil, nil, err
		}
		if created {
			return l.hold(key, le, tag, nil), nil, nil
		}
		st, err := l.Get(ctx, key)
		if errors.Is(err, ErrNotFound) && attempt < 5 {
			continue // released meanwhile: create again
		}
		if err != nil {
			return nil, nil, err
		}
		if !st.Expired {
			return nil, st, nil
		}
		h, err := l.TakeOver(ctx, key, pipeline, stage, st)
		if err != nil {
			return nil, nil, err
		}
		if h != nil {
			return h, nil, nil
		}
		if attempt >= 5 {
			// Others keep replacing it: report the latest state.
			st, err := l.Get(ctx, key)
			if err != nil {
				return nil, nil, err
			}
			return nil, st, nil
		}
	}
}

// Get reads the lease of key, or returns an error wrapping ErrNotFound.
func (l *Leaser) Get(ctx context.Context, key digest.Digest) (*LeaseState, error) {
	data, tag, err := l.Store.GetLease(ctx, key)
	if err != nil {
		return nil, err
	}
	le, err := DecodeLease(data)
	st := &LeaseState{Lease: le, Tag: tag}
	st.Expired = err != nil || l.now().After(le.Expires)
	return st, nil
}

// TakeOver replaces the lease version prev (expired, or seen unchanged for
// too long) with one of this process. It returns nil, nil when another
// process replaced or deleted that version first.
func (l *Leaser) TakeOver(ctx context.Context, key digest.Digest, pipeline, stage string, prev *LeaseState) (*HeldLease, error) {
	le := l.lease(pipeline, stage, time.Time{})
	tag, ok, err := l.Store.ReplaceLease(ctx, key, prev.Tag, encodeLease(le))
	if err != nil || !ok {
		return nil, err
	}
	old := prev.Lease
	return l.hold(key, le, tag, &old), nil
}

// hold starts renewing a lease this process now holds.
func (l *Leaser) hold(key digest.Digest, le Lease, tag string, prev *Lease) *HeldLease {
	h := &HeldLease{Lease: le, TookOver: prev, l: l, key: key, tag: tag, stop: make(chan struct{}), done: make(chan struct{})}
	go h.renew()
	return h
}

// HeldLease is a lease this process holds. It is renewed in the background
// until Release.
type HeldLease struct {
	Lease
	// TookOver is the expired lease this one replaced, if any.
	TookOver *Lease

	l    *Leaser
	key  digest.Digest
	mu   sync.Mutex
	tag  string
	lost atomic.Bool
	// renewErr is the last renewal failure (nil after a success).
	renewErr  error
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

// Lost reports whether another process replaced or deleted the lease while
// this one held it (it judged the lease expired: a renewal came too late).
func (h *HeldLease) Lost() bool { return h.lost.Load() }

func (h *HeldLease) renew() {
	defer close(h.done)
	t := time.NewTicker(h.l.ttl() / 3)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.mu.Lock()
		le := h.l.lease(h.Pipeline, h.Stage, h.Acquired)
		ctx, cancel := context.WithTimeout(context.Background(), h.l.ttl()/3)
		tag, ok, err := h.l.Store.ReplaceLease(ctx, h.key, h.tag, encodeLease(le))
		cancel()
		switch {
		case err != nil:
			h.renewErr = err // try again at the next tick
		case !ok:
			h.lost.Store(true)
			h.mu.Unlock()
			return
		default:
			h.tag, h.renewErr = tag, nil
			h.Renewed, h.Expires = le.Renewed, le.Expires
		}
		h.mu.Unlock()
	}
}

// Release stops the renewals and deletes the lease, unless another process
// took it over meanwhile. It reports whether the lease was lost.
func (h *HeldLease) Release(ctx context.Context) (lost bool, err error) {
	h.closeOnce.Do(func() { close(h.stop) })
	<-h.done
	if h.lost.Load() {
		return true, nil
	}
	h.mu.Lock()
	tag := h.tag
	h.mu.Unlock()
	return false, h.l.Store.DeleteLease(ctx, h.key, tag)
}
