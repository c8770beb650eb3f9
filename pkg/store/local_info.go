package store

import (
	"context"
	"io/fs"
	"syscall"
	"time"

	"github.com/orch-dev/orch/pkg/digest"
)

// ListBlobInfo implements InfoLister: Modified is the time the blob was
// placed in the store (its change time: placing a blob changes its mode
// and renames it, which keeps the modification time the stage gave it).
func (l *Local) ListBlobInfo(ctx context.Context, fn func(Info) error) error {
	return l.walk(ctx, "blobs", func(d digest.Digest, fi fs.FileInfo) error { return fn(fileInfo(d, fi)) })
}

// ListRecordInfo implements InfoLister: Modified is the time the record
// was written (its modification time).
func (l *Local) ListRecordInfo(ctx context.Context, fn func(Info) error) error {
	return l.walk(ctx, "records", func(d digest.Digest, fi fs.FileInfo) error {
		i := fileInfo(d, fi)
		i.Modified = fi.ModTime()
		return fn(i)
	})
}

func fileInfo(d digest.Digest, fi fs.FileInfo) Info {
	i := Info{Digest: d, Size: fi.Size(), Modified: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		i.Modified = time.Unix(st.Ctim.Unix())
	}
	return i
}
