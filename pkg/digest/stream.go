package digest

import (
	"io"
	"sync"

	"github.com/zeebo/blake3"
)

// Reader reads big content in batches, hashing one batch on all cores while
// it reads the next into a second buffer; each batch is cut into units of
// streamUnit bytes, whose chaining values a cvStack merges.
const (
	streamUnit     = 256 << 10
	minStreamBatch = 4 << 20
	maxStreamBatch = 16 << 20
)

// streamBatch returns the batch size for w workers: 8 units per worker,
// within [minStreamBatch, maxStreamBatch]. It is a multiple of streamUnit and
// at least ParallelThreshold.
func streamBatch(w int) int {
	return min(max(8*w*streamUnit, minStreamBatch), maxStreamBatch)
}

var batchPool sync.Pool // of *[]byte

func getBatch(size int) *[]byte {
	if p, ok := batchPool.Get().(*[]byte); ok && cap(*p) >= size {
		*p = (*p)[:size]
		return p
	}
	b := make([]byte, size)
	return &b
}

func putBatch(p *[]byte) { batchPool.Put(p) }

// Reader returns the digest of everything r yields and the number of bytes
// read. Content of ParallelThreshold bytes or more is hashed on all cores;
// Reader then holds two buffers of up to 16 MiB.
func Reader(r io.Reader) (Digest, int64, error) {
	size := streamBatch(workers())
	ap := getBatch(size)
	defer putBatch(ap)
	a := *ap
	n, err := io.ReadFull(r, a[:ParallelThreshold])
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		return Digest(blake3.Sum256(a[:n])), int64(n), nil
	default:
		return Zero, int64(n), err
	}
	m, err := io.ReadFull(r, a[n:])
	n += m
	eof := false
	switch err {
	case nil:
	case io.EOF, io.ErrUnexpectedEOF:
		eof = true
	default:
		return Zero, int64(n), err
	}

	bp := getBatch(size)
	defer putBatch(bp)
	cur, next := a[:n], *bp
	var st cvStack
	var total int64
	w := workers()
	for !eof {
		// Hash cur while reading next.
		done := make(chan struct{})
		go func() {
			defer close(done)
			pushBatch(&st, cur, total, w)
		}()
		m, err := io.ReadFull(r, next)
		<-done
		total += int64(len(cur))
		switch err {
		case nil:
		case io.EOF:
			return st.digest(), total, nil
		case io.ErrUnexpectedEOF:
			eof = true
		default:
			return Zero, total + int64(m), err
		}
		cur, next = next[:m], cur[:cap(cur)]
	}
	pushBatch(&st, cur, total, w)
	total += int64(len(cur))
	return st.digest(), total, nil
}

// pushBatch hashes the units of b, which starts at byte offset of the input,
// on w goroutines and pushes their chaining values onto st.
func pushBatch(st *cvStack, b []byte, offset int64, w int) {
	cvs := make([]cv, (len(b)+streamUnit-1)/streamUnit)
	_ = unitCVs(cvs, b, offset, streamUnit, w, false) // fails only when mapped
	for _, c := range cvs {
		st.push(c)
	}
}
