// Package history is orch's run history: every run with its stages, and the
// keys each stage last produced, in an embedded bbolt database under .orch/.
//
// Words:
//   - Run: one `orch run` (or scheduled run) of one pipeline.
//   - StageRun: what one stage did in a run: hit, ran, failed, skipped.
//   - Head: the keys a stage produced, newest first; `orch plan` explains a
//     MISS against the newest, `orch why` searches them all.
//
// The database is opened for each operation and closed at once, so several
// orch processes can share it (bbolt's file lock serialises them briefly).
package history

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Stage outcomes.
const (
	Hit       = "hit"
	Ran       = "ran"
	Failed    = "failed"
	Skipped   = "skipped"
	Cancelled = "cancelled"
	Running   = "running"
)

// Run statuses.
const (
	RunRunning   = "running"
	RunSucceeded = "succeeded"
	RunFailed    = "failed"
	RunCancelled = "cancelled"
)

// maxHeads is how many keys per stage are remembered.
const maxHeads = 50

// Run is one run of a pipeline.
type Run struct {
	ID       string            `json:"id"`
	Pipeline string            `json:"pipeline"`
	File     string            `json:"file"`
	Status   string            `json:"status"`
	Started  time.Time         `json:"started"`
	Ended    time.Time         `json:"ended,omitzero"`
	Params   map[string]string `json:"params,omitempty"`
	Trigger  string            `json:"trigger,omitempty"`
	// Tick is the schedule tick the run is for (serve), zero otherwise.
	Tick time.Time `json:"tick,omitzero"`
	// Host and PID identify the orch process running it, so a run left
	// "running" by a process that died can be recognised.
	Host   string     `json:"host,omitempty"`
	PID    int        `json:"pid,omitempty"`
	Stages []StageRun `json:"stages"`
	// Saved is the sum of the recorded durations of hits.
	Saved time.Duration `json:"saved_ns"`
	Error string        `json:"error,omitempty"`
}

// StageRun is one stage in a run.
type StageRun struct {
	Name     string        `json:"name"`
	Status   string        `json:"status"`
	Key      string        `json:"key,omitempty"`
	Reason   string        `json:"reason,omitempty"`
	Started  time.Time     `json:"started,omitzero"`
	Duration time.Duration `json:"duration_ns"`
	Attempts int           `json:"attempts,omitempty"`
	Log      string        `json:"log,omitempty"` // digest of the captured log
	Error    string        `json:"error,omitempty"`
	// Job and SlurmState are the last Slurm job of a stage run by the Slurm
	// executor, and how it ended.
	Job        string `json:"job,omitempty"`
	SlurmState string `json:"slurm_state,omitempty"`
}

// Head is one key a stage produced.
type Head struct {
	Key  string    `json:"key"`
	Time time.Time `json:"time"`
}

// DB is the history database at a path.
type DB struct {
	path string
	// NoSync commits without fsync, as the cache writes its records: a
	// power cut (not a crash of orch) can lose the newest runs, or leave a
	// database bbolt refuses. `orch run` sets it unless --sync: the commit
	// at the end of a run otherwise waits for the file system's journal,
	// which waits for the run's blobs' write-back (0.13 s of the churn run).
	NoSync bool
}

var (
	bucketRuns  = []byte("runs")
	bucketHeads = []byte("heads")
	// bucketActive indexes the runs still "running": ID → {host, pid}.
	bucketActive = []byte("active")
)

type activeRun struct {
	Host string `json:"host"`
	PID  int    `json:"pid"`
}

// index keeps bucketActive in step with r's status.
func index(tx *bolt.Tx, r *Run) error {
	b := tx.Bucket(bucketActive)
	if r.Status != RunRunning {
		return b.Delete([]byte(r.ID))
	}
	v, _ := json.Marshal(activeRun{Host: r.Host, PID: r.PID})
	return b.Put([]byte(r.ID), v)
}

// ErrNotFound is returned for an unknown run.
var ErrNotFound = errors.New("no such run")

// ErrAmbiguous is returned by Run for an ID prefix of several runs.
var ErrAmbiguous = errors.New("ambiguous run ID")

// Open returns the history at path (created on first write).
func Open(path string) *DB { return &DB{path: path} }

