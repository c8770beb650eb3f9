package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
)

// leaseStores runs fn against every LeaseStore: the real S3 server and a
// local directory.
func leaseStores(t *testing.T, fn func(t *testing.T, ls store.LeaseStore)) {
	t.Run("Local", func(t *testing.T) { fn(t, openLocal(t)) })
	t.Run("S3", func(t *testing.T) { fn(t, openS3(t, s3Config(t))) })
}

func randomKey(t *testing.T) digest.Digest {
	return digest.String(fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano()))
}

func TestLeaseStorePrimitives(t *testing.T) {
	leaseStores(t, func(t *testing.T, ls store.LeaseStore) {
		ctx := t.Context()
		key := randomKey(t)
		if _, _, err := ls.GetLease(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetLease of a missing lease: %v, want ErrNotFound", err)
		}
		tag, created, err := ls.CreateLease(ctx, key, []byte("one"))
		if err != nil || !created || tag == "" {
			t.Fatalf("CreateLease = %q, %v, %v; want a tag, true, nil", tag, created, err)
		}
		if _, created, err := ls.CreateLease(ctx, key, []byte("two")); err != nil || created {
			t.Fatalf("second CreateLease = %v, %v; want false, nil", created, err)
		}
		data, got, err := ls.GetLease(ctx, key)
		if err != nil || string(data) != "one" || got != tag {
			t.Fatalf("GetLease = %q, %q, %v; want one, %q", data, got, err, tag)
		}
		if _, ok, err := ls.ReplaceLease(ctx, key, "stale-tag", []byte("three")); err != nil || ok {
			t.Fatalf("ReplaceLease with a wrong tag = %v, %v; want false, nil", ok, err)
		}
		tag2, ok, err := ls.ReplaceLease(ctx, key, tag, []byte("four"))
		if err != nil || !ok || tag2 == tag {
			t.Fatalf("ReplaceLease = %q, %v, %v; want a new tag, true", tag2, ok, err)
		}
		if err := ls.DeleteLease(ctx, key, tag); err != nil {
			t.Fatalf("DeleteLease with an old tag: %v", err)
		}
		if data, _, err := ls.GetLease(ctx, key); err != nil || string(data) != "four" {
			t.Fatalf("after DeleteLease with an old tag: %q, %v; want the lease kept", data, err)
		}
		var listed []digest.Digest
		if err := ls.ListLeases(ctx, func(k digest.Digest) error { listed = append(listed, k); return nil }); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(listed, key) {
			t.Errorf("ListLeases does not list %s", key.Short())
		}
		if err := ls.DeleteLease(ctx, key, tag2); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ls.GetLease(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("after DeleteLease: %v, want ErrNotFound", err)
		}
		if err := ls.DeleteLease(ctx, key, tag2); err != nil {
			t.Errorf("DeleteLease of a missing lease: %v", err)
		}
		if _, ok, err := ls.ReplaceLease(ctx, key, tag2, []byte("five")); err != nil || ok {
			t.Errorf("ReplaceLease of a missing lease = %v, %v; want false, nil", ok, err)
		}
		if _, _, err := ls.GetLease(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ReplaceLease of a missing lease created it: %v", err)
		}
	})
}

