package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/file"
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
	outSynced int64 // r.out.bytes at the last fsync
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
	if a.out == nil || a.r.out == nil || a.r.out.bytes == a.outSynced {
		return nil
	}
	if err := syncFile(a.out); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	a.outSynced = a.r.out.bytes
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

func (a *acks) add(seq uint64, m connect.Message) {
	a.mu.Lock()
	a.msgs[seq] = m
	a.mu.Unlock()
}

// origin is the id of the message input record seq came from, "" when
// it has none.
func (a *acks) origin(seq uint64) string {
	if a == nil {
		return ""
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.msgs[seq].ID
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

// settle acks what was emitted, once it is durable: the dead letters
// among it are flushed and fsynced, and so is the output file.
func (a *acks) settle(ctx context.Context) error {
	if a == nil {
		return nil
	}
	if err := a.r.dl.flush(); err != nil {
		return err
	}
	fail, stop := a.r.failSeq.Load(), a.stopSeq.Load()
	a.mu.Lock()
	a.list, a.reject = a.list[:0], a.reject[:0]
	for _, rg := range a.ranges {
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
	a.ranges = a.ranges[:0]
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
		for _, m := range msgs {
			seq++
			r.acks.add(seq, m)
			it := item{Data: m.Data, Line: int64(seq)}
			if r.p.Input.Format == "jsonl" && !json.Valid(m.Data) {
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

// writeBroker drains the last queue into an output broker, in input
// order when the run is ordered. It publishes what it has whenever no
// batch is waiting and waits for the broker's confirms (Flush); only then
// are the input records behind it settled.
func (r *run) writeBroker(ctx context.Context, in <-chan batch, snk connect.Sink) error {
	var msgs []connect.Message
	jsonl := r.p.Output.Format == "jsonl"
	emit := func(b batch) error {
		recs := b.recs
		if f := r.failSeq.Load(); f != 0 {
			recs = before(recs, f)
		}
		k, last := 0, uint64(0)
		for _, rec := range recs {
			data := rec.data
			if jsonl && !json.Valid(data) {
				data = stages.AppendJSONString(nil, data)
			}
			if rec.seq != last {
				k, last = 0, rec.seq
			}
			k++
			id := ""
			if o := r.acks.origin(rec.seq); o != "" {
				id = o + "/" + strconv.Itoa(k) // the k-th record made of that message
			}
			msgs = append(msgs, connect.Message{Data: data, ID: id})
		}
		r.written.Add(int64(len(recs)))
		r.acks.emitted(b.lo, b.hi)
		b.release()
		putRecords(b.recs)
		return nil
	}
	flush := func(ctx context.Context) error {
		if len(msgs) > 0 {
			if err := snk.Write(ctx, msgs); err != nil {
				return fmt.Errorf("output: %w", err)
			}
		}
		if err := snk.Flush(ctx); err != nil {
			return fmt.Errorf("output: %w", err)
		}
		clear(msgs)
		msgs = msgs[:0]
		return r.acks.settle(ctx)
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
				return flush(ctx)
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
				if err := flush(ctx); err != nil {
					return err
				}
			}
		case <-ctx.Done():
			// Aborted: publish and confirm what was made, briefly, so
			// that its input is acked rather than done twice.
			fctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
			defer cancel()
			flush(fctx)
			return context.Cause(ctx)
		}
	}
}

// openSource connects the broker input, its prefetch the stages'
// workers in total so that the broker's fair dispatch holds.
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
