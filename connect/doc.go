// Package connect holds the contract between the runner and the places
// records come from and go to — the Source and Sink interfaces — and the
// registry of connectors that implement it, each with a spec of its
// options. The connectors live in sub-packages (connect/rabbitmq,
// connect/redis, connect/nats) that register themselves in init();
// connect/all imports them all for the default binary, so a broker's
// client library is linked only where it is used. The formats of files
// and stdin (lines, jsonl, csv, tsv, json) are connect/codec's.
//
// A connector knows nothing of stages, workers or the runner: its one job
// is to hand on messages with a way to settle them, and to say when what
// was written to it is durable. Carrying a sink's "durable" back to a
// source's "settle" is the runner's job.
//
// This package is not for stages (see package stages) nor for moving
// records between a pipeline's stages over a broker (see transport).
package connect
