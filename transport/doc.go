// Package transport carries a pipeline's stage queues over NATS JetStream,
// so that the stages of one run can be worked by `flowrun worker`
// processes on many machines.
//
// This file's neighbours: server.go runs a NATS server with JetStream in
// the process (`--broker embedded`, `flowrun broker`); dial.go connects to
// a broker, with its credentials and TLS, and says in plain words why it
// could not.
//
// It is not for a pipeline's input and output on a broker (that is
// connect/nats) nor for running the stages themselves (runner).
package transport
