package runner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/flowrun/flowrun/internal/jsontext"
	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

const (
	chunkSize = 64 << 10 // bytes per read; records point into these chunks
)

// inputFile is one input to read, in order.
type inputFile struct {
	name string // "stdin" or the path, for messages
	path string // "" for stdin
}

// expandInput resolves input.from: stdin, one path, or a glob whose
// matches are read in lexical order. It returns the files and their total
// size in bytes, or -1 when it cannot be known (stdin).
func expandInput(from string) ([]inputFile, int64, error) {
	if from == "" || from == "stdin" || from == "-" {
		return []inputFile{{name: "stdin"}}, -1, nil
	}
	paths := []string{from}
	if strings.ContainsAny(from, "*?[") {
		m, err := filepath.Glob(from)
		if err != nil {
			return nil, 0, fmt.Errorf("input %q: %w", from, err)
		}
		if len(m) == 0 {
			return nil, 0, fmt.Errorf("input %q: no file matches", from)
		}
		paths = m
	}
	var total int64
	files := make([]inputFile, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, 0, fmt.Errorf("input: %w", err)
		}
		if fi.IsDir() {
			return nil, 0, fmt.Errorf("input %s: is a directory", p)
		}
		if fi.Mode().IsRegular() && total >= 0 {
			total += fi.Size()
		} else {
			total = -1
		}
		files[i] = inputFile{name: p, path: p}
	}
	return files, total, nil
}

// item is what the input hands on: a record, or a record that could not
// be decoded.
type item struct {
	data []byte
	line int64 // line of the input file where the record starts
	err  error // a decode error for this record; data is what was read
	from int   // the stage it enters at: not 0 only when re-running dead letters
	// truncated says data is only the start of a record too long to keep.
	truncated bool
}

// decoder yields the records of one input. next returns the records that
// can be had with at most one blocking read, at most max of them, so that
// a record typed on a terminal is passed on at once; io.EOF after the last.
type decoder interface {
	next(max int, out []item) ([]item, error)
	// consumed is how many bytes of the input the records returned so
	// far span: what the input's progress bar shows against the file size.
	consumed() int64
}

func newDecoder(format string, r io.Reader, maxRecord int, bytesRead *atomic.Int64) decoder {
	cr := &countingReader{r: r, n: bytesRead}
	switch format {
	case "jsonl":
		return &jsonlDecoder{lines: newLineDecoder(&bomReader{r: cr}, maxRecord)}
	case "csv":
		return newCSVDecoder(&bomReader{r: cr})
	}
	return newLineDecoder(cr, maxRecord)
}

// bomReader drops a UTF-8 byte-order mark at the start of its input, as
// spreadsheets write it before CSV: it is not part of the first field
// (nor of the first JSON value). It never waits for more bytes than a
// Read returns unless those could be the start of a mark.
type bomReader struct {
	r     io.Reader
	done  bool
	ahead []byte // bytes read while looking for the mark, not yet returned
}

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

func (b *bomReader) Read(p []byte) (int, error) {
	if b.done {
		if len(b.ahead) > 0 {
			n := copy(p, b.ahead)
			b.ahead = b.ahead[n:]
			return n, nil
		}
		return b.r.Read(p)
	}
	var buf [3]byte
	have := 0
	for tries := 0; have < 3; tries++ {
		n, err := b.r.Read(buf[have:])
		have += n
		if have == 3 && bytes.Equal(buf[:], utf8BOM) {
			break
		}
		if !bytes.HasPrefix(utf8BOM, buf[:have]) || err != nil || tries > 100 {
			b.done = true
			b.ahead = append([]byte(nil), buf[:have]...)
			if len(b.ahead) == 0 {
				return 0, err
			}
			n := copy(p, b.ahead)
			b.ahead = b.ahead[n:]
			if len(b.ahead) > 0 {
				return n, nil
			}
			return n, err
		}
	}
	b.done = true // the mark: dropped
	return 0, nil
}

type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// lineDecoder splits its input on '\n' (dropping a '\r' before it), with
// no limit on line length but maxRecord. Records are sub-slices of
// chunks of chunkSize, capped so that a stage appending to one cannot
// write into the next. A line longer than half a chunk is gathered in the
// chunks it fills (long) rather than in a chunk grown to hold it, and made
// one record when it ends: a line past maxRecord then costs maxRecord and
// a chunk while it is read, not the 4 × of doubling a buffer past it
// (TestLongLineMemory), and the garbage of the doubling never exists.
type lineDecoder struct {
	r          io.Reader
	buf        []byte
	start, end int
	eof        bool
	max        int
	line       int64
	skipping   bool     // discarding the rest of an over-long line
	empty      int      // reads in a row that returned nothing
	read       int64    // bytes read
	long       [][]byte // the start of a line longer than half a chunk
	longN      int      // bytes in long
	shared     bool     // records point into buf
}

