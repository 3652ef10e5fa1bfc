package redis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
	"github.com/flowrun/flowrun/connect/connecttest"
)

// envelope: true hands on a list's value as JSON with the list's name,
// and a stream's entry with the stream and the entry's id; on output the
// envelope's body is written.
func TestEnvelope(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := brokertest.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	opt, err := goredis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := goredis.NewClient(opt)
	defer c.Close()
	if err := c.RPush(ctx, "env-list", "hello").Err(); err != nil {
		t.Fatal(err)
	}
	id, err := c.XAdd(ctx, &goredis.XAddArgs{Stream: "env-stream", Values: []any{"data", "hi"}}).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ url, want string }{
		{"?list=env-list&consumer=e&envelope=true", `{"body":"hello","list":"env-list"}`},
		{"?stream=env-stream&consumer=e&envelope=true", `{"body":"hi","stream":"env-stream","entry_id":"` + id + `"}`},
	} {
		src, _, err := connect.OpenSource(ctx, srv.URL+tc.url, nil, 1)
		if err != nil {
			t.Fatal(err)
		}
		got := connecttest.Take(t, ctx, src, 1)
		if string(got[0].Data) != tc.want {
			t.Errorf("%s: got  %s\nwant %s", tc.url, got[0].Data, tc.want)
		}
		if err := src.Settle(ctx, got, connect.Ack); err != nil {
			t.Fatal(err)
		}
		src.Close()
	}

	for _, u := range []string{"?list=env-out&envelope=true", "?stream=env-out-stream&envelope=true"} {
		sink, _, err := connect.OpenSink(ctx, srv.URL+u, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := sink.Write(ctx, []connect.Message{{Data: []byte(`{"body":"HELLO","list":"env-list"}`)}}); err != nil {
			t.Fatal(err)
		}
		if err := sink.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		sink.Close()
	}
	if got, err := c.LRange(ctx, "env-out", 0, -1).Result(); err != nil || strings.Join(got, ",") != "HELLO" {
		t.Errorf("list env-out holds %v (%v), want HELLO", got, err)
	}
	if got, err := c.XRange(ctx, "env-out-stream", "-", "+").Result(); err != nil || len(got) != 1 || got[0].Values["data"] != "HELLO" {
		t.Errorf("stream env-out-stream holds %v (%v), want one entry with data HELLO", got, err)
	}
}