func (db *DB) with(write bool, fn func(tx *bolt.Tx) error) error {
	if !write {
		// No file, or one a writer has created but not yet initialized:
		// nothing is committed, so the view is empty. (bbolt opening a
		// zero-length file read-only tries to initialize it and fails
		// with EBADF: a reader racing the first writer saw "write
		// history.db: bad file descriptor".)
		if fi, err := os.Stat(db.path); errors.Is(err, os.ErrNotExist) || (err == nil && fi.Size() == 0) {
			return fn(nil)
		}
	}
	if err := os.MkdirAll(filepath.Dir(db.path), 0o755); err != nil {
		return err
	}
	b, err := bolt.Open(db.path, 0o644, &bolt.Options{Timeout: 30 * time.Second, ReadOnly: !write, NoSync: db.NoSync, NoGrowSync: db.NoSync})
	if !write && errors.Is(err, syscall.EBADF) {
		return fn(nil) // the file was still empty when bbolt looked (above)
	}
	if err != nil {
		return fmt.Errorf("run history %s: %w", db.path, err)
	}
	defer b.Close()
	if write {
		return b.Update(func(tx *bolt.Tx) error {
			for _, name := range [][]byte{bucketRuns, bucketHeads, bucketActive, bucketTicks} {
				if _, err := tx.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
			return fn(tx)
		})
	}
	return b.View(fn)
}

// NewID returns a new run ID: sortable by start time (to the microsecond),
// then unique by a random suffix.
func NewID(now time.Time) string {
	var r [2]byte
	_, _ = rand.Read(r[:])
	u := now.UTC()
	return fmt.Sprintf("%s-%06d%s", u.Format("20060102-150405"), u.Nanosecond()/1000, hex.EncodeToString(r[:]))
}

// PutRun stores r, replacing a run with the same ID.
func (db *DB) PutRun(r *Run) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return db.with(true, func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketRuns).Put([]byte(r.ID), b); err != nil {
			return err
		}
		return index(tx, r)
	})
}

