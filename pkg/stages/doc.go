// Package stages holds the stage kinds orch can run.
//
// Words:
//   - Kind: an implementation of one sort of stage (`exec` runs a command;
//     built-in data kinds work on Arrow tables). A Kind has a Version that
//     enters every cache key it produces: bump it when its output for the same
//     inputs would change.
//   - Decl: the kind-independent declaration of one stage after the pipeline
//     is loaded: command, params, input and output names.
//   - Task: one attempt of one stage: absolute input and output paths, params,
//     environment, a log writer. The engine prepares it; the Kind runs it.
//   - Registry: the kinds by name, built explicitly in main (never by init).
package stages
