package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"

	"github.com/orch-dev/orch/pkg/digest"
)

// Defaults of S3Config.
const (
	DefaultMultipartThreshold = 16 << 20
	DefaultPartSize           = 8 << 20
	DefaultConcurrency        = 4
	DefaultMaxAttempts        = 5
	DefaultMaxBackoff         = 5 * time.Second

	// MinPartSize is S3's smallest part of a multipart upload (but the last).
	MinPartSize = 5 << 20
)

// S3Config says where an S3 store keeps its objects and how it talks to the
// server. Zero fields take the defaults.
type S3Config struct {
	Bucket string
	// Prefix is the key prefix of the store's objects, without leading or
	// trailing slash; "" is the bucket's root.
	Prefix string
	// Endpoint is the server's URL ("http://127.0.0.1:9000"); "" leaves it to
	// the SDK: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, the shared config files,
	// else AWS.
	Endpoint string
	// Region; "" leaves it to the SDK's default chain, then us-east-1.
	Region string
	// PathStyle addresses BUCKET as the first path segment instead of a host
	// name, as S3-compatible servers want. nil means true when an endpoint
	// is configured (here or in the environment), false for AWS.
	PathStyle *bool
	// MultipartThreshold: blobs of at least this many bytes are uploaded in
	// parts. Default 16 MiB.
	MultipartThreshold int64
	// PartSize of multipart uploads, at least MinPartSize. Default 8 MiB.
	PartSize int64
	// Concurrency: parts of one upload in flight at once. Default 4.
	Concurrency int
	// MaxAttempts per request, retries included: throttling, 5xx and
	// connection errors are retried with jittered exponential backoff up to
	// MaxBackoff. Defaults 5 and 5s.
	MaxAttempts int
	MaxBackoff  time.Duration
}

// S3 is a Store in an S3 bucket (AWS or any S3-compatible server):
//
//	PREFIX/blobs/ab/abcdef…      blob content
//	PREFIX/records/ab/abcdef…    record bytes
//
// Every write is a single PUT (or a multipart upload completed at once), so
// readers see a whole object or none. PutBlob verifies the content against
// its digest while uploading and completes nothing that does not match.
type S3 struct {
	cfg    S3Config
	prefix string // "" or "PREFIX/"
	name   string // s3://BUCKET/PREFIX
	client *s3.Client
	tm     *transfermanager.Client
	// noConditional is set once the server rejects If-None-Match as not
	// implemented; CreateRecord then falls back to a plain PUT.
	noConditional atomic.Bool
}

var _ Store = (*S3)(nil)

// OpenS3 returns a store on cfg.Bucket. Credentials come from the SDK's
// default chain (environment, shared files, instance roles). It sends no
// request: an unreachable server or a missing bucket shows on first use.
func OpenS3(ctx context.Context, cfg S3Config) (*S3, error) {
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	name := "s3://" + cfg.Bucket
	if cfg.Prefix != "" {
		name += "/" + cfg.Prefix
	}
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("%s: no bucket", name)
	}
	if cfg.MultipartThreshold <= 0 {
		cfg.MultipartThreshold = DefaultMultipartThreshold
	}
	if cfg.PartSize <= 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < MinPartSize {
		return nil, fmt.Errorf("%s: part size %d is below S3's minimum of %d bytes", name, cfg.PartSize, MinPartSize)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}

	// The SDK's own buildable client: with AWS_CA_BUNDLE set, the SDK refuses
	// any other.
	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = 5 * time.Second }).
		WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConnsPerHost = 64
			t.ResponseHeaderTimeout = 2 * time.Minute
		})
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		config.WithRetryer(func() aws.Retryer { return newRetryer(cfg.MaxAttempts, cfg.MaxBackoff) }),
		// Failures reach the caller as errors; the SDK's own warnings
		// (IMDS fallbacks, checksum notes) would only add noise.
		config.WithLogger(logging.Nop{}),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("%s: AWS configuration: %w", name, err)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	endpointSet := cfg.Endpoint != "" || awsCfg.BaseEndpoint != nil ||
		os.Getenv("AWS_ENDPOINT_URL_S3") != "" || os.Getenv("AWS_ENDPOINT_URL") != ""
	pathStyle := endpointSet
	if cfg.PathStyle != nil {
		pathStyle = *cfg.PathStyle
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = pathStyle
		// Blobs are verified by their BLAKE3 digest end to end; the SDK's
		// default CRC checksums are not understood by every S3-compatible
		// server, and multipart objects have none to validate.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	tm := transfermanager.New(client, func(o *transfermanager.Options) {
		o.MultipartUploadThreshold = cfg.MultipartThreshold
		o.PartSizeBytes = cfg.PartSize
		o.Concurrency = cfg.Concurrency
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.FailTimeout = 30 * time.Second // abort a failed upload even after ctx ends
	})
	s := &S3{cfg: cfg, name: name, client: client, tm: tm}
	if cfg.Prefix != "" {
		s.prefix = cfg.Prefix + "/"
	}
	return s, nil
}

