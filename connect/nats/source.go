package nats

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/connect"
)

// jsSource pulls from a durable JetStream consumer. A goroutine moves
// messages from the client's pull iterator to a channel that Receive
// reads; every message handed on is kept in out until it is settled, so
// that a long record is kept alive with InProgress and Close can give
// back at once what was never settled (Nak) instead of letting it wait
// for ack_wait.
type jsSource struct {
	p       *connect.Params
	nc      *nats.Conn
	it      jetstream.MessagesContext
	msgs    chan jetstream.Msg
	stop    chan struct{}
	wg      sync.WaitGroup
	ackWait time.Duration
	wrap    bool // envelope
	// nak: Close hands back what was never settled at once (Nak). On
	// nats-server 2.9 (Debian 12's) a Nak at a consumer's close had the
	// server deliver a message acked or Termed just before it to the
	// next consumer again (TestBrokerTakeDeadLettersOnce); there the
	// messages come back after ack_wait instead.
	nak bool

	mu  sync.Mutex
	out map[jetstream.Msg]time.Time // handed on, not settled: since when
}

func openSource(ctx context.Context, p *connect.Params) (connect.Source, error) {
	nc, err := dial(p)
	if err != nil {
		return nil, err
	}
	if p.String("stream") == "" {
		return newCoreSource(nc, p)
	}
	src, err := newJSSource(ctx, nc, p)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return src, nil
}

func newJSSource(ctx context.Context, nc *nats.Conn, p *connect.Params) (*jsSource, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	st, err := stream(ctx, js, p)
	if err != nil {
		return nil, err
	}
	if p.String("subject") != "" {
		if err := takes(st, p); err != nil {
			return nil, err
		}
	}
	prefetch := p.Prefetch()
	cctx, cancel := context.WithTimeout(ctx, connect.DialTimeout)
	defer cancel()
	cons, err := st.CreateOrUpdateConsumer(cctx, jetstream.ConsumerConfig{
		Durable:       p.String("consumer"),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       p.Duration("ack_wait"),
		MaxAckPending: prefetch,
		FilterSubject: p.String("subject"),
	})
	if err != nil {
		return nil, &connect.Error{Broker: p.Broker(), Reason: fmt.Sprintf("consumer %q: %s", p.String("consumer"), reason(err)), Err: err}
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(prefetch))
	if err != nil {
		return nil, &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	s := &jsSource{p: p, nc: nc, it: it, msgs: make(chan jetstream.Msg, prefetch), stop: make(chan struct{}),
		ackWait: p.Duration("ack_wait"), wrap: p.Bool("envelope"), out: map[jetstream.Msg]time.Time{},
		nak: !olderThan(nc.ConnectedServerVersion(), 2, 10)}
	s.wg.Add(2)
	go s.pump()
	go s.keepAlive()
	return s, nil
}

// pump hands the iterator's messages to Receive. After Close it gives
// back (Nak) what the iterator still had buffered.
func (s *jsSource) pump() {
	defer s.wg.Done()
	defer close(s.msgs)
	for {
		m, err := s.it.Next()
		if err != nil {
			return // closed by Close; reconnects happen inside Next
		}
		select {
		case s.msgs <- m:
		case <-s.stop:
			s.handBack(m)
		}
	}
}

// keepAlive tells the server that records still at work are, before
// ack_wait would have it redeliver them to another consumer.
func (s *jsSource) keepAlive() {
	defer s.wg.Done()
	every := max(s.ackWait/3, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.mu.Lock()
			for m, since := range s.out {
				if now.Sub(since) >= every {
					m.InProgress()
					s.out[m] = now
				}
			}
			s.mu.Unlock()
		}
	}
}

func (s *jsSource) message(m jetstream.Msg) connect.Message {
	id := ""
	md, err := m.Metadata()
	if err == nil {
		id = fmt.Sprintf("%s:%d", md.Stream, md.Sequence.Stream)
	}
	data := m.Data()
	if s.wrap {
		e := envelope(&nats.Msg{Subject: m.Subject(), Header: m.Headers()})
		if md != nil {
			e.Stream, e.Sequence, e.Redelivered = md.Stream, md.Sequence.Stream, md.NumDelivered > 1
		}
		data = e.Wrap(data)
	}
	return connect.Message{Data: data, ID: id, Token: m}
}

func (s *jsSource) Receive(ctx context.Context, buf []connect.Message) ([]connect.Message, error) {
	buf = buf[:0]
	select {
	case m, ok := <-s.msgs:
		if !ok {
			return buf, fmt.Errorf("%s: source closed", s.p.Broker())
		}
		buf = append(buf, s.message(m))
	case <-ctx.Done():
		return buf, ctx.Err()
	}
	for len(buf) < cap(buf) {
		select {
		case m, ok := <-s.msgs:
			if ok {
				buf = append(buf, s.message(m))
				continue
			}
		default:
		}
		break
	}
	now := time.Now()
	s.mu.Lock()
	for _, m := range buf {
		s.out[m.Token.(jetstream.Msg)] = now
	}
	s.mu.Unlock()
	return buf, nil
}

// Settle acks, naks or terminates each message. JetStream acks are
// published without a reply, as every JetStream client sends them: the
// client's writer sends them at once, during a reconnect they wait in its
// buffer, and Close flushes them. Waiting for a round trip here would
// halve a run held to a small prefetch.
func (s *jsSource) Settle(ctx context.Context, msgs []connect.Message, o connect.Outcome) error {
	s.mu.Lock()
	for _, m := range msgs {
		jm, ok := m.Token.(jetstream.Msg)
		if !ok {
			continue
		}
		delete(s.out, jm)
		switch o {
		case connect.Ack:
			jm.Ack()
		case connect.Requeue:
			jm.Nak()
		default:
			jm.Term()
		}
	}
	s.mu.Unlock()
	return nil
}

// flush waits until the server has seen what was sent, retrying across a
// reconnect.
func flush(ctx context.Context, nc *nats.Conn, p *connect.Params) error {
	b := connect.DefaultBackoff()
	for {
		fctx, cancel := context.WithTimeout(ctx, connect.DialTimeout)
		err := nc.FlushWithContext(fctx)
		cancel()
		if err == nil {
			return nil
		}
		if nc.IsClosed() || !b.Wait(ctx) {
			return fmt.Errorf("%s: %s", p.Broker(), reason(err))
		}
	}
}

func (s *jsSource) Close() error {
	close(s.stop)
	s.it.Drain()
	for m := range s.msgs { // what Receive never took
		s.handBack(m)
	}
	s.wg.Wait()
	s.mu.Lock()
	for m := range s.out { // taken, never settled: back now, not after ack_wait
		s.handBack(m)
	}
	clear(s.out)
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), connect.DialTimeout)
	defer cancel()
	s.nc.FlushWithContext(ctx)
	s.nc.Close()
	return nil
}

// coreSource subscribes to a core NATS subject: at most once, since core
// NATS keeps nothing for a consumer that is not there. Settle has
// nothing to do.
type coreSource struct {
	p    *connect.Params
	nc   *nats.Conn
	sub  *nats.Subscription
	msgs chan *nats.Msg
	wrap bool // envelope
}

func (s *coreSource) message(m *nats.Msg) connect.Message {
	if s.wrap {
		return connect.Message{Data: envelope(m).Wrap(m.Data)}
	}
	return connect.Message{Data: m.Data}
}

func newCoreSource(nc *nats.Conn, p *connect.Params) (*coreSource, error) {
	s := &coreSource{p: p, nc: nc, msgs: make(chan *nats.Msg, 4096), wrap: p.Bool("envelope")}
	sub, err := nc.ChanSubscribe(p.String("subject"), s.msgs)
	if err == nil {
		err = nc.Flush()
	}
	if err != nil {
		nc.Close()
		return nil, &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	s.sub = sub
	return s, nil
}

func (s *coreSource) Receive(ctx context.Context, buf []connect.Message) ([]connect.Message, error) {
	buf = buf[:0]
	select {
	case m := <-s.msgs:
		buf = append(buf, s.message(m))
	case <-ctx.Done():
		return buf, ctx.Err()
	}
	for len(buf) < cap(buf) {
		select {
		case m := <-s.msgs:
			buf = append(buf, s.message(m))
			continue
		default:
		}
		break
	}
	return buf, nil
}

func (s *coreSource) Settle(context.Context, []connect.Message, connect.Outcome) error { return nil }

func (s *coreSource) Close() error {
	s.sub.Unsubscribe()
	s.nc.Close()
	return nil
}

// handBack gives back a message never settled, at its Close: at once
// where the server takes a Nak at a close well, else after ack_wait.
func (s *jsSource) handBack(m jetstream.Msg) {
	if s.nak {
		m.Nak()
	}
}

// olderThan reports whether a server's version ("2.9.10") is before
// major.minor; a version it cannot read is not.
func olderThan(version string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(version, "%d.%d", &ma, &mi); err != nil {
		return false
	}
	return ma < major || ma == major && mi < minor
}
