package connect

import (
	"context"
	"errors"
	"fmt"
)

// Message is one record a Source handed on, or one a Sink is to write.
type Message struct {
	// Data is the record. A Source's message owns it; a Sink may keep it
	// until Flush returns, so the caller must not change it before then.
	Data []byte
	// ID names the message at its origin, stable across redeliveries
	// where the broker has such a name (a Redis stream entry, a JetStream
	// stream sequence, an AMQP message_id), or "" when it has none. A
	// Sink that de-duplicates (NATS JetStream's Nats-Msg-Id) takes its
	// ids from it, so a re-publish after a crash is not a duplicate.
	ID string
	// Token is the source's handle for settling the message; nobody else
	// looks at it.
	Token any
}

// Outcome is how a message is settled.
type Outcome int

// The outcomes of a message.
const (
	// Ack: everything made from the message is durable (written and
	// flushed, confirmed by the output broker, or in the dead-letter
	// file), or it was filtered out. The source forgets it for good.
	Ack Outcome = iota
	// Requeue: the message was not done (the run failed on it, or
	// stopped before it); it goes back to the queue for another
	// consumer or the next run.
	Requeue
	// Reject: the message is dead: the source hands it to its broker's
	// own dead-letter place where it has one (an AMQP nack without
	// requeue, a JetStream Term), and drops it otherwise.
	Reject
)

func (o Outcome) String() string {
	switch o {
	case Ack:
		return "ack"
	case Requeue:
		return "requeue"
	}
	return "reject"
}

// Source hands on messages, each to be settled once.
//
// Receive waits until at least one message is there, then returns those
// that can be had without waiting more, at most cap(buf) of them,
// appended to buf[:0]. It returns io.EOF once a finite source has no more
// (an endless one, a broker queue, never does) and ctx's error when ctx
// ends first. A broker source that loses its connection reconnects with
// backoff inside Receive; it returns an error only when it gives up.
//
// Settle settles messages Receive returned. It may batch them (one
// multiple-ack, one XACK for many), but when it returns without error the
// broker has been told. A message received on a connection that has since
// died cannot be acked — the broker will redeliver it — and Settle skips
// it silently: delivery is at least once.
//
// Close lets go of the connection. Messages never settled go back to the
// queue (by the broker's own redelivery, or by the source moving them
// back), so a run that stops early loses nothing. Receive, Settle and
// Close may be called from different goroutines; Receive is called from
// one goroutine at a time.
type Source interface {
	Receive(ctx context.Context, buf []Message) ([]Message, error)
	Settle(ctx context.Context, msgs []Message, o Outcome) error
	Close() error
}

// Sink takes messages and says when they are durable.
//
// Write sends msgs (or buffers them); it may return before they are
// durable. Flush returns once everything written before it is durable:
// confirmed by the broker (publisher confirms, a JetStream PubAck, Redis's
// reply). A broker sink that loses its connection reconnects inside Write
// or Flush and sends again what was not confirmed, so a message may reach
// the broker twice but never not at all while Flush reports success.
// Close flushes nothing: call Flush first.
//
// Write and Flush may be called from different goroutines at once (each
// from one goroutine at a time): a Flush waiting for confirms must not
// hold back the Write of the next messages, since overlapping the two is
// what keeps a broker with durable messages busy.
type Sink interface {
	Write(ctx context.Context, msgs []Message) error
	Flush(ctx context.Context) error
	Close() error
}

// Error is a connector's failure to reach its broker: a bad address,
// refused credentials, a queue that is not there. Broker names the place
// (with any password masked) and Reason says what went wrong, without a
// client library's internals where that can be helped.
type Error struct {
	Broker string // "rabbitmq amqp://guest@127.0.0.1:5672/"
	Reason string
	Err    error // the underlying error, for errors.Is
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s", e.Broker, e.Reason) }
func (e *Error) Unwrap() error { return e.Err }

// IsSetup reports whether err is a connector's failure to start (an
// *Error or a bad option), which the CLI reports as a usage error.
func IsSetup(err error) bool {
	var e *Error
	var o *OptionError
	return errors.As(err, &e) || errors.As(err, &o)
}
