package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/runner"
)

// A record that crashes the process working it (a plugin that kills its
// worker, a stage that exhausts memory) kills with it every piece the
// worker holds: records of other stages and of the pieces held ahead,
// and the poison's neighbours in its own piece. JetStream counts a
// delivery of each of them; giving up on a piece after MaxDeliver of the
// broker's deliveries, as flowrun did, dead-lettered those innocent
// records with the poison (with --max-deliver 2, every one of them).
//
// So flowrun does not count deliveries but deaths, and charges a death
// to a record only when nothing else could have caused it. A piece is
// worked side by side with the others on its first deliveries, up to
// aloneFrom (its first and second; with --max-deliver 3 or less, its
// first), and alone, a record at a time, on the deliveries after (a
// suspect):
//
//   - Alone: under Worker.gate's Lock, so no record of any other piece,
//     stage or run is being worked in the process meanwhile (they are
//     worked under RLock; a suspect waits for those at work to end, and
//     holds back the next).
//   - Before it works record i alone, the worker stores a mark on the
//     stage's Tried subject for the piece, "record i is being worked",
//     with the deaths counted so far, and waits for the broker to have
//     it; after the last record it stores "none is". A clean stop
//     (Ctrl-C) stores "none is" too.
//   - A delivery that finds the mark naming record i counts a death of
//     record i: the worker that stored it ended while working i alone
//     (it died, froze past the ack wait or lost the broker), since it
//     would have stored another mark had it finished i.
//   - A record with N-aloneFrom deaths, at least 1 (N = --max-deliver),
//     is not worked again: it fails as its stage's on_error says
//     (dead-lettered, with the reason), the rest of its piece is
//     worked, and the piece is Termed.
//
// The bound: a record is dead-lettered only if N-aloneFrom (at least 1)
// worker processes ended while it was the only record being worked in
// them. Another record's crash never counts against it, whatever N:
// while a suspect is worked, nothing else is; on the shared deliveries
// nothing is counted. A record that kills every worker thus ends
// max(2, N-1) of them, N-1 for N >= 3 as when deliveries were counted.
// What stays exposed is what kills a worker from outside (kill -9, a
// machine lost) exactly while a record is worked alone, that many times;
// and a record that kills its process after it returned (a goroutine it
// left behind) is not told apart from the ones worked after it.
//
// Pieces held but not being worked when the worker dies are not charged:
// they come again like the others, so the broker's count of deliveries
// climbs, and the consumer has no MaxDeliver.
//
// The cost: a suspect is worked by one slot, a record at a time, with a
// round trip to the broker per record, while the process works nothing
// else. Hence the second shared delivery: a worker killed from outside
// (the common case) has the pieces it held worked again side by side,
// as fast as before (bench/redeliver.sh, 16 pieces of 200 ms in one
// worker's hands: 1.1-1.2 s from the kill to the end, the ack wait of 1 s
// included, before and after; 4.3 s worked alone, --max-deliver 3); only
// a piece whose workers ended twice is worked alone.

// aloneFrom is the delivery of a piece from which it is worked alone,
// for a --max-deliver of n: its third, or its second when n is 3 or
// less, so that a poison still ends at most max(2, n-1) workers.
func aloneFrom(n int) int64 {
	if n <= 3 {
		return 2
	}
	return 3
}

// mark is what Tried.<sequence> holds for a piece worked alone.
type mark struct {
	// At is the record being worked alone, -1 none.
	At int `json:"at"`
	// Deaths counts, per record (by its place in the piece), the workers
	// that ended while working it alone.
	Deaths map[int]int `json:"deaths,omitempty"`
}

// markWait bounds the store of a mark once the worker is stopping.
const markWait = 2 * time.Second

// alone works a suspect piece on sl, a record at a time, while nothing
// else is worked in the process (see above). An error is not a record's:
// ctx ended, or a mark could not be stored; the piece is then given back.
func (w *Worker) alone(ctx context.Context, info RunInfo, s StageInfo, sl *slot, p *piece) (runner.Done, error) {
	w.gate.Lock()
	defer w.gate.Unlock()
	if err := ctx.Err(); err != nil {
		return runner.Done{}, err
	}
	subject := s.Tried + "." + strconv.FormatUint(p.seq, 10)
	stream, err := w.js.Stream(ctx, info.Stream)
	if err != nil {
		return runner.Done{}, err
	}
	mk := mark{At: -1}
	switch raw, err := stream.GetLastMsgForSubject(ctx, subject); {
	case errors.Is(err, jetstream.ErrMsgNotFound):
	case err != nil:
		return runner.Done{}, err
	default:
		json.Unmarshal(raw.Data, &mk) // a mark not understood: none
	}
	if mk.Deaths == nil {
		mk.Deaths = map[int]int{}
	}
	if mk.At >= 0 && mk.At < len(p.recs) {
		mk.Deaths[mk.At]++
	}
	store := func(ctx context.Context, at int) error {
		mk.At = at
		b, _ := json.Marshal(mk)
		_, err := w.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: b})
		return err
	}
	n := cmp0(info.MaxDeliver, DefaultMaxDeliver)
	limit := max(1, n-int(aloneFrom(n)))
	shared := "a first delivery, shared with other records, that"
	if aloneFrom(n) > 2 {
		shared = "two deliveries, shared with other records, that"
	}
	done := make([]runner.Done, 0, len(p.recs))
	for i := range p.recs {
		rec := p.recs[i : i+1]
		var d runner.Done
		if deaths := mk.Deaths[i]; deaths >= limit {
			p.termed = true
			d, err = sl.proc.Fail(ctx, rec, deaths+int(aloneFrom(n))-1, fmt.Errorf("worked alone, it ended its worker %s (--max-deliver %d), after %s ended without an answer too: the worker died or outlived the ack wait of %v each time", times(deaths), n, shared, info.AckWait))
		} else if err = store(ctx, i); err == nil {
			if d, err = sl.proc.Process(ctx, rec); err == nil {
				err = w.fitResults(ctx, sl, rec, &d, oneRecordLimit(w.nc.MaxPayload()))
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				// Stopping: record i did not end the worker.
				sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markWait)
				store(sctx, -1)
				cancel()
			}
			return runner.Done{}, err
		}
		done = append(done, d)
		if d.Fail != nil {
			break // as one slot working the piece would stop
		}
	}
	// A death from here on (while the results go out) is no record's.
	// Not stored (the broker away), the mark charges the last record if
	// the results do not reach the broker either.
	store(ctx, -1)
	return join(done), nil
}

// cmp0 is v, or def when v is 0 (a run of a flowrun before it said).
func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// times says n times in words.
func times(n int) string {
	switch n {
	case 1:
		return "once"
	case 2:
		return "twice"
	}
	return strconv.Itoa(n) + " times"
}
