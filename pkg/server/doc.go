// Package server is `orch serve`: it loads pipeline files and reloads them
// when they change, runs each on its schedule through the engine (the
// scheduler package decides when), and serves the JSON API, /metrics,
// /healthz and the web page over HTTP.
//
// Words:
//   - Catalog: the pipeline files serve watches, each with its last good
//     version; a broken edit keeps the last good version running and is
//     reported (Source.Pipelines()[i].Error, the log, a metric).
//   - Live: the runs in progress in this process with their stages as they
//     are now (history.Live), overlaid on the stored history.
//   - Lock: .orch/serve.lock, held by the one serve process scheduling a
//     workspace; a second one exits with a message or, with Wait, waits.
package server
