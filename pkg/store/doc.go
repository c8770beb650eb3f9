// Package store keeps orch's cache: blobs and action records.
//
// Words:
//   - Blob: immutable bytes named by their digest (BLAKE3 of the content).
//   - Record: a small document (an action record, JSON) named by a cache key.
//     The store treats records as opaque bytes; pkg/cache gives them meaning.
//   - Store: the interface every backend implements (local disk here; S3 and
//     tiered stores decorate or implement the same seam).
//
// Write order is the caller's contract: blobs first, the record last. A backend
// makes each single write atomic, so a reader sees a whole blob or record or
// none. pkg/store imports no orch package except the leaf pkg/digest.
package store
