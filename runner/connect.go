package runner

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/file"
	"github.com/flowrun/flowrun/internal/jsontext"
	"github.com/flowrun/flowrun/stages"
)

// IsBroker reports whether an input or output names a registered
// connector (amqp://, redis://, nats://) rather than a file (a path, or
// a file:// URL, which spec and the CLI turn into its path).
func IsBroker(s string) bool {
	sc := connect.Scheme(s)
	if sc == "" || sc == file.Scheme {
		return false
	}
	_, ok := connect.Lookup(sc)
	return ok
}

// settleTimeout bounds the last acks of a run that is ending: a broker
// that went away must not hold the run open.
const settleTimeout = 5 * time.Second

// acks carries "durable" from the output back to the broker input. The
// reader numbers each message and keeps it here; the writer, once what
// it made of input records lo..hi is written and flushed (or confirmed
// by an output broker), and the dead letters among them are flushed,
// settles them: one Settle per flush, so that the source can batch its
// acks. A message a record made of it was dead-lettered from is settled
// as Reject, not Ack: the source hands it to its broker's own
// dead-letter place where it has one (a RabbitMQ queue's dead-letter
// exchange, a JetStream Term), while the dead-letter file keeps why. A
// record at or after the one that failed the run, or after the one a
// take stopped at, is never acked: Close hands it back to the queue.
type acks struct {
	src connect.Source
	r   *run

	mu   sync.Mutex
	msgs map[uint64]connect.Message // received, not yet settled
	// dead are the received records that a record made of was written
	// to the dead-letter file.
	dead map[uint64]bool
	// ranges are input records whose results the writer has emitted,
	// to be settled at its next flush.
	ranges       [][2]uint64
	list, reject []connect.Message
	// settling counts the messages taken out of msgs to be settled,
	// until the source has settled them: while an fsync or the broker
	// is slow, they are still held.
	settling int
	// stopSeq is the record a stage stopped the input at (take's last),
	// 0 while none did.
	stopSeq atomic.Uint64
	// settled is when messages were last acked (UnixNano): the broker
	// hands over the next ones only after that.
	settled atomic.Int64
	// out is the output file, fsynced before the messages behind what
	// was written to it are settled: flushed is not durable, a power cut
	// would lose it after the broker forgot the messages. nil when the
	// output is not a regular file (a pipe, a terminal, a broker).
	out       *os.File
	outSynced int64 // r.out.Written() at the last fsync
}

// regularFile returns w when it is a regular file, which fsync makes
// durable, and nil otherwise (a pipe, a terminal: nothing to sync).
func regularFile(w any) *os.File {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	return f
}

// syncFile is (*os.File).Sync; a test sees through it when files are
// made durable.
var syncFile = (*os.File).Sync

// sync makes what the writer wrote and what went to the dead-letter
// file durable: one fsync of each that changed since the last, per
// settle batch.
func (a *acks) sync() error {
	if err := a.r.dl.sync(); err != nil {
		return err
	}
	if a.out == nil || a.r.out == nil || a.r.out.Written() == a.outSynced {
		return nil
	}
	if err := syncFile(a.out); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	a.outSynced = a.r.out.Written()
	return nil
}

func newAcks(src connect.Source, r *run) *acks {
	return &acks{src: src, r: r, msgs: map[uint64]connect.Message{}, dead: map[uint64]bool{}}
}

// deadLettered notes that a record made of input record seq went to the
// dead-letter file: its message is to be rejected, not acked.
func (a *acks) deadLettered(seq uint64) {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.dead[seq] = true
	a.mu.Unlock()
}

// busy reports whether the broker may be holding messages back for this
// consumer: some are received and not yet settled (the prefetch is full),
// or the last were acked less than idle ago.
func (a *acks) busy(idle time.Duration) bool {
	a.mu.Lock()
	n := len(a.msgs) + a.settling
	a.mu.Unlock()
	return n > 0 || time.Since(time.Unix(0, a.settled.Load())) < idle
}

// add keeps msgs, numbered from seq on, until they are settled.
func (a *acks) add(seq uint64, msgs []connect.Message) {
	a.mu.Lock()
	for i, m := range msgs {
		a.msgs[seq+uint64(i)] = m
	}
	a.mu.Unlock()
}

