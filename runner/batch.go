package runner

import (
	"sync"

	"golang.org/x/sync/semaphore"
)

// record is one record in flight with the number of the input record it
// came from (1-based), which errors and dead letters name.
type record struct {
	data []byte
	seq  uint64
}

// batch is a run of records covering the input records lo..hi. A batch
// may hold fewer records than its range (some were filtered) or more
// (fanned out); an empty batch still travels, so that the reorder buffer
// at the end knows its range is done.
type batch struct {
	lo, hi uint64
	recs   []record
	// tokens is how many tokens of window sem the batch holds: a memory
	// bound for ordered runs. The input's batches hold one per input
	// record of their range, from the run's window; what a holding stage
	// emits holds tokens of that stage's own window (see forwardHeld).
	// Whoever ends the batch — the writer, or a holding stage that takes
	// it in — gives them back.
	tokens int64
	sem    *semaphore.Weighted
	// from is the index of the stage its records enter at; the stages
	// before pass it on untouched. Only a re-run of dead letters sets it.
	from int
	// part numbers the pieces a stages.Drainer emits at the end of input,
	// from 1: all but the last have an empty range (hi = lo-1), claiming
	// no input record, and part keeps them in order where lo alone
	// cannot. 0 for every other batch.
	part uint32
}

func (b *batch) size() int64 { return int64(b.hi - b.lo + 1) }

// release gives back the batch's window tokens, once.
func (b *batch) release() {
	if b.sem != nil && b.tokens > 0 {
		b.sem.Release(b.tokens)
	}
	b.tokens = 0
}

// split cuts b into pieces of about n records whose ranges still tile
// lo..hi, for a stage whose workers take few records at a time. It cuts
// only between records of different input records, so the fan-out of one
// input record stays in one piece and in order.
func split(b batch, n int, send func(batch) bool) bool {
	if len(b.recs) <= n {
		return send(b)
	}
	lo, start := b.lo, 0
	for start < len(b.recs) {
		j := min(start+n, len(b.recs))
		for j < len(b.recs) && b.recs[j].seq == b.recs[j-1].seq {
			j++
		}
		hi := b.hi
		if j < len(b.recs) {
			hi = b.recs[j].seq - 1
		}
		piece := batch{lo: lo, hi: hi, recs: b.recs[start:j:j], from: b.from, sem: b.sem, part: b.part}
		piece.tokens = min(piece.size(), b.tokens) // the last piece takes the rest
		if j == len(b.recs) {
			piece.tokens = b.tokens
		}
		b.tokens -= piece.tokens
		if !send(piece) {
			return false
		}
		lo, start = hi+1, j
	}
	return true
}

// Slices of records and of input items are recycled from the writer and
// the input stage back to the reader: a run of millions of records would
// otherwise allocate one of each per batch, and the garbage collector's
// work, not the stages', dominated cheap pipelines (BenchmarkW1).
var (
	recordPool = sync.Pool{New: func() any { s := make([]record, 0, maxBatch); return &s }}
	itemPool   = sync.Pool{New: func() any { s := make([]item, 0, maxBatch); return &s }}
)

func getRecords() []record { return (*recordPool.Get().(*[]record))[:0] }

// putRecords recycles s if it is a whole slice from getRecords. Pieces cut
// by split have a smaller capacity and are left to the collector, since
// their siblings may still be in use.
func putRecords(s []record) {
	if cap(s) != maxBatch {
		return
	}
	s = s[:cap(s)]
	clear(s) // let go of the chunks the records point into
	s = s[:0]
	recordPool.Put(&s)
}

func getItems() []item { return (*itemPool.Get().(*[]item))[:0] }

func putItems(s []item) {
	if cap(s) != maxBatch {
		return
	}
	s = s[:cap(s)]
	clear(s)
	s = s[:0]
	itemPool.Put(&s)
}
