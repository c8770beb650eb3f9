package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/orch-dev/orch/pkg/digest"
)

// RecordCreator is implemented by remotes that can store a record only if
// the key has none yet (S3's conditional PUT). The tiered store and Push
// write remote records with it, so the first record published for a key is
// the one every machine restores.
type RecordCreator interface {
	CreateRecord(ctx context.Context, key digest.Digest, data []byte) (created bool, err error)
}

var _ RecordCreator = (*S3)(nil)

// Tiered is a Store that keeps Local in front of Remote:
//
//   - Reads try Local first. A blob missing locally is downloaded from Remote
//     into Local through Local.PutBlob, which verifies it against its digest,
//     and then served from Local; a record found remotely is copied into
//     Local.
//   - Writes go to Local, then to Remote: PutBlob uploads a blob the remote
//     lacks (UploadBlobs does it for blobs already in Local, in parallel);
//     PutRecord writes the record (with CreateRecord where the remote has
//     it, so the first record of a key wins there). Callers write blobs
//     first and the record last, so a remote record never names a blob the
//     remote lacks.
//   - Deletes remove from both.
//
// Remote failures never fail an operation that Local can serve: the first
// one is reported through OnRemoteError, and the tiered store then works on
// Local alone for the rest of its life (a circuit breaker), so a run with
// the remote down goes on at local speed. Nothing is lost: Push uploads
// later what the remote lacks. A missing object, a corrupt download and the
// caller's context ending are not remote failures.
type Tiered struct {
	Local  *Local
	Remote Store
	// Name names the remote in messages ("s3://bucket/prefix"); default
	// fmt.Sprint(Remote).
	Name string
	// OnRemoteError, if set, is called once, with the first remote failure.
	OnRemoteError func(error)

	// Uploaded and Downloaded count the blob bytes sent to and fetched
	// from Remote (for serve's /metrics).
	Uploaded, Downloaded atomic.Int64

	down     atomic.Bool
	downOnce sync.Once
}

var _ Store = (*Tiered)(nil)

func (t *Tiered) name() string {
	if t.Name != "" {
		return t.Name
	}
	return fmt.Sprint(t.Remote)
}

// RemoteDown reports whether a remote failure has switched the store to
// Local alone.
func (t *Tiered) RemoteDown() bool { return t.down.Load() }

func (t *Tiered) remoteUp() bool { return t.Remote != nil && !t.down.Load() }

// failed reports whether err from the remote is a failure of the remote,
// and if so opens the breaker (reporting the first failure).
func (t *Tiered) failed(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrCorrupt) || ctx.Err() != nil {
		return false
	}
	t.downOnce.Do(func() {
		t.down.Store(true)
		if t.OnRemoteError != nil {
			t.OnRemoteError(err)
		}
	})
	return true
}

// StatBlob implements Store: Local, else Remote.
func (t *Tiered) StatBlob(ctx context.Context, d digest.Digest) (int64, error) {
	n, lerr := t.Local.StatBlob(ctx, d)
	if lerr == nil || !errors.Is(lerr, ErrNotFound) || !t.remoteUp() {
		return n, lerr
	}
	n, err := t.Remote.StatBlob(ctx, d)
	if err != nil {
		if t.failed(ctx, err) || errors.Is(err, ErrNotFound) {
			return 0, lerr
		}
		return 0, err
	}
	return n, nil
}

// PutBlob implements Store: Local.PutBlob (which verifies r), then an upload
// of the local copy if the remote lacks it.
func (t *Tiered) PutBlob(ctx context.Context, d digest.Digest, r io.Reader) error {
	if err := t.Local.PutBlob(ctx, d, r); err != nil {
		return err
	}
	return t.upload(ctx, d)
}

// BlobUploader is implemented by stores that keep a local store in front of
// a remote (Tiered). pkg/cache's Save calls UploadBlobs with every blob of
// a result, already in the local store, before it writes the record.
type BlobUploader interface {
	UploadBlobs(ctx context.Context, ds []digest.Digest) error
}

var _ BlobUploader = (*Tiered)(nil)

// UploadJobs is how many blobs UploadBlobs uploads at once.
const UploadJobs = 8

