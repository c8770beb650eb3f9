//go:build !amd64 || purego

package b3avx2

// Available reports whether the kernels can run on this CPU.
const Available = false

// HashF is not available on this platform; see Available.
func HashF(input *[8192]byte, length, counter uint64, flags uint32, key *[8]uint32, out *[64]uint32, chain *[8]uint32) {
	panic("b3avx2: not available")
}

// HashP is not available on this platform; see Available.
func HashP(left, right *[64]uint32, flags uint8, key *[8]uint32, out *[64]uint32, n int) {
	panic("b3avx2: not available")
}
