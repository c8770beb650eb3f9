package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
	"github.com/orch-dev/orch/pkg/store/storetest"
)

// tiered returns a tiered store with a fresh local store in front of
// remote, and a pointer to the remote failures it reported.
func tiered(t *testing.T, remote store.Store) (*store.Tiered, *[]error) {
	t.Helper()
	var mu sync.Mutex
	var reported []error
	return &store.Tiered{
		Local:  openLocal(t),
		Remote: remote,
		OnRemoteError: func(err error) {
			mu.Lock()
			reported = append(reported, err)
			mu.Unlock()
		},
	}, &reported
}

func TestTieredConformanceS3(t *testing.T) {
	testRemote(t)
	storetest.Run(t, func(t *testing.T) store.Store {
		ts, reported := tiered(t, openS3(t, s3Config(t)))
		t.Cleanup(func() {
			if len(*reported) > 0 {
				t.Errorf("remote failures reported: %v", *reported)
			}
		})
		return ts
	})
}

func TestTieredConformanceDir(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		ts, _ := tiered(t, openLocal(t))
		return ts
	})
}

func put(t *testing.T, s store.Store, b []byte) digest.Digest {
	t.Helper()
	d := digest.Bytes(b)
	if err := s.PutBlob(t.Context(), d, bytes.NewReader(b)); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	return d
}

