package runner

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/flowrun/flowrun/spec"
)

// A Remote runs some of a run's stages somewhere else: the transport
// package puts their queues in NATS JetStream, where workers on any
// machine take them. The runner keeps everything around a remote stage —
// the input, the output and its order, dead letters, a failure's cut,
// the stages that hold records, the counts — and only hands the stage's
// input batches to the Remote and takes their results back, in any order.
type Remote interface {
	// Open makes the queues of the stages given, before any record moves;
	// an error fails the run as a SetupError (exit 2).
	Open(ctx context.Context, remote []spec.Stage) (map[string]StageQueue, error)
}

// A StageQueue is the queue in front of one remote stage and the way
// back of its results.
type StageQueue interface {
	// Send hands a piece of the stage's input, numbered by the runner
	// from 1, to the stage's workers. It may block (backpressure); it
	// must not keep w.Recs' memory after it returns.
	Send(ctx context.Context, w Work) error
	// Next waits for the results of a piece sent. A piece's results may
	// come more than once (a worker died after publishing them): the
	// runner takes the first and acks the others.
	Next(ctx context.Context) (Done, error)
	// MaxBytes is the most bytes of records one Work may carry.
	MaxBytes() int
}

// Record is a record with the number of the input record it came from.
type Record struct {
	Data []byte
	Seq  uint64
}

// Work is a piece of a stage's input.
type Work struct {
	N    uint64
	Recs []Record
}

// Done is what a stage made of a Work: its records, the records that went
// to dead letters, a record that failed the run, and the counts.
type Done struct {
	N    uint64
	Recs []Record
	Dead []Dead
	// Fail is the record that failed the stage under on_error: fail.
	Fail   *RecordError
	Counts Counts
	// Ack, when set, is called once the results are handed on to the
	// next stage.
	Ack func()
}

// Dead is a dead letter made on a worker, for the run to write.
type Dead struct {
	Letter DeadLetter // with no record: Data is it
	Data   []byte
}

// Counts are a stage's counters for one Work.
type Counts struct {
	In, Out, Errors, Retries, Skipped, Dead int64
	Busy                                    time.Duration
	// Redelivered counts deliveries of Works after their first (a worker
	// died or outlived its ack wait); a Done with N 0 only counts.
	Redelivered int64
}

// IsRemote says whether stage s may run on a remote worker: a stage that
// holds records or must see them all runs in the run process.
func IsRemote(s spec.Stage) bool { return !s.Spec.IsLocal(s.Config) }

// openRemote opens the queues of the stages that run remotely.
func (r *run) openRemote(ctx context.Context) error {
	if r.opts.Remote == nil {
		return nil
	}
	var remote []spec.Stage
	for _, st := range r.stages {
		if st.queue == nil && st.remote {
			remote = append(remote, st.cfg)
		}
	}
	if len(remote) == 0 {
		return nil
	}
	qs, err := r.opts.Remote.Open(ctx, remote)
	if err != nil {
		return &SetupError{err}
	}
	for _, st := range r.stages {
		if st.remote {
			if st.queue = qs[st.cfg.Name]; st.queue == nil {
				return &SetupError{fmt.Errorf("stage %q: no queue for it on the broker", st.cfg.Name)}
			}
		}
	}
	return nil
}

// pending is a piece of a remote stage's input that awaits its results.
type pending struct {
	b batch // the range, part and tokens; not the records
}

