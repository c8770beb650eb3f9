package engine

import (
	"context"
	"fmt"

	"github.com/orch-dev/orch/pkg/cache"
	"github.com/orch-dev/orch/pkg/digest"
)

// VerifyReport is what Verify found.
type VerifyReport struct {
	Blobs, Records int
	Bytes          int64
	// Corrupt lists problems: "blob 3f2a…: content hashes to …".
	Corrupt []string
	// Removed counts entries evicted (with repair).
	Removed int
}

// Verify re-hashes every blob of the local store and parses every record.
// With repair, corrupt blobs and records are evicted (a later run recomputes
// them).
func (e *Engine) Verify(ctx context.Context, repair bool) (*VerifyReport, error) {
	rep := &VerifyReport{}
	var bad []digest.Digest
	err := e.Local.ListBlobs(ctx, func(d digest.Digest, size int64) error {
		rep.Blobs++
		rep.Bytes += size
		got, _, err := digest.File(e.Local.BlobPath(d))
		switch {
		case err != nil:
			rep.Corrupt = append(rep.Corrupt, fmt.Sprintf("blob %s: %v", d, err))
			bad = append(bad, d)
		case got != d:
			rep.Corrupt = append(rep.Corrupt, fmt.Sprintf("blob %s: content hashes to %s", d, got))
			bad = append(bad, d)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var badRecords []digest.Digest
	err = e.Local.ListRecords(ctx, func(k digest.Digest) error {
		rep.Records++
		if _, err := cache.GetRecord(ctx, e.Local, k); err != nil {
			rep.Corrupt = append(rep.Corrupt, fmt.Sprintf("record %s: %v", k, err))
			badRecords = append(badRecords, k)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if repair {
		for _, d := range bad {
			if err := e.Local.DeleteBlob(ctx, d); err != nil {
				return rep, err
			}
			rep.Removed++
		}
		for _, k := range badRecords {
			if err := e.Local.DeleteRecord(ctx, k); err != nil {
				return rep, err
			}
			rep.Removed++
		}
	}
	return rep, nil
}
