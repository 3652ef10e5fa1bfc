// Package stages holds the stage contract, the registry of stages and the
// built-in and plugin stages (exec, wasm).
//
// A stage is a function from one record to zero or more records. This
// package knows nothing of queues, workers, retries or ordering: the runner
// owns those. It imports neither the runner nor the spec package, so a Go
// program can register its own stage with Register and hand the pipeline to
// the flowrun CLI.
package stages
