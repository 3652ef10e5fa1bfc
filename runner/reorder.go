package runner

import "sort"

// reorder puts batches back in input order. Batches tile the input's
// sequence numbers without overlap, so the next batch to emit is the one
// whose lo follows the last emitted hi; the pieces a Drainer emits before
// its last have an empty range at that lo, and their part orders them.
// How far it may run ahead is bounded not here but by the window the
// input acquires per record.
type reorder struct {
	next     uint64 // the first input record not yet emitted
	lastPart uint32 // the last part emitted at next, 0 for none
	pending  map[place]batch
}

// place is where a batch goes in the order.
type place struct {
	lo   uint64
	part uint32
}

func newReorder() *reorder { return newReorderAt(1) }

// newReorderAt expects first as the first record: the one after those
// done before a resume.
func newReorderAt(first uint64) *reorder {
	return &reorder{next: first, pending: map[place]batch{}}
}

// push takes b and emits every batch that is now in order.
func (r *reorder) push(b batch, emit func(batch) error) error {
	if b.lo != r.next || (b.part != 0 && b.part != r.lastPart+1) {
		r.pending[place{b.lo, b.part}] = b
		return nil
	}
	for {
		if err := emit(b); err != nil {
			return err
		}
		r.advance(b)
		at := place{r.next, r.lastPart + 1}
		var ok bool
		if b, ok = r.pending[at]; !ok && r.lastPart == 0 {
			at.part = 0
			b, ok = r.pending[at]
		}
		if !ok {
			return nil
		}
		delete(r.pending, at)
	}
}

// advance moves past b: past its range, or to the next part of a
// Drainer's pieces when its range is empty.
func (r *reorder) advance(b batch) {
	if b.part != 0 && b.hi+1 == b.lo {
		r.lastPart = b.part
		return
	}
	r.next, r.lastPart = b.hi+1, 0
}

// drain emits what is left, in order, when no more batches will come: the
// gaps are ranges that ended in no batch (a run cut short).
func (r *reorder) drain(emit func(batch) error) error {
	at := make([]place, 0, len(r.pending))
	for p := range r.pending {
		at = append(at, p)
	}
	sort.Slice(at, func(i, j int) bool {
		return at[i].lo < at[j].lo || at[i].lo == at[j].lo && at[i].part < at[j].part
	})
	for _, p := range at {
		b := r.pending[p]
		delete(r.pending, p)
		if err := emit(b); err != nil {
			return err
		}
		r.advance(b)
	}
	return nil
}
