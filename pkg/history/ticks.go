package history

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketTicks holds, per pipeline, the last scheduler tick processed:
// pipeline → Tick. A tick is processed when its run is created (in the
// same transaction) or when the scheduler decides to skip it.
var bucketTicks = []byte("ticks")

// Tick is the last processed scheduler tick of a pipeline.
type Tick struct {
	Time time.Time `json:"time"`
	// Schedule identifies the schedule the tick belongs to; after a
	// schedule changes, older ticks are not caught up.
	Schedule string `json:"schedule,omitempty"`
	// RunID is the run the tick started; empty when it was skipped.
	RunID string `json:"run_id,omitempty"`
	// Skipped says why the tick did not run.
	Skipped string `json:"skipped,omitempty"`
}

// ErrTickDone is returned when a tick at or after the one being recorded
// was processed already (by this or another orch process).
var ErrTickDone = errors.New("tick already processed")

// LastTick returns pipeline's last processed tick; ok is false if none.
func (db *DB) LastTick(pipeline string) (t Tick, ok bool, err error) {
	err = db.with(false, func(tx *bolt.Tx) error {
		if tx == nil || tx.Bucket(bucketTicks) == nil {
			return nil
		}
		v := tx.Bucket(bucketTicks).Get([]byte(pipeline))
		if v == nil {
			return nil
		}
		ok = true
		return json.Unmarshal(v, &t)
	})
	return t, ok, err
}

// putTick records t as pipeline's last tick unless one at or after it is
// there already.
func putTick(tx *bolt.Tx, pipeline string, t Tick) error {
	b := tx.Bucket(bucketTicks)
	if v := b.Get([]byte(pipeline)); v != nil {
		var last Tick
		if json.Unmarshal(v, &last) == nil && !t.Time.After(last.Time) {
			return fmt.Errorf("%s tick %s: %w (last: %s)", pipeline, t.Time.Format(time.RFC3339), ErrTickDone, last.Time.Format(time.RFC3339))
		}
	}
	v, err := json.Marshal(t)
	if err != nil {
		return err
	}
	return b.Put([]byte(pipeline), v)
}

// StartRun stores the new run r and, if tick is not nil, records it as the
// pipeline's last processed tick, in one transaction: a run exists for a
// tick if and only if the tick is recorded. It fails with ErrTickDone, and
// stores nothing, if that tick or a later one was processed already.
func (db *DB) StartRun(r *Run, tick *Tick) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return db.with(true, func(tx *bolt.Tx) error {
		if tick != nil {
			t := *tick
			t.RunID = r.ID
			if err := putTick(tx, r.Pipeline, t); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketRuns).Put([]byte(r.ID), b); err != nil {
			return err
		}
		return index(tx, r)
	})
}

// SkipTick records t as pipeline's last processed tick without a run
// (ErrTickDone if it or a later one is recorded already).
func (db *DB) SkipTick(pipeline string, t Tick) error {
	return db.with(true, func(tx *bolt.Tx) error { return putTick(tx, pipeline, t) })
}
