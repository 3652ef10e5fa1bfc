package redis_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
)

// cutter stands between a client and Redis. Armed, it swallows the next
// reply that carries a value (a RESP bulk string) and breaks the
// connection: what a Redis killed after it executed a command and before
// its reply went out looks like to the client. Connections made after
// that pass through.
type cutter struct {
	*proxy
	armed atomic.Bool
	cut   chan struct{} // closed once a reply was swallowed
	once  sync.Once
}

func newCutter(t *testing.T, to string) *cutter {
	c := &cutter{cut: make(chan struct{})}
	c.proxy = startProxy(t, to, func(p *proxy, client, server net.Conn) {
		p.spawn(func() { io.Copy(server, client); server.Close() })
		p.spawn(func() { c.replies(client, server); client.Close() })
	})
	return c
}

func (c *cutter) replies(client, server net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := server.Read(buf)
		if n > 0 {
			b := buf[:n]
			if c.armed.Load() && b[0] == '$' && !bytes.HasPrefix(b, []byte("$-1")) {
				c.armed.Store(false)
				c.once.Do(func() { close(c.cut) })
				server.Close()
				return
			}
			if _, err := client.Write(b); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A message moved to the processing list by a command whose reply was
// lost (Redis restarted, the connection broke) is handed on once Redis
// answers again, even when the queue is empty by then: the consumer
// blocked on the empty list for ever, the message sitting in its
// processing list until the process ended (a run restarted mid-way
// ended with 295 of 300).
func TestListReplyLostWhileIdle(t *testing.T) {
	srv := brokertest.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cut := newCutter(t, "127.0.0.1:"+strconv.Itoa(srv.Port))
	list := "reply-lost"
	direct := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(srv.Port)})
	defer direct.Close()
	direct.Del(ctx, list, list+":processing:c")
	u := "redis://" + cut.addr() + "/0?list=" + list + "&consumer=c"
	src, _, err := connect.OpenSource(ctx, u, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	type result struct {
		ms  []connect.Message
		err error
	}
	got := make(chan result, 1)
	go func() {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		ms, err := src.Receive(rctx, make([]connect.Message, 0, 1))
		got <- result{ms, err}
	}()
	time.Sleep(100 * time.Millisecond) // let it block on the empty list
	cut.armed.Store(true)
	if err := direct.RPush(ctx, list, "m1").Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-cut.cut:
	case <-ctx.Done():
		t.Fatal("the move's reply never came")
	}
	r := <-got
	if len(r.ms) != 1 || string(r.ms[0].Data) != "m1" {
		left, _ := direct.LRange(ctx, list+":processing:c", 0, -1).Result()
		t.Fatalf("Receive: %q, %v; want m1 (the processing list holds %q)", bodies(r.ms), r.err, left)
	}
	if err := src.Settle(ctx, r.ms, connect.Ack); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