func read(t *testing.T, s store.Store, d digest.Digest) []byte {
	t.Helper()
	rc, err := s.OpenBlob(t.Context(), d)
	if err != nil {
		t.Fatalf("OpenBlob %s: %v", d.Short(), err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// What one machine writes through its tiered store, another one finds: the
// record and the blob are fetched into its local store, verified.
func TestTieredRemoteHit(t *testing.T) {
	remote := openS3(t, s3Config(t))
	a, _ := tiered(t, remote)
	b, reported := tiered(t, remote)

	blob := make([]byte, 300_000)
	_, _ = rand.Read(blob)
	d := put(t, a, blob)
	key := digest.String("key")
	if err := a.PutRecord(t.Context(), key, []byte("record")); err != nil {
		t.Fatal(err)
	}
	// Written through: the remote has both.
	if _, err := remote.StatBlob(t.Context(), d); err != nil {
		t.Fatalf("remote after a tiered PutBlob: %v", err)
	}
	if got, err := remote.GetRecord(t.Context(), key); err != nil || string(got) != "record" {
		t.Fatalf("remote record = %q, %v", got, err)
	}

	// b's local store has nothing yet.
	if _, err := b.Local.StatBlob(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("b's local store has the blob before any read: %v", err)
	}
	if n, err := b.StatBlob(t.Context(), d); err != nil || n != int64(len(blob)) {
		t.Errorf("b.StatBlob = %d, %v; want %d from the remote", n, err, len(blob))
	}
	rec, err := b.GetRecord(t.Context(), key)
	if err != nil || string(rec) != "record" {
		t.Fatalf("b.GetRecord = %q, %v", rec, err)
	}
	if got, err := b.Local.GetRecord(t.Context(), key); err != nil || string(got) != "record" {
		t.Errorf("the remote record was not copied to b's local store: %q, %v", got, err)
	}
	if got := read(t, b, d); !bytes.Equal(got, blob) {
		t.Errorf("b.OpenBlob: %d bytes that differ", len(got))
	}
	if got, err := os.ReadFile(b.Local.BlobPath(d)); err != nil || !bytes.Equal(got, blob) {
		t.Errorf("the blob was not downloaded into b's local store: %v", err)
	}
	if len(*reported) > 0 {
		t.Errorf("remote failures reported: %v", *reported)
	}

	// A key nobody wrote is a miss in both tiers.
	if _, err := b.GetRecord(t.Context(), digest.String("nobody")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRecord of an unknown key: %v", err)
	}
	if _, err := b.OpenBlob(t.Context(), digest.String("nobody")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("OpenBlob of an unknown blob: %v", err)
	}
}

// A blob whose remote bytes do not match its digest is never served: the
// download is rejected with ErrCorrupt, nothing lands in the local store,
// and the bad object is deleted from the remote so the next writer repairs
// it.
func TestTieredCorruptRemoteBlob(t *testing.T) {
	cfg := s3Config(t)
	remote := openS3(t, cfg)
	ts, reported := tiered(t, remote)
	good := []byte("the right bytes")
	d := digest.Bytes(good)
	_, err := remote.Client().PutObject(t.Context(), &s3.PutObjectInput{
		Bucket: aws.String(cfg.Bucket), Key: aws.String(remote.BlobKey(d)), Body: strings.NewReader("the wrong bytes"),
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ts.OpenBlob(t.Context(), d)
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("OpenBlob of a corrupt remote blob: %v; want ErrCorrupt", err)
	}
	if !strings.Contains(err.Error(), remote.String()) {
		t.Errorf("error does not name the remote: %v", err)
	}
	if _, err := ts.Local.StatBlob(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("corrupt bytes reached the local store: %v", err)
	}
	if _, err := remote.StatBlob(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("corrupt remote object not deleted: %v", err)
	}
	if len(*reported) > 0 {
		t.Errorf("a corrupt blob was reported as the remote being down: %v", *reported)
	}
	// The next writer repairs it, and then it is served.
	other, _ := tiered(t, remote)
	put(t, other, good)
	if got := read(t, ts, d); !bytes.Equal(got, good) {
		t.Errorf("after repair: %q", got)
	}
}

// Corruption on the server's disk (versitygw keeps objects as plain files)
// is caught the same way.
func TestTieredCorruptOnServerDisk(t *testing.T) {
	data := os.Getenv("ORCH_TEST_S3_DATA")
	if data == "" {
		t.Skip("ORCH_TEST_S3_DATA (the server's posix directory) is not set")
	}
	cfg := s3Config(t)
	remote := openS3(t, cfg)
	a, _ := tiered(t, remote)
	b, _ := tiered(t, remote)
	blob := bytes.Repeat([]byte("disk "), 5000)
	d := put(t, a, blob)
	path := data + "/" + cfg.Bucket + "/" + remote.BlobKey(d)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the object is not a plain file at %s: %v", path, err)
	}
	raw[100] ^= 0xff
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := b.OpenBlob(t.Context(), d); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("OpenBlob of a blob corrupted on the server's disk: %v; want ErrCorrupt", err)
	}
	if _, err := b.Local.StatBlob(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("corrupt bytes reached the local store: %v", err)
	}
}

// countingServer answers every request with 503, counting them: a remote
// that is down.
func countingServer(t *testing.T) (*atomic.Int32, string) {
	t.Helper()
	p, ep := newFaultyProxy(t, 1<<30, http.StatusServiceUnavailable, "ServiceUnavailable")
	return &p.seen, ep
}

// With the remote down, every operation works on the local store, the
// failure is reported once, and the remote is not asked again.
func TestTieredRemoteDown(t *testing.T) {
	for _, tc := range []struct {
		name     string
		endpoint func(t *testing.T) (string, *atomic.Int32)
	}{
		{"connection refused", func(t *testing.T) (string, *atomic.Int32) { return "http://" + closedAddr(t), nil }},
		{"503", func(t *testing.T) (string, *atomic.Int32) {
			seen, ep := countingServer(t)
			return ep, seen
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := s3Config(t)
			ep, seen := tc.endpoint(t)
			cfg.Endpoint = ep
			cfg.MaxAttempts = 2
			cfg.MaxBackoff = 1
			remote := openS3(t, cfg)
			ts, reported := tiered(t, remote)
			ctx := t.Context()

			// Reads miss locally, fail remotely: a miss, not an error.
			if _, err := ts.GetRecord(ctx, digest.String("k")); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("GetRecord with the remote down: %v; want ErrNotFound", err)
			}
			if len(*reported) != 1 {
				t.Fatalf("after the first failure, %d reports; want 1", len(*reported))
			}
			if !ts.RemoteDown() {
				t.Errorf("RemoteDown() = false after a failure")
			}
			msg := (*reported)[0].Error()
			if !strings.Contains(msg, remote.String()) {
				t.Errorf("report does not name the remote: %s", msg)
			}
			var before int32
			if seen != nil {
				before = seen.Load()
				if before != 2 {
					t.Errorf("the first operation made %d requests; want 2 (MaxAttempts)", before)
				}
			}

			// Everything else works locally.
			blob := []byte("made while the remote was down")
			d := put(t, ts, blob)
			if err := ts.PutRecord(ctx, digest.String("k"), []byte("rec")); err != nil {
				t.Errorf("PutRecord: %v", err)
			}
			if got := read(t, ts, d); !bytes.Equal(got, blob) {
				t.Errorf("OpenBlob: %q", got)
			}
			if n, err := ts.StatBlob(ctx, d); err != nil || n != int64(len(blob)) {
				t.Errorf("StatBlob = %d, %v", n, err)
			}
			if _, err := ts.StatBlob(ctx, digest.String("absent")); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("StatBlob of an absent blob: %v", err)
			}
			if _, err := ts.OpenBlob(ctx, digest.String("absent")); !errors.Is(err, store.ErrNotFound) {
				t.Errorf("OpenBlob of an absent blob: %v", err)
			}
			if got, err := ts.GetRecord(ctx, digest.String("k")); err != nil || string(got) != "rec" {
				t.Errorf("GetRecord = %q, %v", got, err)
			}
			var blobs, recs int
			if err := ts.ListBlobs(ctx, func(digest.Digest, int64) error { blobs++; return nil }); err != nil || blobs != 1 {
				t.Errorf("ListBlobs: %d blobs, %v", blobs, err)
			}
			if err := ts.ListRecords(ctx, func(digest.Digest) error { recs++; return nil }); err != nil || recs != 1 {
				t.Errorf("ListRecords: %d records, %v", recs, err)
			}
			if len(*reported) != 1 {
				t.Errorf("%d reports; want exactly 1: %v", len(*reported), *reported)
			}
			if seen != nil && seen.Load() != before {
				t.Errorf("the remote was asked %d more times after it failed", seen.Load()-before)
			}
		})
	}
}

