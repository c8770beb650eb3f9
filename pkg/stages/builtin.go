package stages

// RegisterBuiltins registers orch's built-in data kinds on r. main calls it
// next to registering exec; tests build registries with only what they need.
//
// Each kind lives in its own file (ingest.go, preprocess.go, features.go,
// train.go, validate.go, deploy.go) with its params documented there and in
// docs/kinds.md; its Version enters every key it produces.
func RegisterBuiltins(r *Registry) {
	// Kinds add themselves here, one line each, as they land.
	r.Register("ingest", NewIngest())
	r.Register("deploy", NewDeploy())
	r.Register("preprocess", NewPreprocess())
	r.Register("features", NewFeatures())
	r.Register("train", NewTrain())
	r.Register("validate", NewValidate())
}
