package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What a user reads about the broker names it and says the reason in
// words: never the client library's ("nats: no heartbeat received",
// "API error: code=404 err_code=10059", an _INBOX subject). The error
// stays the library's underneath, for errors.Is.

// plainError is an error said in words, wrapping the library's.
type plainError struct {
	text string
	err  error
}

func (e *plainError) Error() string { return e.text }
func (e *plainError) Unwrap() error { return e.err }

// plain is err said in words (nil stays nil).
func plain(err error) error {
	if err == nil {
		return nil
	}
	var p *plainError
	var l *lostError
	if errors.As(err, &p) || errors.As(err, &l) {
		return err // said already
	}
	return &plainError{text: words(err), err: err}
}

// words says err in words.
func words(err error) string {
	var api *jetstream.APIError
	var netErr net.Error
	switch {
	case errors.Is(err, jetstream.ErrNoHeartbeat), errors.Is(err, nats.ErrNoHeartbeat):
		return "the broker stopped sending what it should (no heartbeat within its interval): it went away or restarted"
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrNoStreamResponse):
		return "no JetStream answered on the broker (it is starting, or the stream is not there)"
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, nats.ErrStreamNotFound):
		return "the stream is not on the broker"
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, nats.ErrConsumerNotFound), errors.Is(err, jetstream.ErrConsumerDeleted):
		return "the consumer is not on the broker"
	case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, nats.ErrBucketNotFound):
		return "the key-value bucket is not on the broker"
	case errors.Is(err, nats.ErrMaxPayload):
		return "a message larger than the broker takes (its max_payload)"
	case errors.Is(err, nats.ErrConnectionClosed):
		return "the connection to the broker is closed"
	case errors.Is(err, nats.ErrStaleConnection):
		return "the broker did not answer pings (15s): it or the network went away"
	case errors.Is(err, nats.ErrSlowConsumer):
		return "messages dropped: this process read them more slowly than the broker sent them (a slow consumer)"
	case errors.Is(err, nats.ErrPermissionViolation), strings.Contains(strings.ToLower(err.Error()), "permissions violation"):
		return "permission refused by the broker: " + strings.TrimPrefix(strings.TrimPrefix(err.Error(), "nats: "), "permissions violation ")
	case errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "no answer from the broker in time"
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "the broker closed the connection"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing answers at the broker's address"
	case errors.As(err, &api) && api.Description != "":
		return api.Description // the server's words, without the client's codes
	}
	msg := err.Error()
	for _, p := range []string{"nats: ", "jetstream: "} {
		msg = strings.ReplaceAll(msg, p, "")
	}
	return msg
}