// newRetryer retries throttling, 5xx and connection errors: throttling from
// a 1s base, the rest from 100ms, doubling, capped at maxBackoff, with jitter.
// No client-side retry quota: a long outage is the tiered store's business.
func newRetryer(maxAttempts int, maxBackoff time.Duration) aws.Retryer {
	throttle := retry.IsErrorThrottles(retry.DefaultThrottles)
	return retry.NewStandard(func(o *retry.StandardOptions) {
		o.MaxAttempts = maxAttempts
		o.MaxBackoff = maxBackoff
		o.RateLimiter = ratelimit.None
		o.Backoff = retry.BackoffDelayerFunc(func(attempt int, err error) (time.Duration, error) {
			base := 100 * time.Millisecond
			if throttle.IsErrorThrottle(err) == aws.TrueTernary {
				base = time.Second
			}
			d := base << min(max(attempt-1, 0), 20)
			if d > maxBackoff || d <= 0 {
				d = maxBackoff
			}
			return d/2 + rand.N(d/2+1), nil
		})
	})
}

// String returns s3://BUCKET/PREFIX.
func (s *S3) String() string { return s.name }

// Client returns the SDK client the store uses.
func (s *S3) Client() *s3.Client { return s.client }

// Bucket returns the store's bucket.
func (s *S3) Bucket() string { return s.cfg.Bucket }

// BlobKey and RecordKey return the object keys of blob d and of the record
// under key.
func (s *S3) BlobKey(d digest.Digest) string     { return s.key("blobs", d) }
func (s *S3) RecordKey(key digest.Digest) string { return s.key("records", key) }

func (s *S3) key(kind string, d digest.Digest) string {
	h := d.String()
	return s.prefix + kind + "/" + h[:2] + "/" + h
}

// err wraps an SDK error from op on the object named what (e.g. "blob
// 1a2b3c4d5e6f"), mapping a missing object to ErrNotFound.
func (s *S3) err(op, what string, err error) error {
	if isS3NotFound(err) {
		return fmt.Errorf("%s: %s: %w", s.name, what, ErrNotFound)
	}
	return fmt.Errorf("%s: %s %s: %w", s.name, op, what, &sdkError{err})
}

// sdkError shortens the SDK's error text ("operation error S3: GetObject,
// exceeded maximum number of attempts, 5, https response error StatusCode:
// 0, RequestID: , HostID: , request send failed, Get …: dial tcp …") to
// what a user acts on, keeping the chain for errors.Is and errors.As.
type sdkError struct{ err error }

func (e *sdkError) Unwrap() error { return e.err }

func (e *sdkError) Error() string {
	var msg string
	var ae smithy.APIError
	var ne *net.OpError
	var ue *url.Error
	text := e.err.Error()
	switch {
	case strings.Contains(text, "get identity: "):
		// The SDK's credential chain found nothing usable.
		_, cause, _ := strings.Cut(text, "get identity: ")
		cause = strings.TrimPrefix(cause, "get credentials: ")
		cause, _, _ = strings.Cut(cause, ", operation error")
		msg = "no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE): " + cause
	case errors.As(e.err, &ae):
		msg = ae.ErrorCode()
		if m := ae.ErrorMessage(); m != "" {
			msg += ": " + m
		}
		if st := httpStatus(e.err); st != 0 {
			msg = fmt.Sprintf("HTTP %d %s", st, msg)
		}
	case errors.As(e.err, &ne):
		msg = ne.Error()
	case errors.As(e.err, &ue):
		msg = ue.Err.Error()
	default:
		return text
	}
	var me *retry.MaxAttemptsError
	if errors.As(e.err, &me) {
		if me.Attempt == 1 {
			msg += " (after 1 attempt)"
		} else {
			msg += fmt.Sprintf(" (after %d attempts)", me.Attempt)
		}
	}
	return msg
}

