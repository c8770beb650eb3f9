package engine_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/engine"
	"github.com/orch-dev/orch/pkg/history"
	"github.com/orch-dev/orch/pkg/pipeline"
	"github.com/orch-dev/orch/pkg/stages"
	"github.com/orch-dev/orch/pkg/store"
)

// gcPipeline has a file output (a) and a directory output (d) whose files
// are shared between param values (sub/shared.txt) or equal to a's output
// (copy.txt).
const gcPipeline = `name: p
params:
  v: 1
stages:
  a:
    params: {v: "${params.v}"}
    outputs: {out: a.txt}
    run: echo "value {{params.v}}" > {{outputs.out}}
  d:
    inputs: {x: a.out}
    outputs: {dir: ddir}
    run: |
      mkdir -p {{outputs.dir}}/sub
      cp {{inputs.x}} {{outputs.dir}}/copy.txt
      echo shared > {{outputs.dir}}/sub/shared.txt
`

type workspace struct {
	t    *testing.T
	root string
	e    *engine.Engine
}

func newWorkspace(t *testing.T, yaml string, opts engine.Options) *workspace {
	t.Helper()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "p.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.Root = root
	e, err := engine.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return &workspace{t: t, root: root, e: e}
}

func (w *workspace) load(params map[string]string) *pipeline.Pipeline {
	w.t.Helper()
	r := stages.NewRegistry()
	r.Register("exec", stages.NewExec(time.Second))
	p, err := pipeline.Load(filepath.Join(w.root, "p.yaml"), pipeline.Options{Root: w.root, Params: params, Kinds: r})
	if err != nil {
		w.t.Fatal(err)
	}
	return p
}

// run runs p with v=v as if at time at, and returns the run.
func (w *workspace) run(v string, at time.Time) *history.Run {
	w.t.Helper()
	w.e.Now = func() time.Time { return at }
	res, err := w.e.Run(w.t.Context(), w.load(map[string]string{"v": v}), engine.RunOptions{Jobs: 2})
	w.e.Now = time.Now
	if err != nil || res.Err != nil {
		w.t.Fatalf("run v=%s: %v %v", v, err, res.Err)
	}
	return res.Run
}

// age sets the times of the records of run to at, as if last used then.
func (w *workspace) age(run *history.Run, at time.Time) {
	w.t.Helper()
	for _, s := range run.Stages {
		k, err := digest.Parse(s.Key)
		if err != nil {
			w.t.Fatal(err)
		}
		h := k.String()
		if err := os.Chtimes(filepath.Join(w.e.Local.Root(), "records", h[:2], h), at, at); err != nil {
			w.t.Fatal(err)
		}
	}
}

func keysOf(run *history.Run) []digest.Digest {
	var ks []digest.Digest
	for _, s := range run.Stages {
		k, _ := digest.Parse(s.Key)
		ks = append(ks, k)
	}
	return ks
}