// The breaker opens on a write too, and then the record does not go to the
// remote after its blob failed to (no remote record without its blobs).
func TestTieredRemoteFailsOnWrite(t *testing.T) {
	cfg := s3Config(t)
	p, ep := newFaultyProxy(t, 0, http.StatusInternalServerError, "InternalError")
	cfg.Endpoint = ep
	cfg.MaxAttempts = 2
	cfg.MaxBackoff = 1
	remote := openS3(t, cfg)
	ts, reported := tiered(t, remote)
	p.n.Store(1 << 30) // down from now on
	d := put(t, ts, []byte("blob"))
	key := digest.String("k")
	if err := ts.PutRecord(t.Context(), key, []byte("rec")); err != nil {
		t.Fatal(err)
	}
	if len(*reported) != 1 {
		t.Fatalf("%d reports, want 1", len(*reported))
	}
	p.n.Store(0) // back up: the remote has neither, the local store both
	direct := openS3(t, func() store.S3Config { c := cfg; c.Endpoint = serverURL(t).String(); return c }())
	if _, err := direct.GetRecord(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the record reached the remote after its blob failed to: %v", err)
	}
	if _, err := ts.Local.StatBlob(t.Context(), d); err != nil {
		t.Errorf("local blob: %v", err)
	}

	// Push uploads both now, blob first.
	st, err := store.Push(t.Context(), ts.Local, direct, 4)
	if err != nil {
		t.Fatal(err)
	}
	if st.Blobs != 1 || st.Records != 1 {
		t.Errorf("Push = %+v; want 1 blob and 1 record", st)
	}
	if _, err := direct.StatBlob(t.Context(), d); err != nil {
		t.Errorf("remote blob after Push: %v", err)
	}
}

