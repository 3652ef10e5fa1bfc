// Package nats is the NATS connector: JetStream durable pull consumers
// with explicit acks, publishing with PubAcks and Nats-Msg-Id for
// de-duplication; and core NATS subjects, at most once.
package nats

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/connect"
)

func init() {
	connect.Register(connect.Spec{
		Name:    "nats",
		Schemes: []string{"nats", "tls"},
		URL:     "nats://[user:pass@]host:4222?stream=S&consumer=C",
		Doc: "JetStream: a durable pull consumer with explicit acks (at least once), publishing with PubAcks and " +
			"Nats-Msg-Id from the record's origin, so a re-publish after a crash is dropped as a duplicate. " +
			"A message a stage dead-letters is Termed: never redelivered. With only subject=: core NATS, at most once.",
		Options: []connect.Option{
			{Name: "stream", Type: connect.String, Use: connect.Both, Doc: "The JetStream stream; without it, core NATS on subject."},
			{Name: "subject", Type: connect.String, Use: connect.Both, Doc: "Output: the subject to publish on. Input: the consumer's filter, or the core NATS subject."},
			{Name: "consumer", Type: connect.String, Default: "flowrun", Use: connect.In, Doc: "The durable consumer, created or updated."},
			{Name: "prefetch", Type: connect.Int, Use: connect.In, Doc: "The consumer's MaxAckPending; default: the stages' workers in total, at least 256 (give the workers for slow records to be dealt out fairly among consumers)."},
			{Name: "ack_wait", Type: connect.Duration, Default: "30s", Use: connect.In, Doc: "Redelivery after this long without an ack; a record still at work is kept with InProgress."},
			{Name: "create", Type: connect.Bool, Default: "true", Use: connect.Both, Doc: "Create the stream if it is missing, on subject (or STREAM.>)."},
			{Name: "envelope", Type: connect.Bool, Default: "false", Use: connect.Both, Doc: "Records are JSON {body, subject, stream, sequence, message_id (Nats-Msg-Id), headers, redelivered}, not the bare body; on output body, message_id and headers are taken."},
		},
		Check:  check,
		Source: openSource,
		Sink:   openSink,
	})
}

func check(p *connect.Params, d connect.Direction) error {
	stream, subject := p.String("stream"), p.String("subject")
	switch {
	case stream == "" && subject == "":
		return &connect.OptionError{Connector: "nats", Option: "stream", Reason: "give a stream (JetStream) or a subject (core NATS)"}
	case d == connect.Out && stream != "" && subject == "":
		return &connect.OptionError{Connector: "nats", Option: "subject", Reason: "output to a stream needs the subject to publish on"}
	}
	return nil
}

func dial(p *connect.Params) (*nats.Conn, error) {
	u := *p.URL
	opts := []nats.Option{
		nats.Name("flowrun"),
		nats.Timeout(connect.DialTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.ReconnectBufSize(64 << 20),
	}
	if u.User != nil {
		pass, _ := u.User.Password()
		opts = append(opts, nats.UserInfo(u.User.Username(), pass))
		u.User = nil
	}
	nc, err := nats.Connect(u.String(), opts...)
	if err != nil {
		return nil, &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	return nc, nil
}

// envelope returns a message's envelope record: its subject, its
// headers (the first value of each) and its Nats-Msg-Id.
func envelope(m *nats.Msg) connect.Envelope {
	e := connect.Envelope{Subject: m.Subject, MessageID: m.Header.Get(jetstream.MsgIDHeader)}
	for k, vs := range m.Header {
		if k == jetstream.MsgIDHeader || len(vs) == 0 {
			continue
		}
		if e.Headers == nil {
			e.Headers = map[string]string{}
		}
		e.Headers[k] = vs[0]
	}
	return e
}

// unwrap reads an envelope record for publishing: the body, the id to
// publish it with (the envelope's message_id, or id) and its headers.
func unwrap(rec []byte, id string) ([]byte, string, nats.Header) {
	e, body := connect.Unwrap(rec)
	if e.MessageID != "" {
		id = e.MessageID
	}
	var h nats.Header
	for k, v := range e.Headers {
		if h == nil {
			h = nats.Header{}
		}
		h.Set(k, v)
	}
	return body, id, h
}

func reason(err error) string {
	var api *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrNoServers):
		return "cannot connect: no server answers"
	case errors.Is(err, nats.ErrAuthorization), strings.Contains(err.Error(), "uthorization"):
		return "user or password refused"
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return "no such stream"
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return "JetStream is not enabled on the server"
	case errors.As(err, &api) && api.Description != "":
		return api.Description // the server's words, without the client's codes
	}
	return strings.TrimPrefix(err.Error(), "nats: ")
}

// stream returns the stream, creating it when it is missing and create
// is set.
func stream(ctx context.Context, js jetstream.JetStream, p *connect.Params) (jetstream.Stream, error) {
	name := p.String("stream")
	ctx, cancel := context.WithTimeout(ctx, connect.DialTimeout)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) && p.Bool("create") {
		subject := p.String("subject")
		if subject == "" {
			subject = name + ".>"
		}
		s, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage})
	}
	if err != nil {
		return nil, &connect.Error{Broker: p.Broker(), Reason: fmt.Sprintf("stream %q: %s", name, reason(err)), Err: err}
	}
	return s, nil
}
