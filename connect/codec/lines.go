package codec

import (
	"bytes"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/flowrun/flowrun/internal/jsontext"
)

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

func (d *lineDecoder) Consumed() int64 { return d.read - int64(d.end-d.start) - int64(d.longN) }

func newLineDecoder(r io.Reader, maxRecord int) *lineDecoder {
	return &lineDecoder{r: r, buf: make([]byte, chunkSize), max: maxRecord}
}

func (d *lineDecoder) Next(max int, out []Record) ([]Record, error) {
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
			out = append(out, Record{Data: d.head(), Line: d.line, Err: d.tooLong(), Truncated: true})
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
func (d *lineDecoder) lineTo(end int) Record {
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
func (d *lineDecoder) item(rec []byte) Record {
	if len(rec) > d.max {
		return d.tooLongItem(rec)
	}
	return Record{Data: rec[:len(rec):len(rec)], Line: d.line}
}

// tooLongItem is item's rare case, kept out of line so that item inlines.
//
//go:noinline
func (d *lineDecoder) tooLongItem(rec []byte) Record {
	n := min(len(rec), 64) // enough to recognise it in a dead letter
	return Record{Data: rec[:n:n], Line: d.line, Err: d.tooLong(), Truncated: true}
}

func (d *lineDecoder) tooLong() error {
	return fmt.Errorf("line %d: record longer than max_record_size (%d bytes)", d.line, d.max)
}

// jsonlDecoder is a lineDecoder that checks each line is one JSON value
// and passes over blank lines.
type jsonlDecoder struct {
	lines *lineDecoder
}

func (d *jsonlDecoder) Consumed() int64 { return d.lines.Consumed() }

func (d *jsonlDecoder) Next(max int, out []Record) ([]Record, error) {
	for {
		n := len(out)
		out, err := d.lines.Next(max, out)
		kept := out[:n]
		for _, it := range out[n:] {
			if it.Err == nil {
				if len(bytes.TrimSpace(it.Data)) == 0 {
					continue
				}
				if !jsontext.Valid(it.Data) {
					it.Err = fmt.Errorf("line %d: not valid JSON", it.Line)
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
