package cache

import "testing"

// BenchmarkGetRecord is the per-stage cost of `orch plan` on a cached
// workspace, less the file read: decode and check one stored record.
func BenchmarkGetRecord(b *testing.B) {
	s := newMemStore()
	r := sampleRecord()
	if err := PutRecord(b.Context(), s, r); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := GetRecord(b.Context(), s, r.Key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPreimageKey is the per-stage cost of computing a key.
func BenchmarkPreimageKey(b *testing.B) {
	pre := basePreimage()
	b.ReportAllocs()
	for b.Loop() {
		_ = pre.Key()
	}
}
