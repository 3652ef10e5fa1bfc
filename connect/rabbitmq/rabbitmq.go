// Package rabbitmq is the RabbitMQ connector (AMQP 0.9.1): it consumes a
// queue with manual acks and a prefetch, and publishes persistent
// messages with publisher confirms.
package rabbitmq

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/flowrun/flowrun/connect"
)

func init() {
	connect.Register(connect.Spec{
		Name:    "rabbitmq",
		Schemes: []string{"amqp", "amqps"},
		URL:     "amqp://user:pass@host:5672/vhost?queue=NAME",
		Doc: "Consumes a queue with manual acks (a message is acked once what was made from it is durable); " +
			"publishes persistent messages with publisher confirms. At least once. A message a stage dead-letters is nacked without requeue, into the queue's dead-letter exchange if it has one.",
		Options: []connect.Option{
			{Name: "queue", Type: connect.String, Use: connect.Both, Doc: "The queue to consume, or to publish to through the default exchange."},
			{Name: "prefetch", Type: connect.Int, Use: connect.In, Doc: "Unacked messages the broker hands over at once; default: the stages' workers in total, at least 256 (give the workers for slow records to be dealt out fairly among consumers)."},
			{Name: "declare", Type: connect.Bool, Default: "true", Use: connect.Both, Doc: "Declare the queue durable if it is missing; false: it must exist."},
			{Name: "exchange", Type: connect.String, Use: connect.Out, Doc: "Publish to this exchange (which must exist) instead of a queue."},
			{Name: "routing_key", Type: connect.String, Use: connect.Out, Doc: "The routing key for exchange."},
			{Name: "dead_letter_queue", Type: connect.String, Use: connect.Both, Doc: "Declare this durable queue, and the queue with it as its dead-letter queue (x-dead-letter-exchange \"\", x-dead-letter-routing-key NAME): a message a stage dead-letters lands there, with its x-death header."},
			{Name: "dead_letter_exchange", Type: connect.String, Use: connect.Both, Doc: "Declare the queue with this existing x-dead-letter-exchange: a message a stage dead-letters is routed there by its routing key."},
			{Name: "envelope", Type: connect.Bool, Default: "false", Use: connect.Both, Doc: "Records are JSON {body, message_id, correlation_id, routing_key, headers, redelivered}, not the bare body; on output body, message_id, correlation_id, headers and (with exchange) routing_key are taken."},
		},
		Check:  check,
		Source: openSource,
		Sink:   openSink,
	})
}

// maxPrefetch is the largest prefetch count AMQP 0.9.1 can send.
const maxPrefetch = 1<<16 - 1

func check(p *connect.Params, d connect.Direction) error {
	opt := func(name, reason string) error {
		return &connect.OptionError{Connector: "rabbitmq", Option: name, Reason: reason}
	}
	switch {
	case p.Int("prefetch") > maxPrefetch:
		// AMQP's prefetch count is 16 bits: 65536 would go out as 0,
		// no limit at all.
		return opt("prefetch", fmt.Sprintf("at most %d, AMQP's limit", maxPrefetch))
	case d == connect.In && p.String("queue") == "":
		return opt("queue", "input needs a queue (amqp://host/?queue=NAME)")
	case d == connect.Out && p.String("queue") == "" && p.String("exchange") == "":
		return opt("queue", "output needs a queue, or an exchange and routing_key")
	case d == connect.Out && p.String("queue") != "" && p.String("exchange") != "":
		return opt("exchange", "give a queue or an exchange, not both")
	case p.Has("dead_letter_queue") && p.Has("dead_letter_exchange"):
		return opt("dead_letter_exchange", "give a dead_letter_queue or a dead_letter_exchange, not both")
	case (p.Has("dead_letter_queue") || p.Has("dead_letter_exchange")) && !p.Bool("declare"):
		return opt("declare", "a dead-letter queue or exchange is set when the queue is declared; with declare=false, give the queue its x-dead-letter-exchange by a policy")
	case p.Has("dead_letter_queue") && p.String("dead_letter_queue") == p.String("queue"):
		return opt("dead_letter_queue", "must be another queue than the one consumed")
	}
	return nil
}

