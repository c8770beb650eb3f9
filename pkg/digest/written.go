package digest

import (
	"os"
	"sync"
)

// FileID names one state of a file: its inode and what a write changes.
// A digest remembered under it (Remember) is recalled only while the file
// still has that state.
type FileID struct {
	Dev, Ino     uint64
	Size         int64
	Mtime, Ctime int64 // nanoseconds
}

// written holds the digests orch's own writers computed while writing
// (FileWriter), until the engine collects the file (Recall). Bounded: a
// file written but never collected (tests, a failed stage) is forgotten.
var written struct {
	sync.Mutex
	m map[FileID]Digest
}

const maxWritten = 1024

// Remember records d as the digest of the file in state id.
func Remember(id FileID, d Digest) {
	written.Lock()
	defer written.Unlock()
	if written.m == nil || len(written.m) >= maxWritten {
		written.m = map[FileID]Digest{}
	}
	written.m[id] = d
}

// Recall returns, and forgets, the digest remembered for a file in state
// id; ok is false when there is none.
func Recall(id FileID) (d Digest, ok bool) {
	written.Lock()
	defer written.Unlock()
	d, ok = written.m[id]
	delete(written.m, id)
	return d, ok
}

// FileWriter writes a file and hashes its bytes on the way, in a goroutine
// of its own (the writer's goroutine only copies them): Close remembers the
// digest under the file's final state, so that collecting the file into the
// cache does not read it again. Writes must be sequential from the start of
// the file (no Seek, no WriteAt).
type FileWriter struct {
	f    *os.File
	h    *Hasher
	ch   chan []byte
	done chan struct{}
	n    int64
	err  error
}

// hashChunk is the size of the pieces handed to the hashing goroutine;
// at most hashQueue of them wait (8 MiB).
const (
	hashChunk = 1 << 20
	hashQueue = 8
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, hashChunk); return &b }}

// NewFileWriter returns a FileWriter over f, which must be empty and at
// offset 0.
func NewFileWriter(f *os.File) *FileWriter {
	w := &FileWriter{f: f, h: NewHasher(), ch: make(chan []byte, hashQueue), done: make(chan struct{})}
	go func(ch <-chan []byte) {
		defer close(w.done)
		for b := range ch {
			w.h.Write(b)
			b = b[:cap(b)]
			chunkPool.Put(&b)
		}
	}(w.ch)
	return w
}

// Write writes p to the file and queues a copy for hashing.
func (w *FileWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.n += int64(n)
	for q := p[:n]; len(q) > 0; {
		b := *chunkPool.Get().(*[]byte)
		k := copy(b, q)
		w.ch <- b[:k]
		q = q[k:]
	}
	if err != nil {
		w.err = err
	}
	return n, err
}

// Close finishes the hash, closes the file and, when every write
// succeeded and the file holds exactly the bytes written, remembers the
// digest under the file's state as it closes.
func (w *FileWriter) Close() error {
	if w.ch == nil {
		return nil
	}
	close(w.ch)
	w.ch = nil
	<-w.done
	if w.err == nil {
		if id, err := fileID(w.f); err == nil && id.Size == w.n {
			Remember(id, w.h.Sum())
		}
	}
	if err := w.f.Close(); err != nil && w.err == nil {
		w.err = err
	}
	return w.err
}