// isS3NotFound reports a missing object (not a missing bucket).
func isS3NotFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound":
			return true
		case "NoSuchBucket":
			return false
		}
	}
	return httpStatus(err) == http.StatusNotFound
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// StatBlob implements Store.
func (s *S3) StatBlob(ctx context.Context, d digest.Digest) (int64, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{
		Bucket: aws.String(s.cfg.Bucket),
		Key:    aws.String(s.BlobKey(d)),
	})
	if err != nil {
		return 0, s.err("stat", "blob "+d.Short(), err)
	}
	return aws.ToInt64(out.ContentLength), nil
}

// PutBlob implements Store. A blob already in the bucket (HEAD) is not
// uploaded again. Otherwise the content is hashed as it streams out; bytes
// that do not hash to d fail the upload before it completes (a multipart
// upload is aborted), so nothing is stored. Blobs of at least
// MultipartThreshold bytes go up in parts, Concurrency at a time.
func (s *S3) PutBlob(ctx context.Context, d digest.Digest, r io.Reader) error {
	if _, err := s.StatBlob(ctx, d); err == nil {
		return nil
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return s.UploadBlob(ctx, d, r)
}

// UploadBlob uploads blob d without first asking whether the bucket has it
// (Push knows from a listing), verifying the content as PutBlob does. A
// seekable reader (a local blob file) smaller than MultipartThreshold is
// hashed, then sent in one PUT; anything else streams through the
// transfer manager, in parts when large.
func (s *S3) UploadBlob(ctx context.Context, d digest.Digest, r io.Reader) error {
	if rs, ok := r.(io.ReadSeeker); ok {
		if n, err := rs.Seek(0, io.SeekEnd); err == nil && n < s.cfg.MultipartThreshold {
			return s.putSmall(ctx, d, rs, n)
		}
		if _, err := rs.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("%s: put blob %s: %w", s.name, d.Short(), err)
		}
	}
	vr := &verifyReader{r: r, want: d, h: digest.NewHasher()}
	_, err := s.tm.UploadObject(ctx, &transfermanager.UploadObjectInput{
		Bucket: aws.String(s.cfg.Bucket),
		Key:    aws.String(s.BlobKey(d)),
		Body:   vr,
	})
	if err == nil {
		return nil
	}
	if vr.err != nil && vr.err != io.EOF {
		// The content was wrong or the caller's reader failed: say so
		// without the SDK's wrapping.
		return fmt.Errorf("%s: put blob %s: %w", s.name, d.Short(), vr.err)
	}
	return s.err("put", "blob "+d.Short(), err)
}

// putSmall verifies the n bytes of rs, then PUTs them in one request (the
// SDK reads a seekable body again to sign it).
func (s *S3) putSmall(ctx context.Context, d digest.Digest, rs io.ReadSeeker, n int64) error {
	h := digest.NewHasher()
	if _, err := rs.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%s: put blob %s: %w", s.name, d.Short(), err)
	}
	if _, err := io.Copy(h, rs); err != nil {
		return fmt.Errorf("%s: put blob %s: %w", s.name, d.Short(), err)
	}
	if got := h.Sum(); got != d {
		return fmt.Errorf("%s: put blob %s: content hashes to %s: %w", s.name, d.Short(), got.Short(), ErrCorrupt)
	}
	if _, err := rs.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%s: put blob %s: %w", s.name, d.Short(), err)
	}
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.cfg.Bucket),
		Key:           aws.String(s.BlobKey(d)),
		Body:          rs,
		ContentLength: aws.Int64(n),
	})
	if err != nil {
		return s.err("put", "blob "+d.Short(), err)
	}
	return nil
}

// verifyReader hashes what it reads and, at the end, turns io.EOF into an
// error wrapping ErrCorrupt when the content does not hash to want.
type verifyReader struct {
	r    io.Reader
	h    *digest.Hasher
	want digest.Digest
	err  error // sticky: io.EOF, the mismatch, or the reader's error
}

func (v *verifyReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	switch {
	case err == io.EOF:
		if got := v.h.Sum(); got != v.want {
			err = fmt.Errorf("content hashes to %s: %w", got.Short(), ErrCorrupt)
		}
		v.err = err
	case err != nil:
		v.err = err
	}
	return n, err
}

