// Package redis is the Redis connector: a reliable list (each message
// moved to a processing list of the consumer's own, removed on ack,
// moved back if the consumer dies) or a stream with a consumer group
// (XREADGROUP, XACK, XAUTOCLAIM); as output, RPUSH/LPUSH or XADD.
package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowrun/flowrun/connect"
)

// quiet drops go-redis's own log lines: the connector reports what went
// wrong itself, naming the broker, and retries what it can.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

func init() {
	redis.SetLogger(quiet{})
	connect.Register(connect.Spec{
		Name:    "redis",
		Schemes: []string{"redis", "rediss"},
		URL:     "redis://[:pass@]host:6379/0?list=NAME",
		Doc: "A reliable list (BLMOVE to a processing list, LREM on ack, a dead consumer's list moved back) or a stream " +
			"with a consumer group (XREADGROUP, XACK, XAUTOCLAIM); as output RPUSH/LPUSH or XADD, durable once Redis replied when it runs with appendonly yes and appendfsync always. At least once. Redis has no dead-letter place: a message a stage dead-letters is removed like an acked one, once the dead-letter file holds it.",
		Options: []connect.Option{
			{Name: "list", Type: connect.String, Use: connect.Both, Doc: "The list: consumed from its head (as BLPOP), written at its tail."},
			{Name: "stream", Type: connect.String, Use: connect.Both, Doc: "The stream, instead of a list."},
			{Name: "group", Type: connect.String, Default: "flowrun", Use: connect.In, Doc: "The stream's consumer group, created if missing."},
			{Name: "consumer", Type: connect.String, Use: connect.In, Doc: "This consumer's name (default: the host's): its processing list, its stream consumer; a restart under the same name takes up what it left. Two flowruns reading one list at once need a name each: under one name each moves the other's unsettled messages back, and they are worked twice."},
			{Name: "claim_after", Type: connect.Duration, Default: "30s", Use: connect.In, Doc: "Take over another consumer's messages when it has been silent (list) or they have been pending (stream) this long."},
			{Name: "prefetch", Type: connect.Int, Use: connect.In, Doc: "Messages held unacked at most; default: the stages' workers in total, at least 256 (give the workers for slow records to be dealt out fairly among consumers)."},
			{Name: "field", Type: connect.String, Default: "data", Use: connect.Both, Doc: "The stream entry's field that holds the record."},
			{Name: "push", Type: connect.String, Default: "rpush", Enum: []string{"rpush", "lpush"}, Use: connect.Out, Doc: "How to add to the list."},
			{Name: "maxlen", Type: connect.Int, Use: connect.Out, Doc: "Trim the stream to about this many entries (XADD MAXLEN ~)."},
			{Name: "envelope", Type: connect.Bool, Default: "false", Use: connect.Both, Doc: "Records are JSON {body, list} or {body, stream, entry_id}, not the bare value; on output the body is taken."},
		},
		Check:  check,
		Source: openSource,
		Sink:   openSink,
	})
}

func check(p *connect.Params, d connect.Direction) error {
	list, stream := p.String("list"), p.String("stream")
	switch {
	case list == "" && stream == "":
		return &connect.OptionError{Connector: "redis", Option: "list", Reason: "give a list (redis://host/0?list=NAME) or a stream"}
	case list != "" && stream != "":
		return &connect.OptionError{Connector: "redis", Option: "stream", Reason: "give a list or a stream, not both"}
	}
	if _, err := redis.ParseURL(p.URL.String()); err != nil {
		return &connect.OptionError{Connector: "redis", Reason: err.Error()}
	}
	return nil
}

// dial connects and pings, so that a bad address or password is an error
// at start that names the broker.
func dial(ctx context.Context, p *connect.Params) (*redis.Client, error) {
	opt, err := redis.ParseURL(p.URL.String())
	if err != nil {
		return nil, &connect.OptionError{Connector: "redis", Reason: err.Error()}
	}
	opt.DialTimeout = connect.DialTimeout
	opt.MaxRetries = -1 // the connector retries, with backoff, and knows what is safe to
	opt.ClientName = "flowrun"
	opt.ContextTimeoutEnabled = true // an idle deadline ends a blocking BLMOVE
	if readTimeout != 0 {
		opt.ReadTimeout = readTimeout
	}
	c := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, connect.DialTimeout)
	defer cancel()
	if err := c.Ping(pctx).Err(); err != nil {
		c.Close()
		return nil, &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	return c, nil
}