// UploadBlobs makes sure the remote has every blob in ds, all of which
// must be in Local: those the remote lacks are uploaded, UploadJobs at a
// time. A remote failure opens the breaker and returns nil (the blobs are
// safe locally; Push uploads them later, and PutRecord then skips the
// remote too, so no remote record names a missing blob). A blob missing
// or corrupt locally fails it.
func (t *Tiered) UploadBlobs(ctx context.Context, ds []digest.Digest) error {
	if !t.remoteUp() || len(ds) == 0 {
		return nil
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(UploadJobs)
	for _, d := range ds {
		if gctx.Err() != nil || !t.remoteUp() {
			break
		}
		g.Go(func() error { return t.upload(gctx, d) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return ctx.Err()
}

func (t *Tiered) upload(ctx context.Context, d digest.Digest) error {
	if !t.remoteUp() {
		return nil
	}
	f, err := t.Local.OpenBlob(ctx, d)
	if err != nil {
		return err
	}
	defer f.Close()
	var body io.Reader = f
	cr := &countingReader{r: f}
	if rs, ok := f.(readSeekerAt); ok {
		// Keep Seek and ReadAt: the S3 store sizes and splits uploads by them.
		body = &countingReadSeeker{countingReader: cr, rs: rs}
	} else {
		body = cr
	}
	err = t.Remote.PutBlob(ctx, d, body)
	if err == nil {
		t.Uploaded.Add(cr.n.Load())
	}
	if err == nil || t.failed(ctx, err) {
		return nil
	}
	if errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("upload to %s: local copy of %w", t.name(), err)
	}
	return err
}

// OpenBlob implements Store: Local; a blob missing there is first fetched
// from Remote into Local (verified) and then opened from Local. A download
// that does not match its digest fails with an error wrapping ErrCorrupt,
// and the bad remote object is deleted so that the next writer repairs it.
func (t *Tiered) OpenBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	rc, lerr := t.Local.OpenBlob(ctx, d)
	if lerr == nil || !errors.Is(lerr, ErrNotFound) || !t.remoteUp() {
		return rc, lerr
	}
	if err := t.fetch(ctx, d, lerr); err != nil {
		return nil, err
	}
	return t.Local.OpenBlob(ctx, d)
}

// fetch downloads blob d from Remote into Local. It returns notFound when
// the remote lacks d or has failed (and is now skipped).
func (t *Tiered) fetch(ctx context.Context, d digest.Digest, notFound error) error {
	rc, err := t.Remote.OpenBlob(ctx, d)
	if err != nil {
		if errors.Is(err, ErrNotFound) || t.failed(ctx, err) {
			return notFound
		}
		return err
	}
	defer rc.Close()
	cr := &countingReader{r: rc}
	src := &errReader{r: cr}
	err = t.Local.PutBlob(ctx, d, src)
	switch {
	case err == nil:
		t.Downloaded.Add(cr.n.Load())
		return nil
	case src.err != nil:
		if t.failed(ctx, fmt.Errorf("download blob %s: %w", d.Short(), src.err)) {
			return notFound
		}
		return err
	case errors.Is(err, ErrCorrupt):
		_ = t.Remote.DeleteBlob(ctx, d)
		return fmt.Errorf("%s: downloaded %w (deleted from the remote)", t.name(), err)
	}
	return err // a local failure
}

// countingReader counts the bytes read through it (a store that finds
// the blob already there reads none).
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type readSeekerAt interface {
	io.ReadSeeker
	io.ReaderAt
}

type countingReadSeeker struct {
	*countingReader
	rs readSeekerAt
}

func (c *countingReadSeeker) Seek(off int64, whence int) (int64, error) {
	return c.rs.Seek(off, whence)
}

func (c *countingReadSeeker) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.rs.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// errReader remembers the error its reader failed with (other than io.EOF).
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// DeleteBlob implements Store: from Local and from Remote.
func (t *Tiered) DeleteBlob(ctx context.Context, d digest.Digest) error {
	return t.deleteBoth(ctx, d, Store.DeleteBlob)
}

// deleteBoth deletes d with del from Local, then from Remote while it is up
// (a remote failure trips the breaker rather than failing the call).
func (t *Tiered) deleteBoth(ctx context.Context, d digest.Digest, del func(Store, context.Context, digest.Digest) error) error {
	if err := del(t.Local, ctx, d); err != nil {
		return err
	}
	if t.remoteUp() {
		if err := del(t.Remote, ctx, d); err != nil && !t.failed(ctx, err) {
			return err
		}
	}
	return nil
}

// ListBlobs implements Store: the union of Local and Remote, each blob once.
func (t *Tiered) ListBlobs(ctx context.Context, fn func(digest.Digest, int64) error) error {
	seen := map[digest.Digest]bool{}
	err := t.Local.ListBlobs(ctx, func(d digest.Digest, n int64) error {
		seen[d] = true
		return fn(d, n)
	})
	if err != nil || !t.remoteUp() {
		return err
	}
	var fnErr error
	err = t.Remote.ListBlobs(ctx, func(d digest.Digest, n int64) error {
		if seen[d] {
			return nil
		}
		fnErr = fn(d, n)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil && !t.failed(ctx, err) {
		return err
	}
	return nil
}

// GetRecord implements Store: Local, else Remote (and then copied to Local).
func (t *Tiered) GetRecord(ctx context.Context, key digest.Digest) ([]byte, error) {
	b, lerr := t.Local.GetRecord(ctx, key)
	if lerr == nil || !errors.Is(lerr, ErrNotFound) || !t.remoteUp() {
		return b, lerr
	}
	b, err := t.Remote.GetRecord(ctx, key)
	if err != nil {
		if errors.Is(err, ErrNotFound) || t.failed(ctx, err) {
			return nil, lerr
		}
		return nil, err
	}
	// Best effort: the record is good whether or not the local copy is.
	_ = t.Local.PutRecord(ctx, key, b)
	return b, nil
}

// PutRecord implements Store: Local, then Remote. On a remote that
// implements RecordCreator, a record already there for key is kept (the
// first writer wins); Local gets data either way.
func (t *Tiered) PutRecord(ctx context.Context, key digest.Digest, data []byte) error {
	if err := t.Local.PutRecord(ctx, key, data); err != nil {
		return err
	}
	if !t.remoteUp() {
		return nil
	}
	if err := putRemoteRecord(ctx, t.Remote, key, data); err != nil && !t.failed(ctx, err) {
		return err
	}
	return nil
}

func putRemoteRecord(ctx context.Context, remote Store, key digest.Digest, data []byte) error {
	if c, ok := remote.(RecordCreator); ok {
		_, err := c.CreateRecord(ctx, key, data)
		return err
	}
	return remote.PutRecord(ctx, key, data)
}

// DeleteRecord implements Store: from Local and from Remote.
func (t *Tiered) DeleteRecord(ctx context.Context, key digest.Digest) error {
	return t.deleteBoth(ctx, key, Store.DeleteRecord)
}

// ListRecords implements Store: the union of Local and Remote, each key once.
func (t *Tiered) ListRecords(ctx context.Context, fn func(digest.Digest) error) error {
	seen := map[digest.Digest]bool{}
	err := t.Local.ListRecords(ctx, func(k digest.Digest) error {
		seen[k] = true
		return fn(k)
	})
	if err != nil || !t.remoteUp() {
		return err
	}
	var fnErr error
	err = t.Remote.ListRecords(ctx, func(k digest.Digest) error {
		if seen[k] {
			return nil
		}
		fnErr = fn(k)
		return fnErr
	})
	if fnErr != nil {
		return fnErr
	}
	if err != nil && !t.failed(ctx, err) {
		return err
	}
	return nil
}

// PushStats counts what Push did.
type PushStats struct {
	Blobs          int   // blobs uploaded
	Bytes          int64 // their bytes
	BlobsPresent   int   // local blobs the remote already had
	Records        int   // records uploaded
	RecordsPresent int   // local records the remote already had
}

// Push uploads every blob and record of local that remote lacks: blobs
// first, jobs at a time, then the records (with CreateRecord where remote
// has it). What the remote has is learnt from two listings, not a request
// per object. If any blob fails, no record is pushed (a remote record must
// not name a missing blob) and the error names every failed blob.
func Push(ctx context.Context, local *Local, remote Store, jobs int) (PushStats, error) {
	var st PushStats
	jobs = max(jobs, 1)
	have := map[digest.Digest]int64{}
	if err := remote.ListBlobs(ctx, func(d digest.Digest, n int64) error { have[d] = n; return nil }); err != nil {
		return st, err
	}
	type blob struct {
		d digest.Digest
		n int64
	}
	var todo []blob
	err := local.ListBlobs(ctx, func(d digest.Digest, n int64) error {
		if _, ok := have[d]; ok {
			st.BlobsPresent++
		} else {
			todo = append(todo, blob{d, n})
		}
		return nil
	})
	if err != nil {
		return st, err
	}

	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		ch   = make(chan blob)
	)
	for range min(jobs, len(todo)) {
		wg.Go(func() {
			for b := range ch {
				err := pushBlob(ctx, local, remote, b.d)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				} else {
					st.Blobs++
					st.Bytes += b.n
				}
				mu.Unlock()
			}
		})
	}
	for _, b := range todo {
		if ctx.Err() != nil {
			break
		}
		ch <- b
	}
	close(ch)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return st, err
	}
	if len(errs) > 0 {
		if len(errs) > 10 {
			errs = append(errs[:10], fmt.Errorf("and %d more", len(errs)-10))
		}
		return st, fmt.Errorf("%d of %d blobs not pushed, so no record was pushed: %w", len(todo)-st.Blobs, len(todo), errors.Join(errs...))
	}

	haveRec := map[digest.Digest]bool{}
	if err := remote.ListRecords(ctx, func(k digest.Digest) error { haveRec[k] = true; return nil }); err != nil {
		return st, err
	}
	var keys []digest.Digest
	err = local.ListRecords(ctx, func(k digest.Digest) error {
		if haveRec[k] {
			st.RecordsPresent++
		} else {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	for _, k := range keys {
		data, err := local.GetRecord(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return st, err
		}
		if err := putRemoteRecord(ctx, remote, k, data); err != nil {
			return st, err
		}
		st.Records++
	}
	return st, nil
}

// blobUploader is implemented by remotes that can upload a blob without
// first asking whether they have it (S3.UploadBlob).
type blobUploader interface {
	UploadBlob(ctx context.Context, d digest.Digest, r io.Reader) error
}

func pushBlob(ctx context.Context, local *Local, remote Store, d digest.Digest) error {
	f, err := local.OpenBlob(ctx, d)
	if err != nil {
		return err
	}
	defer f.Close()
	if u, ok := remote.(blobUploader); ok {
		// The listing said the remote lacks d: no HEAD first.
		err = u.UploadBlob(ctx, d, f)
	} else {
		err = remote.PutBlob(ctx, d, f)
	}
	if errors.Is(err, ErrCorrupt) {
		return fmt.Errorf("local blob %s is corrupt (orch verify --repair removes it): %w", d.Short(), err)
	}
	return err
}
