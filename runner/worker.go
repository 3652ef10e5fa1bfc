package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

// stageRun is one stage of a running pipeline: its queue, its workers'
// Stages and its counters.
type stageRun struct {
	cfg      spec.Stage
	index    int
	fused    bool // runs in the goroutines of the stage before it
	fusedRun int  // how many stages before it share its goroutines
	in, out  chan batch
	take     int  // records per batch its workers take
	nextTake int  // records per batch the next stage takes
	holds    bool // a Flusher: it holds records across calls
	sequence bool // it must see its input in order (ordered pipeline, holds records)
	// window bounds what a holding stage emits into an ordered run, in
	// tokens of windowSize (see forwardHeld).
	window     *semaphore.Weighted
	windowSize int64
	made       []stages.Stage
	c          counters
	// remote says the stage runs on workers through Options.Remote, whose
	// queue is queue; its Stages are made there, not here.
	remote bool
	queue  StageQueue
	// calls are the workers' calls under the stage's timeout, for the
	// watchdog that finds a stage ignoring it (one per worker; nil
	// without a timeout).
	calls []callSlot
}

// callSlot is a worker's call of Process under a timeout: its deadline in
// Unix nanoseconds (0 when not in a call) and its record.
type callSlot struct {
	deadline atomic.Int64
	seq      atomic.Uint64
}

// worker is one goroutine of a stage.
type worker struct {
	r       *run
	st      *stageRun
	ctx     context.Context
	stage   stages.Stage
	batcher stages.BatchStage // stage, when it takes batches itself
	mapper  stages.Mapper     // stage, when it maps one record to one
	scratch [][]byte
	recs    [][]byte
	// For a stage that holds records: the first input record not yet
	// forwarded and the last one seen, so that what it emits later covers
	// the range of what it took in.
	fwdLo, maxHi uint64
	held         []record // emitted by a holding stage, not yet passed on
	taken        []uint64 // input records of the pieces a holding stage still holds, oldest first
	part         uint32   // the pieces a Drainer has emitted at the end of input
	// groupMin is, in an unordered run, the earliest input record taken
	// in since the holding stage last emitted (0: none): what it emits
	// next is numbered by it (see emitHeld).
	groupMin uint64
	next     *worker   // the fused stage after this one, if any
	slot     *callSlot // nil unless the stage has a timeout
}

// work is one goroutine of a segment: seg[0] reads its queue, and each
// batch passes through the Stages of chain, one per stage of seg.
func (r *run) work(ctx context.Context, seg []*stageRun, chain []stages.Stage, k int) error {
	var w, prev *worker
	for i := len(seg) - 1; i >= 0; i-- {
		st := seg[i]
		wk := &worker{r: r, st: st, ctx: ctx, stage: chain[i], fwdLo: r.skip + 1, next: prev}
		if st.calls != nil {
			wk.slot = &st.calls[k]
		}
		if bs, ok := chain[i].(stages.BatchStage); ok {
			wk.batcher = bs
		}
		if m, ok := chain[i].(stages.Mapper); ok {
			wk.mapper = m
		}
		w, prev = wk, wk
	}
	return w.run()
}

