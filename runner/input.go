package runner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/codec"
	"github.com/flowrun/flowrun/connect/file"
	"github.com/flowrun/flowrun/internal/jsontext"
	"github.com/flowrun/flowrun/spec"
)

// inputFile is one input file to read, in order: the file connector's.
type inputFile = connect.File

// openFiles opens a file input (stdin, a path, a glob) as the file
// connector's Source, which the reading goroutine reads and closes. The
// journal, when there is one, hashes each file as it is read; a re-run of
// dead letters reads them with a decoder of its own.
func (r *run) openFiles(from string) (connect.FileSource, error) {
	in := r.p.Input
	c := file.SourceConfig{
		From:    from,
		Options: codec.Options{Format: in.Format, MaxRecordSize: in.MaxRecordSize, Table: codec.Table(in.CSV), Select: in.Select},
		Stdin:   r.opts.Stdin,
		Wrap: func(f io.Reader) io.Reader {
			if r.jr != nil {
				return r.jr.in.reader(f) // what it read identifies the input to a resume
			}
			return f
		},
	}
	if r.opts.RetryDeadLetters != "" {
		stageAt := map[string]int{}
		for i, s := range r.p.Stages {
			stageAt[s.Name] = i
		}
		c.Decoder = func(in io.Reader, read *atomic.Int64) codec.Decoder {
			rc := &codec.ReadCount{R: codec.CountingReader(in, read)}
			r.dlDec = &deadLetterDecoder{r: bufio.NewReaderSize(rc, codec.ChunkSize), read: rc,
				stageAt: stageAt, format: r.p.Input.Format, max: r.p.Input.MaxRecordSize}
			return r.dlDec
		}
	}
	src, err := file.NewSource(c)
	if err != nil {
		return nil, err
	}
	return src, nil
}

// item is what the input hands on: a record, or one that could not be
// decoded (connect/codec decodes files; a broker's messages are made
// items by readSource).
type item = codec.Record

// deadLetterDecoder reads a dead-letter file back as input for a re-run:
// each record enters the pipeline at the stage it failed in. A record that
// failed to decode is decoded again (it may pass now, say under a larger
// max_record_size).
type deadLetterDecoder struct {
	r       *bufio.Reader
	read    *codec.ReadCount // under r
	stageAt map[string]int
	format  string
	max     int
	line    int64
	// from is the stage each record of the last Next enters at.
	from []int
}

func (d *deadLetterDecoder) Consumed() int64 { return d.read.N - int64(d.r.Buffered()) }

func (d *deadLetterDecoder) Next(max int, out []item) ([]item, error) {
	d.from = d.from[:0]
	for len(out) < max {
		line, err := d.r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			d.line++
			it, from := d.item(line)
			out = append(out, it)
			d.from = append(d.from, from)
		}
		if err != nil {
			return out, err
		}
		if d.r.Buffered() == 0 {
			break
		}
	}
	return out, nil
}

func (d *deadLetterDecoder) item(line []byte) (it item, from int) {
	var dl DeadLetter
	if err := json.Unmarshal(line, &dl); err != nil {
		return item{Line: d.line, Data: line, Err: fmt.Errorf("dead letter line %d: %v", d.line, err)}, 0
	}
	it = item{Line: d.line, Data: dl.Bytes()}
	if dl.Truncated {
		it.Err = fmt.Errorf("dead letter line %d: only the start of this record was kept (it was longer than max_record_size): run its input again", d.line)
		it.Truncated = true
		return it, 0
	}
	if dl.Stage != "input" {
		from, ok := d.stageAt[dl.Stage]
		if !ok {
			it.Err = fmt.Errorf("dead letter line %d: the pipeline has no stage %q", d.line, dl.Stage)
		}
		return it, from
	}
	switch {
	case len(it.Data) > d.max:
		it.Err = fmt.Errorf("dead letter line %d: record longer than max_record_size (%d bytes)", d.line, d.max)
	case d.format == "jsonl" && !jsontext.Valid(it.Data):
		it.Err = fmt.Errorf("dead letter line %d: not valid JSON", d.line)
	case d.format == "csv":
		it.Err = fmt.Errorf("dead letter line %d: a CSV row that failed to decode cannot be decoded without its file", d.line)
	}
	return it, 0
}

// chunk is what the reading goroutine hands the input stage: records with
// their numbers, or a read error.
type chunk struct {
	items  []item
	from   []int // the stage each item enters at; nil: all at the first (only a re-run of dead letters has them)
	lo, hi uint64
	pos    int64 // input bytes that these records and those before them span
	err    error
}

