// Package connecttest is the test suite every broker connector passes:
// each message once, unsettled messages back in the queue after Close, a
// requeued message redelivered, and nothing lost across a broker restart.
package connecttest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
)

// Broker says how to reach one connector's queue for the suite.
type Broker struct {
	// URLs returns a source and a sink URL on server s for a queue of
	// its own: what the sink writes, the source reads.
	URLs func(s *brokertest.Server, name string) (in, out string)
	// Shared and Own return the package's server and one the test may
	// restart.
	Shared func(t testing.TB) *brokertest.Server
	Own    func(t testing.TB) *brokertest.Server
}

var seq atomic.Int64

func name(t *testing.T) string {
	return fmt.Sprintf("flowrun-test-%d-%d", time.Now().UnixNano()%1e9, seq.Add(1))
}

// Run runs the suite.
func Run(t *testing.T, b Broker) {
	t.Run("EveryMessageOnce", func(t *testing.T) { everyMessageOnce(t, b) })
	t.Run("UnsettledReturn", func(t *testing.T) { unsettledReturn(t, b) })
	t.Run("RejectedGone", func(t *testing.T) { rejectedGone(t, b) })
	t.Run("BrokerRestart", func(t *testing.T) { brokerRestart(t, b) })
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Publish writes n messages "m1".."mn" and flushes them.
func Publish(t *testing.T, ctx context.Context, out string, from, n int) {
	t.Helper()
	sink, _, err := connect.OpenSink(ctx, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	var msgs []connect.Message
	for i := from; i < from+n; i++ {
		msgs = append(msgs, connect.Message{Data: []byte("m" + strconv.Itoa(i)), ID: "id-" + strconv.Itoa(i)})
		if len(msgs) == 100 || i == from+n-1 {
			if err := sink.Write(ctx, msgs); err != nil {
				t.Fatal(err)
			}
			msgs = nil
		}
	}
	if err := sink.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// Take receives exactly n messages.
func Take(t *testing.T, ctx context.Context, src connect.Source, n int) []connect.Message {
	t.Helper()
	var got []connect.Message
	buf := make([]connect.Message, 0, 64)
	for len(got) < n {
		ms, err := src.Receive(ctx, buf[:0:min(64, n-len(got))])
		if err != nil {
			t.Fatalf("after %d of %d messages: %v", len(got), n, err)
		}
		for _, m := range ms {
			m.Data = slices.Clone(m.Data)
			got = append(got, m)
		}
	}
	return got
}

// Nothing checks that src has no message within a short wait.
func Nothing(t *testing.T, src connect.Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	ms, err := src.Receive(ctx, make([]connect.Message, 0, 8))
	if len(ms) > 0 {
		t.Fatalf("unexpected messages: %q", bodies(ms))
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Receive: %v, want a timeout", err)
	}
}

func bodies(ms []connect.Message) []string {
	s := make([]string, len(ms))
	for i, m := range ms {
		s[i] = string(m.Data)
	}
	return s
}

func open(t *testing.T, ctx context.Context, in string) connect.Source {
	t.Helper()
	src, _, err := connect.OpenSource(ctx, in, nil, 1000) // a prefetch above what the tests hold unsettled
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func everyMessageOnce(t *testing.T, b Broker) {
	ctx := timeout(t)
	in, out := b.URLs(b.Shared(t), name(t))
	const n = 500
	Publish(t, ctx, out, 1, n)
	src := open(t, ctx, in)
	got := Take(t, ctx, src, n)
	seen := map[string]bool{}
	for _, m := range got {
		if seen[string(m.Data)] {
			t.Fatalf("%s twice", m.Data)
		}
		seen[string(m.Data)] = true
	}
	// Settled in pieces and out of order, as workers finish them.
	for i := 0; i < len(got); i += 50 {
		piece := got[i:min(i+50, len(got))]
		if i%100 == 0 {
			slices.Reverse(piece)
		}
		if err := src.Settle(ctx, piece, connect.Ack); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	src = open(t, ctx, in)
	defer src.Close()
	Nothing(t, src)
}

// rejectedGone: a message settled as Reject (dead-lettered) is not
// redelivered, here or after a restart: it went to the broker's
// dead-letter place, or was dropped where there is none.
func rejectedGone(t *testing.T, b Broker) {
	ctx := timeout(t)
	in, out := b.URLs(b.Shared(t), name(t))
	Publish(t, ctx, out, 1, 6)
	src := open(t, ctx, in)
	got := Take(t, ctx, src, 6)
	if err := src.Settle(ctx, []connect.Message{got[1], got[4]}, connect.Reject); err != nil {
		t.Fatal(err)
	}
	if err := src.Settle(ctx, []connect.Message{got[0], got[2], got[3], got[5]}, connect.Ack); err != nil {
		t.Fatal(err)
	}
	Nothing(t, src)
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	src = open(t, ctx, in)
	defer src.Close()
	Nothing(t, src)
}

// unsettledReturn is a run that took some messages, failed on one, and
// stopped (take, Ctrl-C, a crash): what it acked is gone, the rest and
// the failing one are back in the queue.
func unsettledReturn(t *testing.T, b Broker) {
	ctx := timeout(t)
	in, out := b.URLs(b.Shared(t), name(t))
	const n, done = 40, 10
	Publish(t, ctx, out, 1, n)
	src := open(t, ctx, in)
	got := Take(t, ctx, src, 20) // more than done: the rest is "in flight"
	if err := src.Settle(ctx, got[:done], connect.Ack); err != nil {
		t.Fatal(err)
	}
	if err := src.Settle(ctx, got[done:done+1], connect.Requeue); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	src = open(t, ctx, in)
	defer src.Close()
	acked := map[string]bool{}
	for _, m := range got[:done] {
		acked[string(m.Data)] = true
	}
	want := map[string]bool{}
	for i := 1; i <= n; i++ {
		if m := "m" + strconv.Itoa(i); !acked[m] {
			want[m] = true
		}
	}
	// Every message not acked comes back; one that was in flight may
	// come twice (at least once), one that was acked never.
	buf := make([]connect.Message, 0, 64)
	for len(want) > 0 {
		ms, err := src.Receive(ctx, buf[:0])
		if err != nil {
			t.Fatalf("still missing %d: %v", len(want), err)
		}
		for _, m := range ms {
			if acked[string(m.Data)] {
				t.Fatalf("%s redelivered after its ack", m.Data)
			}
			delete(want, string(m.Data))
		}
		if err := src.Settle(ctx, ms, connect.Ack); err != nil {
			t.Fatal(err)
		}
	}
	Nothing(t, src)
}

// brokerRestart kills and restarts the broker between publishes and in
// the middle of consuming: the sink and the source reconnect and every
// message arrives at least once.
func brokerRestart(t *testing.T, b Broker) {
	ctx := timeout(t)
	srv := b.Own(t)
	in, out := b.URLs(srv, name(t))
	const n = 200
	sink, _, err := connect.OpenSink(ctx, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	// The sink declared the queue: a clean restart has the broker write
	// it down before the crashes (see brokertest.Server.CleanRestart).
	if err := srv.CleanRestart(); err != nil {
		t.Fatal(err)
	}
	ctx = timeout(t)
	write := func(from, to int) {
		for i := from; i <= to; i++ {
			if err := sink.Write(ctx, []connect.Message{{Data: []byte("m" + strconv.Itoa(i)), ID: "id-" + strconv.Itoa(i)}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := sink.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	write(1, n/2)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	ctx = timeout(t)
	write(n/2+1, n)

	src := open(t, ctx, in)
	defer src.Close()
	first := Take(t, ctx, src, n/4)
	if err := src.Settle(ctx, first, connect.Ack); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	for _, m := range first {
		acked[string(m.Data)] = true
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	ctx = timeout(t) // a RabbitMQ takes seconds to start: time from here
	seen := map[string]bool{}
	buf := make([]connect.Message, 0, 64)
	for len(seen)+len(acked) < n {
		ms, err := src.Receive(ctx, buf[:0])
		if err != nil {
			var miss []string
			for i := 1; i <= n; i++ {
				if m := "m" + strconv.Itoa(i); !seen[m] && !acked[m] {
					miss = append(miss, m)
				}
			}
			t.Fatalf("after the restart, %d of %d: %v; missing %v", len(seen)+len(acked), n, err, miss)
		}
		for _, m := range ms {
			// An ack the broker had not written down when it died
			// may be lost, so an acked message may come again: at
			// least once. What must not happen is a message missing.
			if !acked[string(m.Data)] {
				seen[string(m.Data)] = true
			}
		}
		if err := src.Settle(ctx, ms, connect.Ack); err != nil {
			t.Fatal(err)
		}
	}
}

// StartErrors opens each case's URL as a source ({url, want}) and checks
// that it fails at once with a *connect.Error whose message holds want:
// the broker, and why.
func StartErrors(t *testing.T, cases [][2]string) {
	t.Helper()
	for _, tc := range cases {
		url, want := tc[0], tc[1]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err := connect.OpenSource(ctx, url, nil, 1)
		cancel()
		var ce *connect.Error
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want a *connect.Error with %q", url, err, want)
		}
	}
}
