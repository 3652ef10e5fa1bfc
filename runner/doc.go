// Package runner runs a validated pipeline: it wires the input, one bounded
// queue and N workers per stage, and the output into goroutines, and owns
// what happens around each record: ordering, retries, timeouts, dead
// letters, shutdown, statistics and the progress display.
//
// The engine follows "Go Concurrency Patterns: Pipelines and
// cancellation": a stage's workers share its input channel (fair
// dispatch), one closer closes the next queue after they have all returned
// (the sentinel), and every blocking send or receive also watches the
// run's context. Records travel in batches of what is at hand, never
// waiting for a batch to fill, so that a line typed on stdin comes out at
// once while a file streams at millions of lines per second.
//
// runner is not a scheduler of its own: stages know nothing of it, and it
// knows nothing of YAML.
package runner
