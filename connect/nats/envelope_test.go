package nats_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
	"github.com/flowrun/flowrun/connect/connecttest"
)

// envelope: true hands on a JetStream message as JSON with its subject,
// stream, sequence, Nats-Msg-Id and headers, and redelivered once it was
// delivered before; on output the body is published with the
// envelope's message_id and headers.
func TestEnvelope(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := brokertest.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "env", Subjects: []string{"env.>"}}); err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: "env.in", Data: []byte("hello"), Header: nats.Header{"Trace": []string{"t-1"}, jetstream.MsgIDHeader: []string{"id-1"}}}
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}

	src, _, err := connect.OpenSource(ctx, srv.URL+"?stream=env&subject=env.in&envelope=true", nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := connecttest.Take(t, ctx, src, 1)
	want := `{"body":"hello","message_id":"id-1","subject":"env.in","stream":"env","sequence":1,"headers":{"Trace":"t-1"}}`
	if string(got[0].Data) != want {
		t.Fatalf("got  %s\nwant %s", got[0].Data, want)
	}
	if err := src.Settle(ctx, got, connect.Requeue); err != nil {
		t.Fatal(err)
	}
	again := connecttest.Take(t, ctx, src, 1)
	want = `{"body":"hello","message_id":"id-1","subject":"env.in","stream":"env","sequence":1,"headers":{"Trace":"t-1"},"redelivered":true}`
	if string(again[0].Data) != want {
		t.Fatalf("redelivered: got  %s\nwant %s", again[0].Data, want)
	}
	if err := src.Settle(ctx, again, connect.Ack); err != nil {
		t.Fatal(err)
	}

	sink, _, err := connect.OpenSink(ctx, srv.URL+"?stream=env&subject=env.out&envelope=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	rec := []byte(`{"body":"HELLO","message_id":"id-9","subject":"env.in","headers":{"Trace":"t-2"}}`)
	if err := sink.Write(ctx, []connect.Message{{Data: rec, ID: "env:1/1"}}); err != nil {
		t.Fatal(err)
	}
	if err := sink.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "env")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx, "env.out")
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "HELLO" || m.Header.Get("Trace") != "t-2" || m.Header.Get(jetstream.MsgIDHeader) != "id-9" {
		t.Fatalf("published %q with headers %v, want HELLO with Trace t-2 and Nats-Msg-Id id-9", m.Data, m.Header)
	}
}
