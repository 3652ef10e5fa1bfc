package runner

import "sort"

// reorder puts batches back in input order. Batches tile the input's
// sequence numbers without overlap, so the next batch to emit is the one
// whose lo follows the last emitted hi. How far it may run ahead is bounded
// not here but by the window the input acquires per record.
type reorder struct {
	next    uint64 // the first input record not yet emitted
	pending map[uint64]batch
}

func newReorder() *reorder { return newReorderAt(1) }

// newReorderAt expects first as the first record: the one after those
// done before a resume.
func newReorderAt(first uint64) *reorder {
	return &reorder{next: first, pending: map[uint64]batch{}}
}

// push takes b and emits every batch that is now in order.
func (r *reorder) push(b batch, emit func(batch) error) error {
	if b.lo != r.next {
		r.pending[b.lo] = b
		return nil
	}
	for {
		if err := emit(b); err != nil {
			return err
		}
		r.next = b.hi + 1
		var ok bool
		if b, ok = r.pending[r.next]; !ok {
			return nil
		}
		delete(r.pending, r.next)
	}
}

// drain emits what is left, in order, when no more batches will come: the
// gaps are ranges that ended in no batch (a run cut short).
func (r *reorder) drain(emit func(batch) error) error {
	los := make([]uint64, 0, len(r.pending))
	for lo := range r.pending {
		los = append(los, lo)
	}
	sort.Slice(los, func(i, j int) bool { return los[i] < los[j] })
	for _, lo := range los {
		b := r.pending[lo]
		delete(r.pending, lo)
		if err := emit(b); err != nil {
			return err
		}
		r.next = b.hi + 1
	}
	return nil
}
