// Package storetest is the conformance suite for store.Store: every
// implementation (the local store, S3, decorators around either) runs the same
// tests, which check the contracts written in store.Store's doc comments.
//
// Use it from a _test.go file:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store { return openMyStore(t) })
//	}
//
// The suite touches the store only through the Store interface. Every subtest
// writes content and keys drawn at random and deletes what it wrote, so open
// may return the same shared store (one bucket) every time, and two runs of
// the suite may share it at once. Listings are checked for what a subtest put,
// never for being otherwise empty. The one exception to the clean-up is the
// empty blob, which every run shares and none deletes.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/orch-dev/orch/pkg/digest"
	"github.com/orch-dev/orch/pkg/store"
)

// Writers is how many goroutines the concurrency tests use on one blob or
// one record key.
const Writers = 16

// Run runs the conformance suite, one subtest per contract. open is called
// once per subtest and returns the store under test (a fresh one, or the same
// shared one).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Blob/PutStatOpen", testBlobPutStatOpen},
		{"Blob/Empty", testBlobEmpty},
		{"Blob/Large", testBlobLarge},
		{"Blob/NotFound", testBlobNotFound},
		{"Blob/PutIdempotent", testBlobPutIdempotent},
		{"Blob/PutCorrupt", testBlobPutCorrupt},
		{"Blob/PutReaderError", testBlobPutReaderError},
		{"Blob/Delete", testBlobDelete},
		{"Blob/List", testBlobList},
		{"Blob/ListStops", testBlobListStops},
		{"Record/PutGet", testRecordPutGet},
		{"Record/Empty", testRecordEmpty},
		{"Record/NotFound", testRecordNotFound},
		{"Record/Replace", testRecordReplace},
		{"Record/PutIdempotent", testRecordPutIdempotent},
		{"Record/NoAliasing", testRecordNoAliasing},
		{"Record/Delete", testRecordDelete},
		{"Record/List", testRecordList},
		{"Record/ListStops", testRecordListStops},
		{"Record/SeparateFromBlobs", testRecordSeparateFromBlobs},
		{"Concurrent/SameBlob", testConcurrentSameBlob},
		{"Concurrent/SameRecord", testConcurrentSameRecord},
		{"Concurrent/BlobReaders", testConcurrentBlobReaders},
		{"Concurrent/RecordReaders", testConcurrentRecordReaders},
		{"Concurrent/DeleteSame", testConcurrentDeleteSame},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			if s == nil {
				t.Fatal("open returned a nil store")
			}
			tc.fn(t, s)
		})
	}
}

// --- helpers ---

// randBytes returns n random bytes; it is safe on any goroutine (crypto/rand
// never fails).
func randBytes(_ testing.TB, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// randDigest returns a digest nobody else uses: a record key, or the name of
// a blob that was never put.
func randDigest(t testing.TB) digest.Digest {
	return digest.Bytes(randBytes(t, 32))
}

// newBlob returns n random bytes and their digest; it deletes the blob when
// the test ends, in case the test put it.
func newBlob(t *testing.T, s store.Store, n int) (digest.Digest, []byte) {
	t.Helper()
	b := randBytes(t, n)
	d := digest.Bytes(b)
	t.Cleanup(func() { _ = s.DeleteBlob(context.Background(), d) })
	return d, b
}

// newKey returns a random record key whose record is deleted when the test ends.
func newKey(t *testing.T, s store.Store) digest.Digest {
	t.Helper()
	k := randDigest(t)
	t.Cleanup(func() { _ = s.DeleteRecord(context.Background(), k) })
	return k
}

func putBlob(t *testing.T, s store.Store, d digest.Digest, b []byte) {
	t.Helper()
	if err := s.PutBlob(t.Context(), d, bytes.NewReader(b)); err != nil {
		t.Fatalf("PutBlob %s (%d bytes): %v", d.Short(), len(b), err)
	}
}

func readBlob(ctx context.Context, s store.Store, d digest.Digest) ([]byte, error) {
	r, err := s.OpenBlob(ctx, d)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(r)
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return b, err
}

// checkBlob asserts that blob d is stored with exactly content b.
func checkBlob(t *testing.T, s store.Store, d digest.Digest, b []byte) {
	t.Helper()
	n, err := s.StatBlob(t.Context(), d)
	if err != nil {
		t.Fatalf("StatBlob %s: %v", d.Short(), err)
	}
	if n != int64(len(b)) {
		t.Errorf("StatBlob %s: size %d, want %d", d.Short(), n, len(b))
	}
	got, err := readBlob(t.Context(), s, d)
	if err != nil {
		t.Fatalf("OpenBlob %s: %v", d.Short(), err)
	}
	if !bytes.Equal(got, b) {
		t.Errorf("OpenBlob %s: read %d bytes that differ from the %d put", d.Short(), len(got), len(b))
	}
}

// checkNoBlob asserts that blob d is absent: StatBlob and OpenBlob fail with
// ErrNotFound and ListBlobs does not name it.
func checkNoBlob(t *testing.T, s store.Store, d digest.Digest) {
	t.Helper()
	if n, err := s.StatBlob(t.Context(), d); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("StatBlob %s = %d, %v; want an error wrapping store.ErrNotFound", d.Short(), n, err)
	}
	r, err := s.OpenBlob(t.Context(), d)
	if err == nil {
		r.Close()
	}
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("OpenBlob %s: err = %v; want an error wrapping store.ErrNotFound", d.Short(), err)
	}
	if c := listBlobs(t, s)[d]; c.count != 0 {
		t.Errorf("ListBlobs names absent blob %s %d time(s)", d.Short(), c.count)
	}
}

