package nats

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/connect"
)

// jsSink publishes to a stream asynchronously and keeps each message
// with its PubAck future until Flush has seen it acked. A message whose
// publish failed or timed out is published again with the same
// Nats-Msg-Id, which the stream drops if it had it after all. Write and
// Flush may run at once (Flush from one goroutine at a time).
type jsSink struct {
	p       *connect.Params
	nc      *nats.Conn
	js      jetstream.JetStream
	subject string
	wrap    bool // envelope
	mu      sync.Mutex
	pending []inFlight // oldest first
	waiting []inFlight // Flush's copy of the oldest, while it waits
	left    []int      // Flush's: indexes into waiting not yet acked
}

type inFlight struct {
	msg connect.Message
	f   jetstream.PubAckFuture // nil: not sent
}

func openSink(ctx context.Context, p *connect.Params) (connect.Sink, error) {
	nc, err := dial(p)
	if err != nil {
		return nil, err
	}
	if p.String("stream") == "" {
		return &coreSink{p: p, nc: nc, subject: p.String("subject"), wrap: p.Bool("envelope")}, nil
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second), jetstream.WithPublishAsyncMaxPending(4096))
	var st jetstream.Stream
	if err == nil {
		st, err = stream(ctx, js, p)
	}
	if err == nil {
		err = takes(st, p)
	}
	if err != nil {
		nc.Close()
		if _, ok := err.(*connect.Error); ok {
			return nil, err
		}
		return nil, &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	return &jsSink{p: p, nc: nc, js: js, subject: p.String("subject"), wrap: p.Bool("envelope")}, nil
}

// takes checks that the stream takes the subject: a publish on a
// subject no stream has finds no one to answer, and would be sent again
// for ever; a consumer filtered on one would wait for ever.
func takes(st jetstream.Stream, p *connect.Params) error {
	cfg := st.CachedInfo().Config
	subject := p.String("subject")
	for _, f := range cfg.Subjects {
		if overlaps(f, subject) {
			return nil
		}
	}
	if len(cfg.Subjects) == 0 { // a mirror, or a stream of sources only
		return &connect.Error{Broker: p.Broker(), Reason: fmt.Sprintf("stream %q takes no subject of its own: name one that does", cfg.Name)}
	}
	return &connect.Error{Broker: p.Broker(), Reason: fmt.Sprintf("stream %q does not take subject %q (its subjects: %s): give one of them, or another stream",
		cfg.Name, subject, strings.Join(cfg.Subjects, ", "))}
}

// overlaps reports whether two subjects, with their * (one token) and >
// (one or more) wildcards, have a subject in common.
func overlaps(a, b string) bool {
	x, y := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		switch {
		case i == len(x) || i == len(y):
			return len(x) == len(y)
		case x[i] == ">" || y[i] == ">":
			return true
		case x[i] != "*" && y[i] != "*" && x[i] != y[i]:
			return false
		}
	}
}

func (s *jsSink) publish(m connect.Message) jetstream.PubAckFuture {
	msg := &nats.Msg{Subject: s.subject, Data: m.Data}
	if h, ok := m.Token.(nats.Header); ok { // an envelope's, from Write
		msg.Header = h
	}
	if m.ID != "" {
		if msg.Header == nil {
			msg.Header = nats.Header{}
		}
		msg.Header.Set(jetstream.MsgIDHeader, m.ID)
	}
	f, err := s.js.PublishMsgAsync(msg)
	if err != nil {
		return nil // sent again at Flush
	}
	return f
}

func (s *jsSink) Write(ctx context.Context, msgs []connect.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		if s.wrap {
			body, id, h := unwrap(m.Data, m.ID)
			m = connect.Message{Data: body, ID: id, Token: h}
		}
		s.pending = append(s.pending, inFlight{msg: m, f: s.publish(m)})
	}
	return nil
}

// Flush waits for the PubAcks of what was written before it, without
// holding the sink: Write goes on publishing meanwhile. (A future's Ok
// hands its PubAck over once, so each is waited for once.)
func (s *jsSink) Flush(ctx context.Context) error {
	s.mu.Lock()
	n := len(s.pending) // what was written before this Flush: the oldest n
	s.waiting = append(s.waiting[:0], s.pending[:n]...)
	s.mu.Unlock()
	s.left = s.left[:0]
	for i := range n {
		s.left = append(s.left, i)
	}
	b := connect.DefaultBackoff()
	for len(s.left) > 0 {
		var lastErr error
		failed := s.left[:0]
		for _, i := range s.left {
			if f := s.waiting[i].f; f != nil {
				select {
				case <-f.Ok():
					continue
				case err := <-f.Err():
					lastErr = err
				case <-ctx.Done():
					return fmt.Errorf("%s: waiting for PubAcks: %w", s.p.Broker(), ctx.Err())
				}
			}
			failed = append(failed, i)
		}
		s.left = failed
		if len(failed) == 0 {
			break
		}
		if !b.Wait(ctx) {
			return fmt.Errorf("%s: %s", s.p.Broker(), reason(lastErr))
		}
		for _, i := range failed {
			s.waiting[i].f = s.publish(s.waiting[i].msg)
		}
	}
	s.mu.Lock()
	clear(s.pending[:n])
	s.pending = s.pending[n:]
	s.mu.Unlock()
	clear(s.waiting)
	return nil
}

func (s *jsSink) Close() error {
	s.nc.Close()
	return nil
}

// coreSink publishes on a core NATS subject: Flush knows the server has
// the messages, not that anyone received them.
type coreSink struct {
	p       *connect.Params
	nc      *nats.Conn
	subject string
	wrap    bool // envelope
}

func (s *coreSink) Write(ctx context.Context, msgs []connect.Message) error {
	for _, m := range msgs {
		var err error
		if s.wrap {
			msg := &nats.Msg{Subject: s.subject}
			var id string
			msg.Data, id, msg.Header = unwrap(m.Data, "")
			if id != "" {
				if msg.Header == nil {
					msg.Header = nats.Header{}
				}
				msg.Header.Set(jetstream.MsgIDHeader, id)
			}
			err = s.nc.PublishMsg(msg)
		} else {
			err = s.nc.Publish(s.subject, m.Data)
		}
		if err != nil {
			return fmt.Errorf("%s: %s", s.p.Broker(), reason(err))
		}
	}
	return nil
}

func (s *coreSink) Flush(ctx context.Context) error { return flush(ctx, s.nc, s.p) }

func (s *coreSink) Close() error {
	s.nc.Close()
	return nil
}
