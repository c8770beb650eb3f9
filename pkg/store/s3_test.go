package store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
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

// The S3 tests run against the real S3-compatible server that
// scripts/s3server.sh starts (scripts/test.sh always does): ORCH_TEST_S3 is
// s3://BUCKET/PREFIX, and the AWS_* variables it exports say where the
// server is. Every test works under its own random prefix.

var skipOnce sync.Once

// testRemote returns the parsed ORCH_TEST_S3, skipping the test (loudly)
// only when it is unset.
func testRemote(t *testing.T) *store.Remote {
	t.Helper()
	v := os.Getenv("ORCH_TEST_S3")
	if v == "" {
		msg := "ORCH_TEST_S3 is not set: SKIPPING the tests against a real S3 server. " +
			`Run them with: eval "$(scripts/s3server.sh start /tmp/orch-s3)"`
		skipOnce.Do(func() { fmt.Fprintln(os.Stderr, "!!!", msg) })
		t.Skip(msg)
	}
	r, err := store.ParseRemote(v)
	if err != nil {
		t.Fatalf("ORCH_TEST_S3: %v", err)
	}
	if r.S3 == nil {
		t.Fatalf("ORCH_TEST_S3=%s: want an s3:// remote", v)
	}
	return r
}

var bucketOnce sync.Map // bucket → error

// s3Config returns the test server's settings with a fresh random prefix
// under ORCH_TEST_S3's, making sure the bucket exists.
func s3Config(t *testing.T) store.S3Config {
	t.Helper()
	cfg := *testRemote(t).S3
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	cfg.Prefix = strings.Trim(cfg.Prefix+"/"+name+"-"+hex.EncodeToString(b[:]), "/")
	ensureBucket(t, cfg)
	return cfg
}

func ensureBucket(t *testing.T, cfg store.S3Config) {
	t.Helper()
	v, _ := bucketOnce.LoadOrStore(cfg.Bucket, sync.OnceValue(func() error {
		s, err := store.OpenS3(context.Background(), cfg)
		if err != nil {
			return err
		}
		c := s.Client()
		if _, err := c.HeadBucket(context.Background(), &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err == nil {
			return nil
		}
		_, err = c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(cfg.Bucket)})
		if err != nil && !strings.Contains(err.Error(), "BucketAlreadyOwnedByYou") {
			return fmt.Errorf("create bucket %s: %w", cfg.Bucket, err)
		}
		return nil
	}))
	if err := v.(func() error)(); err != nil {
		t.Fatal(err)
	}
}

