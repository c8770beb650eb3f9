// Package cache gives the store's bytes their meaning.
//
// Words:
//   - Preimage: the canonical, versioned description of one stage execution:
//     kind and kind version, command, code digests, params, declared env
//     (values digested, never stored), input content digests, output names.
//   - Key: the BLAKE3 digest of the Preimage's canonical JSON encoding.
//   - Record: what a key produced: output digests and sizes, the Preimage,
//     timing, and the digest of the captured log. Stored under the Key.
//   - Tree: the manifest blob of a directory output or input: sorted relative
//     paths with their file digests; its digest stands for the directory.
//   - Memo: file digests remembered with the stat that produced them, so an
//     unchanged file is never read twice.
//   - Reason: one human-readable difference between two preimages, such as
//     `param train.lr 0.1 → 0.05`.
package cache