// origins appends to ids the id of the message each of recs came from,
// "" where it has none: one lock for a batch, not one per record.
func (a *acks) origins(recs []record, ids []string) []string {
	if a == nil {
		for range recs {
			ids = append(ids, "")
		}
		return ids
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, rec := range recs {
		ids = append(ids, a.msgs[rec.seq].ID)
	}
	return ids
}

// stopAt notes that a stage stopped the input at record seq: the records
// behind it that it filtered out were not processed, and go back.
func (a *acks) stopAt(seq uint64) {
	if a == nil {
		return
	}
	for {
		old := a.stopSeq.Load()
		if old != 0 && old <= seq || a.stopSeq.CompareAndSwap(old, seq) {
			return
		}
	}
}

// emitted notes that the writer has handed on the results of lo..hi.
func (a *acks) emitted(lo, hi uint64) {
	if a == nil || hi < lo {
		return
	}
	a.mu.Lock()
	a.ranges = append(a.ranges, [2]uint64{lo, hi})
	a.mu.Unlock()
}

// pending is how many ranges are emitted and not yet settled. A writer
// that flushes while it goes on emitting takes it before its flush, and
// settles only those: what was emitted after the flush began may not be
// durable yet.
func (a *acks) pending() int {
	if a == nil {
		return 0
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ranges)
}

// settle acks what was emitted, once it is durable: the dead letters
// among it are flushed and fsynced, and so is the output file.
func (a *acks) settle(ctx context.Context) error {
	return a.settleFirst(ctx, math.MaxInt)
}

// settleFirst acks the first n ranges emitted (all of them, if fewer),
// now that they are durable. It is called from one goroutine at a time.
func (a *acks) settleFirst(ctx context.Context, n int) error {
	if a == nil {
		return nil
	}
	if err := a.r.dl.flush(); err != nil {
		return err
	}
	fail, stop := a.r.failSeq.Load(), a.stopSeq.Load()
	a.mu.Lock()
	n = min(n, len(a.ranges))
	a.list, a.reject = a.list[:0], a.reject[:0]
	for _, rg := range a.ranges[:n] {
		for seq := rg[0]; seq <= rg[1]; seq++ {
			if fail != 0 && seq >= fail || stop != 0 && seq > stop {
				continue // not done: back to the queue at Close
			}
			if m, ok := a.msgs[seq]; ok {
				if a.dead[seq] {
					a.reject = append(a.reject, m)
					delete(a.dead, seq)
				} else {
					a.list = append(a.list, m)
				}
				delete(a.msgs, seq)
			}
		}
	}
	a.ranges = a.ranges[:copy(a.ranges, a.ranges[n:])]
	list, reject := a.list, a.reject
	a.settling = len(list) + len(reject)
	a.mu.Unlock()
	if len(list) == 0 && len(reject) == 0 {
		return nil
	}
	defer func() {
		a.settled.Store(time.Now().UnixNano())
		a.mu.Lock()
		a.settling = 0
		a.mu.Unlock()
	}()
	if err := a.sync(); err != nil {
		return err // not settled: back to the queue at Close
	}
	if len(list) > 0 {
		if err := a.src.Settle(ctx, list, connect.Ack); err != nil {
			return fmt.Errorf("input: %w", err)
		}
	}
	if len(reject) > 0 {
		if err := a.src.Settle(ctx, reject, connect.Reject); err != nil {
			return fmt.Errorf("input: %w", err)
		}
	}
	return nil
}

// settleNow settles what was emitted with a context of its own, for a
// writer whose run is being aborted: what it made durable is acked, so
// that it is not done twice.
func (a *acks) settleNow() {
	if a == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	a.settle(ctx)
}

// rejectDead settles as Reject the messages whose records went to the
// dead-letter file but that no flush settled: those read past a take's
// or a failure's cut. Their dead letters are written; handed back to the
// queue, they would be dead-lettered again by the next run, and the file
// would hold them twice. The message that failed the run stays: the
// queue keeps it, as a failed run's failing message always is kept.
// It is called once the stages are done, before the dead-letter file is
// closed.
func (a *acks) rejectDead() error {
	if a == nil {
		return nil
	}
	fail := a.r.failSeq.Load()
	a.mu.Lock()
	var reject []connect.Message
	for seq := range a.dead {
		if m, ok := a.msgs[seq]; ok && seq != fail {
			reject = append(reject, m)
			delete(a.msgs, seq)
		}
		delete(a.dead, seq)
	}
	a.mu.Unlock()
	if len(reject) == 0 {
		return nil
	}
	if err := a.r.dl.sync(); err != nil {
		return err // not settled: back to the queue at Close
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	if err := a.src.Settle(ctx, reject, connect.Reject); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	return nil
}

// finish lets go of the source, which hands back every message never
// settled: those a failure, a take or a stop left, and those read ahead.
func (a *acks) finish() error {
	if a == nil {
		return nil
	}
	if err := a.src.Close(); err != nil {
		return fmt.Errorf("input: %w", err)
	}
	return nil
}

// readSource feeds q0 from a broker: each message is a record. With
// Options.UntilIdle, a wait that long for a message, with none in flight
// and none acked meanwhile, is the end of input (a broker hands over no
// more than the prefetch unacked, so a wait while the stages or the
// output hold them says nothing about the queue); without, only a stop
// ends it.
func (r *run) readSource(readCtx, ctx context.Context, q0 chan<- batch) error {
	buf := make([]connect.Message, 0, maxBatch)
	var seq uint64
	idle := r.opts.UntilIdle
	for {
		rctx, cancel := readCtx, context.CancelFunc(func() {})
		if idle > 0 {
			rctx, cancel = context.WithTimeout(readCtx, idle)
		}
		msgs, err := r.acks.src.Receive(rctx, buf[:0])
		cancel()
		if err != nil {
			switch {
			case ctx.Err() != nil:
				return ctx.Err()
			case readCtx.Err() != nil:
				return nil // stopped
			case idle > 0 && errors.Is(err, context.DeadlineExceeded) && r.acks.busy(idle):
				continue // the prefetch is held: wait for its acks
			case idle > 0 && errors.Is(err, context.DeadlineExceeded):
				return nil // idle: the queue is drained
			}
			return fmt.Errorf("input: %w", err)
		}
		items := getItems()
		r.acks.add(seq+1, msgs)
		for _, m := range msgs {
			seq++
			it := item{Data: m.Data, Line: int64(seq)}
			if r.p.Input.Format == "jsonl" && !jsontext.Valid(m.Data) {
				it.Err = fmt.Errorf("message %d: not valid JSON", seq)
			}
			items = append(items, it)
		}
		r.input.decoded.Add(int64(len(items)))
		c := chunk{items: items, lo: seq - uint64(len(items)) + 1, hi: seq}
		if err := r.deliver(readCtx, ctx, c, q0); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if readCtx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// maxUnconfirmed bounds the messages an output broker has been sent and
// has not yet confirmed: the writer waits for confirms beyond it. (With a
// broker input its prefetch is the tighter bound.)
const maxUnconfirmed = 4 * maxBatch

// writeBroker drains the last queue into an output broker, in input
// order when the run is ordered. It sends what it has whenever no batch
// is waiting, and goes on with the next batches while a confirmer
// goroutine waits for the broker's confirms (Flush) and only then
// settles the input records whose results those were: publishing and
// confirming overlap, as a broker's async confirms are meant to be used,
// instead of the run waiting a round trip (and the broker's fsync) for
// every few records.
func (r *run) writeBroker(ctx context.Context, in <-chan batch, snk connect.Sink) error {
	var msgs []connect.Message
	var ranges [][2]uint64 // the input records behind msgs
	var ids []string
	jsonl := r.p.Output.Format == "jsonl"
	emit := func(b batch) error {
		recs := b.recs
		if f := r.failSeq.Load(); f != 0 {
			recs = before(recs, f)
		}
		ids = r.acks.origins(recs, ids[:0])
		k, last := 0, uint64(0)
		for i, rec := range recs {
			data := rec.data
			if jsonl && !jsontext.Valid(data) {
				data = stages.AppendJSONString(nil, data)
			}
			if rec.seq != last {
				k, last = 0, rec.seq
			}
			k++
			id := ids[i]
			if id != "" {
				id += "/" + strconv.Itoa(k) // the k-th record made of that message
			}
			msgs = append(msgs, connect.Message{Data: data, ID: id})
		}
		clear(ids)
		r.written.Add(int64(len(recs)))
		if b.hi >= b.lo {
			ranges = append(ranges, [2]uint64{b.lo, b.hi})
		}
		b.release()
		putRecords(b.recs)
		return nil
	}
	c := newConfirmer(ctx, r.acks, snk)
	defer c.stop()
	// send hands msgs to the sink and their input records to the
	// confirmer. Only once Write has returned are the records emitted,
	// so that a Flush the confirmer begins later covers them.
	send := func(ctx context.Context) error {
		if len(msgs) > 0 {
			if err := snk.Write(ctx, msgs); err != nil {
				return fmt.Errorf("output: %w", err)
			}
		}
		for _, rg := range ranges {
			r.acks.emitted(rg[0], rg[1])
		}
		ranges = ranges[:0]
		n := len(msgs)
		clear(msgs)
		msgs = msgs[:0]
		return c.sent(ctx, n)
	}
	var ro *reorder
	if r.ordered {
		ro = newReorderAt(1)
	}
	for {
		select {
		case b, ok := <-in:
			if !ok {
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				if ro != nil {
					if err := ro.drain(emit); err != nil {
						return err
					}
				}
				if err := send(ctx); err != nil {
					return err
				}
				return c.finish()
			}
			var err error
			if ro != nil {
				err = ro.push(b, emit)
			} else {
				err = emit(b)
			}
			if err != nil {
				return err
			}
			if len(in) == 0 || len(msgs) >= maxBatch {
				if err := send(ctx); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			// Aborted: publish and confirm what was made, briefly, so
			// that its input is acked rather than done twice.
			fctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
			defer cancel()
			if send(fctx) == nil {
				c.finish()
			}
			return context.Cause(ctx)
		}
	}
}

// confirmer waits for an output broker's confirms in a goroutine of its
// own and settles the input behind them. The writer tells it how many
// messages it sent (sent); it flushes the sink, which returns once those
// and any sent meanwhile are durable, and settles the ranges that were
// emitted before that flush began. Its context outlives the run's by
// settleTimeout, so that an aborted run still acks what it made durable.
type confirmer struct {
	acks *acks
	snk  connect.Sink

	ctx    context.Context
	cancel context.CancelFunc
	later  func() bool // stops the AfterFunc that cancels ctx

	kick chan struct{} // cap 1: something was sent
	done chan struct{} // closed when the goroutine has returned
	err  error         // its error, once done is closed

	sentN      atomic.Int64  // messages sent
	confirmedN atomic.Int64  // of those, confirmed
	progress   chan struct{} // cap 1: confirmedN moved
	closeOnce  sync.Once
}

func newConfirmer(ctx context.Context, a *acks, snk connect.Sink) *confirmer {
	c := &confirmer{acks: a, snk: snk, kick: make(chan struct{}, 1), done: make(chan struct{}), progress: make(chan struct{}, 1)}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	var timer *time.Timer
	var mu sync.Mutex
	stopAfter := context.AfterFunc(ctx, func() {
		mu.Lock()
		timer = time.AfterFunc(settleTimeout, c.cancel)
		mu.Unlock()
	})
	c.later = func() bool {
		stopAfter()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		return true
	}
	go c.run()
	return c
}

func (c *confirmer) run() {
	defer close(c.done)
	for {
		_, more := <-c.kick
		if err := c.confirm(); err != nil {
			c.err = err
			return
		}
		if !more {
			return
		}
	}
}

// confirm flushes the sink and settles what it covers.
func (c *confirmer) confirm() error {
	n, sent := c.acks.pending(), c.sentN.Load()
	if err := c.snk.Flush(c.ctx); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	c.confirmedN.Store(sent)
	select {
	case c.progress <- struct{}{}:
	default:
	}
	return c.acks.settleFirst(c.ctx, n)
}

// sent tells the confirmer that n more messages went out, and waits
// while more than maxUnconfirmed are not confirmed. It returns the
// confirmer's error if it failed.
func (c *confirmer) sent(ctx context.Context, n int) error {
	s := c.sentN.Add(int64(n))
	select {
	case c.kick <- struct{}{}:
	default: // a flush is due already; it will cover these
	}
	for s-c.confirmedN.Load() > maxUnconfirmed {
		select {
		case <-c.progress:
		case <-c.done:
			return c.err
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	select {
	case <-c.done:
		return c.err
	default:
	}
	return nil
}

// finish waits for the last confirms and settles, and returns the
// confirmer's error.
func (c *confirmer) finish() error {
	c.closeOnce.Do(func() { close(c.kick) })
	<-c.done
	return c.err
}

// stop ends the confirmer without waiting for confirms: the run failed
// before anything more could be made durable.
func (c *confirmer) stop() {
	c.closeOnce.Do(func() { close(c.kick) })
	c.cancel()
	<-c.done
	c.later()
}

// openSource connects the broker input; its default prefetch comes from
// the stages' workers in total (connect.DefaultPrefetch).
func (r *run) openSource(ctx context.Context, from string) error {
	workers := 0
	for _, s := range r.p.Stages {
		workers += s.Workers
	}
	src, _, err := connect.OpenSource(ctx, from, r.p.Input.With, workers)
	if err != nil {
		return &SetupError{fmt.Errorf("input: %w", err)}
	}
	r.acks = newAcks(src, r)
	return nil
}

// brokerName is a broker URL for messages: its password masked, its
// query dropped.
func brokerName(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return connect.Redact(u)
	}
	return connect.Scheme(raw) + "://…"
}
