package store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/orch-dev/orch/pkg/digest"
)

// OpenBlob implements Store. The first request asks for the blob's first
// PartSize bytes, so a blob no larger than that takes one request. The rest
// of a larger blob is fetched with ranged GETs, Concurrency of them ahead of
// the reader (at most Concurrency × PartSize bytes buffered), and served in
// order: one large download uses several connections, as its upload did.
func (s *S3) OpenBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	key := s.BlobKey(d)
	what := "blob " + d.Short()
	ps := s.cfg.PartSize
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.cfg.Bucket),
		Key:    aws.String(key),
		Range:  aws.String(fmt.Sprintf("bytes=0-%d", ps-1)),
	})
	if httpStatus(err) == http.StatusRequestedRangeNotSatisfiable {
		// An empty object has no byte 0.
		out, err = s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key)})
	}
	if err != nil {
		return nil, s.err("get", what, err)
	}
	end, total, ok := parseContentRange(aws.ToString(out.ContentRange))
	if !ok || end+1 >= total || s.cfg.Concurrency <= 1 {
		// The whole blob (or a server that ignored the range).
		return out.Body, nil
	}
	rctx, cancel := context.WithCancel(ctx)
	r := &rangeReader{
		s: s, ctx: rctx, cancel: cancel, key: key, what: what, cur: out.Body,
		sem: make(chan struct{}, s.cfg.Concurrency),
	}
	for off := end + 1; off < total; off += ps {
		r.chunks = append(r.chunks, &chunk{off: off, n: min(ps, total-off), ch: make(chan chunkResult, 1)})
	}
	r.wg.Add(1)
	go r.dispatch()
	return r, nil
}

// parseContentRange parses "bytes FIRST-LAST/TOTAL".
func parseContentRange(s string) (last, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	_, l, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	last, err1 := strconv.ParseInt(l, 10, 64)
	total, err2 := strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil || last < 0 || total <= last {
		return 0, 0, false
	}
	return last, total, true
}

type chunk struct {
	off, n int64
	ch     chan chunkResult
}

type chunkResult struct {
	buf []byte
	err error
}

// rangeReader serves a blob from its first response body and then from
// chunks fetched in parallel by ranged GETs.
type rangeReader struct {
	s      *S3
	ctx    context.Context
	cancel context.CancelFunc
	key    string
	what   string
	chunks []*chunk
	// sem holds a token per chunk fetched or buffered and not yet read.
	sem chan struct{}
	wg  sync.WaitGroup

	cur     io.ReadCloser // the body or chunk being read
	inChunk bool          // cur is a chunk (holds a token)
	next    int           // next chunk to read
	err     error         // sticky
}

func (r *rangeReader) dispatch() {
	defer r.wg.Done()
	for _, c := range r.chunks {
		select {
		case r.sem <- struct{}{}:
		case <-r.ctx.Done():
			return
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			buf, err := r.fetch(c)
			c.ch <- chunkResult{buf, err}
		}()
	}
}

// fetch gets one chunk; a body that breaks off is asked for again (the SDK
// retries failed requests, not failed reads of a body).
func (r *rangeReader) fetch(c *chunk) ([]byte, error) {
	buf := make([]byte, c.n)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var out *s3.GetObjectOutput
		out, err = r.s.client.GetObject(r.ctx, &s3.GetObjectInput{
			Bucket: aws.String(r.s.cfg.Bucket),
			Key:    aws.String(r.key),
			Range:  aws.String(fmt.Sprintf("bytes=%d-%d", c.off, c.off+c.n-1)),
		})
		if err != nil {
			return nil, r.s.err("get", r.what, err)
		}
		_, err = io.ReadFull(out.Body, buf)
		out.Body.Close()
		if err == nil {
			return buf, nil
		}
		if r.ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%s: get %s: bytes %d-%d: %w", r.s.name, r.what, c.off, c.off+c.n-1, err)
}

func (r *rangeReader) Read(p []byte) (int, error) {
	for {
		if r.err != nil {
			return 0, r.err
		}
		if r.cur != nil {
			n, err := r.cur.Read(p)
			if err == io.EOF {
				r.cur.Close()
				r.cur = nil
				if r.inChunk {
					<-r.sem
					r.inChunk = false
				}
				err = nil
			}
			if n > 0 || err != nil {
				if err != nil {
					r.err = err
				}
				return n, err
			}
			continue
		}
		if r.next == len(r.chunks) {
			r.err = io.EOF
			continue
		}
		c := r.chunks[r.next]
		select {
		case res := <-c.ch:
			if res.err != nil {
				r.err = res.err
				continue
			}
			r.next++
			r.cur, r.inChunk = io.NopCloser(bytes.NewReader(res.buf)), true
		case <-r.ctx.Done():
			r.err = context.Cause(r.ctx)
		}
	}
}

// Close stops the fetches in flight and waits for them.
func (r *rangeReader) Close() error {
	r.cancel()
	if r.cur != nil {
		r.cur.Close()
		r.cur = nil
	}
	r.wg.Wait()
	return nil
}
