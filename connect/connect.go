package connect

import (
	"context"
	"errors"
	"fmt"

	"github.com/flowrun/flowrun/connect/codec"
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

// File is one file a FileSource reads, in order.
type File struct {
	Name string // "stdin" or the path, for messages
	Path string // "" for stdin
}

// FileSource is a Source that reads bytes from files or stdin (the file
// connector's): it tells what a queue cannot, for what a run over files
// needs beyond the contract. A journal keeps byte offsets and checks the
// input's files on a resume, a progress bar shows the bytes consumed
// against the total, and a run refuses to write a file it reads.
//
// ReceiveRecords is Receive for a reader that goes on past a record that
// does not decode: it returns the records of at most one blocking read,
// at most max of them appended to out, a record that did not decode
// among them with its Err set; nil (with or without records) at the end
// of each file, and io.EOF once the last has ended. Receive ends the
// read at such a record instead, and costs a message ID a record.
// A FileSource is read by one goroutine, which closes it when done.
type FileSource interface {
	Source
	ReceiveRecords(max int, out []codec.Record) ([]codec.Record, error)
	// Files are the files read, in order: one with Path "" is stdin.
	Files() []File
	// Size is the files' total size in bytes, -1 when it cannot be
	// known (stdin, a pipe).
	Size() int64
	// Read is how many bytes were read so far; it may be called from
	// any goroutine.
	Read() int64
	// Consumed is how many bytes of the input the records returned so
	// far span (those of the files before the one being read, whole).
	Consumed() int64
}

// FileSink is a Sink that writes bytes to a file or stdout (the file
// connector's), for a run that writes record by record: a record its
// format cannot hold fails alone, and a journal counts the bytes
// written. WriteOut writes what Add gathered without making it durable
// (Flush does, with an fsync): a run over files writes whenever its
// queue is empty, and fsyncs only when its journal or a broker's acks
// need it.
type FileSink interface {
	Sink
	// Add formats one record into the sink's buffer; an error is about
	// the record (the format cannot hold it), not the output.
	Add(rec []byte) error
	// Full says the buffer should be written out now.
	Full() bool
	WriteOut() error
	// Written is how many bytes were written.
	Written() int64
}
