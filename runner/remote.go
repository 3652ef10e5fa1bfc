package runner

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
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

// A Cutter is a StageQueue that says where pieces must be cut: a resumed
// run's, whose dead run left pieces on the broker that are known by their
// first and last record, and are taken up only when the resumed run cuts
// the same.
type Cutter interface {
	// Cut says how far a piece whose first record is seq may reach: to
	// hi at most (0: no bound), and exactly to hi when whole (a piece
	// left begins at seq).
	Cut(seq uint64) (hi uint64, whole bool)
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

// pending is a piece of a remote stage's input that awaits its results:
// the batches it gathered, with their ranges, parts and tokens but not
// their records.
type pending struct {
	bs   []batch
	recs int // sent
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
			if f == 0 || p.bs[0].lo < f {
				return false
			}
		}
		return true
	}
	g, gctx := errgroup.WithContext(ctx)
	recvCtx, stopRecv := context.WithCancel(gctx)
	defer stopRecv()
	out := func(b batch) error {
		left := len(b.recs)
		ok := split(b, st.nextTake, func(p batch) bool {
			select {
			case st.out <- p:
				left -= len(p.recs)
				return true
			case <-gctx.Done():
				return false
			}
		})
		if !ok {
			// Aborted: counted out of the stage, not handed on.
			r.dropped.Add(int64(left))
			return context.Cause(gctx)
		}
		return nil
	}
	// A piece gathers the batches at hand: after a stage that waits, the
	// batches are of one record, and each piece costs a few messages
	// through the broker. A cheap stage's gather up to maxBatch records;
	// those of a stage that waits (one record a batch) as many as take
	// pieceWork to work, by the time its records took lately: one each
	// until the first results tell, so that long records are dealt out
	// one at a time to whichever worker is idle.
	batched := st.cfg.Spec.Batched(st.cfg.Config)
	var perRecord atomic.Int64 // ns a record took lately; 0: not known yet
	most := func() int {
		if batched {
			return maxBatch
		}
		return piecesOf(time.Duration(perRecord.Load()))
	}
	cutter, _ := q.(Cutter)
	// Until the first results tell how long a record takes, pieces of one
	// record go out, as many as probePieces or the stage's slots on the
	// workers if more: were many more sent, the records on the broker
	// would have been dealt out one at a time however quick they are;
	// were fewer, a stage of long records would start with idle workers.
	// Then the stage waits for those results, however long they take:
	// waiting no longer than a while, a run whose workers came late (or
	// were slow to start on a loaded machine) dealt out its input one
	// record a piece before any result came.
	known := make(chan struct{}) // closed at the first results
	probe := func() error {
		for {
			select {
			case <-known:
				return nil
			default:
			}
			if batched || perRecord.Load() != 0 {
				return nil
			}
			mu.Lock()
			n := len(waiting)
			mu.Unlock()
			if n < max(probePieces, r.slotsOf(st.cfg.Name)) {
				return nil
			}
			// Workers that join while it waits may have slots for more.
			t := time.NewTimer(probeLook)
			select {
			case <-known:
			case <-t.C:
			case <-gctx.Done():
				t.Stop()
				return context.Cause(gctx)
			}
			t.Stop()
		}
	}
	g.Go(func() (err error) {
		var n uint64
		limit := q.MaxBytes()
		largest := limit // the largest record a piece may hold alone
		if s, ok := q.(recordLimiter); ok {
			largest = s.MaxRecordBytes()
		}
		var carry *batch  // taken while gathering, not gathered
		var group []batch // gathered, not sent
		defer func() {
			if err == nil {
				return
			}
			// Aborted: what it holds was never sent, and is in no other
			// count.
			if carry != nil {
				group = append(group, *carry)
			}
			for _, b := range group {
				st.c.unsent.Add(int64(len(b.recs)))
			}
		}()
		send := func(group []batch) error {
			var recs []Record
			var cut uint64 // a record too large failed the run: none from it on
			for _, p := range group {
				for _, rec := range p.recs {
					if cut != 0 && rec.seq >= cut {
						continue
					}
					if len(rec.data) <= largest {
						recs = append(recs, Record{Data: rec.data, Seq: rec.seq})
						continue
					}
					failed, err := r.tooLarge(st, q, rec, largest)
					if err != nil {
						return err
					}
					if failed {
						cut = rec.seq
					}
				}
			}
			for cut != 0 && len(recs) > 0 && recs[len(recs)-1].Seq >= cut {
				recs = recs[:len(recs)-1]
			}
			for i := range group {
				group[i].recs = nil
			}
			if len(recs) == 0 {
				// Nothing left to send: the ranges go on as they are,
				// for the writer's order.
				for _, b := range group {
					if err := out(b); err != nil {
						return err
					}
				}
				return nil
			}
			n++
			mu.Lock()
			waiting[n] = pending{bs: group, recs: len(recs)}
			mu.Unlock()
			return q.Send(gctx, Work{N: n, Recs: recs})
		}
		// next takes a batch from the stage's queue (wait: for one to
		// come) and says whether it goes to the broker; the others it
		// passes on itself.
		next := func(wait bool) (b batch, ok, closed bool, err error) {
			for {
				if carry != nil {
					b, carry = *carry, nil
				} else if wait {
					select {
					case b, ok = <-st.in:
					case <-gctx.Done():
						return b, false, false, context.Cause(gctx)
					}
					if !ok {
						return b, false, true, nil
					}
				} else {
					select {
					case b, ok = <-st.in:
						if !ok {
							return b, false, true, nil
						}
					default:
						return b, false, false, nil
					}
				}
				if f := r.failSeq.Load(); f != 0 && b.hi >= f {
					if b.lo >= f {
						b.release()
						continue
					}
					b.recs = before(b.recs, f)
				}
				if b.from > st.index || len(b.recs) == 0 {
					// Not for this stage, or nothing in it: the range
					// goes on as it is, for the writer's order.
					if err := out(b); err != nil {
						return b, false, false, err
					}
					continue
				}
				return b, true, false, nil
			}
		}
		for closed := false; !closed; {
			b, ok, c, err := next(true)
			if err != nil {
				return err
			}
			if closed = c; !ok {
				continue
			}
			group = []batch{b}
			if err := probe(); err != nil {
				return err
			}
			size, count, most := batchBytes(b), len(b.recs), most()
			// A piece a dead run left is matched only when cut alike: it
			// waits for its records; another stops short of one.
			var upTo uint64
			whole := false
			if cutter != nil && len(b.recs) > 0 {
				upTo, whole = cutter.Cut(b.recs[0].seq)
				if upTo != 0 && lastSeq(b) >= upTo {
					whole = false // as far as it goes already, or past it
				}
				if whole {
					most = maxBatch
				}
			}
			for most > 1 && gatherable(b) && !closed && count < most && (upTo == 0 || lastSeq(group[len(group)-1]) < upTo) {
				more, ok, c, err := next(whole)
				if err != nil {
					return err
				}
				closed = c
				if !ok {
					break
				}
				if !gatherable(more) || count+len(more.recs) > most || size+batchBytes(more) > limit || upTo != 0 && lastSeq(more) > upTo {
					carry = &more
					break
				}
				group = append(group, more)
				size += batchBytes(more)
				count += len(more.recs)
			}
			var err2 error
			if len(group) == 1 {
				splitBytes(b, limit, func(p batch) bool {
					err2 = send([]batch{p})
					return err2 == nil
				})
			} else {
				err2 = send(group)
			}
			group = nil // in waiting, each piece sent or being sent
			if err2 != nil {
				return err2
			}
			if carry != nil {
				closed = false // the carried batch is still to go
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
		heard := false // known is closed
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
			if n := d.Counts; n.In > 0 {
				perRecord.Store(max(1, int64(n.Busy)/n.In))
			}
			if !heard {
				heard = true
				close(known)
			}
			if err := r.settle(st, p.bs, d, out); err != nil {
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
			for i := range p.bs {
				p.bs[i].release()
			}
			delete(waiting, n)
		}
		mu.Unlock()
		return nil
	})
	err := g.Wait()
	// What is still waiting was sent and not answered, and what is still
	// in the stage's queue was never sent: the run was aborted. Those
	// records are in no other count; the summary says how many.
	mu.Lock()
	for _, p := range waiting {
		st.c.unanswered.Add(int64(p.recs))
	}
	mu.Unlock()
	for err != nil {
		select {
		case b, ok := <-st.in:
			if !ok {
				return err
			}
			if b.from <= st.index {
				st.c.unsent.Add(int64(len(b.recs)))
			}
		default:
			return err
		}
	}
	return err
}

// settle counts what a remote stage did with a piece, writes its dead
// letters, fails the run at its failing record, and passes its records on
// in the ranges of the batches the piece gathered: the results are in
// input order, so each batch's are those of its range, in turn.
func (r *run) settle(st *stageRun, bs []batch, d Done, out func(batch) error) error {
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
	if d.Fail != nil {
		r.failAt(d.Fail.Seq, d.Fail)
	}
	results := d.Recs
	for i, b := range bs {
		recs := getRecords()
		for len(results) > 0 && (i == len(bs)-1 || results[0].Seq >= b.lo && results[0].Seq <= b.hi) {
			recs = append(recs, record{data: results[0].Data, seq: results[0].Seq})
			results = results[1:]
		}
		if d.Fail != nil {
			recs = before(recs, d.Fail.Seq)
		}
		b.recs = recs
		if err := out(b); err != nil {
			r.dropped.Add(int64(len(results))) // the later batches' (out counted this one's)
			return err
		}
	}
	return nil
}

// pieceWork is about how long the records of one piece of a stage that
// waits should take to work, all told: enough records that a piece's few
// messages through the broker cost little beside them, few enough that a
// worker that holds records it cannot start yet keeps the others waiting
// little (the records of a piece are dealt out to the worker's idle slots).
const pieceWork = 50 * time.Millisecond

// probePieces is the fewest pieces of one record each sent before the
// first results of a stage that waits; probeLook is how often, while it
// waits for them, the stage looks for workers with more slots than that.
const (
	probePieces = 64
	probeLook   = 100 * time.Millisecond
)

// piecesOf is how many records a piece of a stage that waits carries when
// a record takes per to work (0: not known yet).
func piecesOf(per time.Duration) int {
	if per <= 0 {
		return 1
	}
	return int(min(max(int64(pieceWork/per), 1), maxBatch))
}

// lastSeq is the number of b's last record.
func lastSeq(b batch) uint64 {
	if len(b.recs) == 0 {
		return b.hi
	}
	return b.recs[len(b.recs)-1].seq
}

// gatherable says whether b may share a piece with other batches: its
// records' numbers are in its range, which is how settle finds them in
// the results (a Drainer's pieces and what a failure cut are not).
func gatherable(b batch) bool {
	return b.part == 0 && len(b.recs) > 0 && b.recs[0].seq >= b.lo && b.recs[len(b.recs)-1].seq <= b.hi
}

// batchBytes is about what b's records take in a message.
func batchBytes(b batch) int {
	n := 0
	for _, rec := range b.recs {
		n += len(rec.data) + 16
	}
	return n
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

// A StageQueue may take a record larger than MaxBytes in a piece of its
// own, up to MaxRecordBytes, and say why a larger one cannot go,
// naming the broker and its limit.
type recordLimiter interface {
	MaxRecordBytes() int
	TooLarge(size int) error
}

// tooLarge applies the stage's on_error to a record larger than its
// queue takes in one message: no worker can ever be given it, so its
// attempts are spent at once. It says whether the record failed the run
// (on_error: fail); the error is the dead-letter file's.
func (r *run) tooLarge(st *stageRun, q StageQueue, rec record, limit int) (failed bool, err error) {
	cause := fmt.Errorf("a record of %d bytes is more than the broker takes in a message (%d bytes)", len(rec.data), limit)
	if s, ok := q.(recordLimiter); ok {
		cause = s.TooLarge(len(rec.data))
	}
	c := &st.c
	c.in.Add(1)
	c.errors.Add(1)
	switch st.cfg.OnError {
	case spec.Skip:
		c.skipped.Add(1)
	case spec.DeadLetter:
		c.dead.Add(1)
		return false, r.dl.write(st.cfg.Name, rec.seq, 1, rec.data, cause)
	default:
		r.failAt(rec.seq, &RecordError{Stage: st.cfg.Name, Seq: rec.seq, Record: rec.data, Attempts: 1, Err: cause})
		return true, nil
	}
	return false, nil
}
