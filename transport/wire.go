package transport

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flowrun/flowrun/runner"
)

// The headers of every message on a run's stream: where its records come
// from. A piece's records carry their own input numbers in the body; the
// headers say the range, so that a message can be traced without
// decoding it.
const (
	hdrRun     = "Flowrun-Run"     // the run id
	hdrStage   = "Flowrun-Stage"   // the stage's name
	hdrPiece   = "Flowrun-Piece"   // the piece: its first and last input record and a hash of what it holds, lo-hi~hash
	hdrSeq     = "Flowrun-Seq"     // the input records it holds: "lo-hi"
	hdrPart    = "Flowrun-Part"    // results: part k of n of a piece's results, "k/n"
	hdrAttempt = "Flowrun-Attempt" // results: the delivery of the piece they answer, from 1
	hdrWorker  = "Flowrun-Worker"  // results: the worker that made them, "ID NAME" (Worker.ID, its name: host:pid or --name)
	// hdrMsg is, on results, the stream sequence of the piece's message
	// they answer: a piece sent again (by a resumed run) is another
	// message, whose results must not be taken for a copy of the first's.
	hdrMsg = "Flowrun-Msg"
	// hdrNotice marks a message on a stage's Out subject that is not
	// results: "redelivered" says a worker started a delivery of a piece
	// after its first, which the run counts however it ends.
	hdrNotice = "Flowrun-Notice"
)

// appendRecords encodes recs: their count, then each one's input number
// (as the difference from the one before) and its bytes.
func appendRecords(b []byte, recs []runner.Record) []byte {
	b = binary.AppendUvarint(b, uint64(len(recs)))
	var prev uint64
	for _, r := range recs {
		b = binary.AppendVarint(b, int64(r.Seq-prev))
		prev = r.Seq
		b = binary.AppendUvarint(b, uint64(len(r.Data)))
		b = append(b, r.Data...)
	}
	return b
}

var errCorrupt = errors.New("a message that is not flowrun's (or of another flowrun version)")

type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errCorrupt
		r.b = nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		r.b = nil
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) records() []runner.Record {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err = errCorrupt
		return nil
	}
	recs := make([]runner.Record, n)
	var prev uint64
	for i := range recs {
		prev += uint64(r.varint())
		recs[i] = runner.Record{Seq: prev, Data: r.bytes()}
	}
	if r.err != nil {
		return nil
	}
	return recs
}

// decodeWork reads a piece's records.
func decodeWork(data []byte) ([]runner.Record, error) {
	r := reader{b: data}
	recs := r.records()
	return recs, r.err
}

// appendDone encodes one part of a piece's results: its records and its
// dead letters, and, in the last part (whole), the counts and the
// failure. Dead letters go in parts as records do: those of a piece of
// many records may be more than one message takes.
func appendDone(b []byte, p resultPart, whole *runner.Done) []byte {
	b = appendRecords(b, p.recs)
	b = binary.AppendUvarint(b, uint64(len(p.dead)))
	for _, dl := range p.dead {
		j, _ := json.Marshal(dl.Letter)
		b = binary.AppendUvarint(b, uint64(len(j)))
		b = append(b, j...)
		b = binary.AppendUvarint(b, uint64(len(dl.Data)))
		b = append(b, dl.Data...)
	}
	d := whole
	if d == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	c := d.Counts
	for _, v := range []int64{c.In, c.Out, c.Errors, c.Retries, c.Skipped, c.Dead, int64(c.Busy), c.Redelivered} {
		b = binary.AppendVarint(b, v)
	}
	if f := d.Fail; f != nil {
		b = append(b, 1)
		b = binary.AppendUvarint(b, f.Seq)
		b = binary.AppendUvarint(b, uint64(f.Attempts))
		for _, s := range [][]byte{[]byte(f.Stage), []byte(f.Err.Error()), f.Record} {
			b = binary.AppendUvarint(b, uint64(len(s)))
			b = append(b, s...)
		}
	} else {
		b = append(b, 0)
	}
	return b
}

