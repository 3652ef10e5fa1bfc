package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/flowrun/flowrun/connect/brokertest"
)

// prefetch is how many messages the baselines hold unacked: what flowrun
// takes by default for the benchmark's pipeline (upper with 4 workers),
// or PREFETCH, which flowrun is then given too.
var prefetch = 4

func option(raw, name string) string {
	u, _ := url.Parse(raw)
	return u.Query().Get(name)
}

// rabbitBaseline: manual acks with a prefetch, publisher confirms, and an
// ack (multiple) only once what was made of the messages is confirmed.
func rabbitBaseline(ctx context.Context, s *brokertest.Server, in, out string, n int) error {
	conn, err := amqp.Dial(s.URL)
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
	for done := 0; done < n; {
		batch := []amqp.Delivery{<-ds}
	more:
		for len(batch) < prefetch {
			select {
			case d := <-ds:
				batch = append(batch, d)
			default:
				break more
			}
		}
		var dcs []*amqp.DeferredConfirmation
		for _, d := range batch {
			dc, err := cout.PublishWithDeferredConfirmWithContext(ctx, "", dst, false, false,
				amqp.Publishing{DeliveryMode: amqp.Persistent, Body: bytes.ToUpper(d.Body)})
			if err != nil {
				return err
			}
			dcs = append(dcs, dc)
		}
		for _, dc := range dcs {
			if ok, err := dc.WaitContext(ctx); err != nil || !ok {
				return fmt.Errorf("not confirmed: %v", err)
			}
		}
		if err := cin.Ack(batch[len(batch)-1].DeliveryTag, true); err != nil {
			return err
		}
		done += len(batch)
	}
	return nil
}

// redisBaseline: the reliable-queue pattern, pipelined: BLMOVE (and
// LMOVEs) into a processing list, RPUSH the results, LREM the originals.
func redisBaseline(ctx context.Context, s *brokertest.Server, in, out string, n int) error {
	opt, err := redis.ParseURL(s.URL)
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
// MaxAckPending, async publishes whose PubAcks are awaited before the
// acks.
func natsBaseline(ctx context.Context, s *brokertest.Server, in, out string, n int) error {
	nc, err := nats.Connect(s.URL)
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
	for done := 0; done < n; {
		b, err := cons.Fetch(prefetch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return err
		}
		var msgs []jetstream.Msg
		var fs []jetstream.PubAckFuture
		for m := range b.Messages() {
			f, err := js.PublishAsync(subject, bytes.ToUpper(m.Data()))
			if err != nil {
				return err
			}
			msgs, fs = append(msgs, m), append(fs, f)
		}
		if b.Error() != nil && !errors.Is(b.Error(), nats.ErrTimeout) {
			return b.Error()
		}
		for _, f := range fs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				return err
			}
		}
		for _, m := range msgs {
			if err := m.Ack(); err != nil {
				return err
			}
		}
		done += len(msgs)
	}
	return nil
}