// dial connects, turning the client's errors into what a user can act on.
func dial(ctx context.Context, p *connect.Params) (*amqp.Connection, error) {
	u := *p.URL
	conn, err := amqp.DialConfig(u.String(), amqp.Config{
		Dial:       amqp.DefaultDial(connect.DialTimeout),
		Properties: amqp.Table{"connection_name": "flowrun"},
	})
	if err != nil {
		return nil, &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	return conn, nil
}

func reason(err error) string {
	var ae *amqp.Error
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, amqp.ErrCredentials):
		return "username or password refused"
	case errors.Is(err, amqp.ErrVhost):
		return "no such virtual host, or no access to it"
	case errors.As(err, &oe) && oe.Op == "dial":
		return "cannot connect: " + strings.TrimPrefix(oe.Err.Error(), "connect: ")
	case errors.As(err, &ne) && ne.Timeout():
		return "no answer within " + connect.DialTimeout.String()
	case errors.As(err, &ae):
		return strings.ToLower(ae.Reason)
	}
	return err.Error()
}

// declare makes sure the queue is there: declared durable, or only
// checked when declare is false. With a dead_letter_queue or a
// dead_letter_exchange it is declared with that as its
// x-dead-letter-exchange (and the dead-letter queue with it), the same
// from a flowrun that writes the queue and one that reads it: RabbitMQ
// refuses to declare a queue again with other arguments.
func declare(ch *amqp.Channel, p *connect.Params, queue string) error {
	fail := func(queue string, err error) error {
		r := reason(err)
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed {
			r += " (a queue's arguments cannot change: delete the queue, or give it its dead-letter exchange by a policy and use declare=false)"
		}
		return &connect.Error{Broker: p.Broker(), Reason: fmt.Sprintf("queue %q: %s", queue, r), Err: err}
	}
	if !p.Bool("declare") {
		if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil); err != nil {
			return fail(queue, err)
		}
		return nil
	}
	var args amqp.Table
	if dlq := p.String("dead_letter_queue"); dlq != "" {
		if _, err := ch.QueueDeclare(dlq, true, false, false, false, nil); err != nil {
			return fail(dlq, err)
		}
		args = amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
	}
	if p.Has("dead_letter_exchange") {
		args = amqp.Table{"x-dead-letter-exchange": p.String("dead_letter_exchange")}
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		return fail(queue, err)
	}
	return nil
}

// source consumes one queue. Each connection is a generation: a message
// carries the generation it came in on, and Settle acks only those of the
// live one, since a dead channel's delivery tags mean nothing to the
// broker (it redelivers those messages).
type source struct {
	p        *connect.Params
	queue    string
	prefetch int
	envelope bool

	mu         sync.Mutex
	conn       *amqp.Connection
	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery
	gen        uint64
	acks       acks
	closed     bool
}

type token struct {
	gen, tag uint64
}

func openSource(ctx context.Context, p *connect.Params) (connect.Source, error) {
	s := &source{p: p, queue: p.String("queue"), prefetch: min(p.Prefetch(), maxPrefetch), envelope: p.Bool("envelope")}
	if err := s.connect(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// connect opens a connection and a consuming channel; s.mu is held or
// s is not yet shared.
func (s *source) connect(ctx context.Context) error {
	conn, err := dial(ctx, s.p)
	if err != nil {
		return err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = declare(ch, s.p, s.queue)
	}
	if err == nil {
		err = ch.Qos(s.prefetch, 0, false)
	}
	var d <-chan amqp.Delivery
	if err == nil {
		d, err = ch.Consume(s.queue, "", false, false, false, false, nil)
	}
	if err != nil {
		conn.Close()
		if ce := (*connect.Error)(nil); errors.As(err, &ce) {
			return err
		}
		return &connect.Error{Broker: s.p.Broker(), Reason: reason(err), Err: err}
	}
	s.conn, s.ch, s.deliveries = conn, ch, d
	s.gen++
	s.acks = acks{}
	return nil
}

// reconnect replaces a dead connection, waiting between attempts, until
// it succeeds or ctx ends.
func (s *source) reconnect(ctx context.Context, dead uint64) error {
	b := connect.DefaultBackoff()
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return errors.New("source closed")
		}
		if s.gen != dead { // another caller already did it
			s.mu.Unlock()
			return nil
		}
		if s.conn != nil {
			s.conn.Close()
			s.conn, s.ch, s.deliveries = nil, nil, nil
		}
		err := s.connect(ctx)
		s.mu.Unlock()
		if err == nil {
			return nil
		}
		if !b.Wait(ctx) {
			return ctx.Err()
		}
	}
}