// FinishRun stores r and records, for every stage that produced a key, that
// key as the stage's newest head; one transaction.
func (db *DB) FinishRun(r *Run) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return db.with(true, func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketRuns).Put([]byte(r.ID), b); err != nil {
			return err
		}
		if err := index(tx, r); err != nil {
			return err
		}
		hb := tx.Bucket(bucketHeads)
		for _, s := range r.Stages {
			if s.Key == "" || (s.Status != Hit && s.Status != Ran) {
				continue
			}
			hk := []byte(r.Pipeline + "\x00" + s.Name)
			var heads []Head
			if v := hb.Get(hk); v != nil {
				_ = json.Unmarshal(v, &heads)
			}
			if len(heads) > 0 && heads[0].Key == s.Key {
				continue
			}
			out := []Head{{Key: s.Key, Time: r.Started}}
			for _, h := range heads {
				if h.Key != s.Key && len(out) < maxHeads {
					out = append(out, h)
				}
			}
			v, _ := json.Marshal(out)
			if err := hb.Put(hk, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Heads returns, for each stage of pipeline, its keys newest first.
func (db *DB) Heads(pipeline string) (HeadSet, error) {
	out := HeadSet{}
	err := db.with(false, func(tx *bolt.Tx) error {
		if tx == nil {
			return nil
		}
		hb := tx.Bucket(bucketHeads)
		if hb == nil {
			return nil
		}
		prefix := []byte(pipeline + "\x00")
		c := hb.Cursor()
		for k, v := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, v = c.Next() {
			out[string(k[len(prefix):])] = append([]byte(nil), v...)
		}
		return nil
	})
	return out, err
}

// HeadSet holds the heads of a pipeline's stages, decoded on demand: a plan
// of cached stages needs none of them (only a MISS is explained against its
// last record), and decoding them all was a tenth of a 1,000-stage plan.
type HeadSet map[string][]byte

// Of returns the heads of stage, newest first (nil if none or unreadable).
func (h HeadSet) Of(stage string) []Head {
	var hs []Head
	if v, ok := h[stage]; ok && json.Unmarshal(v, &hs) != nil {
		return nil
	}
	return hs
}

// Runs returns the most recent runs first, at most limit (0: all), of one
// pipeline ("" for all).
func (db *DB) Runs(pipeline string, limit int) ([]*Run, error) {
	return db.ListRuns(pipeline, "", limit)
}

// ListRuns is Runs filtered by status too ("" for any).
func (db *DB) ListRuns(pipeline, status string, limit int) ([]*Run, error) {
	var out []*Run
	err := db.with(false, func(tx *bolt.Tx) error {
		if tx == nil || tx.Bucket(bucketRuns) == nil {
			return nil
		}
		c := tx.Bucket(bucketRuns).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var r Run
			if err := json.Unmarshal(v, &r); err != nil {
				continue
			}
			if (pipeline != "" && r.Pipeline != pipeline) || (status != "" && r.Status != status) {
				continue
			}
			out = append(out, &r)
			if limit > 0 && len(out) >= limit {
				break
			}
		}
		return nil
	})
	return out, err
}

// Run returns the run whose ID is id or starts with id; "last" is the most
// recent run.
func (db *DB) Run(id string) (*Run, error) {
	// Runs are keyed by ID, which sorts by start time: "last" is the last
	// key, an exact ID one lookup, a prefix a cursor seek. (Decoding every
	// run per lookup took 337 ms at 50,000 runs and held the file lock.)
	var found *Run
	var matches []string
	err := db.with(false, func(tx *bolt.Tx) error {
		if tx == nil || tx.Bucket(bucketRuns) == nil {
			return nil
		}
		b := tx.Bucket(bucketRuns)
		decode := func(v []byte) error {
			var r Run
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("run history: %w", err)
			}
			found = &r
			return nil
		}
		if id == "last" {
			if k, v := b.Cursor().Last(); k != nil {
				return decode(v)
			}
			return nil
		}
		if v := b.Get([]byte(id)); v != nil {
			return decode(v)
		}
		if id == "" {
			return nil
		}
		c := b.Cursor()
		for k, _ := c.Seek([]byte(id)); k != nil && strings.HasPrefix(string(k), id); k, _ = c.Next() {
			matches = append(matches, string(k))
		}
		if len(matches) == 1 {
			return decode(b.Get([]byte(matches[0])))
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, err
	case found != nil:
		return found, nil
	case len(matches) == 0:
		return nil, fmt.Errorf("%w %q (orch runs lists them)", ErrNotFound, id)
	}
	return nil, fmt.Errorf("%w: %q is the start of runs %s", ErrAmbiguous, id, strings.Join(matches, ", "))
}

// MarkAbandoned marks as failed every run still "running" whose process on
// this host is gone (killed with SIGKILL, or the machine crashed), and
// returns their IDs. alive reports whether a process exists.
func (db *DB) MarkAbandoned(host string, alive func(pid int) bool, now time.Time) ([]string, error) {
	// Look first, in the small index of running runs (a read transaction
	// is cheap); write only if needed.
	var dead []string
	err := db.with(false, func(tx *bolt.Tx) error {
		if tx == nil || tx.Bucket(bucketActive) == nil {
			return nil
		}
		return tx.Bucket(bucketActive).ForEach(func(k, v []byte) error {
			var a activeRun
			if json.Unmarshal(v, &a) == nil && a.Host == host && a.PID != 0 && !alive(a.PID) {
				dead = append(dead, string(k))
			}
			return nil
		})
	})
	if err != nil || len(dead) == 0 {
		return nil, err
	}
	var ids []string
	err = db.with(true, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRuns)
		for _, id := range dead {
			v := b.Get([]byte(id))
			var r Run
			if v == nil || json.Unmarshal(v, &r) != nil || r.Status != RunRunning {
				if err := tx.Bucket(bucketActive).Delete([]byte(id)); err != nil {
					return err
				}
				continue
			}
			r.Status = RunFailed
			r.Error = "interrupted: the orch process running it died"
			r.Ended = now
			for i := range r.Stages {
				if r.Stages[i].Status == "" || r.Stages[i].Status == Running {
					r.Stages[i].Status = Cancelled
				}
			}
			nv, err := json.Marshal(&r)
			if err != nil {
				return err
			}
			if err := b.Put([]byte(id), nv); err != nil {
				return err
			}
			if err := index(tx, &r); err != nil {
				return err
			}
			ids = append(ids, r.ID)
		}
		return nil
	})
	return ids, err
}