// Many readers of one missing blob all get the whole blob.
func TestTieredConcurrentFetch(t *testing.T) {
	remote := openS3(t, s3Config(t))
	a, _ := tiered(t, remote)
	b, _ := tiered(t, remote)
	blob := make([]byte, 2<<20)
	_, _ = rand.Read(blob)
	d := put(t, a, blob)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			rc, err := b.OpenBlob(context.Background(), d)
			if err != nil {
				t.Error(err)
				return
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil || !bytes.Equal(got, blob) {
				t.Errorf("concurrent fetch: %d bytes, %v", len(got), err)
			}
		})
	}
	wg.Wait()
}

func TestPush(t *testing.T) {
	for _, tc := range []struct {
		name   string
		remote func(t *testing.T) store.Store
	}{
		{"s3", func(t *testing.T) store.Store { return openS3(t, s3Config(t)) }},
		{"dir", func(t *testing.T) store.Store { return openLocal(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			remote := tc.remote(t)
			local := openLocal(t)
			ctx := t.Context()
			var size int64
			var blobs []digest.Digest
			for i := range 20 {
				b := bytes.Repeat([]byte{byte(i)}, 1000*(i+1))
				blobs = append(blobs, put(t, local, b))
				size += int64(len(b))
			}
			for i := range 5 {
				if err := local.PutRecord(ctx, digest.String(string(rune('a'+i))), []byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
			}
			// The remote already has two blobs and one record.
			for _, d := range blobs[:2] {
				f, _ := local.OpenBlob(ctx, d)
				if err := remote.PutBlob(ctx, d, f); err != nil {
					t.Fatal(err)
				}
				f.Close()
				n, _ := local.StatBlob(ctx, d)
				size -= n
			}
			if err := remote.PutRecord(ctx, digest.String("a"), []byte("theirs")); err != nil {
				t.Fatal(err)
			}

			st, err := store.Push(ctx, local, remote, 4)
			if err != nil {
				t.Fatal(err)
			}
			want := store.PushStats{Blobs: 18, Bytes: size, BlobsPresent: 2, Records: 4, RecordsPresent: 1}
			if st != want {
				t.Errorf("Push = %+v, want %+v", st, want)
			}
			for _, d := range blobs {
				if _, err := remote.StatBlob(ctx, d); err != nil {
					t.Errorf("remote blob %s: %v", d.Short(), err)
				}
			}
			if got, _ := remote.GetRecord(ctx, digest.String("a")); string(got) != "theirs" {
				t.Errorf("Push replaced a record the remote had: %q", got)
			}
			if got, _ := remote.GetRecord(ctx, digest.String("c")); !bytes.Equal(got, []byte{2}) {
				t.Errorf("pushed record c = %q", got)
			}

			// Nothing left to do.
			st, err = store.Push(ctx, local, remote, 4)
			if err != nil {
				t.Fatal(err)
			}
			if want := (store.PushStats{BlobsPresent: 20, RecordsPresent: 5}); st != want {
				t.Errorf("second Push = %+v, want %+v", st, want)
			}
		})
	}
}

// A corrupt local blob is not pushed, and then no record is either.
func TestPushCorruptLocalBlob(t *testing.T) {
	remote := openS3(t, s3Config(t))
	local := openLocal(t)
	good := put(t, local, []byte("good"))
	bad := put(t, local, []byte("soon corrupt"))
	if err := os.Chmod(local.BlobPath(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(local.BlobPath(bad), []byte("tampered"), 0o444); err != nil {
		t.Fatal(err)
	}
	key := digest.String("k")
	if err := local.PutRecord(t.Context(), key, []byte("rec")); err != nil {
		t.Fatal(err)
	}
	st, err := store.Push(t.Context(), local, remote, 2)
	if !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), bad.Short()) || !strings.Contains(err.Error(), "no record was pushed") {
		t.Fatalf("Push with a corrupt local blob: %v; want ErrCorrupt naming %s", err, bad.Short())
	}
	if st.Blobs != 1 || st.Records != 0 {
		t.Errorf("Push = %+v; want the good blob only", st)
	}
	if _, err := remote.StatBlob(t.Context(), good); err != nil {
		t.Errorf("good blob: %v", err)
	}
	if _, err := remote.StatBlob(t.Context(), bad); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("corrupt blob reached the remote: %v", err)
	}
	if _, err := remote.GetRecord(t.Context(), key); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a record was pushed despite a failed blob: %v", err)
	}
}