// readInput feeds q0. The reading itself happens in a goroutine of its
// own, because a Read on a terminal or pipe cannot be interrupted. When
// the input is stopped (readCtx done: a signal, a take, a failure),
// readInput returns at once and q0 closes, even if the reader is blocked
// in a Read: records read ahead but not yet handed to the first stage are
// left unprocessed (counted as unread), so that a stop drains only what
// the queues and workers hold.
func (r *run) readInput(readCtx, ctx context.Context, src connect.FileSource, q0 chan<- batch) error {
	chunks := make(chan chunk)
	done := make(chan struct{})
	defer close(done)
	go r.readFiles(src, chunks, done, readCtx)
	var last uint64 // the last record read
	for {
		select {
		case c, ok := <-chunks:
			if !ok {
				return nil
			}
			if c.err != nil {
				// An input that cannot be read on (a broken document, a
				// file gone) fails the run as a record after the last
				// one read would: what was read drains to the output.
				r.failAt(last+1, c.err)
				return nil
			}
			last = c.hi
			if err := r.deliver(readCtx, ctx, c, q0); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if readCtx.Err() != nil {
					return nil // stopped
				}
				return err
			}
		case <-readCtx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
	}
}

// deliver sends a decoded chunk to the first stage, until stop (the
// input's context) or ctx is done.
func (r *run) deliver(stop, ctx context.Context, c chunk, q0 chan<- batch) error {
	if c.hi <= r.skip { // done before a resume
		r.input.resumed.Add(int64(len(c.items)))
		putItems(c.items)
		return nil
	}
	lo := max(c.lo, r.skip+1)
	r.input.resumed.Add(int64(lo - c.lo))
	items := c.items[lo-c.lo:]
	// The decoders know the input's offset only at the chunk's end; within
	// it, consumed moves with the records handed on, in proportion, so that
	// a chunk of a small file does not hold the display at 0%.
	from, total := r.consumed.Load(), int64(len(c.items))
	handed := int64(lo - c.lo)
	advance := func(n int64) {
		handed += n
		r.consumed.Store(from + (c.pos-from)*handed/total)
	}
	for len(items) > 0 {
		// A batch enters at one stage: a re-run of dead letters cuts the
		// chunk where the stage changes.
		n, from := len(items), 0
		if c.from != nil {
			at := c.from[lo-c.lo:]
			for n, from = 1, at[0]; n < len(items) && at[n] == from; n++ {
			}
		}
		if err := r.deliverRun(stop, ctx, lo, from, items[:n], q0, advance); err != nil {
			return err
		}
		lo += uint64(n)
		items = items[n:]
	}
	putItems(c.items)
	r.consumed.Store(c.pos)
	return nil
}

// deliverRun sends items, numbered from lo and entering at one stage. An
// item that fails the run (on_error: fail) ends the input: the records
// before it go on, whatever stop says.
func (r *run) deliverRun(stop, ctx context.Context, lo uint64, from int, items []item, q0 chan<- batch, advance func(n int64)) error {
	b := batch{lo: lo, hi: lo + uint64(len(items)) - 1, recs: getRecords(), from: from}
	var failed error
	for i, it := range items {
		seq := lo + uint64(i)
		if it.Err != nil {
			if err := r.inputError(seq, it); err != nil {
				r.failAt(seq, err)
				r.input.records.Add(1) // it was read, and failed
				b.hi, failed = seq-1, err
				break
			}
			continue
		}
		b.recs = append(b.recs, record{data: it.Data, seq: seq})
	}
	if b.hi < b.lo {
		return failed
	}
	if failed == nil {
		ctx = stop
	}
	if r.window != nil {
		if err := r.window.Acquire(ctx, b.size()); err != nil {
			return err
		}
		b.sem, b.tokens = r.window, b.size()
	}
	ok := split(b, r.stages[0].take, func(p batch) bool {
		select {
		case q0 <- p:
			r.input.records.Add(p.size())
			advance(p.size())
			return true
		case <-ctx.Done():
			p.release()
			return false
		}
	})
	if !ok {
		return ctx.Err()
	}
	return failed
}

func (r *run) inputError(seq uint64, it item) error {
	r.input.errors.Add(1)
	name := r.p.Input.From
	if name == "" {
		name = "stdin"
	}
	if r.acks != nil {
		name = brokerName(name) // without its password
	}
	err := fmt.Errorf("input %s %w", name, it.Err)
	switch r.p.Input.OnError {
	case spec.Skip:
		r.input.skipped.Add(1)
		return nil
	case spec.DeadLetter:
		r.input.dead.Add(1)
		return r.dl.writeEntry(DeadLetter{Stage: "input", Error: err.Error(), Attempts: 1, Seq: seq, Truncated: it.Truncated}, it.Data)
	}
	return err
}

// readFiles decodes the input files into chunks, and closes them. It
// checks for a stop before every read.
func (r *run) readFiles(src connect.FileSource, chunks chan<- chunk, done <-chan struct{}, stop context.Context) {
	defer close(chunks)
	defer src.Close()
	send := func(c chunk) bool {
		select {
		case chunks <- c:
			return true
		case <-done:
			return false
		}
	}
	var seq uint64
	for {
		select {
		case <-done:
			return
		default:
		}
		if stop.Err() != nil {
			return
		}
		items, err := src.ReceiveRecords(maxBatch, getItems())
		if len(items) > 0 {
			r.input.decoded.Add(int64(len(items)))
			c := chunk{items: items, lo: seq + 1, hi: seq + uint64(len(items)), pos: src.Consumed()}
			if r.dlDec != nil {
				c.from = append([]int(nil), r.dlDec.from...)
			}
			seq = c.hi
			if !send(c) {
				return
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			send(chunk{err: err})
			return
		}
	}
}
