package digest

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/zeebo/blake3"
)

// ParallelThreshold is the size from which content is hashed on all cores.
const ParallelThreshold = 1 << 20

// Workers take the input one unit at a time: an aligned subtree of unit bytes,
// a power of two between minUnit and maxUnit.
const (
	minUnit = 64 << 10
	maxUnit = 1 << 20
)

// workers is how many goroutines hash one input.
func workers() int { return runtime.GOMAXPROCS(0) }

// unitFor returns the unit for size bytes and w workers: the largest that
// still gives each worker about 8 units, so that they finish together.
func unitFor(size int64, w int) int {
	u := maxUnit
	for u > minUnit && size/int64(u) < int64(8*w) {
		u >>= 1
	}
	return u
}

// parallelBytes hashes b on all cores.
func parallelBytes(b []byte) Digest {
	w := workers()
	d, _ := hashTree(b, unitFor(int64(len(b)), w), w, false)
	return d
}

// parallelFile hashes the size bytes of f on all cores. It maps the file into
// memory where it can, and reads it otherwise.
func parallelFile(f *os.File, size int64) (Digest, error) {
	if b, unmap, err := mapFile(f, size); err == nil {
		defer unmap()
		w := workers()
		return hashTree(b, unitFor(size, w), w, true)
	}
	return readFile(f, size)
}

// readFile hashes the size bytes of f on all cores, reading it in batches.
func readFile(f *os.File, size int64) (Digest, error) {
	d, n, err := Reader(io.NewSectionReader(f, 0, size))
	if err == nil && n != size {
		err = fmt.Errorf("digest: %s: %w: read %d of %d bytes (did it shrink while being hashed?)", f.Name(), io.ErrUnexpectedEOF, n, size)
	}
	return d, err
}

// hashTree returns the hash of b: w goroutines take units of b (unit bytes
// each, a power of two of at least one chunk) in turn, and the units' chaining
// values are then merged into the root. If b is mapped from a file, a fault
// while reading it (the file shrank) is returned as an error.
func hashTree(b []byte, unit, w int, mapped bool) (Digest, error) {
	if len(b) <= unit {
		return Digest(blake3.Sum256(b)), nil
	}
	cvs := make([]cv, (len(b)+unit-1)/unit)
	if err := unitCVs(cvs, b, 0, unit, w, mapped); err != nil {
		return Zero, err
	}
	return treeDigest(cvs), nil
}

// unitCVs sets cvs[i] to the chaining value of the i-th unit of b, on w
// goroutines. b starts at byte offset of the input, a multiple of unit, and
// ends either at the input's end or at a multiple of unit; it must not be the
// whole input unless it holds two units or more. With mapped set, a memory
// fault while reading b is returned as an error.
func unitCVs(cvs []cv, b []byte, offset int64, unit, w int, mapped bool) error {
	m := len(cvs)
	w = max(1, min(w, m))
	errs := make([]error, w)
	var next atomic.Int64
	var wg sync.WaitGroup
	for k := range w {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if mapped {
				defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
				defer func() {
					if r := recover(); r != nil {
						errs[k] = faultError(r)
						next.Store(int64(m))
					}
				}()
			}
			s := treeScratch{cvs: make([]cv, 0, unit/chunkLen)}
			for {
				i := int(next.Add(1) - 1)
				if i >= m {
					return
				}
				lo := i * unit
				hi := min(lo+unit, len(b))
				cvs[i] = s.subtreeCV(b[lo:hi], uint64(offset+int64(lo))/chunkLen)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// faultError turns the panic from a memory fault into an error, and panics
// again with anything else.
func faultError(r any) error {
	if e, ok := r.(interface {
		error
		Addr() uintptr
	}); ok {
		return fmt.Errorf("digest: reading mapped file: %w (did it shrink while being hashed?)", e)
	}
	panic(r)
}
