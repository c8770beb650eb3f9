package cache

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
)

// RecordVersion is the version of the Record encoding written.
//
// Version 2 stores two JSON lines: a header (recordWire without the
// pre-image) and the pre-image's canonical bytes, so a reader decodes the
// small header and hashes the second line without scanning it. Version 1,
// one JSON object with the pre-image embedded, is still read; it is also
// what MarshalJSON produces for people and tools.
const RecordVersion = 2

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
	Preimage json.RawMessage   `json:"preimage,omitempty"`
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

// UnmarshalJSON reads the one-object form, keeping the pre-image unparsed.
func (r *Record) UnmarshalJSON(b []byte) error {
	var w recordWire
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	r.fromWire(&w, w.Preimage)
	return nil
}

func (r *Record) fromWire(w *recordWire, raw []byte) {
	*r = Record{
		Version: w.Version, Key: w.Key, Pipeline: w.Pipeline, Stage: w.Stage, Outputs: w.Outputs,
		Log: w.Log, Started: w.Started, Duration: w.Duration, raw: raw,
	}
}

// encode returns the stored form: the header line, then the pre-image's
// canonical bytes (canonical JSON holds no raw newline).
func (r *Record) encode() ([]byte, error) {
	pre, err := r.Pre()
	if err != nil {
		return nil, err
	}
	h, err := json.Marshal(recordWire{
		Version: r.Version, Key: r.Key, Pipeline: r.Pipeline, Stage: r.Stage,
		Outputs: r.Outputs, Log: r.Log, Started: r.Started, Duration: r.Duration,
	})
	if err != nil {
		return nil, err
	}
	raw := pre.Encode()
	b := make([]byte, 0, len(h)+1+len(raw)+1)
	b = append(append(append(append(b, h...), '\n'), raw...), '\n')
	return b, nil
}

// DecodeRecord parses a stored record of any version it knows the shape
// of, without checking it against a key (GetRecord does that).
func DecodeRecord(b []byte) (*Record, error) {
	r := &Record{}
	head, raw, twoLine := bytes.Cut(bytes.TrimRight(b, "\n"), []byte{'\n'})
	if !twoLine {
		return r, json.Unmarshal(b, r)
	}
	var w recordWire
	if !decodeHeaderFast(head, &w) {
		w = recordWire{}
		if err := json.Unmarshal(head, &w); err != nil {
			return nil, err
		}
	}
	if w.Preimage != nil {
		return nil, errors.New("pre-image both in the header and after it")
	}
	r.fromWire(&w, raw)
	return r, nil
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
	r, err := DecodeRecord(b)
	if err != nil {
		return nil, fmt.Errorf("record %s: %v: %w", key.Short(), err, store.ErrCorrupt)
	}
	if r.Version < 1 || r.Version > RecordVersion || r.Key != key || len(r.raw) == 0 {
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
	b, err := r.encode()
	if err != nil {
		return fmt.Errorf("record %s: %w", r.Key.Short(), err)
	}
	return s.PutRecord(ctx, r.Key, b)
}
