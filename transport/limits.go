package transport

import (
	"context"
	"fmt"

	"github.com/flowrun/flowrun/runner"
)

// A message on the broker holds at most its max_payload bytes. Pieces
// and results are cut into messages of at most three quarters of it
// (recordLimit), which leaves room for the encoding and the headers; a
// single record may be larger, up to messageRoom short of max_payload
// (oneRecordLimit). A record larger than that cannot go through the
// broker at all, as a piece or as a result: it fails as its stage's
// on_error says, instead of failing the run or being published in vain
// on every delivery.

// messageRoom is more than a message's headers and the encoding around
// one record take.
const messageRoom = 8 << 10

// recordLimit is the most bytes of records one message carries when a
// piece or its results are cut into several.
func recordLimit(maxPayload int64) int { return int(maxPayload) * 3 / 4 }

// oneRecordLimit is the largest record a message can carry alone.
func oneRecordLimit(maxPayload int64) int { return int(maxPayload) - messageRoom }

// MaxRecordBytes is the largest record the stage's workers can be given.
func (q *stageQueue) MaxRecordBytes() int { return oneRecordLimit(q.run.nc.MaxPayload()) }

// TooLarge says why a record of size bytes cannot go to the stage's
// workers: the broker's limit, named.
func (q *stageQueue) TooLarge(size int) error {
	nc := q.run.nc
	return fmt.Errorf("a record of %d bytes is more than broker %s takes in a message: %d bytes, its max_payload of %d less %d for the message's headers",
		size, nc.ConnectedUrlRedacted(), oneRecordLimit(nc.MaxPayload()), nc.MaxPayload(), messageRoom)
}

// fitResults fails, as the stage's on_error says, each input record of
// recs whose results hold a record too large for one message (a fan-out
// or a transform that made it bigger than the broker takes): its results
// are dropped and it is dead-lettered, skipped, or fails the run with a
// reason that says so, instead of a publish the broker refuses on every
// delivery.
func (w *Worker) fitResults(ctx context.Context, sl *slot, recs []runner.Record, d *runner.Done, limit int) error {
	var big map[uint64]int // input record → its largest result
	for _, rec := range d.Recs {
		if len(rec.Data) > limit {
			if big == nil {
				big = map[uint64]int{}
			}
			big[rec.Seq] = max(big[rec.Seq], len(rec.Data))
		}
	}
	if big == nil {
		return nil
	}
	kept := make([]runner.Record, 0, len(d.Recs))
	for _, rec := range d.Recs {
		if _, ok := big[rec.Seq]; !ok {
			kept = append(kept, rec)
		}
	}
	d.Recs = kept
	for i := 0; i < len(recs); {
		seq := recs[i].Seq
		j := i + 1
		for j < len(recs) && recs[j].Seq == seq {
			j++
		}
		size, ok := big[seq]
		if !ok || d.Fail != nil && seq >= d.Fail.Seq {
			i = j
			continue
		}
		cause := fmt.Errorf("its result of %d bytes is more than broker %s takes in a message: %d bytes, its max_payload of %d less %d for the message's headers",
			size, w.nc.ConnectedUrlRedacted(), limit, w.nc.MaxPayload(), w.nc.MaxPayload()-int64(limit))
		f, err := sl.proc.Fail(ctx, recs[i:j], 1, cause)
		if err != nil {
			return err
		}
		d.Dead = append(d.Dead, f.Dead...)
		d.Counts.Errors += f.Counts.Errors
		d.Counts.Skipped += f.Counts.Skipped
		d.Counts.Dead += f.Counts.Dead
		if f.Fail != nil && (d.Fail == nil || f.Fail.Seq < d.Fail.Seq) {
			d.Fail = f.Fail
		}
		i = j
	}
	if d.Fail != nil {
		for len(d.Recs) > 0 && d.Recs[len(d.Recs)-1].Seq >= d.Fail.Seq {
			d.Recs = d.Recs[:len(d.Recs)-1]
		}
	}
	d.Counts.Out = int64(len(d.Recs))
	return nil
}