type listed struct {
	count int
	size  int64
}

func listBlobs(t *testing.T, s store.Store) map[digest.Digest]listed {
	t.Helper()
	m := map[digest.Digest]listed{}
	err := s.ListBlobs(t.Context(), func(d digest.Digest, size int64) error {
		l := m[d]
		l.count++
		l.size = size
		m[d] = l
		return nil
	})
	if err != nil {
		t.Fatalf("ListBlobs: %v", err)
	}
	return m
}

func listRecords(t *testing.T, s store.Store) map[digest.Digest]int {
	t.Helper()
	m := map[digest.Digest]int{}
	if err := s.ListRecords(t.Context(), func(k digest.Digest) error { m[k]++; return nil }); err != nil {
		t.Fatalf("ListRecords: %v", err)
	}
	return m
}

func getRecord(t *testing.T, s store.Store, k digest.Digest) []byte {
	t.Helper()
	b, err := s.GetRecord(t.Context(), k)
	if err != nil {
		t.Fatalf("GetRecord %s: %v", k.Short(), err)
	}
	return b
}

func putRecord(t *testing.T, s store.Store, k digest.Digest, b []byte) {
	t.Helper()
	if err := s.PutRecord(t.Context(), k, b); err != nil {
		t.Fatalf("PutRecord %s: %v", k.Short(), err)
	}
}

// sealed returns a self-checking value of about n bytes: the digest of a
// random body followed by the body. A torn or mixed read fails unseal.
func sealed(t testing.TB, n int) []byte {
	body := randBytes(t, n)
	d := digest.Bytes(body)
	return append(d[:], body...)
}

func unseal(b []byte) error {
	if len(b) < digest.Size {
		return fmt.Errorf("%d bytes, shorter than a digest", len(b))
	}
	if got := digest.Bytes(b[digest.Size:]); !bytes.Equal(got[:], b[:digest.Size]) {
		return fmt.Errorf("%d bytes whose body does not match its header: a partial or mixed value", len(b))
	}
	return nil
}

// --- blobs ---

func testBlobPutStatOpen(t *testing.T, s store.Store) {
	for _, n := range []int{1, 100, 4096, 100_000} {
		d, b := newBlob(t, s, n)
		putBlob(t, s, d, b)
		checkBlob(t, s, d, b)
	}
}

func testBlobEmpty(t *testing.T, s store.Store) {
	// Shared by every run of the suite against the same store: not deleted.
	d := digest.Bytes(nil)
	putBlob(t, s, d, nil)
	checkBlob(t, s, d, nil)
	if l := listBlobs(t, s)[d]; l.count != 1 || l.size != 0 {
		t.Errorf("ListBlobs: empty blob listed %d time(s) with size %d, want once with size 0", l.count, l.size)
	}
}