// remote runs a stage through its queue: one goroutine sends the stage's
// input batches, another takes their results and passes them on. The
// stage's output queue closes (by the caller) once the input has ended
// and every piece sent has its results, or, after a failure, every piece
// of records before the failing one.
func (r *run) remote(ctx context.Context, st *stageRun) error {
	q := st.queue
	var (
		mu      sync.Mutex
		waiting = map[uint64]pending{}
		ended   bool // the stage's input has closed
	)
	// complete says whether no result is wanted any more; under mu.
	complete := func() bool {
		if !ended {
			return false
		}
		f := r.failSeq.Load()
		for _, p := range waiting {
			if f == 0 || p.b.lo < f {
				return false
			}
		}
		return true
	}
	g, gctx := errgroup.WithContext(ctx)
	recvCtx, stopRecv := context.WithCancel(gctx)
	defer stopRecv()
	out := func(b batch) error {
		ok := split(b, st.nextTake, func(p batch) bool {
			select {
			case st.out <- p:
				return true
			case <-gctx.Done():
				return false
			}
		})
		if !ok {
			return context.Cause(gctx)
		}
		return nil
	}
	g.Go(func() error {
		var n uint64
		limit := q.MaxBytes()
		for {
			var b batch
			var ok bool
			select {
			case b, ok = <-st.in:
			case <-gctx.Done():
				return context.Cause(gctx)
			}
			if !ok {
				break
			}
			if f := r.failSeq.Load(); f != 0 && b.hi >= f {
				if b.lo >= f {
					b.release()
					continue
				}
				b.recs = before(b.recs, f)
			}
			if b.from > st.index || len(b.recs) == 0 {
				// Not for this stage, or nothing in it: the range goes
				// on as it is, for the writer's order.
				if err := out(b); err != nil {
					return err
				}
				continue
			}
			var err error
			splitBytes(b, limit, func(p batch) bool {
				n++
				recs := make([]Record, len(p.recs))
				for i, rec := range p.recs {
					if len(rec.data) > limit {
						err = &RecordError{Stage: st.cfg.Name, Seq: rec.seq, Record: rec.data, Attempts: 0,
							Err: fmt.Errorf("a record of %d bytes is more than the broker takes in a message (%d bytes)", len(rec.data), limit)}
						return false
					}
					recs[i] = Record{Data: rec.data, Seq: rec.seq}
				}
				p.recs = nil
				mu.Lock()
				waiting[n] = pending{b: p}
				mu.Unlock()
				if err = q.Send(gctx, Work{N: n, Recs: recs}); err != nil {
					return false
				}
				return true
			})
			if err != nil {
				var re *RecordError
				if errors.As(err, &re) {
					r.failAt(re.Seq, err)
					continue
				}
				return err
			}
		}
		mu.Lock()
		ended = true
		if complete() {
			stopRecv()
		}
		mu.Unlock()
		return nil
	})
	g.Go(func() error {
		for {
			d, err := q.Next(recvCtx)
			if err != nil {
				if recvCtx.Err() != nil && gctx.Err() == nil {
					break // every result is in
				}
				return err
			}
			mu.Lock()
			p, ok := waiting[d.N]
			delete(waiting, d.N)
			mu.Unlock()
			if !ok { // a second delivery of results already taken
				st.c.redelivered.Add(d.Counts.Redelivered)
				if d.Ack != nil {
					d.Ack()
				}
				continue
			}
			if err := r.settle(st, p.b, d, out); err != nil {
				return err
			}
			if d.Ack != nil {
				d.Ack()
			}
			mu.Lock()
			done := complete()
			mu.Unlock()
			if done {
				break
			}
		}
		// What is still waiting comes after a failure: let its tokens go.
		mu.Lock()
		for n, p := range waiting {
			p.b.release()
			delete(waiting, n)
		}
		mu.Unlock()
		return nil
	})
	return g.Wait()
}

// settle counts what a remote stage did with a piece, writes its dead
// letters, fails the run at its failing record, and passes its records on
// in the piece's range.
func (r *run) settle(st *stageRun, b batch, d Done, out func(batch) error) error {
	c := &st.c
	n := d.Counts
	c.in.Add(n.In)
	c.out.Add(n.Out)
	c.errors.Add(n.Errors)
	c.retries.Add(n.Retries)
	c.skipped.Add(n.Skipped)
	c.dead.Add(n.Dead)
	c.redelivered.Add(n.Redelivered)
	c.busyNanos.Add(int64(n.Busy))
	if n.In > 0 {
		c.hist.add(n.Busy/time.Duration(n.In), n.In)
	}
	for _, dl := range d.Dead {
		if err := r.dl.writeEntry(dl.Letter, dl.Data); err != nil {
			return err
		}
	}
	recs := getRecords()
	for _, rec := range d.Recs {
		recs = append(recs, record{data: rec.Data, seq: rec.Seq})
	}
	if d.Fail != nil {
		r.failAt(d.Fail.Seq, d.Fail)
		recs = before(recs, d.Fail.Seq)
	}
	b.recs = recs
	return out(b)
}

// splitBytes cuts b into pieces of at most limit bytes of records whose
// ranges tile lo..hi, cutting only between input records as split does; a
// piece of one input record may be larger.
func splitBytes(b batch, limit int, send func(batch) bool) bool {
	size := 0
	for _, rec := range b.recs {
		size += len(rec.data) + 16
	}
	if size <= limit {
		return send(b)
	}
	lo, start := b.lo, 0
	for start < len(b.recs) {
		j, size := start, 0
		for j < len(b.recs) && (j == start || size+len(b.recs[j].data)+16 <= limit || b.recs[j].seq == b.recs[j-1].seq) {
			size += len(b.recs[j].data) + 16
			j++
		}
		hi := b.hi
		if j < len(b.recs) {
			hi = b.recs[j].seq - 1
		}
		piece := batch{lo: lo, hi: hi, recs: b.recs[start:j:j], from: b.from, sem: b.sem, part: b.part}
		piece.tokens = min(piece.size(), b.tokens)
		if j == len(b.recs) {
			piece.tokens = b.tokens
		}
		b.tokens -= piece.tokens
		if !send(piece) {
			return false
		}
		lo, start = hi+1, j
	}
	return true
}