func (s *source) Receive(ctx context.Context, buf []connect.Message) ([]connect.Message, error) {
	buf = buf[:0]
	for {
		s.mu.Lock()
		d, gen := s.deliveries, s.gen
		s.mu.Unlock()
		if d == nil {
			if err := s.reconnect(ctx, gen); err != nil {
				return buf, err
			}
			continue
		}
		select {
		case m, ok := <-d:
			if !ok {
				if err := s.reconnect(ctx, gen); err != nil {
					return buf, err
				}
				continue
			}
			buf = append(buf, s.message(m, gen))
			for len(buf) < cap(buf) {
				select {
				case m, ok := <-d:
					if !ok {
						return buf, nil
					}
					buf = append(buf, s.message(m, gen))
					continue
				default:
				}
				break
			}
			return buf, nil
		case <-ctx.Done():
			return buf, ctx.Err()
		}
	}
}

func (s *source) message(m amqp.Delivery, gen uint64) connect.Message {
	data := m.Body
	if s.envelope {
		data = connect.Envelope{MessageID: m.MessageId, CorrelationID: m.CorrelationId, RoutingKey: m.RoutingKey,
			Headers: headers(m.Headers), Redelivered: m.Redelivered}.Wrap(m.Body)
	}
	return connect.Message{Data: data, ID: m.MessageId, Token: token{gen: gen, tag: m.DeliveryTag}}
}

// headers returns an AMQP message's headers that have a text, number or
// boolean value, as text; nil for none. Tables and arrays (x-death) are
// left out: an envelope's headers are flat.
func headers(t amqp.Table) map[string]string {
	var h map[string]string
	for k, v := range t {
		switch v.(type) {
		case string, bool, int8, int16, int32, int64, uint8, uint16, uint32, float32, float64:
			if h == nil {
				h = map[string]string{}
			}
			h[k] = fmt.Sprint(v)
		}
	}
	return h
}

func (s *source) Settle(ctx context.Context, msgs []connect.Message, o connect.Outcome) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		return nil // dead: all of these will be redelivered
	}
	tags := make([]uint64, 0, len(msgs))
	for _, m := range msgs {
		t, ok := m.Token.(token)
		if ok && t.gen == s.gen {
			tags = append(tags, t.tag)
		}
	}
	var err error
	if o == connect.Ack {
		upTo, singles := s.acks.done(tags)
		if upTo > 0 {
			err = s.ch.Ack(upTo, true)
		}
		for _, t := range singles {
			if err == nil {
				err = s.ch.Ack(t, false)
			}
		}
	} else {
		// A Reject is a nack without requeue: RabbitMQ routes it to the
		// queue's dead-letter exchange when it has one (by argument or
		// policy), with an x-death header saying why, and drops it
		// otherwise, as an ack would.
		for _, t := range tags {
			if err == nil {
				err = s.ch.Nack(t, false, o == connect.Requeue)
			}
		}
		s.acks.done(tags) // settled for the watermark; nacked already
	}
	if err != nil && errors.Is(err, amqp.ErrClosed) {
		return nil // the channel died: the broker redelivers
	}
	return err
}

func (s *source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn, s.ch, s.deliveries = nil, nil, nil
	if errors.Is(err, amqp.ErrClosed) {
		err = nil
	}
	return err
}

// acks batches the acks of one channel. Delivery tags count up from 1;
// low is the highest tag up to which every message is settled, which one
// multiple-ack covers. A settled tag above a gap (a message still in a
// worker) is acked alone at once, so that the gap does not hold back the
// prefetch window.
type acks struct {
	low  uint64
	over map[uint64]bool // settled tags above low; true: acked alone already
}

// done records tags as settled and returns the tag for a multiple-ack (0
// for none) and the tags to ack alone.
func (a *acks) done(tags []uint64) (upTo uint64, singles []uint64) {
	if a.over == nil {
		a.over = map[uint64]bool{}
	}
	for _, t := range tags {
		if t > a.low {
			if _, seen := a.over[t]; !seen {
				a.over[t] = false
			}
		}
	}
	// The multiple-ack names the highest tag not acked alone: a tag the
	// broker no longer knows would be a channel error.
	for {
		sent, ok := a.over[a.low+1]
		if !ok {
			break
		}
		a.low++
		delete(a.over, a.low)
		if !sent {
			upTo = a.low
		}
	}
	for t, sent := range a.over {
		if !sent {
			singles = append(singles, t)
			a.over[t] = true
		}
	}
	return upTo, singles
}
