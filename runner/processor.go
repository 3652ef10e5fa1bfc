package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

// A Processor runs records through one worker's Stage of a pipeline's
// stage outside a run, with the stage's retries, timeout and on_error, as
// a run's worker would: a remote worker (flowrun worker) runs what the
// run process sends it through Processors, one per worker slot. A
// Processor is not safe for concurrent use.
type Processor struct {
	w    *worker
	dead []Dead
}

// NewProcessor makes the Stage of one worker of s. log is where the
// stage's own messages go (nil: stderr).
func NewProcessor(s spec.Stage, log io.Writer) (*Processor, error) {
	if !IsRemote(s) {
		return nil, fmt.Errorf("%s: stage %q (%s) holds records across calls or must see every record: it runs in the run process, not on a worker", s.Pos, s.Name, s.Use)
	}
	cfg := s.Config
	if cfg.Log == nil && log != nil {
		cfg.Log = log
	}
	stage, err := s.Spec.New(cfg)
	if err != nil {
		var oe *stages.OptionError
		if errors.As(err, &oe) {
			if pos, ok := s.OptionPos[oe.Option]; ok {
				return nil, fmt.Errorf("%s: stage %q: %w", pos, s.Name, err)
			}
		}
		return nil, fmt.Errorf("%s: stage %q: %w", s.Pos, s.Name, err)
	}
	if _, ok := stage.(stages.Flusher); ok {
		closeStage(stage)
		return nil, fmt.Errorf("%s: stage %q (%s) holds records across calls: it must be marked Local in its stages.Spec to run under --broker", s.Pos, s.Name, s.Use)
	}
	p := &Processor{}
	r := &run{p: &spec.Pipeline{Stages: []spec.Stage{s}}, stopRead: func() {}}
	r.dl = &deadLetters{collect: func(dl DeadLetter, rec []byte) {
		p.dead = append(p.dead, Dead{Letter: dl, Data: append([]byte(nil), rec...)})
	}}
	st := &stageRun{cfg: s, take: batchFor(s.Spec.Batched(s.Config), s.Workers)}
	w := &worker{r: r, st: st, stage: stage}
	if bs, ok := stage.(stages.BatchStage); ok {
		w.batcher = bs
	}
	if m, ok := stage.(stages.Mapper); ok {
		w.mapper = m
	}
	p.w = w
	return p, nil
}

// Take is how many records a piece of the stage's input should carry.
func (p *Processor) Take() int { return p.w.st.take }

// Process runs recs through the stage. Its Done holds the results in
// input order, the dead letters, the record that failed the stage under
// on_error: fail (and none of the results from it on), and the counts.
// The error is not a record's: ctx ended.
func (p *Processor) Process(ctx context.Context, recs []Record) (Done, error) {
	w, st := p.w, p.w.st
	w.ctx = ctx
	p.dead = nil
	in := make([]record, len(recs))
	for i, rec := range recs {
		in[i] = record{data: rec.Data, seq: rec.Seq}
	}
	start := time.Now()
	var out []record
	var err error
	switch {
	case w.batcher != nil && len(in) > 1:
		out, err = w.processBatch(in, make([]record, 0, len(in)))
	case st.cfg.Timeout == 0:
		out, err = w.processFast(in)
	default:
		out = make([]record, 0, len(in))
		for _, rec := range in {
			if out, err = w.process(rec, out, 0); err != nil {
				break
			}
		}
	}
	d := Done{Counts: Counts{In: int64(len(in)), Out: int64(len(out)), Busy: time.Since(start)}}
	if err != nil {
		var re *RecordError
		if !errors.As(err, &re) {
			return d, err
		}
		d.Fail = re
		out = before(out, re.Seq)
	}
	p.collect(&d, out)
	return d, nil
}

// Fail applies the stage's on_error to each of recs as if its attempts
// were spent with cause: the broker delivered them too often without an
// answer (a worker died on them each time).
func (p *Processor) Fail(ctx context.Context, recs []Record, attempts int, cause error) (Done, error) {
	w := p.w
	w.ctx = ctx
	p.dead = nil
	d := Done{Counts: Counts{In: int64(len(recs))}}
	for _, rec := range recs {
		w.st.c.errors.Add(1)
		if err := w.failed(record{data: rec.Data, seq: rec.Seq}, attempts, cause); err != nil {
			var re *RecordError
			if !errors.As(err, &re) {
				return d, err
			}
			d.Fail = re
			break
		}
	}
	p.collect(&d, nil)
	return d, nil
}

// collect fills d with out, the dead letters and the counters, which it
// sets back to zero for the next piece.
func (p *Processor) collect(d *Done, out []record) {
	c := &p.w.st.c
	d.Recs = make([]Record, len(out))
	for i, rec := range out {
		d.Recs[i] = Record{Data: rec.data, Seq: rec.seq}
	}
	d.Dead = p.dead
	p.dead = nil
	d.Counts.Out = int64(len(out))
	d.Counts.Errors = c.errors.Swap(0)
	d.Counts.Retries = c.retries.Swap(0)
	d.Counts.Skipped = c.skipped.Swap(0)
	d.Counts.Dead = c.dead.Swap(0)
}

// Close releases the Stage (a plugin's process).
func (p *Processor) Close() error { return closeStage(p.w.stage) }
