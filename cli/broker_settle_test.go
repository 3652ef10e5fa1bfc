package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// rejectRun publishes ten JSON messages with "oops" as the fourth and
// runs a pipeline that dead-letters what is not JSON: exit 3, the nine
// others in the output, and the dead-letter file naming the stage and
// holding "oops".
func rejectRun(t *testing.T, inSink, inSrc, outSink, outSrc string) {
	t.Helper()
	var msgs []string
	for i := 1; i <= 10; i++ {
		msgs = append(msgs, fmt.Sprintf(`{"n":%d}`, i))
	}
	msgs[3] = "oops"
	publish(t, inSink, msgs)
	dir := t.TempDir()
	dl := filepath.Join(dir, "dead.jsonl")
	p := writeFile(t, dir, "p.yaml", "dead_letter: "+dl+"\nstages: [{use: json.validate, on_error: dead-letter}]\n")
	_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "--until-idle", "1s", "-i", inSrc, "-o", outSink, p)
	if code != 3 {
		t.Fatalf("exit %d, want 3 (a record dead-lettered): %s", code, errs)
	}
	if got, want := sorted(drain(t, outSrc, 9, 300*time.Millisecond)), sorted(slices.Delete(slices.Clone(msgs), 3, 4)); !slices.Equal(got, want) {
		t.Fatalf("output %v, want %v", got, want)
	}
	data, err := os.ReadFile(dl)
	if err != nil {
		t.Fatal(err)
	}
	var d struct{ Stage, Record string }
	if err := json.Unmarshal(data, &d); err != nil || d.Stage != "json.validate" || d.Record != "oops" || strings.Count(string(data), "\n") != 1 {
		t.Fatalf("dead-letter file: %s (%v), want the one line of oops from json.validate", data, err)
	}
}

