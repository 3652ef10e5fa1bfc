package rabbitmq_test

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
	"github.com/flowrun/flowrun/connect/connecttest"
)

// A message settled as Reject goes to the queue's dead-letter exchange,
// declared by dead_letter_exchange (an exchange of the user's) or by
// dead_letter_queue (a queue of its own through the default exchange),
// with an x-death header naming the queue; Ack and Requeue do not.
func TestRejectToDeadLetterExchange(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := brokertest.RabbitMQ(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := amqp.Dial(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.ExchangeDeclare("flowrun-dlx", "fanout", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare("flowrun-dlx-parked", true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	if err := ch.QueueBind("flowrun-dlx-parked", "", "flowrun-dlx", false, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ queue, option, dlq string }{
		{"flowrun-dlx-in", "dead_letter_exchange=flowrun-dlx", "flowrun-dlx-parked"},
		{"flowrun-dlq-in", "dead_letter_queue=flowrun-dlq-in.dead", "flowrun-dlq-in.dead"},
	} {
		u := srv.URL + "?queue=" + tc.queue + "&" + tc.option
		connecttest.Publish(t, ctx, u, 1, 3)
		src, _, err := connect.OpenSource(ctx, u, nil, 3)
		if err != nil {
			t.Fatal(err)
		}
		got := connecttest.Take(t, ctx, src, 3)
		for i, o := range []connect.Outcome{connect.Ack, connect.Reject, connect.Requeue} {
			if err := src.Settle(ctx, got[i:i+1], o); err != nil {
				t.Fatal(err)
			}
		}
		again := connecttest.Take(t, ctx, src, 1) // the requeued one, only
		if string(again[0].Data) != "m3" {
			t.Fatalf("%s: redelivered %s, want m3", tc.option, again[0].Data)
		}
		if err := src.Settle(ctx, again, connect.Ack); err != nil {
			t.Fatal(err)
		}
		src.Close()

		var m amqp.Delivery
		var ok bool
		for deadline := time.Now().Add(5 * time.Second); !ok && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if m, ok, err = ch.Get(tc.dlq, true); err != nil {
				t.Fatal(err)
			}
		}
		if !ok || string(m.Body) != "m2" {
			t.Fatalf("%s: %s holds %q (%v), want the rejected m2", tc.option, tc.dlq, m.Body, ok)
		}
		deaths, _ := m.Headers["x-death"].([]any)
		var death amqp.Table
		if len(deaths) == 1 {
			death, _ = deaths[0].(amqp.Table)
		}
		if death["reason"] != "rejected" || death["queue"] != tc.queue {
			t.Fatalf("%s: x-death %v, want rejected from %s", tc.option, m.Headers["x-death"], tc.queue)
		}
		if _, more, _ := ch.Get(tc.dlq, true); more {
			t.Fatalf("%s: more than the rejected message in %s", tc.option, tc.dlq)
		}
	}
}
