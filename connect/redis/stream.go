package redis

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowrun/flowrun/connect"
)

// streamSource reads a stream through a consumer group. At start it
// reads again what this consumer was handed and never acked (a previous
// run under its name that died); from then on new entries, and now and
// then the entries other consumers have left pending longer than
// claim_after (XAUTOCLAIM).
type streamSource struct {
	c                       *redis.Client
	p                       *connect.Params
	stream, group, consumer string
	field                   string
	claimAfter              time.Duration
	slots                   slots
	pendingDone             bool   // this consumer's own pending entries read
	pendingFrom             string // where reading them goes on
	lastClaim               time.Time
	wrap                    bool // envelope
}

func newStreamSource(ctx context.Context, c *redis.Client, p *connect.Params, prefetch int) (*streamSource, error) {
	s := &streamSource{
		c: c, p: p, stream: p.String("stream"), group: p.String("group"), consumer: consumer(p),
		field: p.String("field"), claimAfter: p.Duration("claim_after"), slots: make(slots, prefetch),
		pendingFrom: "0", wrap: p.Bool("envelope"),
	}
	err := c.XGroupCreateMkStream(ctx, s.stream, s.group, "0").Err()
	if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
		return nil, &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	return s, nil
}

func (s *streamSource) message(m redis.XMessage) connect.Message {
	var data []byte
	if v, ok := m.Values[s.field].(string); ok {
		data = []byte(v)
	} else {
		data, _ = json.Marshal(m.Values) // an entry written by another program
	}
	if s.wrap {
		data = connect.Envelope{Stream: s.stream, EntryID: m.ID}.Wrap(data)
	}
	return connect.Message{Data: data, ID: m.ID, Token: m.ID}
}

func (s *streamSource) Receive(ctx context.Context, buf []connect.Message) ([]connect.Message, error) {
	buf = buf[:0]
	n, err := s.slots.take(ctx, max(cap(buf), 1))
	if err != nil {
		return buf, err
	}
	defer func() { s.slots.give(n - len(buf)) }()
	b := connect.DefaultBackoff()
	for len(buf) == 0 {
		if ctx.Err() != nil {
			return buf, ctx.Err()
		}
		if s.claimAfter > 0 && time.Since(s.lastClaim) > s.claimAfter/2 {
			s.lastClaim = time.Now()
			msgs, _, err := s.c.XAutoClaim(ctx, &redis.XAutoClaimArgs{
				Stream: s.stream, Group: s.group, Consumer: s.consumer,
				MinIdle: s.claimAfter, Start: "0-0", Count: int64(n),
			}).Result()
			if err == nil && len(msgs) > 0 {
				for _, m := range msgs {
					buf = append(buf, s.message(m))
				}
				return buf, nil
			}
		}
		id, block, rctx := ">", blockFor, ctx
		if !s.pendingDone {
			// This consumer's pending entries are there: a deadline
			// must not cut their transfer (a large one would stay
			// pending, cut again at every start).
			id, block = s.pendingFrom, -1
			var stop context.CancelFunc
			rctx, stop = unlessCanceled(ctx)
			defer stop()
		}
		res, err := s.c.XReadGroup(rctx, &redis.XReadGroupArgs{
			Group: s.group, Consumer: s.consumer, Streams: []string{s.stream, id},
			Count: int64(n), Block: block,
		}).Result()
		switch {
		case errors.Is(err, redis.Nil):
			continue
		case err != nil:
			if ctx.Err() != nil {
				return buf, ctx.Err()
			}
			if !b.Wait(ctx) {
				return buf, ctx.Err()
			}
			continue
		}
		for _, st := range res {
			for _, m := range st.Messages {
				buf = append(buf, s.message(m))
			}
		}
		if !s.pendingDone {
			if len(buf) == 0 {
				s.pendingDone = true
			} else {
				s.pendingFrom = buf[len(buf)-1].ID
			}
		}
	}
	return buf, nil
}

// Settle acks entries with one XACK. A requeued entry stays pending: the
// next run under this consumer's name reads it again at start, and
// another consumer claims it after claim_after.
func (s *streamSource) Settle(ctx context.Context, msgs []connect.Message, o connect.Outcome) error {
	defer s.slots.give(len(msgs))
	if o == connect.Requeue || len(msgs) == 0 {
		return nil
	}
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i], _ = m.Token.(string)
	}
	return retry(ctx, s.p.Broker(), func() error { return s.c.XAck(ctx, s.stream, s.group, ids...).Err() })
}

func (s *streamSource) Close() error { return s.c.Close() }