// DeleteBlob implements Store.
func (s *S3) DeleteBlob(ctx context.Context, d digest.Digest) error {
	return s.delete(ctx, s.BlobKey(d), "blob "+d.Short())
}

func (s *S3) delete(ctx context.Context, key, what string) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{
		Bucket: aws.String(s.cfg.Bucket),
		Key:    aws.String(key),
	})
	if err != nil && !isS3NotFound(err) {
		return s.err("delete", what, err)
	}
	return nil
}

// ListBlobs implements Store, one ListObjectsV2 page (up to 1000 blobs) per
// request.
func (s *S3) ListBlobs(ctx context.Context, fn func(digest.Digest, int64) error) error {
	return s.list(ctx, "blobs", func(i Info) error { return fn(i.Digest, i.Size) })
}

// ListBlobInfo implements InfoLister: sizes and Last-Modified times.
func (s *S3) ListBlobInfo(ctx context.Context, fn func(Info) error) error {
	return s.list(ctx, "blobs", fn)
}

// ListRecordInfo implements InfoLister.
func (s *S3) ListRecordInfo(ctx context.Context, fn func(Info) error) error {
	return s.list(ctx, "records", fn)
}

// GetRecord implements Store.
func (s *S3) GetRecord(ctx context.Context, key digest.Digest) ([]byte, error) {
	what := "record " + key.Short()
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.cfg.Bucket),
		Key:    aws.String(s.RecordKey(key)),
	})
	if err != nil {
		return nil, s.err("get", what, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, s.err("get", what, err)
	}
	return b, nil
}

// PutRecord implements Store: one unconditional PUT, which replaces any
// previous record atomically.
func (s *S3) PutRecord(ctx context.Context, key digest.Digest, data []byte) error {
	_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(s.cfg.Bucket),
		Key:    aws.String(s.RecordKey(key)),
		Body:   bytes.NewReader(data),
	})
	if err != nil {
		return s.err("put", "record "+key.Short(), err)
	}
	return nil
}

// CreateRecord stores data under key unless a record is already there, with
// a conditional PUT (If-None-Match: *): of several writers of one key, the
// first wins and the others get created == false and a nil error. Records
// of one key are equivalent (same inputs), so keeping the first keeps every
// reader's view of the key stable. On a server that does not implement
// conditional writes it falls back to PutRecord.
func (s *S3) CreateRecord(ctx context.Context, key digest.Digest, data []byte) (created bool, err error) {
	if s.noConditional.Load() {
		return true, s.PutRecord(ctx, key, data)
	}
	for attempt := 1; ; attempt++ {
		_, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket:      aws.String(s.cfg.Bucket),
			Key:         aws.String(s.RecordKey(key)),
			Body:        bytes.NewReader(data),
			IfNoneMatch: aws.String("*"),
		})
		switch st := httpStatus(err); {
		case err == nil:
			return true, nil
		case st == http.StatusPreconditionFailed:
			return false, nil
		case st == http.StatusConflict && attempt < 5:
			// ConditionalRequestConflict: another conditional write of the
			// key is in flight; AWS asks to retry.
			continue
		case st == http.StatusNotImplemented:
			s.noConditional.Store(true)
			return true, s.PutRecord(ctx, key, data)
		default:
			return false, s.err("create", "record "+key.Short(), err)
		}
	}
}

// DeleteRecord implements Store.
func (s *S3) DeleteRecord(ctx context.Context, key digest.Digest) error {
	return s.delete(ctx, s.RecordKey(key), "record "+key.Short())
}

// ListRecords implements Store.
func (s *S3) ListRecords(ctx context.Context, fn func(digest.Digest) error) error {
	return s.list(ctx, "records", func(i Info) error { return fn(i.Digest) })
}

// list calls fn for every object PREFIX/kind/ab/HEX; other keys are skipped.
func (s *S3) list(ctx context.Context, kind string, fn func(Info) error) error {
	base := s.prefix + kind + "/"
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.cfg.Bucket),
		Prefix: aws.String(base),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("%s: list %s: %w", s.name, kind, &sdkError{err})
		}
		for _, o := range page.Contents {
			dir, h, ok := strings.Cut(strings.TrimPrefix(aws.ToString(o.Key), base), "/")
			if !ok || len(h) < 2 || dir != h[:2] {
				continue
			}
			d, err := digest.Parse(h)
			if err != nil {
				continue // not ours
			}
			if err := fn(Info{Digest: d, Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}