func testBlobLarge(t *testing.T, s store.Store) {
	// Over the parallel hashing threshold and over an S3 multipart part.
	d, b := newBlob(t, s, 6<<20+12345)
	// A reader that hands out small pieces, as a network stream does.
	if err := s.PutBlob(t.Context(), d, io.LimitReader(&chunky{b: b, n: 7000}, int64(len(b)))); err != nil {
		t.Fatalf("PutBlob: %v", err)
	}
	checkBlob(t, s, d, b)
}

// chunky reads at most n bytes at a time.
type chunky struct {
	b []byte
	n int
}

func (c *chunky) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[k:]
	return k, nil
}

func testBlobNotFound(t *testing.T, s store.Store) {
	checkNoBlob(t, s, randDigest(t))
}

func testBlobPutIdempotent(t *testing.T, s store.Store) {
	d, b := newBlob(t, s, 5000)
	for i := range 3 {
		if err := s.PutBlob(t.Context(), d, bytes.NewReader(b)); err != nil {
			t.Fatalf("PutBlob #%d of the same blob: %v; want nil", i+1, err)
		}
	}
	checkBlob(t, s, d, b)
	if l := listBlobs(t, s)[d]; l.count != 1 || l.size != int64(len(b)) {
		t.Errorf("ListBlobs: blob put 3 times listed %d time(s) with size %d, want once with size %d", l.count, l.size, len(b))
	}
}

func testBlobPutCorrupt(t *testing.T, s store.Store) {
	d, b := newBlob(t, s, 3000)
	flipped := append([]byte(nil), b...)
	flipped[1500] ^= 1
	cases := []struct {
		name string
		data []byte
	}{
		{"one bit flipped", flipped},
		{"truncated", b[:len(b)-1]},
		{"extended", append(append([]byte(nil), b...), 0)},
		{"empty", nil},
		{"other content", randBytes(t, len(b))},
	}
	for _, c := range cases {
		err := s.PutBlob(t.Context(), d, bytes.NewReader(c.data))
		if !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("PutBlob %s with %s bytes: err = %v; want an error wrapping store.ErrCorrupt", d.Short(), c.name, err)
		}
		checkNoBlob(t, s, d)
	}
	// The right bytes still go in afterwards.
	putBlob(t, s, d, b)
	checkBlob(t, s, d, b)
}

type failingReader struct {
	b   []byte
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.b) == 0 {
		return 0, f.err
	}
	n := copy(p, f.b)
	f.b = f.b[n:]
	return n, nil
}

func testBlobPutReaderError(t *testing.T, s store.Store) {
	d, b := newBlob(t, s, 64<<10)
	boom := errors.New("storetest: reader failed")
	err := s.PutBlob(t.Context(), d, &failingReader{b: b[:len(b)/2], err: boom})
	if err == nil {
		t.Fatalf("PutBlob from a reader that fails half-way returned nil")
	}
	checkNoBlob(t, s, d)
}

func testBlobDelete(t *testing.T, s store.Store) {
	d, b := newBlob(t, s, 2000)
	other, ob := newBlob(t, s, 2000)
	putBlob(t, s, d, b)
	putBlob(t, s, other, ob)
	if err := s.DeleteBlob(t.Context(), d); err != nil {
		t.Fatalf("DeleteBlob: %v", err)
	}
	checkNoBlob(t, s, d)
	checkBlob(t, s, other, ob) // deleting one blob leaves the others
	if err := s.DeleteBlob(t.Context(), d); err != nil {
		t.Errorf("DeleteBlob of a blob already deleted: %v; want nil", err)
	}
	if err := s.DeleteBlob(t.Context(), randDigest(t)); err != nil {
		t.Errorf("DeleteBlob of a blob never put: %v; want nil", err)
	}
	// A deleted blob can be put again.
	putBlob(t, s, d, b)
	checkBlob(t, s, d, b)
}

func testBlobList(t *testing.T, s store.Store) {
	want := map[digest.Digest]int64{}
	for _, n := range []int{1, 10, 1000, 33333, 70000} {
		d, b := newBlob(t, s, n)
		putBlob(t, s, d, b)
		want[d] = int64(n)
	}
	got := listBlobs(t, s)
	for d, n := range want {
		if l := got[d]; l.count != 1 || l.size != n {
			t.Errorf("ListBlobs: %s listed %d time(s) with size %d; want once with size %d", d.Short(), l.count, l.size, n)
		}
	}
	var gone digest.Digest
	for d := range want {
		gone = d
		break
	}
	if err := s.DeleteBlob(t.Context(), gone); err != nil {
		t.Fatal(err)
	}
	got = listBlobs(t, s)
	for d, n := range want {
		wantCount := 1
		if d == gone {
			wantCount = 0
		}
		if l := got[d]; l.count != wantCount {
			t.Errorf("ListBlobs after deleting %s: %s (size %d) listed %d time(s), want %d", gone.Short(), d.Short(), n, l.count, wantCount)
		}
	}
}

