package stages

import (
	"context"
	"errors"
	"time"
)

// A Stage turns one record into zero or more records.
//
// Process appends the results for rec to out and returns the extended slice,
// in the manner of strconv.AppendInt. Appending nothing filters rec out;
// appending several records fans it out, and the runner keeps those records
// together and in order. A non-nil error marks rec as failed: the runner
// discards whatever was appended for it and applies the stage's retry and
// on_error policy, so Process must be safe to call again with the same rec.
//
// rec belongs to the stage for the duration of the call: Process may modify
// its bytes in place and append (sub-slices of) it, but only on its way to
// a nil error, because a failed record is retried and dead-lettered as it
// came. Its bytes are rec[:len(rec)] and no more: what lies beyond, up to
// cap(rec), may be another record's, so Process must not append to rec
// (copy instead). Records appended for one call must not overlap in
// memory, and a sub-slice appended must be capped (rec[i:j:j]) so that the
// next stage cannot write past it either. Once
// Process returns, the records it appended belong to the runner: the stage
// must not keep or reuse their memory, nor keep rec or out.
//
// Each worker has its own Stage, made by the stage's Spec.New, so a Stage
// need not be safe for concurrent use. Process should return promptly when
// ctx is done; the runner sets a deadline on ctx when the stage has a
// timeout.
type Stage interface {
	Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error)
}

// A BatchStage can take many records in one call, to overlap their work:
// a plugin that writes records ahead into a pipe and reads the answers
// behind them. The runner calls ProcessBatch with the records it has at
// hand (never waiting for more to arrive) and falls back to Process to
// retry a single record.
//
// ProcessBatch calls emit exactly once for every record, in order of i,
// with what Process would have returned for recs[i]. out is only valid
// during the emit call. The contract on rec and out is Process's. Config's
// Timeout, when set, is the longest the stage may wait for any one answer:
// ProcessBatch applies it itself and names the record that stalled.
type BatchStage interface {
	Stage
	ProcessBatch(ctx context.Context, recs [][]byte, emit func(i int, out [][]byte, err error))
}

// A Mapper is a Stage that turns every record into exactly one record and
// never fails (trim, upper). The runner calls Map instead of Process in
// its hot loop, which spares the out slice; Process must do the same as
// Map. Map's contract on rec is Process's.
type Mapper interface {
	Stage
	Map(rec []byte) []byte
}

// A Flusher is a Stage that holds records across calls (batch, count) and
// emits what it holds when its input ends. Flush is called once per worker,
// after the last Process call.
type Flusher interface {
	Stage
	Flush(ctx context.Context, out [][]byte) ([][]byte, error)
}

// A Holder is a Flusher that can say how many of the records it took in
// it still holds: the most recent ones, since a Flusher emits in the order
// it took records in. With it the runner knows exactly which input records
// are wholly passed on, which an ordered run and the journal rely on. A
// Flusher that is not a Holder is taken to emit everything it holds
// whenever it emits.
type Holder interface {
	Flusher
	Held() int
}

// A Drainer is a Flusher that may hold more at the end of input than one
// Flush should return: a sort that spilled its runs to disk merges them
// as the stages after it take the records, so that its memory stays
// bounded. At the end of input the runner calls More after each Flush,
// and Flush again while More is true; what those pieces hold goes on in
// that order, the input records they stand for being claimed with the
// last.
type Drainer interface {
	Flusher
	More() bool
}

// An Idler is a Flusher that also wants Flush called when no record has
// reached it for IdleAfter: a batch with max_wait must not hold a record
// forever on a quiet stream.
type Idler interface {
	Flusher
	IdleAfter() (d time.Duration)
}

// ErrStop is returned by Process, alone or wrapped, when the stage has
// everything it wants (take): the record is counted as processed with
// whatever was appended, and the runner stops reading input and drains what
// is in flight as if the input had ended.
var ErrStop = errors.New("stage wants no more input")

// ErrLost marks the error of a record that a BatchStage lost through no
// fault of its own: its plugin process died while the record was in flight
// behind another. The runner tries such a record again, alone, without
// counting an attempt.
var ErrLost = errors.New("lost in flight")

// ErrPermanent wraps an error that another attempt cannot fix (a malformed
// record, a 404): the runner does not retry it.
var ErrPermanent = errors.New("permanent")

// Permanent marks err as not worth retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

type permanentError struct{ err error }

func (e permanentError) Error() string        { return e.err.Error() }
func (e permanentError) Unwrap() error        { return e.err }
func (e permanentError) Is(target error) bool { return target == ErrPermanent }