// readTimeout, when set, replaces go-redis's read timeout (a test's
// short one: a command given up on, not yet run by Redis).
var readTimeout time.Duration

// checkType refuses a key that holds another kind of value than the
// list or stream named: every command on it fails with WRONGTYPE, which
// no retry mends.
func checkType(ctx context.Context, c *redis.Client, p *connect.Params) error {
	key, want := p.String("list"), "list"
	if key == "" {
		key, want = p.String("stream"), "stream"
	}
	tctx, cancel := context.WithTimeout(ctx, connect.DialTimeout)
	defer cancel()
	got, err := c.Type(tctx, key).Result()
	if err != nil {
		return &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	if got != "none" && got != want {
		return &connect.Error{Broker: p.Broker(), Reason: fmt.Sprintf("key %q holds a %s, not a %s", key, got, want)}
	}
	return nil
}

func reason(err error) string {
	var oe *net.OpError
	s := err.Error()
	switch {
	case errors.As(err, &oe) && oe.Op == "dial":
		return "cannot connect: " + strings.TrimPrefix(oe.Err.Error(), "connect: ")
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer within " + connect.DialTimeout.String()
	case strings.Contains(s, "WRONGPASS"), strings.Contains(s, "NOAUTH"), strings.Contains(s, "without any password"):
		return "password refused: " + s
	}
	return s
}

// slots bound the messages a source holds unsettled (its prefetch), so
// that several consumers of one queue share it fairly.
type slots chan struct{}

// take waits for one slot, then takes up to n-1 more without waiting.
func (s slots) take(ctx context.Context, n int) (int, error) {
	select {
	case s <- struct{}{}: // a free slot is taken even when ctx has ended
	default:
		select {
		case s <- struct{}{}:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	got := 1
	for got < n {
		select {
		case s <- struct{}{}:
			got++
			continue
		default:
		}
		break
	}
	return got, nil
}

func (s slots) give(n int) {
	for range n {
		<-s
	}
}

// retry runs op until it succeeds or ctx ends, waiting between attempts:
// an ack or a write must reach Redis, even across its restart.
func retry(ctx context.Context, broker string, op func() error) error {
	b := connect.DefaultBackoff()
	for {
		err := op()
		if err == nil || errors.Is(err, redis.Nil) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %s", broker, reason(err))
		}
		if !b.Wait(ctx) {
			return fmt.Errorf("%s: %s", broker, reason(err))
		}
	}
}

// consumer is the consumer's name: the option, or the host's name, so
// that a worker restarted on the same machine takes up what it left.
func consumer(p *connect.Params) string {
	if c := p.String("consumer"); c != "" {
		return c
	}
	if host, _ := os.Hostname(); host != "" {
		return host
	}
	return "flowrun"
}

func openSource(ctx context.Context, p *connect.Params) (connect.Source, error) {
	c, err := dial(ctx, p)
	if err != nil {
		return nil, err
	}
	if err := checkType(ctx, c, p); err != nil {
		c.Close()
		return nil, err
	}
	prefetch := p.Prefetch()
	var src connect.Source
	if p.String("list") != "" {
		src, err = newListSource(ctx, c, p, prefetch)
	} else {
		src, err = newStreamSource(ctx, c, p, prefetch)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return src, nil
}

// listSource is the reliable-queue pattern. Each message is moved
// atomically from the list's head to the tail of this consumer's
// processing list, and removed from there when it is settled. While it
// runs the consumer keeps a heartbeat key alive; a consumer whose
// heartbeat is gone is dead, and any consumer moves its processing list
// back to the head of the queue. A restart under the same consumer name
// moves back its own list at once.
type listSource struct {
	c                      *redis.Client
	p                      *connect.Params
	list, processing, beat string
	ttl                    time.Duration
	slots                  slots
	lastCheck              time.Time
	wrap                   bool // envelope

	// held counts the values handed on and not yet settled (heldN in
	// all). What the processing list holds beyond them was moved there
	// by a command whose reply was lost: reclaim puts it back. After a
	// connection error (lost) that is done at once; and since a command
	// the client gave up on (a read timeout, Redis slow under load) may
	// still run later, on a connection already dropped, an idle Receive
	// also compares the processing list's length with heldN.
	mu    sync.Mutex
	held  map[string]int
	heldN int
	lost  bool

	stop chan struct{}
	wg   sync.WaitGroup
}

const heartbeatEvery = time.Second

func newListSource(ctx context.Context, c *redis.Client, p *connect.Params, prefetch int) (*listSource, error) {
	list, consumer := p.String("list"), consumer(p)
	s := &listSource{
		c: c, p: p, list: list,
		processing: list + ":processing:" + consumer,
		beat:       list + ":alive:" + consumer,
		ttl:        max(p.Duration("claim_after"), 3*heartbeatEvery),
		slots:      make(slots, prefetch),
		wrap:       p.Bool("envelope"),
		held:       map[string]int{},
		stop:       make(chan struct{}),
	}
	if err := s.restore(ctx, s.processing); err != nil {
		return nil, &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	if err := c.Set(ctx, s.beat, "1", s.ttl).Err(); err != nil {
		return nil, &connect.Error{Broker: p.Broker(), Reason: reason(err), Err: err}
	}
	s.recoverDead(ctx)
	s.wg.Add(1)
	go s.heartbeat()
	return s, nil
}

func (s *listSource) heartbeat() {
	defer s.wg.Done()
	t := time.NewTicker(heartbeatEvery)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), heartbeatEvery)
			s.c.Set(ctx, s.beat, "1", s.ttl) // a miss is retried next tick
			cancel()
		}
	}
}

