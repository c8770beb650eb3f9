// Package digest defines orch's content digest: a 32-byte BLAKE3 hash.
//
// Words:
//   - Digest: the BLAKE3-256 of some bytes, a value type printed as 64 hex
//     characters. Digests of files equal what `b3sum` prints for them.
//   - Short: the first 12 hex characters, for people.
//
// Content of ParallelThreshold (1 MiB) or more is hashed on all cores by
// splitting BLAKE3's tree into aligned subtrees (docs/hashing.md); the result
// is the same standard BLAKE3-256 either way.
//
// Package digest is a leaf: every other orch package may import it, including
// pkg/store, which otherwise imports no orch package.
package digest
