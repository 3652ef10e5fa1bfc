// Package observe lets a person and a program watch a run from outside
// the terminal: Prometheus metrics at /metrics, a live page of the stage
// graph at / (fed by the JSON at /api/snapshot), and the bottleneck
// advice that names the stage holding the run back.
//
// Everything here reads the one snapshot of the run that the terminal
// display reads (runner.Snapshot, handed over by runner.Options.Watch).
// The counters behind it are the runner's own, added to once per batch;
// observe adds nothing to the hot path: a scrape or a page poll reads
// them, and a sampler reads them a few times a second for rates and for
// how full each queue was over the run.
//
// observe is not a metrics library of its own (client_golang is) nor a
// progress display (runner has those); it knows nothing of YAML beyond
// the stage names and workers of a validated spec.Pipeline.
package observe