func (d *lineDecoder) consumed() int64 { return d.read - int64(d.end-d.start) - int64(d.longN) }

func newLineDecoder(r io.Reader, maxRecord int) *lineDecoder {
	return &lineDecoder{r: r, buf: make([]byte, chunkSize), max: maxRecord}
}

func (d *lineDecoder) next(max int, out []item) ([]item, error) {
	for {
		for len(out) < max {
			i := bytes.IndexByte(d.buf[d.start:d.end], '\n')
			if i < 0 {
				break
			}
			end := d.start + i
			if d.skipping {
				d.skipping = false
				d.start = end + 1
				continue
			}
			d.line++
			rec := d.buf[d.start:end]
			if d.longN > 0 {
				rec = d.joinLong(rec)
			}
			d.start = end + 1
			d.shared = true
			if len(rec) > 0 && rec[len(rec)-1] == '\r' {
				rec = rec[:len(rec)-1]
			}
			out = append(out, d.item(rec))
		}
		if len(out) > 0 {
			return out, nil
		}
		if d.eof {
			if (d.start < d.end || d.longN > 0) && !d.skipping {
				d.line++
				it := d.lineTo(d.end)
				d.start = d.end
				d.shared = true
				return append(out, it), nil
			}
			return out, io.EOF
		}
		if partial := d.longN + d.end - d.start; partial > d.max && !d.skipping {
			d.line++
			out = append(out, item{data: d.head(), line: d.line, err: d.tooLong(), truncated: true})
			d.shared = d.shared || len(d.long) == 0 // head points into buf
			d.skipping = true
			d.long, d.longN = nil, 0
		}
		if d.skipping {
			d.start = d.end // the rest of the line is thrown away
		}
		if d.end == len(d.buf) {
			// The chunk is full. Records handed out still point into it,
			// so the partial line moves to a fresh chunk, or, when long,
			// stays where it is as a piece of the line. A chunk no record
			// points into is read into again (the rest of a line too
			// long, thrown away, makes no garbage).
			switch partial := d.end - d.start; {
			case partial == 0 && !d.shared:
				d.start, d.end = 0, 0
			case partial > chunkSize/2:
				d.long = append(d.long, d.buf[d.start:d.end:d.end])
				d.longN += partial
				d.buf, d.start, d.end = make([]byte, chunkSize), 0, 0
				d.shared = false
			default:
				nb := make([]byte, chunkSize)
				d.end = copy(nb, d.buf[d.start:d.end])
				d.buf, d.start = nb, 0
				d.shared = false
			}
		}
		n, err := d.r.Read(d.buf[d.end:])
		d.end += n
		d.read += int64(n)
		if n == 0 && err == nil {
			if d.empty++; d.empty > 100 {
				return out, io.ErrNoProgress
			}
		} else {
			d.empty = 0
		}
		if err == io.EOF {
			d.eof = true
		} else if err != nil {
			return out, err
		}
		if len(out) > 0 {
			return out, nil
		}
	}
}

// lineTo makes the record of the line that ends at d.buf[end] (the end
// of input), joining the pieces of a long line.
func (d *lineDecoder) lineTo(end int) item {
	rec := d.buf[d.start:end]
	if d.longN > 0 {
		rec = d.joinLong(rec)
	}
	if len(rec) > 0 && rec[len(rec)-1] == '\r' {
		rec = rec[:len(rec)-1]
	}
	return d.item(rec)
}

// joinLong returns the pieces of a long line, then its end, as one record.
func (d *lineDecoder) joinLong(end []byte) []byte {
	whole := make([]byte, 0, d.longN+len(end))
	for _, p := range d.long {
		whole = append(whole, p...)
	}
	d.long, d.longN = nil, 0
	return append(whole, end...)
}

// head is the first bytes of the partial line, to recognise it by.
func (d *lineDecoder) head() []byte {
	if len(d.long) > 0 {
		return append([]byte(nil), d.long[0][:min(len(d.long[0]), 64)]...)
	}
	n := min(d.end-d.start, 64)
	return d.buf[d.start : d.start+n : d.start+n]
}

// item makes a record of a whole line, or an error if it is too long.
// It is small enough to be inlined in next's loop, which costs a third
// less per line for it (BenchmarkW1); the rare error is tooLongItem's.
func (d *lineDecoder) item(rec []byte) item {
	if len(rec) > d.max {
		return d.tooLongItem(rec)
	}
	return item{data: rec[:len(rec):len(rec)], line: d.line}
}

// tooLongItem is item's rare case, kept out of line so that item inlines.
//
//go:noinline
func (d *lineDecoder) tooLongItem(rec []byte) item {
	n := min(len(rec), 64) // enough to recognise it in a dead letter
	return item{data: rec[:n:n], line: d.line, err: d.tooLong(), truncated: true}
}

