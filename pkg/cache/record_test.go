package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
)

func sampleRecord() *Record {
	pre := basePreimage()
	return &Record{
		Key:      pre.Key(),
		Pipeline: "churn",
		Stage:    "train",
		Preimage: *pre,
		Outputs: map[string]Output{
			"model":   {Digest: d("model bytes"), Size: 11},
			"metrics": {Digest: d("tree"), Size: 1234, Dir: true},
		},
		Log:      d("log"),
		Started:  time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC),
		Duration: 1500 * time.Millisecond,
	}
}

func TestRecordRoundTrip(t *testing.T) {
	s := newMemStore()
	r := sampleRecord()
	if err := PutRecord(t.Context(), s, r); err != nil {
		t.Fatal(err)
	}
	got, err := GetRecord(t.Context(), s, r.Key)
	if err != nil {
		t.Fatalf("GetRecord: %v", err)
	}
	if r.Version != RecordVersion {
		t.Errorf("PutRecord did not set the version: %d", r.Version)
	}
	if pre, err := got.Pre(); err != nil || pre.Key() != r.Key {
		t.Errorf("stored pre-image no longer hashes to the key")
	}
	if !reflect.DeepEqual(got, r) {
		t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
	}
	c := New(s, nil, nil)
	if got, err := c.Lookup(t.Context(), r.Key); err != nil || got.Stage != "train" {
		t.Errorf("Lookup = %v, %v", got, err)
	}
}

func TestRecordVersion1StillRead(t *testing.T) {
	// Caches written before version 2 hold one JSON object per record.
	s := newMemStore()
	r := sampleRecord()
	r.Version = 1
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.PutRecord(t.Context(), r.Key, b)
	got, err := GetRecord(t.Context(), s, r.Key)
	if err != nil {
		t.Fatalf("version-1 record: %v", err)
	}
	if pre, err := got.Pre(); err != nil || pre.Key() != r.Key || got.Outputs["model"] != r.Outputs["model"] {
		t.Errorf("version-1 record read as %+v", got)
	}
}

func TestGetRecordCorruptLines(t *testing.T) {
	s := newMemStore()
	r := sampleRecord()
	_ = PutRecord(t.Context(), s, r)
	good, _ := s.GetRecord(t.Context(), r.Key)
	head, pre, _ := bytes.Cut(good, []byte("\n"))
	cases := map[string][]byte{
		"pre-image line edited":  bytes.Replace(good, []byte(r.Preimage.Command), []byte("rm -rf /"), 1),
		"pre-image line missing": append(append([]byte{}, head...), '\n'),
		"header only":            head[:len(head)-1],
		"header edited":          bytes.Replace(good, []byte(`"version":2`), []byte(`"version":9`), 1),
		"lines swapped":          append(append(append([]byte{}, pre...), '\n'), head...),
		"third line":             append(append([]byte{}, good...), "{}\n"...),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			s := newMemStore()
			_ = s.PutRecord(t.Context(), r.Key, b)
			if got, err := GetRecord(t.Context(), s, r.Key); !errors.Is(err, store.ErrCorrupt) {
				t.Errorf("GetRecord = %+v, %v; want ErrCorrupt", got, err)
			}
		})
	}
}

func TestGetRecordNotFound(t *testing.T) {
	_, err := GetRecord(t.Context(), newMemStore(), d("nothing"))
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRecord of a missing key: %v, want ErrNotFound", err)
	}
}

func TestGetRecordCorrupt(t *testing.T) {
	valid := func() map[string]any {
		b, _ := json.Marshal(sampleRecord())
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		m["version"] = float64(RecordVersion)
		return m
	}
	key := sampleRecord().Key
	cases := []struct {
		name string
		data func() []byte
	}{
		{"not JSON", func() []byte { return []byte("\x00\x01 not json") }},
		{"truncated", func() []byte { b, _ := json.Marshal(valid()); return b[:len(b)/2] }},
		{"empty", func() []byte { return nil }},
		{"pre-image edited", func() []byte {
			m := valid()
			m["preimage"].(map[string]any)["command"] = "rm -rf /"
			b, _ := json.Marshal(m)
			return b
		}},
		{"param edited", func() []byte {
			m := valid()
			m["preimage"].(map[string]any)["params"].(map[string]any)["lr"] = "0.2"
			b, _ := json.Marshal(m)
			return b
		}},
		{"stored under another key", func() []byte {
			m := valid()
			m["key"] = d("other").String()
			b, _ := json.Marshal(m)
			return b
		}},
		{"other version", func() []byte {
			m := valid()
			m["version"] = float64(RecordVersion + 1)
			b, _ := json.Marshal(m)
			return b
		}},
		{"bad digest", func() []byte {
			m := valid()
			m["log"] = "zz"
			b, _ := json.Marshal(m)
			return b
		}},
	}
	// The valid form is accepted: the cases differ from it in one thing.
	s := newMemStore()
	b, _ := json.Marshal(valid())
	_ = s.PutRecord(t.Context(), key, b)
	if _, err := GetRecord(t.Context(), s, key); err != nil {
		t.Fatalf("valid record: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newMemStore()
			if err := s.PutRecord(t.Context(), key, c.data()); err != nil {
				t.Fatal(err)
			}
			r, err := GetRecord(t.Context(), s, key)
			if !errors.Is(err, store.ErrCorrupt) {
				t.Errorf("GetRecord = %v, %v; want an error wrapping store.ErrCorrupt", r, err)
			}
		})
	}
	// A record copied under another key is corrupt there.
	s = newMemStore()
	r := sampleRecord()
	_ = PutRecord(t.Context(), s, r)
	raw, _ := s.GetRecord(t.Context(), r.Key)
	other := digest.String("elsewhere")
	_ = s.PutRecord(t.Context(), other, raw)
	if _, err := GetRecord(t.Context(), s, other); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("record copied under another key: %v, want ErrCorrupt", err)
	}
}