func testBlobListStops(t *testing.T, s store.Store) {
	for range 3 {
		d, b := newBlob(t, s, 100)
		putBlob(t, s, d, b)
	}
	stop := errors.New("storetest: stop listing")
	calls := 0
	err := s.ListBlobs(t.Context(), func(digest.Digest, int64) error { calls++; return stop })
	if !errors.Is(err, stop) {
		t.Errorf("ListBlobs with fn failing: err = %v; want fn's error", err)
	}
	if calls != 1 {
		t.Errorf("ListBlobs called fn %d times after it failed the first time; want 1", calls)
	}
}

// --- records ---

func testRecordPutGet(t *testing.T, s store.Store) {
	for _, data := range [][]byte{
		[]byte(`{"version":1}`),
		{0, 1, 2, 0, 255, '\n'},
		randBytes(t, 200_000),
	} {
		k := newKey(t, s)
		putRecord(t, s, k, data)
		if got := getRecord(t, s, k); !bytes.Equal(got, data) {
			t.Errorf("GetRecord %s: got %d bytes that differ from the %d put", k.Short(), len(got), len(data))
		}
	}
}

func testRecordEmpty(t *testing.T, s store.Store) {
	k := newKey(t, s)
	putRecord(t, s, k, []byte{})
	if got := getRecord(t, s, k); len(got) != 0 {
		t.Errorf("GetRecord of an empty record: %d bytes", len(got))
	}
}

func testRecordNotFound(t *testing.T, s store.Store) {
	k := randDigest(t)
	if b, err := s.GetRecord(t.Context(), k); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRecord of a key never put = %q, %v; want an error wrapping store.ErrNotFound", b, err)
	}
}

func testRecordReplace(t *testing.T, s store.Store) {
	k := newKey(t, s)
	a, b := randBytes(t, 3000), randBytes(t, 10)
	for i, data := range [][]byte{a, b, a} {
		putRecord(t, s, k, data)
		if got := getRecord(t, s, k); !bytes.Equal(got, data) {
			t.Errorf("GetRecord after put #%d: %d bytes, not the %d just put", i+1, len(got), len(data))
		}
	}
	if c := listRecords(t, s)[k]; c != 1 {
		t.Errorf("ListRecords: a key replaced twice listed %d time(s), want 1", c)
	}
}

func testRecordPutIdempotent(t *testing.T, s store.Store) {
	k := newKey(t, s)
	data := randBytes(t, 500)
	putRecord(t, s, k, data)
	putRecord(t, s, k, data)
	if got := getRecord(t, s, k); !bytes.Equal(got, data) {
		t.Errorf("GetRecord after putting the same record twice: differs")
	}
}

func testRecordNoAliasing(t *testing.T, s store.Store) {
	k := newKey(t, s)
	data := randBytes(t, 100)
	orig := append([]byte(nil), data...)
	putRecord(t, s, k, data)
	for i := range data {
		data[i] ^= 0xff // the caller reuses its buffer
	}
	got := getRecord(t, s, k)
	if !bytes.Equal(got, orig) {
		t.Fatalf("GetRecord changed after the caller modified the slice it passed to PutRecord")
	}
	for i := range got {
		got[i] = 0 // the caller scribbles on what it got
	}
	if again := getRecord(t, s, k); !bytes.Equal(again, orig) {
		t.Errorf("GetRecord changed after the caller modified the slice a previous GetRecord returned")
	}
}

