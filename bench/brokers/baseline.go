package main

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

// The baselines are the least Go program a good engineer would write for
// the job with the same client library and the same guarantee as
// flowrun: consume with manual acks and a prefetch, upper-case, publish
// persistently and wait for the broker's confirm, and ack a message only
// once its result is confirmed. Each keeps publishing while the confirms
// of what it published come back (one goroutine publishes, another waits
// for confirms in order and acks), as the client libraries' own examples
// do; a program that waited for each batch's confirms before taking more
// would be an easy baseline to beat.

func option(raw, name string) string {
	u, _ := url.Parse(raw)
	return u.Query().Get(name)
}

// rabbitBaseline: a consumer with a prefetch, publisher confirms, and one
// multiple-ack for every run of confirmed messages.
func rabbitBaseline(ctx context.Context, serverURL, in, out string, prefetch, n int) error {
	conn, err := amqp.Dial(serverURL)
	if err != nil {
		return err
	}
	defer conn.Close()
	cin, err := conn.Channel()
	if err != nil {
		return err
	}
	cout, err := conn.Channel()
	if err != nil {
		return err
	}
	src, dst := option(in, "queue"), option(out, "queue")
	if _, err := cout.QueueDeclare(dst, true, false, false, false, nil); err != nil {
		return err
	}
	if err := cout.Confirm(false); err != nil {
		return err
	}
	if err := cin.Qos(prefetch, 0, false); err != nil {
		return err
	}
	ds, err := cin.Consume(src, "", false, false, false, false, nil)
	if err != nil {
		return err
	}
	type sent struct {
		tag uint64
		dc  *amqp.DeferredConfirmation
	}
	sents := make(chan sent, prefetch)
	acked := make(chan error, 1)
	go func() {
		pending := 0
		for range n {
			s := <-sents
			if ok, err := s.dc.WaitContext(ctx); err != nil || !ok {
				acked <- fmt.Errorf("not confirmed: %v", err)
				return
			}
			// One multiple-ack for what is confirmed, when no more is
			// waiting or a quarter of the prefetch is.
			if pending++; len(sents) == 0 || pending >= max(prefetch/4, 1) {
				if err := cin.Ack(s.tag, true); err != nil {
					acked <- err
					return
				}
				pending = 0
			}
		}
		acked <- nil
	}()
	for range n {
		d := <-ds
		dc, err := cout.PublishWithDeferredConfirmWithContext(ctx, "", dst, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, Body: bytes.ToUpper(d.Body)})
		if err != nil {
			return err
		}
		sents <- sent{d.DeliveryTag, dc}
	}
	return <-acked
}

// redisBaseline: the reliable-queue pattern, pipelined: BLMOVE (and
// LMOVEs) into a processing list, up to the prefetch; then one RPUSH of
// the results and the LREMs of the originals in one round trip, whose
// reply (after Redis's appendfsync) is the confirm.
func redisBaseline(ctx context.Context, serverURL, in, out string, prefetch, n int) error {
	opt, err := redis.ParseURL(serverURL)
	if err != nil {
		return err
	}
	c := redis.NewClient(opt)
	defer c.Close()
	src, dst := option(in, "list"), option(out, "list")
	processing := src + ":processing:baseline"
	for done := 0; done < n; {
		first, err := c.BLMove(ctx, src, processing, "LEFT", "RIGHT", time.Second).Result()
		if err != nil {
			return err
		}
		vals := []string{first}
		cmds, _ := c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for range prefetch - 1 {
				p.LMove(ctx, src, processing, "LEFT", "RIGHT")
			}
			return nil
		})
		for _, cmd := range cmds {
			if v, err := cmd.(*redis.StringCmd).Result(); err == nil {
				vals = append(vals, v)
			}
		}
		_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			up := make([]any, len(vals))
			for i, v := range vals {
				up[i] = strings.ToUpper(v)
			}
			p.RPush(ctx, dst, up...)
			for _, v := range vals {
				p.LRem(ctx, processing, 1, v)
			}
			return nil
		})
		if err != nil {
			return err
		}
		done += len(vals)
	}
	return nil
}

// natsBaseline: a durable pull consumer with explicit acks and
// MaxAckPending, async publishes, and each message acked once its
// PubAck came.
func natsBaseline(ctx context.Context, serverURL, in, out string, prefetch, n int) error {
	nc, err := nats.Connect(serverURL)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	src, dst, subject := option(in, "stream"), option(out, "stream"), option(out, "subject")
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: dst, Subjects: []string{subject}}); err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, src, jetstream.ConsumerConfig{
		Durable: "baseline", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: prefetch,
	})
	if err != nil {
		return err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(prefetch))
	if err != nil {
		return err
	}
	defer it.Stop()
	type sent struct {
		m jetstream.Msg
		f jetstream.PubAckFuture
	}
	sents := make(chan sent, prefetch)
	acked := make(chan error, 1)
	go func() {
		for range n {
			s := <-sents
			select {
			case <-s.f.Ok():
			case err := <-s.f.Err():
				acked <- err
				return
			}
			if err := s.m.Ack(); err != nil {
				acked <- err
				return
			}
		}
		acked <- nil
	}()
	for range n {
		m, err := it.Next()
		if err != nil {
			return err
		}
		f, err := js.PublishAsync(subject, bytes.ToUpper(m.Data()))
		if err != nil {
			return err
		}
		sents <- sent{m, f}
	}
	if err := <-acked; err != nil {
		return err
	}
	return nc.Flush() // the acks
}
