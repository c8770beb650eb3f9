package cache

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
	"github.com/orch-dev/orch/pkg/store/storetest"
)

// memStore is an in-memory store.Store standing in for a remote. It logs
// every write and can be told to fail puts.
type memStore struct {
	mu      sync.Mutex
	blobs   map[digest.Digest][]byte
	records map[digest.Digest][]byte
	log     []string // "PutBlob HEX", "PutRecord HEX", "StatBlob HEX", ...
	failPut map[digest.Digest]error
	// onPutRecord, if set, is called (under no lock) before a record is stored.
	onPutRecord func(key digest.Digest, data []byte)
}

var _ store.Store = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{blobs: map[digest.Digest][]byte{}, records: map[digest.Digest][]byte{}, failPut: map[digest.Digest]error{}}
}

func (m *memStore) note(op string, d digest.Digest) {
	m.mu.Lock()
	m.log = append(m.log, op+" "+d.String())
	m.mu.Unlock()
}

func (m *memStore) ops() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.log...)
}

func (m *memStore) has(d digest.Digest) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.blobs[d]
	return ok
}

func (m *memStore) StatBlob(_ context.Context, d digest.Digest) (int64, error) {
	m.note("StatBlob", d)
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return 0, fmt.Errorf("blob %s: %w", d.Short(), store.ErrNotFound)
	}
	return int64(len(b)), nil
}

func (m *memStore) PutBlob(_ context.Context, d digest.Digest, r io.Reader) error {
	m.note("PutBlob", d)
	m.mu.Lock()
	err := m.failPut[d]
	m.mu.Unlock()
	if err != nil {
		return err
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	if digest.Bytes(b) != d {
		return fmt.Errorf("blob %s: %w", d.Short(), store.ErrCorrupt)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.blobs[d]; !ok {
		m.blobs[d] = b
	}
	return nil
}

// corrupt replaces blob d's bytes without changing its name.
func (m *memStore) corrupt(d digest.Digest, b []byte) {
	m.mu.Lock()
	m.blobs[d] = b
	m.mu.Unlock()
}

func (m *memStore) OpenBlob(_ context.Context, d digest.Digest) (io.ReadCloser, error) {
	m.note("OpenBlob", d)
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blobs[d]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", d.Short(), store.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), nil
}

func (m *memStore) DeleteBlob(_ context.Context, d digest.Digest) error {
	m.note("DeleteBlob", d)
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.blobs, d)
	return nil
}

func (m *memStore) ListBlobs(_ context.Context, fn func(digest.Digest, int64) error) error {
	m.mu.Lock()
	type e struct {
		d digest.Digest
		n int64
	}
	var es []e
	for d, b := range m.blobs {
		es = append(es, e{d, int64(len(b))})
	}
	m.mu.Unlock()
	for _, x := range es {
		if err := fn(x.d, x.n); err != nil {
			return err
		}
	}
	return nil
}

func (m *memStore) GetRecord(_ context.Context, key digest.Digest) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.records[key]
	if !ok {
		return nil, fmt.Errorf("record %s: %w", key.Short(), store.ErrNotFound)
	}
	return append([]byte{}, b...), nil
}

func (m *memStore) PutRecord(_ context.Context, key digest.Digest, data []byte) error {
	if m.onPutRecord != nil {
		m.onPutRecord(key, data)
	}
	m.note("PutRecord", key)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records[key] = append([]byte{}, data...)
	return nil
}

func (m *memStore) DeleteRecord(_ context.Context, key digest.Digest) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.records, key)
	return nil
}

func (m *memStore) ListRecords(_ context.Context, fn func(digest.Digest) error) error {
	m.mu.Lock()
	var ks []digest.Digest
	for k := range m.records {
		ks = append(ks, k)
	}
	m.mu.Unlock()
	for _, k := range ks {
		if err := fn(k); err != nil {
			return err
		}
	}
	return nil
}

// The fake passes the same suite as the real stores, so tests that use it
// as a remote test the cache and not the fake.
func TestMemStoreConformance(t *testing.T) {
	storetest.Run(t, func(*testing.T) store.Store { return newMemStore() })
}