// Of many processes creating one lease, or taking over one expired lease,
// exactly one wins.
func TestLeaseOneWinner(t *testing.T) {
	leaseStores(t, func(t *testing.T, ls store.LeaseStore) {
		ctx := t.Context()
		const n = 12
		key := randomKey(t)
		var created atomic.Int32
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, ok, err := ls.CreateLease(ctx, key, fmt.Appendf(nil, "writer %d", i))
				if err != nil {
					t.Error(err)
				}
				if ok {
					created.Add(1)
				}
			})
		}
		wg.Wait()
		if created.Load() != 1 {
			t.Fatalf("%d concurrent CreateLease calls created %d leases; want 1", n, created.Load())
		}

		// Make it expired, then let n leasers race to take it over.
		_, tag, err := ls.GetLease(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		dead := store.NewLeaser(ls, time.Minute)
		dead.Now = func() time.Time { return time.Now().Add(-time.Hour) }
		if _, ok, err := ls.ReplaceLease(ctx, key, tag, mustLease(t, dead, "p", "s")); err != nil || !ok {
			t.Fatalf("write an expired lease: %v %v", ok, err)
		}
		var held atomic.Int32
		var holders sync.Map
		for range n {
			wg.Go(func() {
				l := store.NewLeaser(ls, time.Minute)
				h, st, err := l.Acquire(ctx, key, "p", "s")
				switch {
				case err != nil:
					t.Error(err)
				case h != nil:
					held.Add(1)
					if h.TookOver == nil || h.TookOver.Holder != dead.Holder {
						t.Errorf("TookOver = %+v; want the dead holder", h.TookOver)
					}
					holders.Store(h.Holder, h)
				case st.Expired:
					t.Errorf("Acquire returned an expired lease to wait for")
				}
			})
		}
		wg.Wait()
		if held.Load() != 1 {
			t.Fatalf("%d leasers took over one expired lease %d times; want 1", n, held.Load())
		}
		holders.Range(func(_, v any) bool {
			if lost, err := v.(*store.HeldLease).Release(ctx); err != nil || lost {
				t.Errorf("Release = %v, %v", lost, err)
			}
			return true
		})
		if _, _, err := ls.GetLease(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after Release: %v, want ErrNotFound", err)
		}
	})
}

// mustLease returns the encoding of a lease of l (through a throwaway
// store, so the encoding is the Leaser's own).
func mustLease(t *testing.T, l *store.Leaser, pipeline, stage string) []byte {
	t.Helper()
	mem := newMemLeases()
	tmp := *l
	tmp.Store = mem
	h, _, err := tmp.Acquire(t.Context(), digest.String("x"), pipeline, stage)
	if err != nil || h == nil {
		t.Fatalf("encode lease: %v", err)
	}
	data, _, _ := mem.GetLease(t.Context(), digest.String("x"))
	if _, err := h.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	return data
}

func TestLeaserAcquire(t *testing.T) {
	leaseStores(t, func(t *testing.T, ls store.LeaseStore) {
		ctx := t.Context()
		key := randomKey(t)
		a := store.NewLeaser(ls, time.Minute)
		a.Host, a.PID = "alpha", 101
		ha, st, err := a.Acquire(ctx, key, "churn", "train")
		if err != nil || ha == nil || st != nil {
			t.Fatalf("Acquire of a free key = %v, %v, %v", ha, st, err)
		}
		if ha.TookOver != nil {
			t.Errorf("TookOver = %+v on a free key", ha.TookOver)
		}
		b := store.NewLeaser(ls, time.Minute)
		hb, st, err := b.Acquire(ctx, key, "churn", "train")
		if err != nil || hb != nil || st == nil {
			t.Fatalf("Acquire of a held key = %v, %v, %v; want the holder's state", hb, st, err)
		}
		if st.Who() != "alpha pid 101" || st.What() != "churn/train" || st.Expired || st.Holder != a.Holder {
			t.Errorf("state = %+v (%s computing %s)", st, st.Who(), st.What())
		}
		if lost, err := ha.Release(ctx); err != nil || lost {
			t.Fatalf("Release = %v, %v", lost, err)
		}
		hb, _, err = b.Acquire(ctx, key, "churn", "train")
		if err != nil || hb == nil {
			t.Fatalf("Acquire after the holder released = %v, %v", hb, err)
		}

		// A lease taken over under its holder's feet is lost: Release then
		// leaves the new holder's lease alone.
		cur, err := b.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		c := store.NewLeaser(ls, time.Minute)
		hc, err := c.TakeOver(ctx, key, "churn", "train", cur)
		if err != nil || hc == nil {
			t.Fatalf("TakeOver = %v, %v", hc, err)
		}
		if stale, err := b.TakeOver(ctx, key, "churn", "train", cur); err != nil || stale != nil {
			t.Errorf("second TakeOver of the same version = %v, %v; want nil, nil", stale, err)
		}
		if _, err := hb.Release(ctx); err != nil {
			t.Fatal(err)
		}
		now, err := c.Get(ctx, key)
		if err != nil || now.Holder != c.Holder {
			t.Fatalf("after the old holder's Release: %+v, %v; want c's lease kept", now, err)
		}
		if _, err := hc.Release(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// A lease that does not parse (torn or foreign) counts as expired.
func TestLeaserCorruptLease(t *testing.T) {
	ls := openLocal(t)
	key := randomKey(t)
	if _, _, err := ls.CreateLease(t.Context(), key, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	l := store.NewLeaser(ls, time.Minute)
	h, _, err := l.Acquire(t.Context(), key, "p", "s")
	if err != nil || h == nil {
		t.Fatalf("Acquire over a corrupt lease = %v, %v; want it taken over", h, err)
	}
	_, _ = h.Release(t.Context())
}

// memLeases is an in-memory LeaseStore for clock-driven tests.
type memLeases struct {
	mu      sync.Mutex
	m       map[digest.Digest][]byte
	replace atomic.Int32
}

func newMemLeases() *memLeases { return &memLeases{m: map[digest.Digest][]byte{}} }

func (m *memLeases) tag(b []byte) string { return digest.Bytes(b).String() }

func (m *memLeases) CreateLease(_ context.Context, key digest.Digest, data []byte) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.m[key]; ok {
		return "", false, nil
	}
	m.m[key] = data
	return m.tag(data), true, nil
}

func (m *memLeases) GetLease(_ context.Context, key digest.Digest) ([]byte, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.m[key]
	if !ok {
		return nil, "", store.ErrNotFound
	}
	return b, m.tag(b), nil
}

func (m *memLeases) ReplaceLease(_ context.Context, key digest.Digest, tag string, data []byte) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.replace.Add(1)
	b, ok := m.m[key]
	if !ok || m.tag(b) != tag {
		return "", false, nil
	}
	m.m[key] = data
	return m.tag(data), true, nil
}

func (m *memLeases) DeleteLease(_ context.Context, key digest.Digest, tag string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if b, ok := m.m[key]; ok && (tag == "" || m.tag(b) == tag) {
		delete(m.m, key)
	}
	return nil
}

func (m *memLeases) ListLeases(_ context.Context, fn func(digest.Digest) error) error {
	m.mu.Lock()
	keys := make([]digest.Digest, 0, len(m.m))
	for k := range m.m {
		keys = append(keys, k)
	}
	m.mu.Unlock()
	for _, k := range keys {
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

// A held lease is renewed every TTL/3, so a lease held for many TTLs
// never looks expired to another process; after Release it is gone.
func TestLeaseRenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		mem := newMemLeases()
		key := digest.String("k")
		a := store.NewLeaser(mem, 30*time.Second)
		h, _, err := a.Acquire(ctx, key, "p", "s")
		if err != nil || h == nil {
			t.Fatal(h, err)
		}
		b := store.NewLeaser(mem, 30*time.Second)
		for range 10 {
			time.Sleep(25 * time.Second)
			synctest.Wait()
			st, err := b.Get(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if st.Expired || st.Holder != a.Holder {
				t.Fatalf("after %s held: %+v; want a's live lease", time.Since(h.Acquired), st)
			}
			if !st.Expires.After(time.Now()) {
				t.Fatalf("expiry %s is not after now %s", st.Expires, time.Now())
			}
		}
		if n := mem.replace.Load(); n < 20 {
			t.Errorf("%d renewals in 250s with a 30s TTL; want one every 10s", n)
		}
		if lost, err := h.Release(ctx); lost || err != nil {
			t.Fatal(lost, err)
		}
		if _, _, err := mem.GetLease(ctx, key); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("after Release: %v", err)
		}

		// Renewals stop when the holder no longer holds the lease.
		h, _, _ = a.Acquire(ctx, key, "p", "s")
		cur, _ := b.Get(ctx, key)
		hb, err := b.TakeOver(ctx, key, "p", "s", cur)
		if err != nil || hb == nil {
			t.Fatal(hb, err)
		}
		time.Sleep(11 * time.Second)
		synctest.Wait()
		if !h.Lost() {
			t.Errorf("Lost() = false after another process took the lease over")
		}
		if lost, _ := h.Release(ctx); !lost {
			t.Errorf("Release of a lost lease: lost = false")
		}
		if st, err := b.Get(ctx, key); err != nil || st.Holder != b.Holder {
			t.Errorf("the new holder's lease: %+v, %v", st, err)
		}
		if lost, err := hb.Release(ctx); lost || err != nil {
			t.Error(lost, err)
		}
	})
}
