package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

// stageRun is one stage of a running pipeline: its queue, its workers'
// Stages and its counters.
type stageRun struct {
	cfg      spec.Stage
	in, out  chan batch
	take     int  // records per batch its workers take
	nextTake int  // records per batch the next stage takes
	holds    bool // a Flusher: it holds records across calls
	sequence bool // it must see its input in order (ordered pipeline, holds records)
	made     []stages.Stage
	c        counters
}

// worker is one goroutine of a stage.
type worker struct {
	r       *run
	st      *stageRun
	ctx     context.Context
	stage   stages.Stage
	batcher stages.BatchStage // stage, when it takes batches itself
	scratch [][]byte
	recs    [][]byte
	hist    histogram
	// For a stage that holds records: the first input record not yet
	// forwarded and the last one seen, so that what it emits later covers
	// the range of what it took in.
	fwdLo, maxHi uint64
}

func (r *run) work(ctx context.Context, st *stageRun, stage stages.Stage) error {
	w := &worker{r: r, st: st, ctx: ctx, stage: stage, fwdLo: 1}
	if bs, ok := stage.(stages.BatchStage); ok {
		w.batcher = bs
	}
	defer func() {
		st.c.mu.Lock()
		st.c.hist.merge(&w.hist)
		st.c.mu.Unlock()
	}()
	var seqr *reorder
	if st.sequence {
		seqr = newReorder()
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
				return w.flush()
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
			if err := w.flush(); err != nil {
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
	if len(b.recs) == 0 {
		if st.holds {
			return w.forwardHeld(b, nil)
		}
		return w.send(b)
	}
	start := time.Now()
	st.c.busy.Add(1)
	out := make([]record, 0, len(b.recs))
	var err error
	if w.batcher != nil && len(b.recs) > 1 {
		out, err = w.processBatch(b.recs, out)
	} else {
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
	w.hist.add(elapsed/time.Duration(n), n)
	st.c.in.Add(n)
	st.c.out.Add(int64(len(out)))
	if err != nil {
		return err
	}
	if st.holds {
		return w.forwardHeld(b, out)
	}
	return w.send(batch{lo: b.lo, hi: b.hi, recs: out, held: b.held})
}

// forwardHeld passes on what a holding stage emitted, covering the input
// range up to its last output; the rest of the range stays held until the
// stage emits again. The stage keeps the memory of what it holds, so the
// range's window tokens are given back now: otherwise a count that holds
// everything would stop the input for good.
func (w *worker) forwardHeld(b batch, out []record) error {
	if !b.held {
		w.r.release(b.size())
	}
	w.maxHi = max(w.maxHi, b.hi)
	if len(out) == 0 {
		return nil
	}
	hi := max(out[len(out)-1].seq, w.fwdLo)
	nb := batch{lo: w.fwdLo, hi: hi, recs: out, held: true}
	w.fwdLo = hi + 1
	return w.send(nb)
}

// flush asks a Flusher for what it holds, at the end of input or when the
// stage has been idle.
func (w *worker) flush() error {
	f, ok := w.stage.(stages.Flusher)
	if !ok {
		return nil
	}
	res, err := f.Flush(w.ctx, w.scratch[:0])
	if err != nil {
		return fmt.Errorf("stage %q at end of input: %w", w.st.cfg.Name, err)
	}
	if len(res) == 0 && w.fwdLo > w.maxHi {
		return nil
	}
	hi := max(w.maxHi, w.fwdLo)
	out := make([]record, len(res))
	for i, d := range res {
		out[i] = record{data: d, seq: hi}
	}
	w.st.c.out.Add(int64(len(out)))
	nb := batch{lo: w.fwdLo, hi: hi, recs: out, held: true}
	w.fwdLo = hi + 1
	return w.send(nb)
}

func (w *worker) send(b batch) error {
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
		res, err := w.call(rec.data)
		if err == nil || errors.Is(err, stages.ErrStop) {
			for _, d := range res {
				out = append(out, record{data: d, seq: rec.seq})
			}
			if err != nil {
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
		if !sleep(w.ctx, backoff(policy, attempt)) {
			return out, context.Cause(w.ctx)
		}
	}
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
		made := 1
		if errors.Is(f.err, stages.ErrLost) {
			made = 0 // not its fault: it gets all its attempts
		} else {
			w.st.c.errors.Add(1)
			if w.st.cfg.Retry.Attempts <= 1 || errors.Is(f.err, stages.ErrPermanent) {
				if err = w.failed(recs[f.i], 1, f.err); err != nil {
					return merged, err
				}
				continue
			}
			w.st.c.retries.Add(1)
			if !sleep(w.ctx, backoff(w.st.cfg.Retry, 1)) {
				return merged, context.Cause(w.ctx)
			}
		}
		if merged, err = w.process(recs[f.i], merged, made); err != nil {
			return merged, err
		}
	}
	return append(merged, out[prev:]...), nil
}

// call runs Process once, with the stage's timeout, turning a panic into
// the record's error.
func (w *worker) call(data []byte) (res [][]byte, err error) {
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
	res, err = w.stage.Process(ctx, data, w.scratch[:0])
	if err != nil && ctx.Err() != nil && w.ctx.Err() == nil {
		err = fmt.Errorf("%w (%v)", context.Cause(ctx), err)
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