func (d *lineDecoder) tooLong() error {
	return fmt.Errorf("line %d: record longer than max_record_size (%d bytes)", d.line, d.max)
}

// jsonlDecoder is a lineDecoder that checks each line is one JSON value
// and passes over blank lines.
type jsonlDecoder struct {
	lines *lineDecoder
}

func (d *jsonlDecoder) consumed() int64 { return d.lines.consumed() }

func (d *jsonlDecoder) next(max int, out []item) ([]item, error) {
	for {
		n := len(out)
		out, err := d.lines.next(max, out)
		kept := out[:n]
		for _, it := range out[n:] {
			if it.err == nil {
				if len(bytes.TrimSpace(it.data)) == 0 {
					continue
				}
				if !jsontext.Valid(it.data) {
					it.err = fmt.Errorf("line %d: not valid JSON", it.line)
				}
			}
			kept = append(kept, it)
		}
		if len(kept) > n || err != nil {
			return kept, err
		}
		out = kept
	}
}

// csvDecoder turns CSV rows into JSON objects keyed by the header row.
type csvDecoder struct {
	br     *bufio.Reader
	r      *csv.Reader
	header []string
	keys   [][]byte // the header names as JSON strings
	read   *readCount
}

func newCSVDecoder(r io.Reader) *csvDecoder {
	rc := &readCount{r: r}
	br := bufio.NewReaderSize(rc, chunkSize) // csv.NewReader reads through br itself, so Buffered is exact
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1 // checked here, so the error names the line
	return &csvDecoder{br: br, r: cr, read: rc}
}

func (d *csvDecoder) consumed() int64 { return d.read.n - int64(d.br.Buffered()) }

// readCount counts the bytes read through it.
type readCount struct {
	r io.Reader
	n int64
}

func (c *readCount) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (d *csvDecoder) next(max int, out []item) ([]item, error) {
	for len(out) < max {
		row, err := d.r.Read()
		if err == io.EOF {
			return out, io.EOF
		}
		var line int
		if err == nil && len(row) > 0 {
			line, _ = d.r.FieldPos(0)
		}
		var perr *csv.ParseError
		switch {
		case errors.As(err, &perr):
			out = append(out, item{line: int64(perr.StartLine), err: fmt.Errorf("line %d: %v", perr.StartLine, perr.Err)})
		case err != nil:
			return out, err
		case d.header == nil:
			d.header = append([]string(nil), row...)
			for _, h := range d.header {
				d.keys = append(d.keys, stages.AppendJSONString(nil, h))
			}
			if len(d.header) == 0 {
				return out, fmt.Errorf("line %d: empty header row", line)
			}
			continue
		case len(row) != len(d.header):
			out = append(out, item{line: int64(line), data: []byte(strings.Join(row, ",")),
				err: fmt.Errorf("line %d: %d fields, the header has %d", line, len(row), len(d.header))})
		default:
			out = append(out, item{line: int64(line), data: d.object(row)})
		}
		if d.br.Buffered() == 0 {
			break // the next row would wait on a read: pass these on now
		}
	}
	return out, nil
}

func (d *csvDecoder) object(row []string) []byte {
	n := 2
	for i, f := range row {
		n += len(d.keys[i]) + len(f) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, f := range row {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, d.keys[i]...)
		b = append(b, ':')
		b = stages.AppendJSONString(b, f)
	}
	return append(b, '}')
}

// deadLetterDecoder reads a dead-letter file back as input for a re-run:
// each record enters the pipeline at the stage it failed in. A record that
// failed to decode is decoded again (it may pass now, say under a larger
// max_record_size).
type deadLetterDecoder struct {
	r       *bufio.Reader
	read    *readCount // under r
	stageAt map[string]int
	format  string
	max     int
	line    int64
}

func (d *deadLetterDecoder) consumed() int64 { return d.read.n - int64(d.r.Buffered()) }

