package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/flowrun/flowrun/connect"
)

// sink publishes persistent messages on a channel in confirm mode. What
// it published and the broker has not yet confirmed stays in pending,
// oldest first, with its deferred confirmation; a channel that dies is
// replaced and those messages are published again, so Flush never
// reports a message durable that the broker did not confirm. Write and
// Flush may run at once (Flush from one goroutine at a time).
type sink struct {
	p             *connect.Params
	exchange, key string
	queue         string
	envelope      bool
	mu            sync.Mutex
	conn          *amqp.Connection
	ch            *amqp.Channel
	pending       []published
	waiting       []*amqp.DeferredConfirmation // Flush's, while it waits
}

type published struct {
	msg connect.Message
	dc  *amqp.DeferredConfirmation
}

func openSink(ctx context.Context, p *connect.Params) (connect.Sink, error) {
	s := &sink{p: p, queue: p.String("queue"), exchange: p.String("exchange"), key: p.String("routing_key"), envelope: p.Bool("envelope")}
	if s.queue != "" {
		s.key = s.queue
	}
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *sink) connect(ctx context.Context) error {
	conn, err := dial(ctx, s.p)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err == nil && s.queue != "" {
		err = declare(ch, s.p, s.queue)
	}
	if err == nil && s.exchange != "" {
		if err = ch.ExchangeDeclarePassive(s.exchange, "direct", true, false, false, false, nil); err != nil {
			err = &connect.Error{Broker: s.p.Broker(), Reason: fmt.Sprintf("exchange %q: %s", s.exchange, reason(err)), Err: err}
		}
	}
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		if ce := (*connect.Error)(nil); errors.As(err, &ce) {
			return err
		}
		return &connect.Error{Broker: s.p.Broker(), Reason: reason(err), Err: err}
	}
	s.conn, s.ch = conn, ch
	return nil
}

func (s *sink) publish(ctx context.Context, m connect.Message) (*amqp.DeferredConfirmation, error) {
	pub := amqp.Publishing{DeliveryMode: amqp.Persistent, Body: m.Data, MessageId: m.ID}
	key := s.key
	if s.envelope {
		e, body := connect.Unwrap(m.Data)
		pub.Body, pub.CorrelationId = body, e.CorrelationID
		if len(e.Headers) > 0 {
			pub.Headers = make(amqp.Table, len(e.Headers))
			for k, v := range e.Headers {
				pub.Headers[k] = v
			}
		}
		if e.MessageID != "" {
			pub.MessageId = e.MessageID
		}
		if e.RoutingKey != "" && s.exchange != "" {
			key = e.RoutingKey
		}
	}
	return s.ch.PublishWithDeferredConfirmWithContext(ctx, s.exchange, key, false, false, pub)
}

func (s *sink) Write(ctx context.Context, msgs []connect.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range msgs {
		var dc *amqp.DeferredConfirmation
		var err error
		if s.ch != nil {
			dc, err = s.publish(ctx, m)
		}
		s.pending = append(s.pending, published{msg: m, dc: dc})
		if s.ch == nil || err != nil {
			if err := s.republish(ctx); err != nil {
				return err
			}
		}
	}
	return nil
}

// republish replaces the connection and publishes again everything not
// yet confirmed. s.mu is held.
func (s *sink) republish(ctx context.Context) error {
	b := connect.DefaultBackoff()
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if s.conn != nil {
			s.conn.Close()
			s.conn, s.ch = nil, nil
		}
		err := s.connect(ctx)
		for i := 0; err == nil && i < len(s.pending); i++ {
			if dc := s.pending[i].dc; dc != nil && dc.Acked() {
				continue // confirmed on the old channel
			}
			s.pending[i].dc, err = s.publish(ctx, s.pending[i].msg)
		}
		if err == nil {
			return nil
		}
		if !b.Wait(ctx) {
			return fmt.Errorf("%s: %w", s.p.Broker(), ctx.Err())
		}
	}
}

// Flush waits for the confirms of what was written before it, without
// holding the sink: Write goes on publishing meanwhile, so that the
// confirms of one batch come back while the next is published.
func (s *sink) Flush(ctx context.Context) error {
	s.mu.Lock()
	n := len(s.pending) // what was written before this Flush: the oldest n
	s.mu.Unlock()
	refused := 0 // rounds in a row that ended in a nack with nothing confirmed
	for n > 0 {
		s.mu.Lock()
		s.waiting = s.waiting[:0]
		for _, p := range s.pending[:n] {
			s.waiting = append(s.waiting, p.dc)
		}
		s.mu.Unlock()
		for _, dc := range s.waiting {
			if dc == nil {
				continue // not published: republish sees to it
			}
			if _, err := dc.WaitContext(ctx); err != nil {
				return fmt.Errorf("%s: waiting for confirms: %w", s.p.Broker(), err)
			}
		}
		s.mu.Lock()
		confirmed := 0
		for _, p := range s.pending[:n] {
			if p.dc == nil || !p.dc.Acked() {
				break
			}
			confirmed++
		}
		clear(s.pending[:confirmed])
		s.pending = s.pending[confirmed:]
		n -= confirmed
		var err error
		if n > 0 && s.nacked(n) {
			// A nack, or a channel that closed under its confirms:
			// publish again whatever is not known to be safe. A broker
			// that goes on refusing them (a queue full with x-overflow
			// reject-publish, a disk alarm that lasts) fails the output
			// rather than hold the run for ever: nothing behind them
			// was acked.
			if confirmed > 0 {
				refused = 0
			}
			if refused++; refused > maxRefused {
				s.mu.Unlock()
				return fmt.Errorf("%s: the broker refused %d messages %d times in a row (nack): is the queue full (x-max-length with x-overflow reject-publish), or the broker out of disk or memory?", s.p.Broker(), n, refused-1)
			}
			if refused > 1 {
				s.mu.Unlock()
				if !refusedBackoff(ctx, refused) {
					return fmt.Errorf("%s: %w", s.p.Broker(), ctx.Err())
				}
				s.mu.Lock()
			}
			err = s.republish(ctx)
		}
		s.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return nil
}

// maxRefused is how many times in a row the sink publishes again
// messages the broker nacked before it gives up on them.
const maxRefused = 8

// refusedBackoff waits before the k-th publish of refused messages,
// 100ms doubling to 2s: about 10s in all before the output fails.
func refusedBackoff(ctx context.Context, k int) bool {
	d := min(100*time.Millisecond<<(k-2), 2*time.Second)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// nacked reports whether one of the oldest n messages is known not to be
// confirmed: never published, nacked, or its channel closed. One still
// waiting for its confirm (republished meanwhile by Write) is not. s.mu
// is held.
func (s *sink) nacked(n int) bool {
	for _, p := range s.pending[:n] {
		if p.dc == nil {
			return true
		}
		select {
		case <-p.dc.Done():
			if !p.dc.Acked() {
				return true
			}
		default:
		}
	}
	return false
}

func (s *sink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn, s.ch = nil, nil
	if errors.Is(err, amqp.ErrClosed) {
		err = nil
	}
	return err
}
