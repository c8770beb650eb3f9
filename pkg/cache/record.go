package cache

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
)

// RecordVersion is the version of the Record encoding.
const RecordVersion = 1

// Output is one produced output in a Record.
type Output struct {
	Digest digest.Digest `json:"digest"`
	Size   int64         `json:"size"`
	// Dir marks a directory output: Digest names its Tree blob and Size is
	// the sum of its files.
	Dir bool `json:"dir,omitempty"`
}

// Record is what a cache key produced.
type Record struct {
	Version  int           `json:"version"`
	Key      digest.Digest `json:"key"`
	Pipeline string        `json:"pipeline"`
	Stage    string        `json:"stage"`
	// Preimage is what Key is the digest of. A record read by GetRecord
	// leaves it unparsed until Pre is called: a HIT needs only Outputs.
	Preimage Preimage          `json:"-"`
	Outputs  map[string]Output `json:"outputs"`
	Log      digest.Digest     `json:"log"`
	Started  time.Time         `json:"started"`
	Duration time.Duration     `json:"duration_ns"`

	raw []byte // the pre-image's canonical bytes, as stored
}

// recordWire is the stored form: the pre-image is embedded as its exact
// canonical bytes, so a reader checks the key by hashing them, without
// decoding and re-encoding.
type recordWire struct {
	Version  int               `json:"version"`
	Key      digest.Digest     `json:"key"`
	Pipeline string            `json:"pipeline"`
	Stage    string            `json:"stage"`
	Preimage json.RawMessage   `json:"preimage"`
	Outputs  map[string]Output `json:"outputs"`
	Log      digest.Digest     `json:"log"`
	Started  time.Time         `json:"started"`
	Duration time.Duration     `json:"duration_ns"`
}

// MarshalJSON writes the stored form, with the pre-image's canonical bytes.
func (r Record) MarshalJSON() ([]byte, error) {
	pre, err := r.Pre()
	if err != nil {
		return nil, err
	}
	return json.Marshal(recordWire{
		Version: r.Version, Key: r.Key, Pipeline: r.Pipeline, Stage: r.Stage, Preimage: pre.Encode(),
		Outputs: r.Outputs, Log: r.Log, Started: r.Started, Duration: r.Duration,
	})
}

// UnmarshalJSON reads the stored form, keeping the pre-image unparsed.
func (r *Record) UnmarshalJSON(b []byte) error {
	var w recordWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*r = Record{
		Version: w.Version, Key: w.Key, Pipeline: w.Pipeline, Stage: w.Stage, Outputs: w.Outputs,
		Log: w.Log, Started: w.Started, Duration: w.Duration, raw: w.Preimage,
	}
	return nil
}

// Pre returns the record's pre-image, parsing it on first use.
func (r *Record) Pre() (*Preimage, error) {
	if r.raw != nil {
		var p Preimage
		if err := json.Unmarshal(r.raw, &p); err != nil {
			return nil, fmt.Errorf("record %s: pre-image: %v: %w", r.Key.Short(), err, store.ErrCorrupt)
		}
		r.Preimage, r.raw = p, nil
	}
	return &r.Preimage, nil
}

// GetRecord loads and checks the record under key. A record that does not
// parse or whose pre-image does not hash to key is reported as corrupt.
func GetRecord(ctx context.Context, s store.Store, key digest.Digest) (*Record, error) {
	b, err := s.GetRecord(ctx, key)
	if err != nil {
		return nil, err
	}
	r := &Record{}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("record %s: %v: %w", key.Short(), err, store.ErrCorrupt)
	}
	if r.Version != RecordVersion || r.Key != key {
		return nil, fmt.Errorf("record %s: key does not match its pre-image: %w", key.Short(), store.ErrCorrupt)
	}
	if digest.Bytes(r.raw) != key {
		// Not the canonical bytes orch writes (another tool re-encoded the
		// record?): decode and re-encode before judging.
		pre, err := r.Pre()
		if err != nil || pre.Key() != key {
			return nil, fmt.Errorf("record %s: key does not match its pre-image: %w", key.Short(), store.ErrCorrupt)
		}
	}
	return r, nil
}

// PutRecord writes r under r.Key. Callers write every blob r names first.
func PutRecord(ctx context.Context, s store.Store, r *Record) error {
	r.Version = RecordVersion
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("record %s: %w", r.Key.Short(), err)
	}
	return s.PutRecord(ctx, r.Key, b)
}
