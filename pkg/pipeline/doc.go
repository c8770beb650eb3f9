// Package pipeline loads pipeline YAML into a validated Pipeline.
//
// Two models: the spec (unexported) mirrors the YAML with a yaml.Node, and
// so a position, for every value; the Pipeline is built from it with
// references resolved, durations parsed and kinds bound to implementations.
// Executors and the cache see only Pipeline and Stage.
//
// Words:
//   - Workspace: the directory commands run in and plain inputs are relative
//     to; orch keeps its state in WORKSPACE/.orch.
//   - Input: a named file or directory a stage reads: an upstream output
//     ("prepare.data") or a workspace path ("data/raw.csv").
//   - Output: a named file or directory a stage writes at {{outputs.NAME}}.
//   - ConfigError: one problem with file:line:column and a snippet; Load
//     returns all of them at once as Errors.
package pipeline
