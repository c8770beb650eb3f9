package store

import (
	"context"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/orch-dev/orch/pkg/digest"
)

// deleteBatch is S3's limit of keys per DeleteObjects request.
const deleteBatch = 1000

// DeleteBlobs implements BatchDeleter: DeleteObjects requests of up to 1000
// keys (one DELETE per blob on a server without DeleteObjects).
func (s *S3) DeleteBlobs(ctx context.Context, ds []digest.Digest) error {
	return s.deleteMany(ctx, "blob", ds, s.BlobKey)
}

// DeleteRecords implements BatchDeleter.
func (s *S3) DeleteRecords(ctx context.Context, keys []digest.Digest) error {
	return s.deleteMany(ctx, "record", keys, s.RecordKey)
}

func (s *S3) deleteMany(ctx context.Context, what string, ds []digest.Digest, key func(digest.Digest) string) error {
	for len(ds) > 0 {
		batch := ds[:min(len(ds), deleteBatch)]
		ds = ds[len(batch):]
		objs := make([]types.ObjectIdentifier, len(batch))
		for i, d := range batch {
			objs[i] = types.ObjectIdentifier{Key: aws.String(key(d))}
		}
		out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(s.cfg.Bucket),
			Delete: &types.Delete{Objects: objs, Quiet: aws.Bool(true)},
		})
		if st := httpStatus(err); st == http.StatusNotImplemented || st == http.StatusMethodNotAllowed {
			for _, d := range batch {
				if err := s.delete(ctx, key(d), what+" "+d.Short()); err != nil {
					return err
				}
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: delete %d %ss: %w", s.name, len(batch), what, &sdkError{err})
		}
		for _, e := range out.Errors {
			if aws.ToString(e.Code) == "NoSuchKey" {
				continue
			}
			return fmt.Errorf("%s: delete %s: %s: %s", s.name, aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message))
		}
	}
	return nil
}
