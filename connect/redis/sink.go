package redis

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/flowrun/flowrun/connect"
)

// sink buffers what it is given and sends it at Flush, in one round
// trip: an RPUSH (or LPUSH) of many values, or a pipeline of XADDs. What
// Redis replied to is durable as far as its persistence settings make it
// (appendfsync). A failed send is sent again, so a message whose reply
// was lost may be written twice.
type sink struct {
	c       *redis.Client
	p       *connect.Params
	list    string
	stream  string
	field   string
	lpush   bool
	maxlen  int64
	wrap    bool       // envelope
	mu      sync.Mutex // pending
	pending []connect.Message
	sendMu  sync.Mutex // one send at a time, in order
	sending []connect.Message
	vals    []any
}

// flushAt is how many messages Write holds before it sends them itself.
const flushAt = 1024

func openSink(ctx context.Context, p *connect.Params) (connect.Sink, error) {
	c, err := dial(ctx, p)
	if err != nil {
		return nil, err
	}
	if err := checkType(ctx, c, p); err != nil {
		c.Close()
		return nil, err
	}
	return &sink{c: c, p: p, list: p.String("list"), stream: p.String("stream"), field: p.String("field"),
		lpush: p.String("push") == "lpush", maxlen: int64(p.Int("maxlen")), wrap: p.Bool("envelope")}, nil
}

func (s *sink) Write(ctx context.Context, msgs []connect.Message) error {
	s.mu.Lock()
	if s.wrap {
		for _, m := range msgs {
			_, body := connect.Unwrap(m.Data)
			s.pending = append(s.pending, connect.Message{Data: body, ID: m.ID})
		}
	} else {
		s.pending = append(s.pending, msgs...)
	}
	full := len(s.pending) >= flushAt
	s.mu.Unlock()
	if full {
		return s.send(ctx)
	}
	return nil
}

// Flush sends what is pending; when it returns, everything written before
// it has Redis's reply (a send another caller had begun included).
func (s *sink) Flush(ctx context.Context) error { return s.send(ctx) }

func (s *sink) send(ctx context.Context) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	s.sending, s.pending = s.pending, s.sending[:0]
	s.mu.Unlock()
	if len(s.sending) == 0 {
		return nil
	}
	err := retry(ctx, s.p.Broker(), func() error {
		if s.list != "" {
			s.vals = s.vals[:0]
			for _, m := range s.sending {
				s.vals = append(s.vals, m.Data)
			}
			if s.lpush {
				return s.c.LPush(ctx, s.list, s.vals...).Err()
			}
			return s.c.RPush(ctx, s.list, s.vals...).Err()
		}
		_, err := s.c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, m := range s.sending {
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: s.stream, MaxLen: s.maxlen, Approx: s.maxlen > 0, Values: []any{s.field, m.Data}})
			}
			return nil
		})
		return err
	})
	clear(s.vals)
	if err != nil {
		// Not sent: first in line for the next send.
		s.mu.Lock()
		s.pending = append(s.sending, s.pending...)
		s.sending = nil
		s.mu.Unlock()
		return err
	}
	clear(s.sending)
	s.sending = s.sending[:0]
	return nil
}

func (s *sink) Close() error { return s.c.Close() }
