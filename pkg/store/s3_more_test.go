package store_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
)

// rangeProxy forwards to the S3 server, counting GETs and ranged GETs and
// the most ranged GETs in flight at once. Until two ranged GETs are in
// flight together, the first one waits (bounded): a rendezvous that proves
// the ranges are fetched in parallel.
type rangeProxy struct {
	next       http.Handler
	gets       atomic.Int32
	ranged     atomic.Int32
	mu         sync.Mutex
	inFlight   int
	maxFlight  int
	rendezvous chan struct{}
	once       sync.Once
}

func (p *rangeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && !r.URL.Query().Has("list-type") {
		p.gets.Add(1)
		if rg := r.Header.Get("Range"); rg != "" && !strings.HasPrefix(rg, "bytes=0-") {
			p.ranged.Add(1)
			p.mu.Lock()
			p.inFlight++
			p.maxFlight = max(p.maxFlight, p.inFlight)
			n := p.inFlight
			p.mu.Unlock()
			if n >= 2 {
				p.once.Do(func() { close(p.rendezvous) })
			}
			select {
			case <-p.rendezvous:
			case <-time.After(10 * time.Second):
			}
			defer func() {
				p.mu.Lock()
				p.inFlight--
				p.mu.Unlock()
			}()
		}
	}
	p.next.ServeHTTP(w, r)
}

func TestS3ParallelRangedDownload(t *testing.T) {
	cfg := s3Config(t)
	p := &rangeProxy{next: httputil.NewSingleHostReverseProxy(serverURL(t)), rendezvous: make(chan struct{})}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	cfg.Endpoint = srv.URL
	cfg.PartSize = store.MinPartSize
	cfg.Concurrency = 3
	s := openS3(t, cfg)

	big := make([]byte, 7*store.MinPartSize+12345)
	_, _ = rand.Read(big)
	small := []byte("a small blob")
	for _, b := range [][]byte{big, small, {}} {
		d := digest.Bytes(b)
		if err := s.PutBlob(t.Context(), d, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		gets := p.gets.Load()
		got := read(t, s, d)
		if !bytes.Equal(got, b) {
			t.Fatalf("%d-byte blob read back as %d different bytes", len(b), len(got))
		}
		n := p.gets.Load() - gets
		switch len(b) {
		case len(big):
			if n != 8 {
				t.Errorf("%d-byte blob took %d GETs; want 8 (one per 5 MiB)", len(b), n)
			}
		case len(small):
			if n != 1 {
				t.Errorf("%d-byte blob took %d GETs; want 1", len(b), n)
			}
		}
	}
	p.mu.Lock()
	maxFlight := p.maxFlight
	p.mu.Unlock()
	if maxFlight < 2 || maxFlight > 3 {
		t.Errorf("at most %d ranged GETs were in flight at once; want 2 or 3 (Concurrency 3)", maxFlight)
	}

	// Closing a reader half way stops the fetches.
	rc, err := s.OpenBlob(t.Context(), digest.Bytes(big))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, rc, store.MinPartSize+10); err != nil {
		t.Fatal(err)
	}
	if err := rc.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestS3DeleteBlobsAndInfo(t *testing.T) {
	s := openS3(t, s3Config(t))
	before := time.Now().Add(-time.Minute)
	var ds []digest.Digest
	for _, b := range []string{"one", "two", "three", "four"} {
		ds = append(ds, put(t, s, []byte(b)))
	}
	key := digest.String("rec")
	if err := s.PutRecord(t.Context(), key, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	infos := map[digest.Digest]store.Info{}
	if err := s.ListBlobInfo(t.Context(), func(i store.Info) error { infos[i.Digest] = i; return nil }); err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		in, ok := infos[d]
		if !ok || in.Size != int64(len([]string{"one", "two", "three", "four"}[i])) || in.Modified.Before(before) {
			t.Errorf("ListBlobInfo %s = %+v, %v", d.Short(), in, ok)
		}
	}
	var recs []store.Info
	if err := s.ListRecordInfo(t.Context(), func(i store.Info) error { recs = append(recs, i); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Digest != key || recs[0].Size != 2 {
		t.Errorf("ListRecordInfo = %+v", recs)
	}

	missing := digest.String("never stored")
	if err := s.DeleteBlobs(t.Context(), []digest.Digest{ds[0], ds[2], missing}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRecords(t.Context(), []digest.Digest{key}); err != nil {
		t.Fatal(err)
	}
	var left []digest.Digest
	_ = s.ListBlobs(t.Context(), func(d digest.Digest, _ int64) error { left = append(left, d); return nil })
	if len(left) != 2 {
		t.Errorf("after DeleteBlobs of 2 of 4: %d blobs left", len(left))
	}
	if _, err := s.GetRecord(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after DeleteRecords: %v", err)
	}
}

func TestLocalInfo(t *testing.T) {
	l := openLocal(t)
	before := time.Now().Add(-time.Minute)
	d := put(t, l, []byte("blob"))
	var got []store.Info
	if err := l.ListBlobInfo(t.Context(), func(i store.Info) error { got = append(got, i); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Digest != d || got[0].Size != 4 || got[0].Modified.Before(before) {
		t.Errorf("ListBlobInfo = %+v", got)
	}
}

// Fetch downloads what the local store lacks, in parallel, verified.
func TestTieredFetch(t *testing.T) {
	remote := openS3(t, s3Config(t))
	var ds []digest.Digest
	var total int64
	for i := range 20 {
		b := bytes.Repeat([]byte{byte(i)}, 1000+i)
		ds = append(ds, put(t, remote, b))
		total += int64(len(b))
	}
	ts, reported := tiered(t, remote)
	local := put(t, ts.Local, []byte("only local"))
	st, err := ts.Fetch(t.Context(), append(ds, ds[0], local), 4)
	if err != nil {
		t.Fatal(err)
	}
	if st.Fetched != 20 || st.Bytes != total || st.Present != 1 || st.PresentBytes != 10 {
		t.Errorf("Fetch = %+v; want 20 fetched (%d bytes), 1 present", st, total)
	}
	for _, d := range ds {
		if _, err := ts.Local.StatBlob(t.Context(), d); err != nil {
			t.Errorf("not fetched: %v", err)
		}
	}
	st, err = ts.Fetch(t.Context(), ds, 4)
	if err != nil || st.Fetched != 0 || st.Present != 20 {
		t.Errorf("second Fetch = %+v, %v; want everything present", st, err)
	}

	// A blob on neither store fails Fetch, and is named.
	other, _ := tiered(t, remote)
	_, err = other.Fetch(t.Context(), []digest.Digest{ds[1], digest.String("nowhere")}, 2)
	if err == nil || !errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "1 of 2 blobs not fetched") {
		t.Errorf("Fetch of a missing blob: %v", err)
	}
	if len(*reported) > 0 {
		t.Errorf("remote failures reported: %v", *reported)
	}
}
