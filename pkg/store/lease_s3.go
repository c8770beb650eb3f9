package store

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/orch-dev/orch/pkg/digest"
)

var _ LeaseStore = (*S3)(nil)

// LeaseKey returns the object key of the lease of key.
func (s *S3) LeaseKey(key digest.Digest) string { return s.key("leases", key) }

// CreateLease implements LeaseStore with a conditional PUT (If-None-Match:
// *). On a server without conditional writes it falls back to HEAD then
// PUT, which two processes can both win (each then computes the key; the
// records they write are equivalent).
func (s *S3) CreateLease(ctx context.Context, key digest.Digest, data []byte) (string, bool, error) {
	what := "lease " + key.Short()
	if s.noConditional.Load() {
		if _, _, err := s.GetLease(ctx, key); err == nil {
			return "", false, nil
		} else if !errors.Is(err, ErrNotFound) {
			return "", false, err
		}
		out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.LeaseKey(key)), Body: bytes.NewReader(data),
		})
		if err != nil {
			return "", false, s.err("put", what, err)
		}
		return aws.ToString(out.ETag), true, nil
	}
	for attempt := 1; ; attempt++ {
		out, err := s.client.PutObject(ctx, &s3.PutObjectInput{
			Bucket:      aws.String(s.cfg.Bucket),
			Key:         aws.String(s.LeaseKey(key)),
			Body:        bytes.NewReader(data),
			IfNoneMatch: aws.String("*"),
		})
		switch st := httpStatus(err); {
		case err == nil:
			return aws.ToString(out.ETag), true, nil
		case st == http.StatusPreconditionFailed:
			return "", false, nil
		case st == http.StatusConflict && attempt < 5:
			continue // a concurrent conditional write of the key: retry
		case st == http.StatusNotImplemented:
			s.noConditional.Store(true)
			return s.CreateLease(ctx, key, data)
		default:
			return "", false, s.err("create", what, err)
		}
	}
}

// GetLease implements LeaseStore; the tag is the object's ETag.
func (s *S3) GetLease(ctx context.Context, key digest.Digest) ([]byte, string, error) {
	what := "lease " + key.Short()
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(s.cfg.Bucket),
		Key:    aws.String(s.LeaseKey(key)),
	})
	if err != nil {
		return nil, "", s.err("get", what, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, "", s.err("get", what, err)
	}
	return b, aws.ToString(out.ETag), nil
}

// ReplaceLease implements LeaseStore with a conditional PUT (If-Match:
// tag). On a server without conditional writes it compares the ETag, then
// PUTs: two processes taking over one expired lease may then both win.
func (s *S3) ReplaceLease(ctx context.Context, key digest.Digest, tag string, data []byte) (string, bool, error) {
	what := "lease " + key.Short()
	in := &s3.PutObjectInput{
		Bucket: aws.String(s.cfg.Bucket),
		Key:    aws.String(s.LeaseKey(key)),
		Body:   bytes.NewReader(data),
	}
	if s.noConditional.Load() {
		_, cur, err := s.GetLease(ctx, key)
		if errors.Is(err, ErrNotFound) {
			return "", false, nil
		}
		if err != nil {
			return "", false, err
		}
		if cur != tag {
			return "", false, nil
		}
	} else {
		in.IfMatch = aws.String(tag)
	}
	for attempt := 1; ; attempt++ {
		out, err := s.client.PutObject(ctx, in)
		switch st := httpStatus(err); {
		case err == nil:
			return aws.ToString(out.ETag), true, nil
		case st == http.StatusPreconditionFailed || isS3NotFound(err):
			return "", false, nil
		case st == http.StatusConflict && attempt < 5:
			in.Body = bytes.NewReader(data)
			continue
		case st == http.StatusNotImplemented && in.IfMatch != nil:
			s.noConditional.Store(true)
			return s.ReplaceLease(ctx, key, tag, data)
		default:
			return "", false, s.err("replace", what, err)
		}
	}
}

// DeleteLease implements LeaseStore with a conditional DELETE (If-Match:
// tag), or, on a server without conditional deletes, GET, compare, DELETE.
func (s *S3) DeleteLease(ctx context.Context, key digest.Digest, tag string) error {
	what := "lease " + key.Short()
	in := &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.LeaseKey(key))}
	if tag == "" {
		return s.delete(ctx, s.LeaseKey(key), what)
	}
	if s.noConditional.Load() {
		_, cur, err := s.GetLease(ctx, key)
		if errors.Is(err, ErrNotFound) || (err == nil && cur != tag) {
			return nil
		}
		if err != nil {
			return err
		}
	} else {
		in.IfMatch = aws.String(tag)
	}
	_, err := s.client.DeleteObject(ctx, in)
	switch st := httpStatus(err); {
	case err == nil, st == http.StatusPreconditionFailed, isS3NotFound(err):
		return nil
	case st == http.StatusNotImplemented && in.IfMatch != nil:
		s.noConditional.Store(true)
		return s.DeleteLease(ctx, key, tag)
	default:
		return s.err("delete", what, err)
	}
}

// ListLeases implements LeaseStore.
func (s *S3) ListLeases(ctx context.Context, fn func(digest.Digest) error) error {
	return s.list(ctx, "leases", func(i Info) error { return fn(i.Digest) })
}