// restore moves a processing list back to the head of the queue, its
// oldest message first in line again.
func (s *listSource) restore(ctx context.Context, processing string) error {
	for {
		err := s.c.LMove(ctx, processing, s.list, "RIGHT", "LEFT").Err()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// recoverDead moves back the processing lists of consumers whose
// heartbeat has expired.
func (s *listSource) recoverDead(ctx context.Context) {
	s.lastCheck = time.Now()
	prefix := s.list + ":processing:"
	iter := s.c.Scan(ctx, 0, prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		key := iter.Val()
		consumer := strings.TrimPrefix(key, prefix)
		if key == s.processing {
			continue
		}
		n, err := s.c.Exists(ctx, s.list+":alive:"+consumer).Result()
		if err == nil && n == 0 {
			s.restore(ctx, key)
		}
	}
}

// blockFor bounds each blocking command, so that Receive notices ctx and
// a dead consumer's list is looked for while the queue is idle.
const blockFor = time.Second

func (s *listSource) Receive(ctx context.Context, buf []connect.Message) ([]connect.Message, error) {
	buf = buf[:0]
	n, err := s.slots.take(ctx, max(cap(buf), 1))
	if err != nil {
		return buf, err
	}
	defer func() {
		s.mu.Lock()
		for _, m := range buf {
			s.held[m.Token.(string)]++
		}
		s.heldN += len(buf)
		s.mu.Unlock()
		s.slots.give(n - len(buf))
	}()
	if s.lost {
		s.reclaim(ctx)
	}
	// While the queue has messages, one pipeline of LMOVEs takes what
	// the slots allow in one round trip; only an empty queue blocks. A
	// deadline (--until-idle's) bounds the wait for a message, not the
	// transfer of one that is there: cut, a large message went back to
	// the list, and every run ended before it came.
	mctx, stop := unlessCanceled(ctx)
	defer stop()
	if buf = s.moveSome(mctx, buf, n); len(buf) > 0 {
		return buf, nil
	}
	b := connect.DefaultBackoff()
	for {
		if time.Since(s.lastCheck) > s.ttl {
			s.recoverDead(ctx)
		}
		if s.lost || s.orphaned(ctx) {
			// What a command moved while its reply was lost goes back
			// before blocking: with the queue empty, no later Receive
			// would come to do it, and those messages sat in the
			// processing list until the process ended.
			s.reclaim(ctx)
		}
		v, err := s.c.BLMove(ctx, s.list, s.processing, "LEFT", "RIGHT", blockFor).Result()
		if err == nil {
			buf = append(buf, s.message(v))
			break
		}
		if ctx.Err() != nil {
			// A message moved as ctx ended has its reply lost: the
			// next Receive moves it back, or Close does.
			s.lost = true
			return buf, ctx.Err()
		}
		if errors.Is(err, redis.Nil) {
			continue
		}
		s.lost = true
		if !b.Wait(ctx) { // Redis is away: wait for it to come back
			return buf, ctx.Err()
		}
	}
	buf = s.moveSome(mctx, buf, n) // the deferred give counts what buf holds
	return buf, nil
}

// message is value v of the list as a record; its token is v, which
// LREM removes.
func (s *listSource) message(v string) connect.Message {
	if s.wrap {
		return connect.Message{Data: connect.Envelope{List: s.list}.Wrap([]byte(v)), Token: v}
	}
	return connect.Message{Data: []byte(v), Token: v}
}

// unlessCanceled returns a context that ends when ctx is canceled, but
// not when its deadline passes.
func unlessCanceled(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		if errors.Is(ctx.Err(), context.Canceled) {
			cancel()
		}
	})
	return c, func() { stop(); cancel() }
}