// decodeDone reads one part of a piece's results into d: its records and
// dead letters appended, the rest set when it is the last part.
func decodeDone(data []byte, d *runner.Done) error {
	r := reader{b: data}
	d.Recs = append(d.Recs, r.records()...)
	if r.err != nil {
		return r.err
	}
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		return errCorrupt
	}
	for range n {
		var dl runner.Dead
		if err := json.Unmarshal(r.bytes(), &dl.Letter); err != nil && r.err == nil {
			r.err = errCorrupt
		}
		dl.Data = r.bytes()
		d.Dead = append(d.Dead, dl)
	}
	if r.err != nil || len(r.b) == 0 {
		return errCorrupt
	}
	last := r.b[0] == 1
	r.b = r.b[1:]
	if !last {
		return nil
	}
	var v [8]int64
	for i := range v {
		v[i] = r.varint()
	}
	d.Counts = runner.Counts{In: v[0], Out: v[1], Errors: v[2], Retries: v[3], Skipped: v[4], Dead: v[5], Busy: time.Duration(v[6]), Redelivered: v[7]}
	if r.err != nil || len(r.b) == 0 {
		return errCorrupt
	}
	failed := r.b[0] == 1
	r.b = r.b[1:]
	if failed {
		f := &runner.RecordError{Seq: r.uvarint(), Attempts: int(r.uvarint())}
		f.Stage = string(r.bytes())
		f.Err = errors.New(string(r.bytes()))
		f.Record = r.bytes()
		d.Fail = f
	}
	return r.err
}

// seqRange is the Flowrun-Seq of recs.
func seqRange(recs []runner.Record) string {
	if len(recs) == 0 {
		return ""
	}
	return strconv.FormatUint(recs[0].Seq, 10) + "-" + strconv.FormatUint(recs[len(recs)-1].Seq, 10)
}

// part reads a Flowrun-Part header: k of n.
func part(h nats.Header) (k, n int, err error) {
	ks, ns, ok := strings.Cut(h.Get(hdrPart), "/")
	if k, err = strconv.Atoi(ks); err == nil && ok {
		n, err = strconv.Atoi(ns)
	}
	if err != nil || !ok || k < 1 || k > n {
		return 0, 0, fmt.Errorf("%w: Flowrun-Part %q", errCorrupt, h.Get(hdrPart))
	}
	return k, n, nil
}

// resultPart is what one message of a piece's results carries.
type resultPart struct {
	recs []runner.Record
	dead []runner.Dead
}

// splitResults cuts d's records and dead letters into parts of at most
// limit bytes as encoded (at least one record or dead letter each, and
// at least one part); the last part, which carries the failure's record
// too, has room for it.
func splitResults(d *runner.Done, limit int) []resultPart {
	var parts []resultPart
	var cur resultPart
	size := 0
	add := func(n int) {
		if (len(cur.recs) > 0 || len(cur.dead) > 0) && size+n > limit {
			parts = append(parts, cur)
			cur, size = resultPart{}, 0
		}
		size += n
	}
	for _, r := range d.Recs {
		add(len(r.Data) + 2*binary.MaxVarintLen64)
		cur.recs = append(cur.recs, r)
	}
	for _, dl := range d.Dead {
		j, _ := json.Marshal(dl.Letter) // its size as encoded: a rare path
		add(len(dl.Data) + len(j) + 2*binary.MaxVarintLen64)
		cur.dead = append(cur.dead, dl)
	}
	if f := d.Fail; f != nil {
		n := len(f.Record) + len(f.Err.Error()) + len(f.Stage) + 64
		if (len(cur.recs) > 0 || len(cur.dead) > 0) && size+n > limit {
			parts = append(parts, cur)
			cur = resultPart{}
		}
	}
	return append(parts, cur)
}
