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
	Version  int               `json:"version"`
	Key      digest.Digest     `json:"key"`
	Pipeline string            `json:"pipeline"`
	Stage    string            `json:"stage"`
	Preimage Preimage          `json:"preimage"`
	Outputs  map[string]Output `json:"outputs"`
	Log      digest.Digest     `json:"log"`
	Started  time.Time         `json:"started"`
	Duration time.Duration     `json:"duration_ns"`
}

// GetRecord loads and checks the record under key. A record that does not
// parse or whose pre-image does not hash to key is reported as corrupt.
func GetRecord(ctx context.Context, s store.Store, key digest.Digest) (*Record, error) {
	b, err := s.GetRecord(ctx, key)
	if err != nil {
		return nil, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("record %s: %v: %w", key.Short(), err, store.ErrCorrupt)
	}
	if r.Version != RecordVersion || r.Key != key || r.Preimage.Key() != key {
		return nil, fmt.Errorf("record %s: key does not match its pre-image: %w", key.Short(), store.ErrCorrupt)
	}
	return &r, nil
}

// PutRecord writes r under r.Key. Callers write every blob r names first.
func PutRecord(ctx context.Context, s store.Store, r *Record) error {
	r.Version = RecordVersion
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("record %s: %w", r.Key.Short(), err)
	}
	return s.PutRecord(ctx, r.Key, b)
}
