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
	wrap    bool // envelope
	mu      sync.Mutex
	pending []connect.Message
}

// flushAt is how many messages Write holds before it sends them itself.
const flushAt = 1024

func openSink(ctx context.Context, p *connect.Params) (connect.Sink, error) {
	c, err := dial(ctx, p)
	if err != nil {
		return nil, err
	}
	return &sink{c: c, p: p, list: p.String("list"), stream: p.String("stream"), field: p.String("field"),
		lpush: p.String("push") == "lpush", maxlen: int64(p.Int("maxlen")), wrap: p.Bool("envelope")}, nil
}

func (s *sink) Write(ctx context.Context, msgs []connect.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wrap {
		for _, m := range msgs {
			_, body := connect.Unwrap(m.Data)
			s.pending = append(s.pending, connect.Message{Data: body, ID: m.ID})
		}
	} else {
		s.pending = append(s.pending, msgs...)
	}
	if len(s.pending) >= flushAt {
		return s.send(ctx)
	}
	return nil
}

func (s *sink) Flush(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.send(ctx)
}

func (s *sink) send(ctx context.Context) error {
	if len(s.pending) == 0 {
		return nil
	}
	err := retry(ctx, s.p.Broker(), func() error {
		if s.list != "" {
			vals := make([]any, len(s.pending))
			for i, m := range s.pending {
				vals[i] = m.Data
			}
			if s.lpush {
				return s.c.LPush(ctx, s.list, vals...).Err()
			}
			return s.c.RPush(ctx, s.list, vals...).Err()
		}
		_, err := s.c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, m := range s.pending {
				pipe.XAdd(ctx, &redis.XAddArgs{Stream: s.stream, MaxLen: s.maxlen, Approx: s.maxlen > 0, Values: []any{s.field, m.Data}})
			}
			return nil
		})
		return err
	})
	if err != nil {
		return err
	}
	clear(s.pending)
	s.pending = s.pending[:0]
	return nil
}

func (s *sink) Close() error { return s.c.Close() }
