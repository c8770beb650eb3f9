// Package store keeps orch's cache: blobs and action records.
//
// Words:
//   - Blob: immutable bytes named by their digest (BLAKE3 of the content).
//   - Record: a small document (an action record, JSON) named by a cache key.
//     The store treats records as opaque bytes; pkg/cache gives them meaning.
//   - Store: the interface every backend implements: Local (a directory),
//     S3 (a bucket and prefix), Tiered (Local in front of a remote, with a
//     circuit breaker for a remote that fails).
//   - Lease: a small object saying which process computes a key right now,
//     so that identical work on machines sharing a remote runs once
//     (lease.go); written with conditional PUTs (If-None-Match, If-Match).
//   - Remote: a parsed s3://, file:// or directory location with its
//     settings (remote.go).
//
// Write order is the caller's contract: blobs first, the record last. A backend
// makes each single write atomic, so a reader sees a whole blob or record or
// none. pkg/store imports no orch package except the leaf pkg/digest.
package store