func testRecordDelete(t *testing.T, s store.Store) {
	k, other := newKey(t, s), newKey(t, s)
	putRecord(t, s, k, []byte("a"))
	putRecord(t, s, other, []byte("b"))
	if err := s.DeleteRecord(t.Context(), k); err != nil {
		t.Fatalf("DeleteRecord: %v", err)
	}
	if _, err := s.GetRecord(t.Context(), k); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRecord after DeleteRecord: err = %v; want an error wrapping store.ErrNotFound", err)
	}
	if got := getRecord(t, s, other); string(got) != "b" {
		t.Errorf("GetRecord of another key after DeleteRecord: %q, want %q", got, "b")
	}
	if c := listRecords(t, s)[k]; c != 0 {
		t.Errorf("ListRecords names deleted key %s", k.Short())
	}
	if err := s.DeleteRecord(t.Context(), k); err != nil {
		t.Errorf("DeleteRecord of a record already deleted: %v; want nil", err)
	}
	if err := s.DeleteRecord(t.Context(), randDigest(t)); err != nil {
		t.Errorf("DeleteRecord of a key never put: %v; want nil", err)
	}
}

func testRecordList(t *testing.T, s store.Store) {
	var keys []digest.Digest
	for range 6 {
		k := newKey(t, s)
		putRecord(t, s, k, randBytes(t, 20))
		keys = append(keys, k)
	}
	got := listRecords(t, s)
	for _, k := range keys {
		if got[k] != 1 {
			t.Errorf("ListRecords: %s listed %d time(s), want 1", k.Short(), got[k])
		}
	}
	if err := s.DeleteRecord(t.Context(), keys[0]); err != nil {
		t.Fatal(err)
	}
	got = listRecords(t, s)
	if got[keys[0]] != 0 {
		t.Errorf("ListRecords: deleted %s still listed", keys[0].Short())
	}
	for _, k := range keys[1:] {
		if got[k] != 1 {
			t.Errorf("ListRecords after a delete: %s listed %d time(s), want 1", k.Short(), got[k])
		}
	}
}

func testRecordListStops(t *testing.T, s store.Store) {
	for range 3 {
		putRecord(t, s, newKey(t, s), []byte("x"))
	}
	stop := errors.New("storetest: stop listing")
	calls := 0
	err := s.ListRecords(t.Context(), func(digest.Digest) error { calls++; return stop })
	if !errors.Is(err, stop) {
		t.Errorf("ListRecords with fn failing: err = %v; want fn's error", err)
	}
	if calls != 1 {
		t.Errorf("ListRecords called fn %d times after it failed the first time; want 1", calls)
	}
}