// run reads the worker's queue until it closes.
func (w *worker) run() error {
	st, stage, ctx := w.st, w.stage, w.ctx
	var seqr *reorder
	if st.sequence {
		seqr = newReorderAt(w.r.skip + 1)
	}
	var idleC <-chan time.Time
	var idle *time.Timer
	var idleAfter time.Duration
	if i, ok := stage.(stages.Idler); ok && i.IdleAfter() > 0 {
		idleAfter = i.IdleAfter()
		idle = time.NewTimer(idleAfter)
		defer idle.Stop()
		idleC = idle.C
	}
	for {
		select {
		case b, ok := <-st.in:
			if !ok {
				if seqr != nil {
					if err := seqr.drain(w.handle); err != nil {
						return err
					}
				}
				return w.flush(true)
			}
			var err error
			if seqr != nil {
				err = seqr.push(b, w.handle)
			} else {
				err = w.handle(b)
			}
			if err != nil {
				return err
			}
			if idle != nil {
				idle.Reset(idleAfter)
			}
		case <-idleC:
			if err := w.flush(false); err != nil {
				return err
			}
			idle.Reset(idleAfter)
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// handle runs one batch through the stage and passes the results on.
func (w *worker) handle(b batch) error {
	st := w.st
	if f := w.r.failSeq.Load(); f != 0 && b.hi >= f {
		if b.lo >= f {
			b.release()
			return nil // after the record that failed the run: dropped
		}
		b.recs = before(b.recs, f)
	}
	if b.from > st.index {
		return w.send(b)
	}
	if len(b.recs) == 0 {
		if st.holds {
			return w.processHolding(b)
		}
		return w.send(b)
	}
	start := time.Now()
	st.c.busy.Add(1)
	var out []record
	var err error
	switch {
	case st.holds:
		err = w.processHolding(b)
	case w.batcher != nil && len(b.recs) > 1:
		out, err = w.processBatch(b.recs, make([]record, 0, len(b.recs)))
	case st.cfg.Timeout == 0:
		out, err = w.processFast(b.recs)
	default:
		out = make([]record, 0, len(b.recs))
		for _, rec := range b.recs {
			if out, err = w.process(rec, out, 0); err != nil {
				break
			}
		}
	}
	elapsed := time.Since(start)
	st.c.busy.Add(-1)
	st.c.busyNanos.Add(int64(elapsed))
	n := int64(len(b.recs))
	st.c.hist.add(elapsed/time.Duration(n), n)
	st.c.in.Add(n)
	st.c.out.Add(int64(len(out)))
	if err != nil {
		var re *RecordError
		if !errors.As(err, &re) {
			return err
		}
		// The record failed the run: what came before it in the batch
		// goes on, and the stage goes on draining the records before it.
		w.r.failAt(re.Seq, err)
		out = before(out, re.Seq)
	}
	if st.holds {
		return nil // processHolding passed on what there was
	}
	return w.send(batch{lo: b.lo, hi: b.hi, recs: out, tokens: b.tokens, sem: b.sem, part: b.part})
}

// before returns the records of recs from input records before seq;
// recs are in input order.
func before(recs []record, seq uint64) []record {
	for i, rec := range recs {
		if rec.seq >= seq {
			return recs[:i]
		}
	}
	return recs
}

// processHolding runs a batch through a stage that holds records across
// calls (batch, count), one record at a time, and passes on what it emits
// with the range of input records it has wholly passed on: in an ordered
// run the writer and the journal must never see a range claim a record
// the stage still holds.
//
// A batch carries every piece of each of its input records (split never
// cuts between pieces of one), and a Flusher emits in the order it took
// records in. So the records a stage still holds are the last Held()
// pieces it took in (a Holder says how many; another Flusher is taken to
// hold none once it emits). What it emitted is passed on, claiming every
// input record up to the current one, only at the last piece of an input
// record after which the stage holds nothing: then the output covers
// exactly those records, and a journal that resumes there gets the same
// bytes. Until then it waits in held. An ordered run whose holding stage
// is never empty at a record's end (a batch straddling every record)
// holds its output until the end of input. In an unordered run ranges
// mean nothing, and output goes at once.
//
// The stage keeps the memory of what it holds, so it gives back the
// tokens of what it takes in at once (a count that holds everything would
// otherwise stop the input for good), and takes tokens of its own window
// for what it emits: what flows after it stays bounded when a record
// downstream is slow.
func (w *worker) processHolding(b batch) error {
	b.release()
	holder, _ := w.stage.(stages.Holder)
	for i, rec := range b.recs {
		n := len(w.held)
		var err error
		if w.held, err = w.process(rec, w.held, 0); err != nil {
			return err
		}
		emitted := len(w.held) > n
		w.st.c.out.Add(int64(len(w.held) - n))
		w.taken = append(w.taken, rec.seq)
		switch {
		case holder != nil:
			w.taken = w.taken[len(w.taken)-min(holder.Held(), len(w.taken)):]
		case emitted:
			w.taken = w.taken[:0]
		case len(w.taken) > 1:
			w.taken = w.taken[:1] // only the oldest counts
		}
		if !w.st.sequence { // unordered: no range to keep
			if w.groupMin == 0 || rec.seq < w.groupMin {
				w.groupMin = rec.seq
			}
			if len(w.held) > 0 {
				err := w.emitHeld(w.held, max(w.fwdLo, rec.seq))
				if w.held = nil; err != nil {
					return err
				}
				w.groupMin = 0 // what it still holds starts the next group
				for _, seq := range w.taken {
					if w.groupMin == 0 || seq < w.groupMin {
						w.groupMin = seq
					}
				}
			}
			continue
		}
		if i+1 < len(b.recs) && b.recs[i+1].seq == rec.seq {
			continue // more pieces of this input record are to come
		}
		// Every piece of rec's input record is taken in. Only if the stage
		// now holds nothing is everything up to it out, and out whole: an
		// output that holds pieces of two input records (a batch across
		// them) belongs to neither alone.
		if len(w.taken) == 0 && rec.seq >= w.fwdLo && len(w.held) > 0 {
			held := w.held
			w.held = nil
			if err := w.emitHeld(held, rec.seq); err != nil {
				return err
			}
		}
	}
	hi := b.hi
	if f := w.r.failSeq.Load(); f != 0 && hi >= f {
		// Cut at the record that failed the run: the batch claims only
		// the records before it, so that what the stage holds of them
		// comes out at the end as at the end of input, not numbered as
		// if after the failure and dropped.
		hi = f - 1
	}
	w.maxHi = max(w.maxHi, hi)
	return nil
}

// emitHeld sends out as the batch for the range fwdLo..hi. Its records all
// take the number hi: an output of a holding stage may hold pieces of
// several input records, so no cut inside the batch would claim a range
// exactly, and split never cuts between records of one number. The batch
// travels whole, and the journal only ever sees its end.
//
// In an unordered run that a record failed, what a stage held is finished
// work of any input records: it goes out numbered just before the failing
// record, claiming none (as emitPiece's pieces), so that nothing after it
// drops it as if it came after the failure.
//
// The failure may also come just after the stage emitted: a group of
// records taken in before it was known (other workers' results of
// records after the failing one among them) would then carry a number
// after the failing record and be dropped with the finished work of the
// records before it in it. So in an unordered run the records are
// numbered by the earliest input record of their group: a group with
// any record before the failing one goes out.
func (w *worker) emitHeld(out []record, hi uint64) error {
	lo := w.fwdLo
	if f := w.r.failSeq.Load(); f != 0 && hi >= f && !w.st.sequence {
		hi, lo = f-1, f
	} else {
		w.fwdLo = hi + 1
	}
	num := hi
	if !w.st.sequence && w.groupMin != 0 && w.groupMin < num {
		num = w.groupMin
	}
	for i := range out {
		out[i].seq = num
	}
	nb := batch{lo: lo, hi: hi, recs: out}
	if w.part > 0 { // the last piece of a Drainer's
		nb.part = w.part + 1
	}
	if st := w.st; st.window != nil {
		nb.sem, nb.tokens = st.window, min(nb.size(), st.windowSize)
		if err := st.window.Acquire(w.ctx, nb.tokens); err != nil {
			return context.Cause(w.ctx)
		}
	}
	return w.send(nb)
}

// flush asks a Flusher for what it holds, at the end of input or when the
// stage has been idle (between batches: every piece taken in is whole). It
// then holds nothing, so what it emits claims every record taken in.
func (w *worker) flush(final bool) error {
	f, ok := w.stage.(stages.Flusher)
	if !ok {
		return nil
	}
	d, drains := f.(stages.Drainer)
	for {
		res, err := f.Flush(w.ctx, w.scratch[:0])
		if err != nil {
			return fmt.Errorf("stage %q at end of input: %w", w.st.cfg.Name, err)
		}
		seq := max(w.maxHi, 1)
		for _, d := range res {
			w.held = append(w.held, record{data: d, seq: seq})
		}
		w.st.c.out.Add(int64(len(res)))
		if !final || !drains || !d.More() {
			break
		}
		if err := w.emitPiece(); err != nil {
			return err
		}
	}
	w.taken = w.taken[:0]
	defer func() { w.groupMin = 0 }() // it holds nothing now
	held := w.held
	switch {
	case w.maxHi >= w.fwdLo:
		w.held = nil
		return w.emitHeld(held, w.maxHi)
	case len(held) > 0 && (final || !w.st.sequence):
		// Everything taken in was claimed already (an unordered run, or
		// empty input): these go after the rest.
		w.held = nil
		return w.emitHeld(held, w.fwdLo)
	}
	return nil
}

// emitPiece passes on what a Drainer emitted, when more is to come, as a
// batch that claims no input record (the last piece claims them all): a
// journal or an ordered writer must not take the input for done while
// the rest is still in the stage. Its records carry the number of the
// last record already claimed, so that no holding stage after this one
// claims an input record by them either.
func (w *worker) emitPiece() error {
	if len(w.held) == 0 {
		return nil
	}
	for i := range w.held {
		w.held[i].seq = w.fwdLo - 1
	}
	w.part++
	nb := batch{lo: w.fwdLo, hi: w.fwdLo - 1, recs: w.held, part: w.part}
	w.held = nil
	if st := w.st; st.window != nil {
		nb.sem, nb.tokens = st.window, min(int64(len(nb.recs)), st.windowSize)
		if err := st.window.Acquire(w.ctx, nb.tokens); err != nil {
			return context.Cause(w.ctx)
		}
	}
	return w.send(nb)
}

func (w *worker) send(b batch) error {
	if w.next != nil {
		return w.next.handle(b)
	}
	ok := split(b, w.st.nextTake, func(p batch) bool {
		select {
		case w.st.out <- p:
			return true
		case <-w.ctx.Done():
			return false
		}
	})
	if !ok {
		return context.Cause(w.ctx)
	}
	return nil
}

// process runs one record through the stage, with retries, and appends
// its results to out. lost is the number of attempts a BatchStage already
// made. The error is for the run: the record failed under on_error: fail,
// or the run is ending.
func (w *worker) process(rec record, out []record, made int) ([]record, error) {
	policy := w.st.cfg.Retry
	for attempt := made + 1; ; attempt++ {
		res, err := w.call(rec.data, rec.seq)
		if err == nil || errors.Is(err, stages.ErrStop) {
			for _, d := range res {
				out = append(out, record{data: d, seq: rec.seq})
			}
			if err != nil {
				w.r.acks.stopAt(rec.seq)
				w.r.stopInput()
			}
			return out, nil
		}
		if w.ctx.Err() != nil {
			return out, context.Cause(w.ctx)
		}
		w.st.c.errors.Add(1)
		if attempt >= policy.Attempts || errors.Is(err, stages.ErrPermanent) {
			return out, w.failed(rec, attempt, err)
		}
		w.st.c.retries.Add(1)
		if !sleep(w.ctx, retryWait(policy, attempt, err)) {
			return out, context.Cause(w.ctx)
		}
	}
}

// processFast runs recs through the stage in a tight loop with one
// deferred recover for the whole batch, and writes the results over recs
// itself for as long as they do not outrun the records already read (a
// stage that fans out moves them to a new slice). A record that fails or
// panics leaves the loop for process, with its retries, and the loop goes
// on after it. Measured in BenchmarkPassThrough: the per-record call,
// defer and allocation were most of a cheap stage's cost.
func (w *worker) processFast(recs []record) ([]record, error) {
	out := recs[:0]
	inPlace := true
	for i := 0; i < len(recs); {
		var failed error
		out, inPlace, i, failed = w.tight(recs, out, inPlace, i)
		if failed == nil {
			break
		}
		if inPlace { // the slow path may fan out: give it room
			out = append(make([]record, 0, len(recs)+4), out...)
			inPlace = false
		}
		var err error
		if out, err = w.retryAfter(recs[i], out, failed); err != nil {
			return out, err
		}
		i++
	}
	return out, nil
}

// tight calls Process on recs[i:] until the end or a failure, which it
// returns with the index of the record that failed. Its results are named
// so that, after a panic, the deferred recover returns the position the
// loop had reached, not zero values.
func (w *worker) tight(recs, out0 []record, inPlace0 bool, i0 int) (out []record, inPlace bool, i int, failed error) {
	out, inPlace, i = out0, inPlace0, i0
	mapping := false // mapping recs in place: recs[:i] are done
	defer func() {
		if p := recover(); p != nil {
			if mapping {
				out = recs[:i]
			}
			failed = fmt.Errorf("panic: %v", p)
		}
	}()
	if m := w.mapper; m != nil {
		if inPlace && len(out) == i { // one record in, one out: in place
			mapping = true
			for ; i < len(recs); i++ {
				recs[i].data = m.Map(recs[i].data)
			}
			return recs, true, i, nil
		}
		for ; i < len(recs); i++ {
			out = append(out, record{data: m.Map(recs[i].data), seq: recs[i].seq})
		}
		return out, inPlace, i, nil
	}
	for ; i < len(recs); i++ {
		rec := recs[i]
		res, err := w.stage.Process(w.ctx, rec.data, w.scratch[:0])
		if cap(res) > cap(w.scratch) {
			w.scratch = res[:0]
		}
		if err != nil {
			if !errors.Is(err, stages.ErrStop) {
				return out, inPlace, i, err
			}
			w.r.acks.stopAt(rec.seq)
			w.r.stopInput()
		}
		if inPlace && len(out)+len(res) > i+1 {
			out = append(make([]record, 0, len(recs)+len(res)), out...)
			inPlace = false
		}
		for _, d := range res {
			out = append(out, record{data: d, seq: rec.seq})
		}
	}
	return out, inPlace, i, nil
}

// retryAfter applies the retry policy to a record whose first attempt
// failed with err.
func (w *worker) retryAfter(rec record, out []record, err error) ([]record, error) {
	if w.ctx.Err() != nil {
		return out, context.Cause(w.ctx)
	}
	w.st.c.errors.Add(1)
	if w.st.cfg.Retry.Attempts <= 1 || errors.Is(err, stages.ErrPermanent) {
		return out, w.failed(rec, 1, err)
	}
	w.st.c.retries.Add(1)
	if !sleep(w.ctx, retryWait(w.st.cfg.Retry, 1, err)) {
		return out, context.Cause(w.ctx)
	}
	return w.process(rec, out, 1)
}

// processBatch hands the records to a BatchStage, then retries the ones
// that failed, one at a time, keeping the output in input order.
func (w *worker) processBatch(recs []record, out []record) ([]record, error) {
	w.recs = w.recs[:0]
	for _, r := range recs {
		w.recs = append(w.recs, r.data)
	}
	type failure struct {
		at, i int // where in out its results go; which record
		err   error
	}
	var failures []failure
	stop := false
	w.batcher.ProcessBatch(w.ctx, w.recs, func(i int, res [][]byte, err error) {
		if err != nil && !errors.Is(err, stages.ErrStop) {
			failures = append(failures, failure{len(out), i, err})
			return
		}
		if err != nil {
			w.r.acks.stopAt(recs[i].seq)
		}
		stop = stop || err != nil
		for _, d := range res {
			out = append(out, record{data: d, seq: recs[i].seq})
		}
	})
	if stop {
		w.r.stopInput()
	}
	if len(failures) == 0 {
		return out, nil
	}
	if w.ctx.Err() != nil {
		return out, context.Cause(w.ctx)
	}
	merged := make([]record, 0, len(out)+len(failures))
	prev := 0
	var err error
	for _, f := range failures {
		merged = append(merged, out[prev:f.at]...)
		prev = f.at
		if errors.Is(f.err, stages.ErrLost) {
			merged, err = w.process(recs[f.i], merged, 0) // not its fault: it gets all its attempts
		} else {
			merged, err = w.retryAfter(recs[f.i], merged, f.err)
		}
		if err != nil {
			return merged, err
		}
	}
	return append(merged, out[prev:]...), nil
}

// call runs Process once, with the stage's timeout, turning a panic into
// the record's error.
func (w *worker) call(data []byte, seq uint64) (res [][]byte, err error) {
	ctx := w.ctx
	if t := w.st.cfg.Timeout; t > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, t, fmt.Errorf("no result within the stage's timeout of %v", t))
		defer cancel()
	}
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, fmt.Errorf("panic: %v", p)
		}
	}()
	if w.slot != nil {
		w.slot.seq.Store(seq)
		w.slot.deadline.Store(time.Now().Add(w.st.cfg.Timeout).UnixNano())
		defer w.slot.deadline.Store(0)
	}
	res, err = w.stage.Process(ctx, data, w.scratch[:0])
	if err != nil && ctx.Err() != nil && w.ctx.Err() == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		// The stage said only "deadline exceeded": say which deadline. A
		// stage that explains its timeout itself (exec names the stalled
		// plugin) keeps its own words.
		err = context.Cause(ctx)
	}
	if cap(res) > cap(w.scratch) {
		w.scratch = res[:0]
	}
	return res, err
}

