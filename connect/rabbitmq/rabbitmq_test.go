package rabbitmq_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
	"github.com/flowrun/flowrun/connect/connecttest"
	_ "github.com/flowrun/flowrun/connect/rabbitmq"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

func urls(s *brokertest.Server, name string) (string, string) {
	u := s.URL + "?queue=" + name
	return u, u
}

func TestSuite(t *testing.T) {
	connecttest.Run(t, connecttest.Broker{
		URLs:   urls,
		Shared: brokertest.RabbitMQ,
		Own:    func(t testing.TB) *brokertest.Server { return brokertest.Own(t, "rabbitmq") },
	})
}

func TestEnvelope(t *testing.T) {
	srv := brokertest.RabbitMQ(t)
	ctx := context.Background()
	u := srv.URL + "?queue=flowrun-envelope&envelope=true"
	sink, _, err := connect.OpenSink(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	rec := `{"body":"hello","message_id":"m-1","correlation_id":"c-9","headers":{"trace":"t-1"}}`
	if err := sink.Write(ctx, []connect.Message{{Data: []byte(rec)}}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	src, _, err := connect.OpenSource(ctx, u, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := connecttest.Take(t, ctx, src, 1)
	want := `{"body":"hello","message_id":"m-1","correlation_id":"c-9","routing_key":"flowrun-envelope","headers":{"trace":"t-1"}}`
	if string(got[0].Data) != want {
		t.Fatalf("got %s\nwant %s", got[0].Data, want)
	}
	if err := src.Settle(ctx, got, connect.Requeue); err != nil {
		t.Fatal(err)
	}
	again := connecttest.Take(t, ctx, src, 1)
	want = `{"body":"hello","message_id":"m-1","correlation_id":"c-9","routing_key":"flowrun-envelope","headers":{"trace":"t-1"},"redelivered":true}`
	if string(again[0].Data) != want {
		t.Fatalf("redelivered: got %s\nwant %s", again[0].Data, want)
	}
	if err := src.Settle(ctx, again, connect.Ack); err != nil {
		t.Fatal(err)
	}
}

// A bad address, refused credentials and a missing queue are errors that
// name the broker and the reason, at once.
func TestStartErrors(t *testing.T) {
	srv := brokertest.RabbitMQ(t)
	port, _ := brokertest.FreePort()
	bad := strings.Replace(srv.URL, "guest:guest", "guest:wrong", 1)
	connecttest.Publish(t, context.Background(), srv.URL+"?queue=flowrun-no-dlx", 1, 1)
	connecttest.StartErrors(t, [][2]string{
		{fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/?queue=q", port), fmt.Sprintf("rabbitmq amqp://guest:xxxxx@127.0.0.1:%d/: cannot connect: connection refused", port)},
		{bad + "?queue=q", fmt.Sprintf("rabbitmq amqp://guest:xxxxx@127.0.0.1:%d/: username or password refused", srv.Port)},
		{srv.URL + "?queue=flowrun-missing&declare=false", `queue "flowrun-missing": not_found - no queue 'flowrun-missing' in vhost '/'`},
		{srv.URL + "?queue=flowrun-no-dlx&dead_letter_queue=flowrun-no-dlx.dead", `queue "flowrun-no-dlx": precondition_failed - inequivalent arg 'x-dead-letter-exchange' for queue 'flowrun-no-dlx' in vhost '/': received the value '' of type 'longstr' but current is none (a queue's arguments cannot change: delete the queue, or give it its dead-letter exchange by a policy and use declare=false)`},
	})
}

// A consumer from another program (pika) reads what the sink published,
// as persistent messages.
func TestPikaReadsWhatWasPublished(t *testing.T) {
	if exec.Command(brokertest.Python(), "-c", "import pika").Run() != nil {
		brokertest.Unavailable(t, "python3-pika", errors.New("python3 cannot import pika"))
	}
	srv := brokertest.RabbitMQ(t)
	ctx := context.Background()
	connecttest.Publish(t, ctx, srv.URL+"?queue=flowrun-pika", 1, 3)
	out, err := exec.Command(brokertest.Python(), "testdata/consume.py", srv.URL, "flowrun-pika", "3").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := "m1 persistent\nm2 persistent\nm3 persistent\n"; !bytes.Equal(out, []byte(want)) {
		t.Fatalf("pika read %q, want %q", out, want)
	}
}

// A queue that refuses what is published (full, with x-overflow
// reject-publish) fails the sink's Flush, saying why, instead of
// publishing the nacked messages again for ever.
func TestSinkRefused(t *testing.T) {
	srv := brokertest.RabbitMQ(t)
	conn, err := amqp.Dial(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q := "flowrun-full"
	ch.QueueDelete(q, false, false, false)
	if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{"x-max-length": int32(2), "x-overflow": "reject-publish"}); err != nil {
		t.Fatal(err)
	}
	defer ch.QueueDelete(q, false, false, false)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sink, _, err := connect.OpenSink(ctx, srv.URL+"?queue="+q+"&declare=false", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	var msgs []connect.Message
	for i := range 5 {
		msgs = append(msgs, connect.Message{Data: []byte(fmt.Sprint("m", i))})
	}
	if err := sink.Write(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	err = sink.Flush(ctx)
	if err == nil || !strings.Contains(err.Error(), "the broker refused 3 messages") || ctx.Err() != nil {
		t.Fatalf("Flush: %v (context: %v), want the broker's refusal of 3 messages", err, ctx.Err())
	}
	if info, err := ch.QueueDeclarePassive(q, true, false, false, false, amqp.Table{"x-max-length": int32(2), "x-overflow": "reject-publish"}); err != nil || info.Messages != 2 {
		t.Errorf("queue: %+v, %v; want its 2 messages", info, err)
	}
}
