package store

import (
	"context"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
)

// Info describes a stored blob or record.
type Info struct {
	Digest digest.Digest
	Size   int64
	// Modified is when it was written: a local blob's change time (placing
	// a blob renames it), a local record's modification time, an S3
	// object's Last-Modified. Access times are not used: explanations,
	// verify and gc read records too, so they do not mean "used".
	Modified time.Time
}

// InfoLister is implemented by stores that list blobs and records with
// their sizes and times (gc and stats use it).
type InfoLister interface {
	ListBlobInfo(ctx context.Context, fn func(Info) error) error
	ListRecordInfo(ctx context.Context, fn func(Info) error) error
}

// BatchDeleter is implemented by stores that delete many objects per
// request (S3's DeleteObjects). Deleting missing objects is not an error.
type BatchDeleter interface {
	DeleteBlobs(ctx context.Context, ds []digest.Digest) error
	DeleteRecords(ctx context.Context, keys []digest.Digest) error
}

var (
	_ InfoLister   = (*Local)(nil)
	_ InfoLister   = (*S3)(nil)
	_ BatchDeleter = (*S3)(nil)
)