// Push to a remote that is down fails with an error naming it.
func TestPushRemoteDown(t *testing.T) {
	cfg := s3Config(t)
	cfg.Endpoint = "http://" + closedAddr(t)
	cfg.MaxAttempts = 1
	remote := openS3(t, cfg)
	local := openLocal(t)
	put(t, local, []byte("x"))
	_, err := store.Push(t.Context(), local, remote, 2)
	if err == nil || !strings.Contains(err.Error(), remote.String()) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Push to a closed port: %v", err)
	}
}

// UploadBlobs (what pkg/cache's Save calls before writing a record) sends
// the blobs the remote lacks, and only those.
func TestTieredUploadBlobs(t *testing.T) {
	cfg := s3Config(t)
	p, ep := newFaultyProxy(t, 0, http.StatusServiceUnavailable, "SlowDown")
	cfg.Endpoint = ep
	cfg.MaxAttempts = 2
	cfg.MaxBackoff = 1
	remote := openS3(t, cfg)
	ts, reported := tiered(t, remote)
	var ds []digest.Digest
	for i := range 20 {
		ds = append(ds, put(t, ts.Local, bytes.Repeat([]byte{byte(i)}, 100+i))) // local only, as Collect does
	}
	if err := ts.UploadBlobs(t.Context(), ds[:5]); err != nil {
		t.Fatal(err)
	}
	if got := p.puts.Load(); got != 5 {
		t.Errorf("uploading 5 blobs made %d PUTs", got)
	}
	if err := ts.UploadBlobs(t.Context(), ds); err != nil {
		t.Fatal(err)
	}
	if got := p.puts.Load(); got != 20 {
		t.Errorf("uploading 15 more blobs (and 5 the remote has) made %d PUTs in all, want 20", got)
	}
	for _, d := range ds {
		if _, err := remote.StatBlob(t.Context(), d); err != nil {
			t.Errorf("remote blob %s: %v", d.Short(), err)
		}
	}

	// A blob the local store lacks is an error, not a remote failure.
	err := ts.UploadBlobs(t.Context(), []digest.Digest{digest.String("absent")})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("UploadBlobs of a blob missing locally: %v; want ErrNotFound", err)
	}
	if len(*reported) != 0 {
		t.Errorf("reported: %v", *reported)
	}

	// The remote goes down: nil, reported once, and nothing more is sent.
	p.n.Store(1 << 30)
	more := []digest.Digest{put(t, ts.Local, []byte("x")), put(t, ts.Local, []byte("y")), put(t, ts.Local, []byte("z"))}
	if err := ts.UploadBlobs(t.Context(), more); err != nil {
		t.Errorf("UploadBlobs with the remote down: %v", err)
	}
	if len(*reported) != 1 {
		t.Errorf("%d reports, want 1", len(*reported))
	}
	seen := p.seen.Load()
	if err := ts.UploadBlobs(t.Context(), more); err != nil || p.seen.Load() != seen {
		t.Errorf("UploadBlobs after the breaker opened: %v, %d requests", err, p.seen.Load()-seen)
	}
}
