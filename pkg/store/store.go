package store

import (
	"context"
	"errors"
	"io"

	"github.com/orch-dev/orch/pkg/digest"
)

// ErrNotFound is returned (wrapped) when a blob or record does not exist.
var ErrNotFound = errors.New("not found")

// ErrCorrupt is returned (wrapped) when stored bytes do not match their digest
// or cannot be parsed.
var ErrCorrupt = errors.New("corrupt")

// Store is a content-addressed blob store plus a key → record map.
type Store interface {
	// StatBlob returns the size of blob d, or an error wrapping ErrNotFound.
	StatBlob(ctx context.Context, d digest.Digest) (int64, error)

	// PutBlob stores the bytes of r under d. The content is verified while it
	// is written: bytes that do not hash to d are rejected with an error
	// wrapping ErrCorrupt and nothing is stored. Putting a blob that already
	// exists is a no-op that returns nil. Atomic: concurrent readers see the
	// whole blob or none; concurrent writers of the same digest are safe.
	PutBlob(ctx context.Context, d digest.Digest, r io.Reader) error

	// OpenBlob opens blob d for reading, or returns an error wrapping
	// ErrNotFound. The store does not verify the content on open; callers that
	// trust the bytes must hash them (pkg/cache does).
	OpenBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error)

	// DeleteBlob removes blob d. Deleting a missing blob returns nil.
	DeleteBlob(ctx context.Context, d digest.Digest) error

	// ListBlobs calls fn for every blob with its size, in no particular order.
	// An error from fn stops the listing and is returned.
	ListBlobs(ctx context.Context, fn func(d digest.Digest, size int64) error) error

	// GetRecord returns the record stored under key, or an error wrapping
	// ErrNotFound.
	GetRecord(ctx context.Context, key digest.Digest) ([]byte, error)

	// PutRecord stores data under key, replacing any previous record
	// atomically: readers see the old or the new record, never a mix.
	PutRecord(ctx context.Context, key digest.Digest, data []byte) error

	// DeleteRecord removes the record under key. Deleting a missing record
	// returns nil.
	DeleteRecord(ctx context.Context, key digest.Digest) error

	// ListRecords calls fn for every record key, in no particular order.
	ListRecords(ctx context.Context, fn func(key digest.Digest) error) error
}