// A message that a stage dead-letters is rejected into the input
// queue's dead-letter queue, with RabbitMQ's x-death header saying it
// was rejected from that queue; the dead-letter file keeps why.
func TestBrokerDeadLetterRabbitMQ(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := brokers[0]
	in, out := b.queues(t)
	queue := in.src[strings.Index(in.src, "queue=")+len("queue="):]
	dlq := queue + "-dlq"
	rejectRun(t, in.sink+"&dead_letter_queue="+dlq, in.src+"&dead_letter_queue="+dlq, out.sink, out.src)

	conn, err := amqp.Dial(b.server(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	m, ok, err := ch.Get(dlq, true)
	if err != nil || !ok {
		t.Fatalf("nothing in the dead-letter queue %s (%v): the message was acked, not rejected", dlq, err)
	}
	if string(m.Body) != "oops" {
		t.Fatalf("dead-letter queue holds %q, want oops", m.Body)
	}
	deaths, _ := m.Headers["x-death"].([]any)
	if len(deaths) != 1 {
		t.Fatalf("x-death %v, want one entry", m.Headers["x-death"])
	}
	death, _ := deaths[0].(amqp.Table)
	if death["reason"] != "rejected" || death["queue"] != queue || death["count"] != int64(1) {
		t.Fatalf("x-death %v, want rejected once from %s", death, queue)
	}
	if _, more, _ := ch.Get(dlq, true); more {
		t.Fatal("more than one message in the dead-letter queue")
	}
	if left := drain(t, in.src+"&dead_letter_queue="+dlq, 0, 300*time.Millisecond); len(left) > 0 {
		t.Fatalf("%d messages left in the input: %v", len(left), left)
	}
}

// A message that a stage dead-letters is Termed in JetStream: the
// server says so in its advisory, and the consumer has nothing pending
// or redelivered after ack_wait.
func TestBrokerDeadLetterNATS(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := brokers[2]
	in, out := b.queues(t)
	stream := in.src[strings.Index(in.src, "stream=")+len("stream=") : strings.Index(in.src, "&")]
	nc, err := nats.Connect(b.server(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	terms, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED." + stream + ".flowrun")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	rejectRun(t, in.sink, in.src, out.sink, out.src)

	adv, err := terms.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("no termination advisory: the message was acked, not Termed (%v)", err)
	}
	var a struct {
		StreamSeq uint64 `json:"stream_seq"`
	}
	if err := json.Unmarshal(adv.Data, &a); err != nil || a.StreamSeq != 4 {
		t.Fatalf("advisory %s, want the fourth message's", adv.Data)
	}
	if m, err := terms.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("a second termination: %s", m.Data)
	}
	time.Sleep(b.redelivery) // past ack_wait: a message not settled would be redelivered now
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, stream, "flowrun")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 0 || info.NumAckPending != 0 || info.NumRedelivered != 0 || info.AckFloor.Stream != 10 {
		t.Fatalf("consumer: %d pending, %d unacked, %d redelivered, ack floor %d; want 0, 0, 0, 10",
			info.NumPending, info.NumAckPending, info.NumRedelivered, info.AckFloor.Stream)
	}
}

// Redis has no dead-letter place of its own: a dead-lettered message is
// removed from the list once the dead-letter file holds it, like an ack.
func TestBrokerDeadLetterRedis(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := brokers[1]
	in, out := b.queues(t)
	list := in.sink[strings.Index(in.sink, "list=")+len("list="):]
	rejectRun(t, in.sink, in.src, out.sink, out.src)

	opt, err := goredis.ParseURL(b.server(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opt)
	defer c.Close()
	ctx := context.Background()
	for _, key := range []string{list, list + ":processing:test"} {
		if n, err := c.LLen(ctx, key).Result(); err != nil || n != 0 {
			t.Fatalf("%s holds %d (%v), want 0", key, n, err)
		}
	}
}

// input.with and output.with give the connector's options, over the
// URL's query; -i of the same connector keeps them but for what its own
// query says, and -i of another connector drops them.
func TestBrokerWithOptions(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := brokers[0]
	srv := b.server(t)
	in, out := b.queues(t)
	inQ := in.src[strings.Index(in.src, "queue=")+len("queue="):]
	outQ := out.src[strings.Index(out.src, "queue=")+len("queue="):]
	publish(t, in.sink, numbered(5))
	p := pipeline(t, fmt.Sprintf("input:\n  from: '%s?queue=%s-not'\n  with: {queue: %s, prefetch: 2}\n"+
		"output:\n  to: '%s?queue=%s-not'\n  with: {queue: %s}\nstages: [{use: upper}]\n", srv.URL, inQ, inQ, srv.URL, outQ, outQ))
	_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "--until-idle", "1s", p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if got := sorted(drain(t, out.src, 5, 300*time.Millisecond)); !slices.Equal(got, []string{"M1", "M2", "M3", "M4", "M5"}) {
		t.Fatalf("output.with's queue got %v, want M1..M5", got)
	}

	// -i names another queue on the same broker: with: keeps prefetch
	// but not its queue; the flag's query wins.
	publish(t, srv.URL+"?queue="+inQ+"-flag", []string{"f1"})
	_, errs, code = runCLI(t, "", "run", "-q", "--progress", "none", "--until-idle", "1s", "-i", srv.URL+"?queue="+inQ+"-flag", p)
	if code != 0 {
		t.Fatalf("-i: exit %d: %s", code, errs)
	}
	if got := drain(t, out.src, 1, 300*time.Millisecond); !slices.Equal(got, []string{"F1"}) {
		t.Fatalf("-i: output got %v, want F1", got)
	}

	// with: prefetch is the file's for RabbitMQ; a -i of Redis drops it
	// rather than refuse a redis option it does not have.
	_, errs, code = runCLI(t, "", "validate", "-i", brokers[1].server(t).URL+"?list=x", p)
	if code != 0 {
		t.Fatalf("-i redis: exit %d: %s", code, errs)
	}
	// A -i of the same connector without a queue takes with:'s.
	_, errs, code = runCLI(t, "", "validate", "-i", srv.URL, p)
	if code != 0 {
		t.Fatalf("-i without a queue keeps with:'s queue: exit %d: %s", code, errs)
	}
	for _, q := range []string{inQ + "-not", outQ + "-not"} {
		if left := drain(t, srv.URL+"?queue="+q, 0, 200*time.Millisecond); len(left) > 0 {
			t.Fatalf("the URL's queue %s was used: %v", q, left)
		}
	}
}

// A record at work longer than ack_wait is kept with InProgress: with
// ack_wait 1s and a stage that takes 2.5s a record, JetStream
// redelivers nothing, and every message comes out once. The output is a
// file, which de-duplicates nothing (a JetStream output would drop a
// redelivered message's result by its Nats-Msg-Id).
func TestBrokerNATSInProgress(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	b := brokers[2]
	srv := b.server(t)
	in, _ := b.queues(t)
	stream := in.src[strings.Index(in.src, "stream=")+len("stream=") : strings.Index(in.src, "&")]
	publish(t, in.sink, numbered(4))
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: sleep, workers: 2, with: {duration: 2500ms}}]\n")
	out := filepath.Join(dir, "out.txt")
	src := srv.URL + "?stream=" + stream + "&ack_wait=1s"
	_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "--until-idle", "1s", "-i", src, "-o", out, p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := sorted(strings.Fields(string(data))); !slices.Equal(got, numbered(4)) {
		t.Fatalf("output %v, want each of m1..m4 once: a record past ack_wait was redelivered", got)
	}
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.Consumer(ctx, stream, "flowrun")
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.AckFloor.Stream != 4 || info.Delivered.Stream != 4 || info.Delivered.Consumer != 4 {
		t.Fatalf("consumer: %d unacked, ack floor %d, delivered %d (stream) %d (consumer); want 0, 4, 4, 4: deliveries beyond the stream's are redeliveries",
			info.NumAckPending, info.AckFloor.Stream, info.Delivered.Stream, info.Delivered.Consumer)
	}
}