func openS3(t *testing.T, cfg store.S3Config) *store.S3 {
	t.Helper()
	s, err := store.OpenS3(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// objects lists every object key under the store's prefix.
func objects(t *testing.T, s *store.S3, prefix string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket()), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

func TestS3Conformance(t *testing.T) {
	testRemote(t)
	storetest.Run(t, func(t *testing.T) store.Store { return openS3(t, s3Config(t)) })
}

// One prefix shared by every subtest (as a team shares a bucket), with
// parts small enough that the suite's large blob goes up in parts.
func TestS3ConformanceSharedMultipart(t *testing.T) {
	cfg := s3Config(t)
	cfg.MultipartThreshold = store.MinPartSize
	cfg.PartSize = store.MinPartSize
	cfg.Concurrency = 2
	s := openS3(t, cfg)
	storetest.Run(t, func(*testing.T) store.Store { return s })
	empty := s.BlobKey(digest.Bytes(nil))
	for _, k := range objects(t, s, cfg.Prefix+"/") {
		if k != empty {
			t.Errorf("the suite left %s behind", k)
		}
	}
}

func TestS3Layout(t *testing.T) {
	cfg := s3Config(t)
	s := openS3(t, cfg)
	b := []byte("layout")
	d := digest.Bytes(b)
	key := digest.String("a key")
	if err := s.PutBlob(t.Context(), d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRecord(t.Context(), key, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	h, k := d.String(), key.String()
	want := []string{
		cfg.Prefix + "/blobs/" + h[:2] + "/" + h,
		cfg.Prefix + "/records/" + k[:2] + "/" + k,
	}
	got := objects(t, s, cfg.Prefix+"/")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("objects:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if s.String() != "s3://"+cfg.Bucket+"/"+cfg.Prefix {
		t.Errorf("String() = %q", s.String())
	}
	// Objects that are not ours under the prefix are not listed.
	for _, stranger := range []string{"blobs/zz/" + h, "blobs/" + h, "blobs/" + h[:2] + "/nothex", "records/x"} {
		_, err := s.Client().PutObject(t.Context(), &s3.PutObjectInput{
			Bucket: aws.String(cfg.Bucket), Key: aws.String(cfg.Prefix + "/" + stranger), Body: strings.NewReader("x"),
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	if err := s.ListBlobs(t.Context(), func(digest.Digest, int64) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("ListBlobs listed %d blobs, want 1", n)
	}
}

// A large blob whose bytes do not match its digest is rejected after its
// parts went up: the multipart upload is aborted and nothing is stored.
func TestS3PutCorruptMultipart(t *testing.T) {
	cfg := s3Config(t)
	cfg.MultipartThreshold = store.MinPartSize
	cfg.PartSize = store.MinPartSize
	s := openS3(t, cfg)
	b := make([]byte, 3*store.MinPartSize+100)
	_, _ = rand.Read(b)
	d := digest.Bytes(b)
	b[len(b)-1] ^= 1 // the last byte: every part but the last is already up
	err := s.PutBlob(t.Context(), d, bytes.NewReader(b))
	if !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("PutBlob of wrong bytes: %v; want ErrCorrupt", err)
	}
	if _, err := s.StatBlob(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("StatBlob after a rejected upload: %v; want ErrNotFound", err)
	}
	ups, err := s.Client().ListMultipartUploads(t.Context(), &s3.ListMultipartUploadsInput{
		Bucket: aws.String(cfg.Bucket), Prefix: aws.String(cfg.Prefix + "/"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("%d multipart uploads left open after a rejected blob", len(ups.Uploads))
	}
	// The right bytes go up in parts.
	b[len(b)-1] ^= 1
	if err := s.PutBlob(t.Context(), d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if n, err := s.StatBlob(t.Context(), d); err != nil || n != int64(len(b)) {
		t.Errorf("StatBlob = %d, %v; want %d", n, err, len(b))
	}
}

// CreateRecord keeps the first record of a key; later writers succeed
// without replacing it.
func TestS3CreateRecord(t *testing.T) {
	s := openS3(t, s3Config(t))
	k := digest.String("create")
	created, err := s.CreateRecord(t.Context(), k, []byte("first"))
	if err != nil || !created {
		t.Fatalf("CreateRecord of a new key = %v, %v; want true, nil", created, err)
	}
	created, err = s.CreateRecord(t.Context(), k, []byte("second"))
	if err != nil || created {
		t.Fatalf("CreateRecord of an existing key = %v, %v; want false, nil", created, err)
	}
	if b, _ := s.GetRecord(t.Context(), k); string(b) != "first" {
		t.Errorf("record = %q, want the first writer's", b)
	}

	// Racing writers of a new key all succeed, and the record is one of
	// theirs, whole.
	k2 := digest.String("race")
	var wins atomic.Int32
	var wg sync.WaitGroup
	vals := make([][]byte, 8)
	for i := range vals {
		vals[i] = bytes.Repeat([]byte{byte('a' + i)}, 10000)
		wg.Go(func() {
			c, err := s.CreateRecord(t.Context(), k2, vals[i])
			if err != nil {
				t.Errorf("CreateRecord #%d: %v", i, err)
			}
			if c {
				wins.Add(1)
			}
		})
	}
	wg.Wait()
	if wins.Load() < 1 {
		t.Errorf("no writer created the record")
	}
	t.Logf("%d of %d racing creators were told they created the record", wins.Load(), len(vals))
	got, err := s.GetRecord(t.Context(), k2)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range vals {
		found = found || bytes.Equal(got, v)
	}
	if !found {
		t.Errorf("record after racing creators is none of theirs (%d bytes)", len(got))
	}
}

// A missing bucket is not a missing object: the error says NoSuchBucket.
func TestS3MissingBucket(t *testing.T) {
	cfg := s3Config(t)
	cfg.Bucket = "orch-no-such-bucket"
	s := openS3(t, cfg)
	_, err := s.GetRecord(t.Context(), digest.String("k"))
	if err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "NoSuchBucket") {
		t.Errorf("GetRecord in a missing bucket: %v; want a NoSuchBucket error, not ErrNotFound", err)
	}
	if !strings.HasPrefix(err.Error(), "s3://orch-no-such-bucket/") {
		t.Errorf("error does not name the remote: %v", err)
	}
}

// faultyProxy forwards to the S3 server but answers the first n requests
// with status and an S3 error code, counting every request.
type faultyProxy struct {
	n      atomic.Int32
	status int
	code   string
	seen   atomic.Int32
	puts   atomic.Int32
	next   http.Handler
}

func (p *faultyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.seen.Add(1)
	if r.Method == http.MethodPut {
		p.puts.Add(1)
	}
	if p.n.Add(-1) >= 0 {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(p.status)
		if r.Method != http.MethodHead {
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>injected by the test</Message></Error>`, p.code)
		}
		return
	}
	p.next.ServeHTTP(w, r)
}

// serverURL is the S3 server's endpoint.
func serverURL(t *testing.T) *url.URL {
	t.Helper()
	ep := testRemote(t).S3.Endpoint
	if ep == "" {
		ep = os.Getenv("AWS_ENDPOINT_URL")
	}
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		t.Fatalf("no S3 endpoint in ORCH_TEST_S3 or AWS_ENDPOINT_URL (%q)", ep)
	}
	return u
}

func newFaultyProxy(t *testing.T, failures int, status int, code string) (*faultyProxy, string) {
	t.Helper()
	p := &faultyProxy{status: status, code: code, next: httputil.NewSingleHostReverseProxy(serverURL(t))}
	p.n.Store(int32(failures))
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

// Throttling and 5xx answers are retried (with backoff) and then succeed.
func TestS3Retries(t *testing.T) {
	for _, tc := range []struct {
		status int
		code   string
	}{
		{http.StatusServiceUnavailable, "SlowDown"},
		{http.StatusInternalServerError, "InternalError"},
		{http.StatusBadGateway, "BadGateway"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			cfg := s3Config(t)
			p, ep := newFaultyProxy(t, 0, tc.status, tc.code)
			cfg.Endpoint = ep
			cfg.MaxAttempts = 4
			cfg.MaxBackoff = 1 // the smallest delay: keep the test fast
			s := openS3(t, cfg)
			b := []byte("retried " + tc.code)
			d := digest.Bytes(b)
			p.n.Store(2) // two failures, then the server answers
			before := p.seen.Load()
			if err := s.PutRecord(t.Context(), d, b); err != nil {
				t.Fatalf("PutRecord through 2 failures: %v", err)
			}
			if got := p.seen.Load() - before; got != 3 {
				t.Errorf("PutRecord made %d requests, want 3 (2 failed, 1 retry that worked)", got)
			}
			p.n.Store(3)
			if _, err := s.GetRecord(t.Context(), d); err != nil {
				t.Fatalf("GetRecord through 3 failures: %v", err)
			}
			p.n.Store(10)
			_, err := s.GetRecord(t.Context(), d)
			if err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), tc.code) || !strings.Contains(err.Error(), "after 4 attempts") {
				t.Errorf("GetRecord after MaxAttempts failures: %v; want the server's error after 4 attempts", err)
			}
		})
	}
}

// An endpoint nobody listens on fails fast with the connection error.
func TestS3Unreachable(t *testing.T) {
	cfg := s3Config(t)
	cfg.Endpoint = "http://" + closedAddr(t)
	cfg.MaxAttempts = 2
	s := openS3(t, cfg)
	_, err := s.StatBlob(t.Context(), digest.String("x"))
	if err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("StatBlob on a closed port: %v; want connection refused", err)
	}
}

// closedAddr returns 127.0.0.1:PORT where nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestParseRemote(t *testing.T) {
	tr, fa := true, false
	good := []struct {
		in   string
		want store.S3Config
		name string
	}{
		{"s3://bucket", store.S3Config{Bucket: "bucket"}, "s3://bucket"},
		{"s3://bucket/", store.S3Config{Bucket: "bucket"}, "s3://bucket"},
		{"s3://my.bucket-1/team/cache/", store.S3Config{Bucket: "my.bucket-1", Prefix: "team/cache"}, "s3://my.bucket-1/team/cache"},
		{"s3://b12/p?endpoint=http://127.0.0.1:9000&region=eu-west-1&path_style=false",
			store.S3Config{Bucket: "b12", Prefix: "p", Endpoint: "http://127.0.0.1:9000", Region: "eu-west-1", PathStyle: &fa}, "s3://b12/p"},
		{"s3://b12/p?path_style=true&part_size=8MiB&multipart_threshold=64MB&concurrency=8&max_attempts=3",
			store.S3Config{Bucket: "b12", Prefix: "p", PathStyle: &tr, PartSize: 8 << 20, MultipartThreshold: 64e6, Concurrency: 8, MaxAttempts: 3}, "s3://b12/p"},
		{"s3://b12?endpoint=https://s3.example.com/", store.S3Config{Bucket: "b12", Endpoint: "https://s3.example.com"}, "s3://b12"},
	}
	for _, tc := range good {
		r, err := store.ParseRemote(tc.in)
		if err != nil {
			t.Errorf("ParseRemote(%q): %v", tc.in, err)
			continue
		}
		if r.S3 == nil {
			t.Errorf("ParseRemote(%q): not an S3 remote", tc.in)
			continue
		}
		got, want := *r.S3, tc.want
		if (got.PathStyle == nil) != (want.PathStyle == nil) || (got.PathStyle != nil && *got.PathStyle != *want.PathStyle) {
			t.Errorf("ParseRemote(%q): path_style %v, want %v", tc.in, got.PathStyle, want.PathStyle)
		}
		got.PathStyle, want.PathStyle = nil, nil
		if got != want {
			t.Errorf("ParseRemote(%q) = %+v, want %+v", tc.in, got, want)
		}
		if r.String() != tc.name {
			t.Errorf("ParseRemote(%q).String() = %q, want %q", tc.in, r.String(), tc.name)
		}
	}

	dir := t.TempDir()
	for _, in := range []string{dir, "file://" + dir, "file://" + dir + "/"} {
		r, err := store.ParseRemote(in)
		if err != nil || r.S3 != nil || r.Dir != dir {
			t.Errorf("ParseRemote(%q) = %+v, %v; want directory %s", in, r, err, dir)
		}
	}

	bad := []struct{ in, want string }{
		{"", "empty"},
		{"gs://bucket/p", `scheme "gs" not supported (allowed: s3://BUCKET/PREFIX, file:///PATH, or a directory path)`},
		{"s3:/bucket", "want s3://BUCKET/PREFIX"},
		{"s3://", `bucket "": want 3 to 63 letters`},
		{"s3://a/p", `bucket "a"`},
		{"s3://-bucket/p", `bucket "-bucket"`},
		{"s3://bu cket/p", `bucket "bu cket"`},
		{"s3://bucket/a/../b", `prefix "a/../b"`},
		{"s3://bucket/a//b", `prefix "a//b"`},
		{"s3://bucket/p?path_style=yes", `setting path_style: "yes" is not a boolean (allowed: true, false)`},
		{"s3://bucket/p?endpoint=127.0.0.1:9000", `setting endpoint: "127.0.0.1:9000" is not an endpoint URL (allowed: http://HOST[:PORT] or https://HOST[:PORT])`},
		{"s3://bucket/p?endpoint=ftp://host", `setting endpoint`},
		{"s3://bucket/p?region=US_EAST", `setting region: "US_EAST" is not a region`},
		{"s3://bucket/p?part_size=1MiB", `setting part_size: "1MiB" is not a size from 5MiB to 5GiB`},
		{"s3://bucket/p?part_size=lots", `setting part_size: "lots"`},
		{"s3://bucket/p?multipart_threshold=8MiB&part_size=16MiB", `multipart_threshold 8388608 is below part_size 16777216`},
		{"s3://bucket/p?concurrency=0", `setting concurrency: "0" is not a number of parts in flight (allowed: 1 to 64)`},
		{"s3://bucket/p?max_attempts=x", `setting max_attempts: "x" is not a number of attempts per request (allowed: 1 to 20)`},
		{"s3://bucket/p?regoin=us-east-1", `unknown setting "regoin" (allowed: endpoint, region, path_style, multipart_threshold, part_size, concurrency, max_attempts)`},
		{"s3://bucket/p?region=a&region=b", `setting region given 2 times`},
		{"file://host/path", `file URL with host "host"`},
		{"file:///tmp/x?region=a", `settings apply to s3:// remotes only`},
	}
	for _, tc := range bad {
		_, err := store.ParseRemote(tc.in)
		if err == nil {
			t.Errorf("ParseRemote(%q): no error; want %q", tc.in, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), fmt.Sprintf("remote %q: ", tc.in)) {
			t.Errorf("ParseRemote(%q): %v\nwant an error naming the remote and containing %q", tc.in, err, tc.want)
		}
	}

	if _, err := store.ParseRemoteSettings("s3://bucket/p?region=a", map[string]string{"region": "b"}); err == nil || !strings.Contains(err.Error(), "setting region given both") {
		t.Errorf("a setting given twice: %v", err)
	}
	r, err := store.ParseRemoteSettings("s3://bucket/p", map[string]string{"endpoint": "http://h:1", "path_style": "true"})
	if err != nil || r.S3.Endpoint != "http://h:1" || r.S3.PathStyle == nil || !*r.S3.PathStyle {
		t.Errorf("ParseRemoteSettings = %+v, %v", r, err)
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "123": 123, "5MiB": 5 << 20, "2 GiB": 2 << 30, "3KB": 3000, "7B": 7, "1GB": 1e9} {
		if got, err := store.ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "x", "-1", "1.5MiB", "MiB", "1TiB", "99999999999999GiB"} {
		if _, err := store.ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q): no error", in)
		}
	}
}

// An S3 store's blob reader is a plain stream the caller closes.
func TestS3OpenBlobStreams(t *testing.T) {
	s := openS3(t, s3Config(t))
	b := bytes.Repeat([]byte("stream "), 100000)
	d := digest.Bytes(b)
	if err := s.PutBlob(t.Context(), d, bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	rc, err := s.OpenBlob(t.Context(), d)
	if err != nil {
		t.Fatal(err)
	}
	got, h := &bytes.Buffer{}, digest.NewHasher()
	if _, err := io.Copy(io.MultiWriter(got, h), rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if h.Sum() != d {
		t.Errorf("read back %d bytes that hash differently", got.Len())
	}
}

// Without credentials the error says so, briefly, instead of the SDK's
// chain of provider failures.
func TestS3NoCredentials(t *testing.T) {
	cfg := s3Config(t)
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_CONFIG_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", t.TempDir()+"/none")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	s := openS3(t, cfg)
	_, err := s.GetRecord(t.Context(), digest.String("k"))
	if err == nil || !strings.Contains(err.Error(), "no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)") {
		t.Errorf("GetRecord without credentials: %v", err)
	}
	t.Log(err)
}
