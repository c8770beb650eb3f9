//go:build amd64 && !purego

package b3avx2

import "golang.org/x/sys/cpu"

// Available reports whether the kernels can run on this CPU.
var Available = cpu.X86.HasAVX2

// HashF compresses the 8 chunks of input (only the first length bytes count;
// callers in package digest always pass 8192), the first of which has chunk
// counter counter, storing their chaining values transposed in out and the
// chaining value before the last block of the last chunk in chain.
//
//go:noescape
func HashF(input *[8192]byte, length, counter uint64, flags uint32, key *[8]uint32, out *[64]uint32, chain *[8]uint32)

// HashP computes the chaining values of the 8 parent nodes whose children
// are lane i of left and right, transposed in out. flags must include the
// PARENT flag. Lanes at or past n are computed from whatever left and right
// hold and should be ignored.
//
//go:noescape
func HashP(left, right *[64]uint32, flags uint8, key *[8]uint32, out *[64]uint32, n int)