func (d *deadLetterDecoder) next(max int, out []item) ([]item, error) {
	for len(out) < max {
		line, err := d.r.ReadBytes('\n')
		if len(bytes.TrimSpace(line)) > 0 {
			d.line++
			out = append(out, d.item(line))
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

func (d *deadLetterDecoder) item(line []byte) item {
	var dl DeadLetter
	if err := json.Unmarshal(line, &dl); err != nil {
		return item{line: d.line, data: line, err: fmt.Errorf("dead letter line %d: %v", d.line, err)}
	}
	it := item{line: d.line, data: dl.Bytes()}
	if dl.Truncated {
		it.err = fmt.Errorf("dead letter line %d: only the start of this record was kept (it was longer than max_record_size): run its input again", d.line)
		it.truncated = true
		return it
	}
	if dl.Stage != "input" {
		from, ok := d.stageAt[dl.Stage]
		if !ok {
			it.err = fmt.Errorf("dead letter line %d: the pipeline has no stage %q", d.line, dl.Stage)
		}
		it.from = from
		return it
	}
	switch {
	case len(it.data) > d.max:
		it.err = fmt.Errorf("dead letter line %d: record longer than max_record_size (%d bytes)", d.line, d.max)
	case d.format == "jsonl" && !jsontext.Valid(it.data):
		it.err = fmt.Errorf("dead letter line %d: not valid JSON", d.line)
	case d.format == "csv":
		it.err = fmt.Errorf("dead letter line %d: a CSV row that failed to decode cannot be decoded without its file", d.line)
	}
	return it
}

// chunk is what the reading goroutine hands the input stage: records with
// their numbers, or a read error.
type chunk struct {
	items  []item
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
func (r *run) readInput(readCtx, ctx context.Context, files []inputFile, q0 chan<- batch) error {
	chunks := make(chan chunk)
	done := make(chan struct{})
	defer close(done)
	go r.readFiles(files, chunks, done, readCtx)
	for {
		select {
		case c, ok := <-chunks:
			if !ok {
				return nil
			}
			if c.err != nil {
				return c.err
			}
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
		n := 1
		for n < len(items) && items[n].from == items[0].from {
			n++
		}
		if err := r.deliverRun(stop, ctx, lo, items[:n], q0, advance); err != nil {
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
func (r *run) deliverRun(stop, ctx context.Context, lo uint64, items []item, q0 chan<- batch, advance func(n int64)) error {
	b := batch{lo: lo, hi: lo + uint64(len(items)) - 1, recs: getRecords(), from: items[0].from}
	var failed error
	for i, it := range items {
		seq := lo + uint64(i)
		if it.err != nil {
			if err := r.inputError(seq, it); err != nil {
				r.failAt(seq, err)
				r.input.records.Add(1) // it was read, and failed
				b.hi, failed = seq-1, err
				break
			}
			continue
		}
		b.recs = append(b.recs, record{data: it.data, seq: seq})
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
	err := fmt.Errorf("input %s %w", name, it.err)
	switch r.p.Input.OnError {
	case spec.Skip:
		r.input.skipped.Add(1)
		return nil
	case spec.DeadLetter:
		r.input.dead.Add(1)
		return r.dl.writeEntry(DeadLetter{Stage: "input", Error: err.Error(), Attempts: 1, Seq: seq, Truncated: it.truncated}, it.data)
	}
	return err
}

// readFiles decodes the input files into chunks. It checks for a stop
// before every read.
func (r *run) readFiles(files []inputFile, chunks chan<- chunk, done <-chan struct{}, stop context.Context) {
	defer close(chunks)
	send := func(c chunk) bool {
		select {
		case chunks <- c:
			return true
		case <-done:
			return false
		}
	}
	var seq uint64
	for _, f := range files {
		select {
		case <-done:
			return
		default:
		}
		if !r.readFile(f, &seq, send, stop) {
			return
		}
	}
}

// readFile decodes one input file into chunks, numbering its records on
// from seq; false means stop reading.
func (r *run) readFile(f inputFile, seq *uint64, send func(chunk) bool, stop context.Context) bool {
	base := r.read.Load() // the files before this one, read whole
	var in io.Reader = r.opts.Stdin
	if f.path != "" {
		file, err := os.Open(f.path)
		if err != nil {
			send(chunk{err: fmt.Errorf("input: %w", err)})
			return false
		}
		defer file.Close() // this file's, not the whole glob's: a glob may match thousands
		in = file
		if r.jr != nil {
			in = r.jr.in.reader(file) // what it read identifies the input to a resume
		}
	}
	if in == nil {
		in = eofReader{}
	}
	dec := newInputDecoder(r.p.Input, in, &r.read)
	if r.opts.RetryDeadLetters != "" {
		stageAt := map[string]int{}
		for i, s := range r.p.Stages {
			stageAt[s.Name] = i
		}
		rc := &readCount{r: &countingReader{r: in, n: &r.read}}
		dec = &deadLetterDecoder{r: bufio.NewReaderSize(rc, chunkSize), read: rc,
			stageAt: stageAt, format: r.p.Input.Format, max: r.p.Input.MaxRecordSize}
	}
	for {
		if stop.Err() != nil {
			return false
		}
		items, err := dec.next(maxBatch, getItems())
		if len(items) > 0 {
			r.input.decoded.Add(int64(len(items)))
			c := chunk{items: items, lo: *seq + 1, hi: *seq + uint64(len(items)), pos: base + dec.consumed()}
			*seq = c.hi
			if !send(c) {
				return false
			}
		}
		if err == io.EOF {
			return true
		}
		if err != nil {
			send(chunk{err: fmt.Errorf("read %s: %w", f.name, err)})
			return false
		}
	}
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }
