package engine_test

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/store"
)

const leasePipeline = `name: p
stages:
  a:
    outputs: {out: a.txt}
    run: echo ran >> "$COUNT" && echo a > {{outputs.out}}
`

// sharedRemote returns a workspace whose cache has a directory remote
// (which holds leases like S3 does) and the remote.
func sharedRemote(t *testing.T, remote *store.Local) *workspace {
	t.Helper()
	return newWorkspace(t, leasePipeline, engine.Options{Store: func(l *store.Local) (store.Store, error) {
		return &store.Tiered{Local: l, Remote: remote}, nil
	}})
}

// events collects run events and signals the first of a type.
type events struct {
	mu      sync.Mutex
	all     []engine.Event
	waiting chan struct{}
	once    sync.Once
}

func (ev *events) add(e engine.Event) {
	ev.mu.Lock()
	ev.all = append(ev.all, e)
	ev.mu.Unlock()
	if e.Type == engine.EvWaiting {
		ev.once.Do(func() { close(ev.waiting) })
	}
}

func (ev *events) reasons(typ string) []string {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	var out []string
	for _, e := range ev.all {
		if e.Type == typ {
			out = append(out, e.Reason)
		}
	}
	return out
}

func (w *workspace) runAsync(ev *events) <-chan *engine.Result {
	ch := make(chan *engine.Result, 1)
	p := w.load(nil)
	go func() {
		res, err := w.e.Run(w.t.Context(), p, engine.RunOptions{Jobs: 1, Events: ev.add})
		if err != nil {
			w.t.Error(err)
		}
		ch <- res
	}()
	return ch
}

func count(t *testing.T, file string) int {
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "ran\n")
}

// A process that holds the lease and gives it up without a record (its
// stage failed): the waiting run computes the stage itself.
func TestLeaseHolderGivesUp(t *testing.T) {
	remote := openRemote(t)
	w := sharedRemote(t, remote)
	counter := filepath.Join(t.TempDir(), "count")
	t.Setenv("COUNT", counter)
	w.e.Lease.Poll = time.Millisecond

	key := w.planKey()
	holder := store.NewLeaser(remote, time.Minute)
	holder.Host, holder.PID = "other-host", 77
	h, _, err := holder.Acquire(t.Context(), key, "p", "a")
	if err != nil || h == nil {
		t.Fatal(h, err)
	}
	ev := &events{waiting: make(chan struct{})}
	done := w.runAsync(ev)
	<-ev.waiting
	if n := count(t, counter); n != 0 {
		t.Fatalf("the stage ran %d times while another process held its lease", n)
	}
	if _, err := h.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.Err != nil || res.Run.Stages[0].Status != history.Ran {
		t.Fatalf("run: %v %+v", res.Err, res.Run.Stages)
	}
	if n := count(t, counter); n != 1 {
		t.Errorf("the stage ran %d times; want 1", n)
	}
	if got := ev.reasons(engine.EvWaiting); len(got) != 1 || !strings.HasPrefix(got[0], "waiting for other-host pid 77 computing p/a") {
		t.Errorf("waiting events: %q", got)
	}
	if _, _, err := remote.GetLease(t.Context(), key); !store.IsNotFound(err) {
		t.Errorf("lease left behind: %v", err)
	}
}

// A lease that nobody renews is taken over once it kept one version for
// two of its holder's TTLs on this machine's clock, even though its expiry
// (on the holder's clock, an hour ahead here) has not passed.
func TestLeaseNotRenewedIsTakenOver(t *testing.T) {
	remote := openRemote(t)
	w := sharedRemote(t, remote)
	counter := filepath.Join(t.TempDir(), "count")
	t.Setenv("COUNT", counter)
	w.e.Lease.Poll = time.Millisecond
	w.e.Lease.MaxPoll = 10 * time.Millisecond

	key := w.planKey()
	skewed := store.NewLeaser(remote, 50*time.Millisecond)
	skewed.Host, skewed.PID = "ahead-host", 88
	skewed.Now = func() time.Time { return time.Now().Add(time.Hour) }
	// Take it through a store that forgets the holder: no renewals.
	data := mustLeaseData(t, skewed)
	if _, ok, err := remote.CreateLease(t.Context(), key, data); err != nil || !ok {
		t.Fatal(ok, err)
	}
	ev := &events{waiting: make(chan struct{})}
	res := <-w.runAsync(ev)
	if res.Err != nil || res.Run.Stages[0].Status != history.Ran {
		t.Fatalf("run: %v %+v", res.Err, res.Run.Stages)
	}
	if n := count(t, counter); n != 1 {
		t.Errorf("the stage ran %d times; want 1", n)
	}
	warns := ev.reasons(engine.EvWarn)
	if len(warns) != 1 || !strings.HasPrefix(warns[0], "the lease of ahead-host pid 88 was not renewed for ") {
		t.Errorf("warnings: %q", warns)
	}
}

func mustLeaseData(t *testing.T, l *store.Leaser) []byte {
	t.Helper()
	tmp, err := store.OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := *l
	c.Store = tmp
	key := digest.String("any")
	h, _, err := c.Acquire(t.Context(), key, "p", "a")
	if err != nil || h == nil {
		t.Fatal(err)
	}
	data, _, err := tmp.GetLease(t.Context(), key)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = h.Release(t.Context())
	return data
}

func openRemote(t *testing.T) *store.Local {
	t.Helper()
	l, err := store.OpenLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// planKey is the key stage a of the pipeline would run under.
func (w *workspace) planKey() digest.Digest {
	w.t.Helper()
	pl, err := w.e.Plan(w.t.Context(), w.load(nil), engine.Selection{})
	if err != nil {
		w.t.Fatal(err)
	}
	return pl.Stages[0].Key
}
