package digest

import (
	"encoding/binary"
	"math/bits"

	"github.com/orch-dev/orch/pkg/digest/internal/b3avx2"
	"lukechampine.com/blake3/guts"
)

// The BLAKE3 tree, as the parallel paths build it.
//
// BLAKE3 splits its input into 1 KiB chunks (the last one may be short; empty
// input is one empty chunk) numbered from 0, and hashes them into a binary
// tree in which the left child of every parent covers the largest power of two
// of chunks that is strictly less than the parent's chunk count. So every
// aligned run of 2^k chunks that lies inside the input is a subtree of it,
// unless it is the whole input, and so is the last, shorter run after the
// aligned ones (see docs/hashing.md). Chunk nodes fold in their chunk number;
// parent nodes do not. Only the root node carries the ROOT flag, and its
// output, not its chaining value, is the hash.

// cv is a chaining value: the first 8 output words of a non-root node.
type cv = [8]uint32

const (
	chunkLen  = guts.ChunkSize                // 1 KiB
	avxGroup  = 8 * chunkLen                  // what b3avx2.HashF takes at once
	gutsGroup = guts.MaxSIMD * guts.ChunkSize // what guts.CompressBuffer takes at once
)

// useAVX2 selects the b3avx2 kernels; tests turn it off to check the
// lukechampine.com/blake3/guts kernels too.
var useAVX2 = b3avx2.Available

// treeScratch is one worker's reusable memory.
type treeScratch struct{ cvs []cv }

// subtreeCV returns the chaining value of the subtree holding buf, whose first
// chunk has number counter. buf must be non-empty and must be a subtree of the
// input's tree that is not the root: an aligned run of 2^k whole chunks, or
// the last run of the input after the aligned ones.
func (s *treeScratch) subtreeCV(buf []byte, counter uint64) cv {
	leaves := s.cvs[:0]
	if useAVX2 {
		// Leaves are chunks.
		var out [64]uint32
		var chain [8]uint32
		for len(buf) >= avxGroup {
			b3avx2.HashF((*[avxGroup]byte)(buf), avxGroup, counter, 0, &guts.IV, &out, &chain)
			for i := range 8 {
				leaves = append(leaves, cv{out[i], out[8+i], out[16+i], out[24+i], out[32+i], out[40+i], out[48+i], out[56+i]})
			}
			buf = buf[avxGroup:]
			counter += 8
		}
		for len(buf) > 0 {
			n := min(len(buf), chunkLen)
			leaves = append(leaves, guts.ChainingValue(guts.CompressChunk(buf[:n], &guts.IV, counter, 0)))
			buf = buf[n:]
			counter++
		}
	} else {
		// Leaves are 16-chunk subtrees, and the last leaf is whatever is
		// left, which is itself a subtree.
		for len(buf) >= gutsGroup {
			n := guts.CompressBuffer((*[gutsGroup]byte)(buf), gutsGroup, &guts.IV, counter, 0)
			leaves = append(leaves, guts.ChainingValue(n))
			buf = buf[gutsGroup:]
			counter += guts.MaxSIMD
		}
		if len(buf) > 0 {
			var tail [gutsGroup]byte
			copy(tail[:], buf)
			leaves = append(leaves, guts.ChainingValue(guts.CompressBuffer(&tail, len(buf), &guts.IV, counter, 0)))
		}
	}
	s.cvs = leaves
	for len(leaves) > 1 {
		leaves = reduceLevel(leaves)
	}
	return leaves[0]
}

// reduceLevel replaces the subtrees cvs, left to right, by their parents:
// each pair becomes one parent and an odd last one moves up as it is. It works
// in place and returns the shortened slice. All cvs but the last must cover the
// same power of two of chunks and the last no more; repeating reduceLevel then
// builds exactly BLAKE3's tree over them.
func reduceLevel(cvs []cv) []cv {
	pairs := len(cvs) / 2
	if useAVX2 {
		var l, r, out [64]uint32
		for base := 0; base < pairs; base += 8 {
			n := min(8, pairs-base)
			for i := range n {
				a, b := &cvs[2*(base+i)], &cvs[2*(base+i)+1]
				for w := range 8 {
					l[8*w+i] = a[w]
					r[8*w+i] = b[w]
				}
			}
			b3avx2.HashP(&l, &r, guts.FlagParent, &guts.IV, &out, n)
			for i := range n {
				c := &cvs[base+i]
				for w := range 8 {
					c[w] = out[8*w+i]
				}
			}
		}
	} else {
		for i := range pairs {
			cvs[i] = parentCV(cvs[2*i], cvs[2*i+1])
		}
	}
	if len(cvs)%2 == 1 {
		cvs[pairs] = cvs[len(cvs)-1]
		return cvs[:pairs+1]
	}
	return cvs[:pairs]
}

// parentCV returns the chaining value of the (non-root) parent of left and
// right.
func parentCV(left, right cv) cv {
	return guts.ChainingValue(guts.ParentNode(left, right, &guts.IV, 0))
}

// rootDigest returns the hash of the input whose tree has left and right as
// the root's children.
func rootDigest(left, right cv) Digest {
	n := guts.ParentNode(left, right, &guts.IV, 0)
	n.Flags |= guts.FlagRoot
	out := guts.CompressNode(n)
	var d Digest
	for i := range 8 {
		binary.LittleEndian.PutUint32(d[4*i:], out[i])
	}
	return d
}

// treeDigest returns the hash of the input whose subtrees, as reduceLevel
// wants them, are cvs; len(cvs) >= 2. It overwrites cvs.
func treeDigest(cvs []cv) Digest {
	for len(cvs) > 2 {
		cvs = reduceLevel(cvs)
	}
	return rootDigest(cvs[0], cvs[1])
}

// cvStack merges a stream of equal, power-of-two sized subtrees (the last may
// be shorter) in O(log n) memory, the way BLAKE3's incremental hasher merges
// chunks. The newest subtree is held back, unmerged, until the next one comes
// or the stream ends, because only then is it known whether it is the last.
type cvStack struct {
	stack   [64]cv // stack[i] covers 2^i subtrees when bit i of count is set
	count   uint64 // subtrees merged into stack
	pending cv     // the newest subtree, not yet in stack
	have    bool   // whether pending is set
}

func (s *cvStack) push(c cv) {
	if s.have {
		p := s.pending
		i := 0
		for ; s.count&(1<<i) != 0; i++ {
			p = parentCV(s.stack[i], p)
		}
		s.stack[i] = p
		s.count++
	}
	s.pending, s.have = c, true
}

// digest returns the hash of the stream; at least two subtrees must have been
// pushed.
func (s *cvStack) digest() Digest {
	if !s.have || s.count == 0 {
		panic("digest: cvStack needs at least two subtrees")
	}
	right := s.pending
	top := bits.Len64(s.count) - 1
	for i := bits.TrailingZeros64(s.count); i < top; i++ {
		if s.count&(1<<i) != 0 {
			right = parentCV(s.stack[i], right)
		}
	}
	return rootDigest(s.stack[top], right)
}