// A blob and a record with the same name are different things.
func testRecordSeparateFromBlobs(t *testing.T, s store.Store) {
	d, b := newBlob(t, s, 1000)
	t.Cleanup(func() { _ = s.DeleteRecord(context.Background(), d) })
	putBlob(t, s, d, b)
	rec := []byte("a record named like a blob")
	putRecord(t, s, d, rec)
	checkBlob(t, s, d, b)
	if got := getRecord(t, s, d); !bytes.Equal(got, rec) {
		t.Errorf("GetRecord under a blob's digest: %q, want %q", got, rec)
	}
	if err := s.DeleteRecord(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	checkBlob(t, s, d, b)
	putRecord(t, s, d, rec)
	if err := s.DeleteBlob(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if got := getRecord(t, s, d); !bytes.Equal(got, rec) {
		t.Errorf("GetRecord after deleting the blob of the same name: %q, want %q", got, rec)
	}
	k := newKey(t, s)
	putRecord(t, s, k, rec)
	if l := listBlobs(t, s)[k]; l.count != 0 {
		t.Errorf("ListBlobs names record key %s", k.Short())
	}
	if c := listRecords(t, s)[d]; c != 1 {
		t.Errorf("ListRecords: %s listed %d time(s), want 1", d.Short(), c)
	}
}

// --- concurrency ---

// together runs fn(i) for i in [0, n) on n goroutines released at once and
// returns the first error.
func together(n int, fn func(i int) error) error {
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return errors.Join(errs...)
}

func testConcurrentSameBlob(t *testing.T, s store.Store) {
	d, b := newBlob(t, s, 256<<10)
	err := together(Writers, func(int) error {
		return s.PutBlob(t.Context(), d, &chunky{b: b, n: 16 << 10})
	})
	if err != nil {
		t.Fatalf("%d concurrent PutBlob of the same blob: %v", Writers, err)
	}
	checkBlob(t, s, d, b)
	if l := listBlobs(t, s)[d]; l.count != 1 || l.size != int64(len(b)) {
		t.Errorf("ListBlobs: blob put by %d writers listed %d time(s) with size %d, want once with size %d", Writers, l.count, l.size, len(b))
	}
}

func testConcurrentSameRecord(t *testing.T, s store.Store) {
	k := newKey(t, s)
	vals := make([][]byte, Writers)
	for i := range vals {
		vals[i] = sealed(t, 64<<10+i)
	}
	if err := together(Writers, func(i int) error { return s.PutRecord(t.Context(), k, vals[i]) }); err != nil {
		t.Fatalf("%d concurrent PutRecord of one key: %v", Writers, err)
	}
	got := getRecord(t, s, k)
	found := false
	for _, v := range vals {
		found = found || bytes.Equal(got, v)
	}
	if !found {
		t.Errorf("GetRecord after %d concurrent writers: %d bytes that are none of the values written (%v)", Writers, len(got), unseal(got))
	}
	if c := listRecords(t, s)[k]; c != 1 {
		t.Errorf("ListRecords: key written by %d writers listed %d time(s), want 1", Writers, c)
	}
}

// Readers racing with writers of the same blob see the whole blob or none.
func testConcurrentBlobReaders(t *testing.T, s store.Store) {
	d, b := newBlob(t, s, 512<<10)
	const readers = Writers / 2
	var writing atomic.Int32
	writing.Store(Writers)
	var seen atomic.Int32
	err := together(Writers+readers, func(i int) error {
		if i < Writers {
			defer writing.Add(-1)
			return s.PutBlob(t.Context(), d, &chunky{b: b, n: 32 << 10})
		}
		for {
			last := writing.Load() == 0
			n, err := s.StatBlob(t.Context(), d)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return fmt.Errorf("StatBlob during writes: %w", err)
			case n != int64(len(b)):
				return fmt.Errorf("StatBlob during writes: size %d of %d", n, len(b))
			}
			got, err := readBlob(t.Context(), s, d)
			switch {
			case errors.Is(err, store.ErrNotFound):
			case err != nil:
				return fmt.Errorf("OpenBlob during writes: %w", err)
			case !bytes.Equal(got, b):
				return fmt.Errorf("OpenBlob during writes: read %d bytes that differ from the %d written: a partial blob", len(got), len(b))
			default:
				seen.Add(1)
			}
			if last {
				return nil
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen.Load() < readers {
		t.Errorf("after all writers returned, %d of %d readers saw the blob", seen.Load(), readers)
	}
	checkBlob(t, s, d, b)
}

// Readers racing with writers replacing one record see one whole value each
// time (or none before the first write).
func testConcurrentRecordReaders(t *testing.T, s store.Store) {
	k := newKey(t, s)
	const readers = Writers / 2
	const puts = 4 // per writer
	var writing atomic.Int32
	writing.Store(Writers)
	err := together(Writers+readers, func(i int) error {
		if i < Writers {
			defer writing.Add(-1)
			for j := range puts {
				if err := s.PutRecord(t.Context(), k, sealed(t, 32<<10+97*i+j)); err != nil {
					return err
				}
			}
			return nil
		}
		for {
			last := writing.Load() == 0
			got, err := s.GetRecord(t.Context(), k)
			switch {
			case errors.Is(err, store.ErrNotFound):
				if last {
					return fmt.Errorf("GetRecord after every writer returned: %w", err)
				}
			case err != nil:
				return fmt.Errorf("GetRecord during writes: %w", err)
			default:
				if err := unseal(got); err != nil {
					return fmt.Errorf("GetRecord during writes: %w", err)
				}
			}
			if last {
				return nil
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testConcurrentDeleteSame(t *testing.T, s store.Store) {
	d, b := newBlob(t, s, 1000)
	k := newKey(t, s)
	putBlob(t, s, d, b)
	putRecord(t, s, k, b)
	if err := together(Writers, func(i int) error {
		if i%2 == 0 {
			return s.DeleteBlob(t.Context(), d)
		}
		return s.DeleteRecord(t.Context(), k)
	}); err != nil {
		t.Fatalf("concurrent deletes of one blob and one record: %v", err)
	}
	checkNoBlob(t, s, d)
	if _, err := s.GetRecord(t.Context(), k); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetRecord after concurrent deletes: err = %v; want an error wrapping store.ErrNotFound", err)
	}
}
