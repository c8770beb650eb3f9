// Package b3avx2 holds the AVX2 BLAKE3 kernels used by package digest: HashF
// compresses 8 whole chunks side by side, HashP computes 8 parent nodes side
// by side.
//
// Provenance: b3avx2_amd64.s is a verbatim copy of
// internal/alg/hash/hash_avx2/impl_amd64.s from github.com/zeebo/blake3
// v0.2.4 (generated with avo by its author, Jeff Wendling, and released into
// the public domain under CC0 1.0). It is copied because zeebo/blake3 keeps
// these kernels internal, and lukechampine.com/blake3/guts, whose AVX2 kernel
// loads the message with VPGATHERDD, runs at half their speed on AMD Zen.
// Do not edit the assembly by hand; to update it, copy it again from a newer
// zeebo/blake3 and run this package's tests.
//
// Vectors are transposed: in a [64]uint32 holding 8 chaining values, word w
// of lane i is at index 8*w+i.
package b3avx2