// checkComplete fails unless every record of s names only blobs s has:
// gc never leaves a record that points at a deleted blob.
func checkComplete(t *testing.T, s store.Store) (records int) {
	t.Helper()
	ctx := t.Context()
	err := s.ListRecords(ctx, func(k digest.Digest) error {
		records++
		rec, err := cache.GetRecord(ctx, s, k)
		if err != nil {
			t.Errorf("record %s: %v", k.Short(), err)
			return nil
		}
		var need []digest.Digest
		if !rec.Log.IsZero() {
			need = append(need, rec.Log)
		}
		for _, o := range rec.Outputs {
			need = append(need, o.Digest)
			if o.Dir {
				rc, err := s.OpenBlob(ctx, o.Digest)
				if err != nil {
					t.Errorf("record %s: tree: %v", k.Short(), err)
					continue
				}
				var buf bytes.Buffer
				_, _ = buf.ReadFrom(rc)
				rc.Close()
				tr, err := cache.DecodeTree(buf.Bytes())
				if err != nil {
					t.Fatal(err)
				}
				for _, e := range tr.Entries {
					if !e.Dir {
						need = append(need, e.Digest)
					}
				}
			}
		}
		for _, d := range need {
			if _, err := s.StatBlob(ctx, d); err != nil {
				t.Errorf("record %s (%s/%s) names missing blob %s", k.Short(), rec.Pipeline, rec.Stage, d.Short())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return records
}

func hasRecord(t *testing.T, s store.Store, k digest.Digest) bool {
	_, err := s.GetRecord(t.Context(), k)
	return err == nil
}

func TestGCOlderThanKeepsLastSuccessfulRun(t *testing.T) {
	w := newWorkspace(t, gcPipeline, engine.Options{})
	now := time.Now()
	r1 := w.run("1", now.Add(-10*24*time.Hour))
	r2 := w.run("2", now.Add(-5*24*time.Hour))
	r3 := w.run("3", now.Add(-4*24*time.Hour)) // the last successful run: old, but kept
	w.age(r1, now.Add(-10*24*time.Hour))
	w.age(r2, now.Add(-5*24*time.Hour))
	w.age(r3, now.Add(-4*24*time.Hour))

	opts := engine.GCOptions{OlderThan: 3 * 24 * time.Hour, DryRun: true, Now: now}
	dry, err := w.e.GC(t.Context(), w.e.Local, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(dry.Deleted) != 4 || dry.Protected != 2 || dry.DeletedBlobs != 4 {
		t.Fatalf("dry run: %d records to delete, %d protected, %d blobs; want 4, 2, 4 (%+v)", len(dry.Deleted), dry.Protected, dry.DeletedBlobs, dry)
	}
	if n := checkComplete(t, w.e.Local); n != 6 {
		t.Fatalf("dry run deleted records: %d left", n)
	}
	opts.DryRun = false
	rep, err := w.e.GC(t.Context(), w.e.Local, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deleted) != len(dry.Deleted) || rep.FreedBytes != dry.FreedBytes || rep.DeletedBlobs != dry.DeletedBlobs {
		t.Errorf("gc did not do what the dry run said: %+v vs %+v", rep, dry)
	}
	for _, d := range rep.Deleted {
		if !strings.HasPrefix(d.Why, "not used for more than 3d") || d.Pipeline != "p" {
			t.Errorf("deleted %+v", d)
		}
	}
	if n := checkComplete(t, w.e.Local); n != 2 {
		t.Errorf("%d records left; want the 2 of the last successful run", n)
	}
	for _, k := range keysOf(r3) {
		if !hasRecord(t, w.e.Local, k) {
			t.Errorf("record %s of the last successful run was deleted", k.Short())
		}
	}
	// What is left restores: a run of v=3 is all hits.
	if res := w.run("3", time.Now()); res.Stages[0].Status != history.Hit || res.Stages[1].Status != history.Hit {
		t.Errorf("after gc, v=3: %+v", res.Stages)
	}
}

func TestGCMaxSizeLeastRecentlyUsedFirst(t *testing.T) {
	w := newWorkspace(t, gcPipeline, engine.Options{})
	now := time.Now()
	runs := map[string]*history.Run{}
	for i, v := range []string{"1", "2", "3", "4"} {
		at := now.Add(time.Duration(i-10) * time.Hour)
		runs[v] = w.run(v, at)
		w.age(runs[v], at)
	}
	// v=2 was used again recently (a hit), so v=1 and then v=3 are the
	// least recently used.
	w.age(runs["2"], now.Add(-time.Minute))
	before, err := w.e.GC(t.Context(), w.e.Local, engine.GCOptions{DryRun: true, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Deleted) != 0 || before.DeletedBlobs != 0 {
		t.Fatalf("gc without rules deleted %+v", before)
	}
	// Each value has two blobs of its own (a's output, d's Tree); shared
	// blobs (shared.txt, the empty log) stay. Fit what v=2 and v=4 need.
	own := map[string]int64{}
	ctx := t.Context()
	for v, r := range runs {
		for _, k := range keysOf(r) {
			rec, err := cache.GetRecord(ctx, w.e.Local, k)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range rec.Outputs {
				n, _ := w.e.Local.StatBlob(ctx, o.Digest)
				own[v] += n
			}
		}
	}
	limit := before.Bytes - own["1"] - own["3"]
	rep, err := w.e.GC(ctx, w.e.Local, engine.GCOptions{MaxSize: limit, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	_, _, left := rep.After()
	if left > limit {
		t.Errorf("%d bytes left; want at most %d", left, limit)
	}
	var gone []digest.Digest
	for _, d := range rep.Deleted {
		gone = append(gone, d.Key)
		if d.Why != "least recently used, over --max-size" {
			t.Errorf("deleted %+v", d)
		}
	}
	for v, r := range runs {
		for _, k := range keysOf(r) {
			deleted := slices.Contains(gone, k)
			if want := v == "1" || v == "3"; deleted != want {
				t.Errorf("v=%s record %s deleted = %v; want %v", v, k.Short(), deleted, want)
			}
		}
	}
	checkComplete(t, w.e.Local)
}

func TestGCKeepLastAndBadRecordsAndOrphans(t *testing.T) {
	w := newWorkspace(t, gcPipeline, engine.Options{})
	ctx := t.Context()
	now := time.Now()
	var runs []*history.Run
	for i, v := range []string{"1", "2", "3"} {
		at := now.Add(time.Duration(i-3) * time.Hour)
		runs = append(runs, w.run(v, at))
		w.age(runs[i], at)
	}
	// A record whose tree blob is gone is incomplete; garbage in a record
	// is unreadable; a blob nobody names is an orphan (young: kept).
	recD := keysOf(runs[0])[1]
	rec, err := cache.GetRecord(ctx, w.e.Local, recD)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.e.Local.DeleteBlob(ctx, rec.Outputs["dir"].Digest); err != nil {
		t.Fatal(err)
	}
	junk := digest.String("junk")
	if err := w.e.Local.PutRecord(ctx, junk, []byte("{not a record")); err != nil {
		t.Fatal(err)
	}
	orphan := []byte("an orphan blob")
	od := digest.Bytes(orphan)
	if err := w.e.Local.PutBlob(ctx, od, bytes.NewReader(orphan)); err != nil {
		t.Fatal(err)
	}
	rep, err := w.e.GC(ctx, w.e.Local, engine.GCOptions{KeepLast: 2, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	why := map[digest.Digest]string{}
	for _, d := range rep.Deleted {
		why[d.Key] = d.Why
	}
	if why[recD] != "incomplete" || why[junk] != "unreadable" || why[keysOf(runs[0])[0]] != "beyond --keep-last 2" || len(why) != 3 {
		t.Errorf("deleted %v", why)
	}
	if rep.YoungBlobs != 1 {
		t.Errorf("YoungBlobs = %d; want the orphan kept", rep.YoungBlobs)
	}
	if _, err := w.e.Local.StatBlob(ctx, od); err != nil {
		t.Errorf("young orphan deleted: %v", err)
	}
	if rep.Protected != 2 || rep.KeptByRule != 2 {
		t.Errorf("Protected, KeptByRule = %d, %d; want 2, 2", rep.Protected, rep.KeptByRule)
	}
	// Past the grace period the orphan goes.
	rep, err = w.e.GC(ctx, w.e.Local, engine.GCOptions{Now: now.Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.DeletedBlobs != 1 || len(rep.Deleted) != 0 {
		t.Errorf("second gc: %d blobs, %d records; want the orphan only", rep.DeletedBlobs, len(rep.Deleted))
	}
	if n := checkComplete(t, w.e.Local); n != 4 {
		t.Errorf("%d records left; want 4", n)
	}
}

// roots is a GCRoots (as deployed releases register).
type roots struct{ keys, blobs []digest.Digest }

func (r roots) GCRoots(context.Context) ([]digest.Digest, []digest.Digest, string, error) {
	return r.keys, r.blobs, "test release", nil
}

func TestGCRoots(t *testing.T) {
	w := newWorkspace(t, gcPipeline, engine.Options{})
	now := time.Now()
	r1 := w.run("1", now.Add(-48*time.Hour))
	w.age(r1, now.Add(-48*time.Hour))
	r2 := w.run("2", now.Add(-47*time.Hour))
	w.age(r2, now.Add(-47*time.Hour))
	rep, err := w.e.GC(t.Context(), w.e.Local, engine.GCOptions{OlderThan: time.Hour, Roots: []engine.GCRoots{roots{keys: keysOf(r1)}}, Now: now, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deleted) != 0 || rep.Protected != 4 {
		t.Errorf("deleted %+v, protected %d; want nothing deleted (a root and the last run)", rep.Deleted, rep.Protected)
	}
	// A root blob (a release's model) keeps every record that names it:
	// a's output of v=1 is also d's copy.txt.
	rec, err := cache.GetRecord(t.Context(), w.e.Local, keysOf(r1)[0])
	if err != nil {
		t.Fatal(err)
	}
	rep, err = w.e.GC(t.Context(), w.e.Local, engine.GCOptions{OlderThan: time.Hour, Roots: []engine.GCRoots{roots{blobs: []digest.Digest{rec.Outputs["out"].Digest}}}, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deleted) != 0 || rep.Protected != 4 {
		t.Errorf("deleted %+v, protected %d; want the records naming the root blob kept", rep.Deleted, rep.Protected)
	}
}

// racyStore writes a new record naming an old unreferenced blob when gc
// deletes its first record: the blob must survive (gc lists the records
// again before deleting blobs). It has no InfoLister: every blob looks old.
type racyStore struct {
	store.Store
	once  sync.Once
	write func()
}

func (r *racyStore) DeleteRecord(ctx context.Context, k digest.Digest) error {
	r.once.Do(r.write)
	return r.Store.DeleteRecord(ctx, k)
}

func TestGCRecordWrittenDuringGC(t *testing.T) {
	w := newWorkspace(t, gcPipeline, engine.Options{})
	ctx := t.Context()
	now := time.Now()
	r1 := w.run("1", now.Add(-2*time.Hour))
	w.age(r1, now.Add(-2*time.Hour))
	r2 := w.run("2", now.Add(-time.Hour))
	w.age(r2, now.Add(-time.Hour))

	// A finished stage elsewhere: its blob is in the store, its record
	// arrives while gc runs.
	late := []byte("late output")
	ld := digest.Bytes(late)
	if err := w.e.Local.PutBlob(ctx, ld, bytes.NewReader(late)); err != nil {
		t.Fatal(err)
	}
	base, err := cache.GetRecord(ctx, w.e.Local, keysOf(r2)[0])
	if err != nil {
		t.Fatal(err)
	}
	pre, err := base.Pre()
	if err != nil {
		t.Fatal(err)
	}
	lp := *pre
	lp.Command = "late"
	lrec := &cache.Record{Key: lp.Key(), Pipeline: "p", Stage: "a", Preimage: lp, Outputs: map[string]cache.Output{"out": {Digest: ld, Size: int64(len(late))}}}
	s := &racyStore{Store: w.e.Local, write: func() {
		if err := cache.PutRecord(ctx, w.e.Local, lrec); err != nil {
			t.Error(err)
		}
	}}
	rep, err := w.e.GC(ctx, s, engine.GCOptions{KeepLast: 1, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Deleted) != 2 {
		t.Errorf("deleted %d records; want v=1's 2", len(rep.Deleted))
	}
	if _, err := w.e.Local.StatBlob(ctx, ld); err != nil {
		t.Errorf("the blob of a record written during gc was deleted: %v", err)
	}
	checkComplete(t, w.e.Local)
}
