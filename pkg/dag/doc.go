// Package dag is the pipeline graph: stages as nodes, "runs before" as edges.
//
// Words:
//   - Node: a stage name. Edge from A to B: A runs before B (B reads A's
//     output, or needs it).
//   - Upstream closure: a node and everything it transitively depends on;
//     `orch run P STAGE` selects the closure of STAGE.
//   - Walk: the parallel traversal. One coordinator goroutine owns all state;
//     each ready node runs in its own goroutine and reports back on a
//     channel. A failed node's descendants are skipped, never started.
package dag
