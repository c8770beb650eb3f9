// Package table is the Arrow plumbing of orch's built-in data kinds: Parquet
// files in and out as streams of record batches, so a stage never holds more
// than a few batches of a large table in memory.
//
// Words:
//   - Batch: an arrow.RecordBatch of up to BatchRows rows.
//   - Table file: Parquet, zstd- or LZ4_RAW-compressed, with the Arrow schema stored so
//     dictionary-encoded and narrow types round-trip; readable by pandas,
//     Polars and DuckDB. Writer encodes and compresses the columns of a
//     row group concurrently (pqarrow's writer does one column after
//     another), pages fixed-width columns itself (delta-packed integers,
//     PLAIN or dictionary-encoded floats) and stores pages that do not
//     compress; the values are the same.
package table