// failed applies on_error to a record whose attempts are spent.
func (w *worker) failed(rec record, attempts int, cause error) error {
	st := w.st
	switch st.cfg.OnError {
	case spec.Skip:
		st.c.skipped.Add(1)
		return nil
	case spec.DeadLetter:
		st.c.dead.Add(1)
		return w.r.dl.write(st.cfg.Name, rec.seq, attempts, rec.data, cause)
	}
	return &RecordError{Stage: st.cfg.Name, Seq: rec.seq, Record: rec.data, Attempts: attempts, Err: cause}
}

// RecordError is a record that failed a stage whose on_error is fail.
type RecordError struct {
	Stage    string
	Seq      uint64
	Record   []byte
	Attempts int
	Err      error
}

func (e *RecordError) Error() string {
	s := fmt.Sprintf("stage %q record %d %s: ", e.Stage, e.Seq, excerpt(e.Record))
	if e.Attempts > 1 {
		s += fmt.Sprintf("after %d attempts: ", e.Attempts)
	}
	return s + e.Err.Error()
}

func (e *RecordError) Unwrap() error { return e.Err }

// excerpt quotes the start of a record for an error message.
func excerpt(rec []byte) string {
	const n = 60
	if len(rec) > n {
		return strconv.Quote(string(rec[:n])) + "…"
	}
	return strconv.Quote(string(rec))
}

// backoff is the wait after a failed attempt: Backoff doubled per attempt,
// capped at MaxBackoff, the upper half of it at random so that workers
// retrying together spread out.
func backoff(p spec.Retry, attempt int) time.Duration {
	d := p.Backoff
	for i := 1; i < attempt && d < p.MaxBackoff; i++ {
		d *= 2
	}
	if p.MaxBackoff > 0 && d > p.MaxBackoff {
		d = p.MaxBackoff
	}
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

// retryWait is the wait after a failed attempt: the backoff, or longer
// when the error says when to try again (a server's Retry-After, on
// *stages.HTTPError), though never longer than MaxBackoff for that.
func retryWait(p spec.Retry, attempt int, err error) time.Duration {
	d := backoff(p, attempt)
	var after interface{ RetryAfter() time.Duration }
	if errors.As(err, &after) {
		a := after.RetryAfter()
		if p.MaxBackoff > 0 {
			a = min(a, p.MaxBackoff)
		}
		d = max(d, a)
	}
	return d
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func closeStage(s stages.Stage) error {
	if c, ok := s.(io.Closer); ok {
		return c.Close()
	}
	return nil
}