// moveSome moves up to n-len(buf) more messages without blocking.
func (s *listSource) moveSome(ctx context.Context, buf []connect.Message, n int) []connect.Message {
	if len(buf) >= n {
		return buf
	}
	cmds, _ := s.c.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for range n - len(buf) {
			pipe.LMove(ctx, s.list, s.processing, "LEFT", "RIGHT")
		}
		return nil
	})
	for _, c := range cmds {
		v, err := c.(*redis.StringCmd).Result()
		switch {
		case err == nil:
			buf = append(buf, s.message(v))
		case !errors.Is(err, redis.Nil):
			s.lost = true
		}
	}
	return buf
}

// reclaim moves back to the head of the queue what the processing list
// holds beyond the messages handed on: messages a command moved there
// while its reply was lost to a broken connection. Until it succeeds it
// is tried again at the next Receive.
func (s *listSource) reclaim(ctx context.Context) {
	// held is read before the list: a message settled in between is
	// then counted and not there, rather than there and not counted
	// (an orphan, moved back and handed on twice).
	s.mu.Lock()
	count := make(map[string]int, len(s.held))
	for v, k := range s.held {
		count[v] = k
	}
	s.mu.Unlock()
	vals, err := s.c.LRange(ctx, s.processing, 0, -1).Result()
	if err != nil {
		return
	}
	var orphans []string
	for _, v := range vals {
		if count[v] > 0 {
			count[v]--
		} else {
			orphans = append(orphans, v)
		}
	}
	_, err = s.c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		for i := len(orphans) - 1; i >= 0; i-- { // the oldest ends up first
			pipe.LRem(ctx, s.processing, -1, orphans[i])
			pipe.LPush(ctx, s.list, orphans[i])
		}
		return nil
	})
	if err == nil {
		s.lost = false
	}
}

// orphaned reports whether the processing list holds more than the
// messages handed on: a command given up on by the client ran after all.
// heldN is read first, so that a Settle in between makes the list look
// shorter, never longer.
func (s *listSource) orphaned(ctx context.Context) bool {
	s.mu.Lock()
	h := s.heldN
	s.mu.Unlock()
	n, err := s.c.LLen(ctx, s.processing).Result()
	return err == nil && n > int64(h)
}

func (s *listSource) Settle(ctx context.Context, msgs []connect.Message, o connect.Outcome) error {
	if len(msgs) == 0 {
		return nil
	}
	err := retry(ctx, s.p.Broker(), func() error {
		_, err := s.c.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
			for _, m := range msgs {
				v, _ := m.Token.(string)
				pipe.LRem(ctx, s.processing, 1, v)
				if o == connect.Requeue {
					pipe.LPush(ctx, s.list, v)
				}
			}
			return nil
		})
		return err
	})
	s.mu.Lock()
	for _, m := range msgs {
		v := m.Token.(string)
		switch k := s.held[v]; {
		case k > 1:
			s.held[v] = k - 1
			s.heldN--
		case k == 1:
			delete(s.held, v)
			s.heldN--
		}
	}
	s.mu.Unlock()
	s.slots.give(len(msgs))
	return err
}

func (s *listSource) Close() error {
	close(s.stop)
	s.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// What was taken and never settled goes back now; if this fails, the
	// next start (or another consumer, once the heartbeat expires) does it.
	err := s.restore(ctx, s.processing)
	s.c.Del(ctx, s.beat)
	s.c.Close()
	if err != nil {
		return fmt.Errorf("%s: moving unsettled messages back: %s", s.p.Broker(), reason(err))
	}
	return nil
}
