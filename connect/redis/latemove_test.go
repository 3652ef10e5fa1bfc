package redis_test

import (
	"bytes"
	"context"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
	"github.com/flowrun/flowrun/connect/redis"
)

// holder stands between a client and Redis. Armed, it holds back the
// next chunk of commands that moves a message (an LMOVE) until the
// client has given up on it and read its processing list (an LRANGE):
// only then does Redis run the moves, and only once they ran does the
// LRANGE's reply go out. That is a Redis too slow, under load, to answer
// within the client's read timeout: the command was sent, the client
// dropped the connection, and Redis ran it after all.
type holder struct {
	*proxy
	armed atomic.Bool
	held  chan held     // the moves held back, with their connection to Redis
	once  sync.Once     // closes ran
	ran   chan struct{} // closed once Redis replied to the held moves
}

type held struct {
	cmds   []byte
	server net.Conn
}

var (
	lmove  = []byte("$5\r\nlmove\r\n")
	lrange = []byte("$6\r\nlrange\r\n")
)

func newHolder(t *testing.T, to string) *holder {
	h := &holder{held: make(chan held, 1), ran: make(chan struct{})}
	h.proxy = startProxy(t, to, h.serve)
	return h
}

func (h *holder) serve(p *proxy, client, server net.Conn) {
	var holding, ranging atomic.Bool // this connection's moves are held; its LRANGE is on the way
	// The commands.
	p.spawn(func() {
		defer server.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := client.Read(buf)
			if n > 0 {
				b := slices.Clone(buf[:n])
				switch {
				case bytes.Contains(b, lmove) && h.armed.CompareAndSwap(true, false):
					holding.Store(true)
					h.held <- held{b, server}
					// The client gives up and closes; the moves wait for
					// the next LRANGE, then go, and Redis runs them.
					client.Read(make([]byte, 1))
					select {
					case <-h.ran:
					case <-time.After(10 * time.Second):
					}
					return
				case bytes.Contains(b, lrange) && len(h.held) == 1:
					ranging.Store(true)
				}
				if _, err := server.Write(b); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	// The replies.
	p.spawn(func() {
		defer client.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 && holding.Load() {
				h.once.Do(func() { close(h.ran) })
				continue // the client is gone
			}
			if n > 0 && ranging.CompareAndSwap(true, false) {
				// The LRANGE ran before the moves: send them now, on
				// their own connection, and pass on the LRANGE's
				// reply once Redis has run them.
				m := <-h.held
				m.server.Write(m.cmds)
				<-h.ran
			}
			if n > 0 {
				if _, err := client.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
}

// A move that Redis ran after the client had given up on it (no reply
// within the read timeout, the connection dropped) and after the source
// had looked for such moves in its processing list is still handed on:
// the messages sat in the processing list, unseen, until the process
// ended, and a run whose broker was slow under load ended with some of
// its messages not done (TestBrokerRestartMidRun/redis, 292 of 300).
func TestListMoveRunLate(t *testing.T) {
	srv := brokertest.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	h := newHolder(t, "127.0.0.1:"+strconv.Itoa(srv.Port))
	list := "move-run-late"
	direct := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + strconv.Itoa(srv.Port)})
	defer direct.Close()
	direct.Del(ctx, list, list+":processing:c")
	want := []string{"m1", "m2", "m3"}
	if err := direct.RPush(ctx, list, "m1", "m2", "m3").Err(); err != nil {
		t.Fatal(err)
	}
	redis.SetReadTimeout(300 * time.Millisecond)
	defer redis.SetReadTimeout(0)
	src, _, err := connect.OpenSource(ctx, "redis://"+h.addr()+"/0?list="+list+"&consumer=c", nil, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	h.armed.Store(true)
	// Receive has no deadline, as in a run: only its own blocking
	// rounds end, with nothing on the list.
	rctx, stop := context.WithCancel(ctx)
	came := make(chan []string)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]connect.Message, 0, 3)
		for {
			ms, err := src.Receive(rctx, buf[:0])
			if err != nil {
				return
			}
			src.Settle(ctx, ms, connect.Ack)
			select {
			case came <- bodies(ms):
			case <-rctx.Done():
				return
			}
		}
	}()
	var got []string
	timeout := time.After(8 * time.Second)
collect:
	for len(got) < len(want) {
		select {
		case b := <-came:
			got = append(got, b...)
		case <-timeout:
			break collect
		}
	}
	stop()
	wg.Wait()
	select {
	case <-h.ran:
	default:
		t.Fatal("the held moves never ran")
	}
	if slices.Sort(got); !slices.Equal(got, want) {
		left, _ := direct.LRange(ctx, list+":processing:c", 0, -1).Result()
		t.Fatalf("received %q, want %q (the processing list holds %q)", got, want, left)
	}
}
