package redis_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
	"github.com/flowrun/flowrun/connect/connecttest"
	"github.com/flowrun/flowrun/connect/redis"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

func own(t testing.TB) *brokertest.Server { return brokertest.Own(t, "redis") }

func TestListSuite(t *testing.T) {
	connecttest.Run(t, connecttest.Broker{
		URLs: func(s *brokertest.Server, name string) (string, string) {
			u := s.URL + "?list=" + name
			return u + "&consumer=c-" + name, u
		},
		Shared: brokertest.Redis, Own: own,
	})
}

func TestStreamSuite(t *testing.T) {
	connecttest.Run(t, connecttest.Broker{
		URLs: func(s *brokertest.Server, name string) (string, string) {
			u := s.URL + "?stream=" + name
			return u + "&consumer=c-" + name, u
		},
		Shared: brokertest.Redis, Own: own,
	})
}

// A consumer killed with messages in its processing list (no Close) has
// them moved back by the next consumer: at once under the same name, and
// after claim_after under another.
func TestListRecoversDeadConsumer(t *testing.T) {
	srv := brokertest.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct{ name, second string }{{"same", "a"}, {"other", "b"}} {
		t.Run(tc.name, func(t *testing.T) {
			u := srv.URL + "?list=dead-" + tc.name
			connecttest.Publish(t, ctx, u, 1, 5)
			u += "&claim_after=1s"
			dead, _, err := connect.OpenSource(ctx, u+"&consumer=a", nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			connecttest.Take(t, ctx, dead, 5)
			// No Close: the process died. Its heartbeat stops, its
			// processing list stays.
			redis.StopHeartbeat(dead)
			next, _, err := connect.OpenSource(ctx, u+"&consumer="+tc.second, nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			defer next.Close()
			got := connecttest.Take(t, ctx, next, 5)
			if s := fmt.Sprint(bodies(got)); s != "[m1 m2 m3 m4 m5]" {
				t.Fatalf("recovered %s, want m1..m5 in order", s)
			}
			if err := next.Settle(ctx, got, connect.Ack); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func bodies(ms []connect.Message) []string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = string(m.Data)
	}
	return s
}

func TestStartErrors(t *testing.T) {
	srv := own(t)
	ctx := context.Background()
	c, _, err := connect.OpenSink(ctx, srv.URL+"?list=x", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if out, err := exec.Command("redis-cli", "-p", fmt.Sprint(srv.Port), "config", "set", "requirepass", "right").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	port, _ := brokertest.FreePort()
	connecttest.StartErrors(t, [][2]string{
		{fmt.Sprintf("redis://127.0.0.1:%d/0?list=q", port), fmt.Sprintf("redis redis://127.0.0.1:%d/0: cannot connect: connection refused", port)},
		{strings.Replace(srv.URL, "redis://", "redis://:secret@", 1) + "?list=q", "password refused"},
		{srv.URL + "?list=q", "password refused"},
	})
}

// redis-py reads what the sink wrote, from a list and from a stream.
func TestRedisPyReadsWhatWasWritten(t *testing.T) {
	if exec.Command(brokertest.Python(), "-c", "import redis").Run() != nil {
		brokertest.Unavailable(t, "python3-redis", errors.New("python3 cannot import redis"))
	}
	srv := brokertest.Redis(t)
	ctx := context.Background()
	for _, kind := range []string{"list", "stream"} {
		connecttest.Publish(t, ctx, srv.URL+"?"+kind+"=py-"+kind, 1, 3)
		out, err := exec.Command(brokertest.Python(), "testdata/consume.py", srv.URL, kind, "py-"+kind, "3").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if want := "m1\nm2\nm3\n"; !bytes.Equal(out, []byte(want)) {
			t.Fatalf("%s: redis-py read %q, want %q", kind, out, want)
		}
	}
}

// A Receive that blocked on an empty list and then took more than one
// message holds a slot for each: settling them all must not wait for
// slots it never had (a miscount here deadlocked a run).
func TestListSlotsAfterBlocking(t *testing.T) {
	srv := brokertest.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u := srv.URL + "?list=slots-after-blocking"
	src, _, err := connect.OpenSource(ctx, u+"&prefetch=3", nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := make(chan []connect.Message, 1)
	go func() {
		ms, _ := src.Receive(ctx, make([]connect.Message, 0, 3))
		got <- ms
	}()
	time.Sleep(100 * time.Millisecond) // let it block on the empty list
	connecttest.Publish(t, ctx, u, 1, 3)
	ms := <-got
	settled := make(chan error, 1)
	go func() { settled <- src.Settle(ctx, ms, connect.Ack) }()
	select {
	case err := <-settled:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatalf("Settle of %d messages hangs", len(ms))
	}
}

// A message that is there is handed on however long it takes to come
// over: the deadline of a Receive (--until-idle) bounds the wait for a
// message, not the transfer of a large one, which it used to cut, the
// message going back to the list and every run ending before it came.
func TestListLargeMessageOutlastsDeadline(t *testing.T) {
	srv := brokertest.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := srv.URL + "?list=large"
	big := publishLarge(t, ctx, u)
	receiveLarge(t, ctx, u+"&consumer=large", big)
}

// A large stream entry left pending by a run that stopped is read again
// at the next start however short its Receive's deadline: cut, it stayed
// pending, cut again at every start.
func TestStreamLargePendingOutlastsDeadline(t *testing.T) {
	srv := brokertest.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u := srv.URL + "?stream=large"
	big := publishLarge(t, ctx, u)
	first, _, err := connect.OpenSource(ctx, u+"&consumer=large", nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	connecttest.Take(t, ctx, first, 1)
	first.Close() // not settled: pending for consumer large
	receiveLarge(t, ctx, u+"&consumer=large", big)
}

// publishLarge publishes one message of 64 MiB to u and returns it.
func publishLarge(t *testing.T, ctx context.Context, u string) []byte {
	t.Helper()
	snk, _, err := connect.OpenSink(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer snk.Close()
	big := bytes.Repeat([]byte("x"), 64<<20)
	if err := snk.Write(ctx, []connect.Message{{Data: big}}); err != nil {
		t.Fatal(err)
	}
	if err := snk.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return big
}

// receiveLarge checks that a Receive from u whose deadline is far
// shorter than the transfer still hands on the large message, and acks it.
func receiveLarge(t *testing.T, ctx context.Context, u string, big []byte) {
	t.Helper()
	src, _, err := connect.OpenSource(ctx, u, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	rctx, rcancel := context.WithTimeout(ctx, time.Millisecond)
	got, err := src.Receive(rctx, make([]connect.Message, 0, 1))
	rcancel()
	if err != nil || len(got) != 1 || len(got[0].Data) != len(big) {
		t.Fatalf("Receive with a deadline shorter than the transfer: %d messages, %v; want the 64 MiB one", len(got), err)
	}
	if err := src.Settle(ctx, got, connect.Ack); err != nil {
		t.Fatal(err)
	}
}

// A key that holds another kind of value than the list or stream named
// is refused at start, input and output, naming it: the commands on it
// failed with WRONGTYPE and were retried for ever, the input as if Redis
// were away (a --until-idle run ended, exit 0), the output hanging.
func TestWrongTypeKey(t *testing.T) {
	srv := brokertest.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snk, _, err := connect.OpenSink(ctx, srv.URL+"?stream=wrongtype-stream", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snk.Write(ctx, []connect.Message{{Data: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if err := snk.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	snk.Close()
	connecttest.StartErrors(t, [][2]string{
		{srv.URL + "?list=wrongtype-stream", `key "wrongtype-stream" holds a stream, not a list`},
	})
	_, _, err = connect.OpenSink(ctx, srv.URL+"?list=wrongtype-stream", nil)
	var ce *connect.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), `key "wrongtype-stream" holds a stream, not a list`) {
		t.Fatalf("output: %v, want a *connect.Error naming the key and its type", err)
	}
}
