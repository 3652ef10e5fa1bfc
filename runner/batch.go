package runner

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
	// held says the window tokens of the range were already given back
	// by a stage that holds records (see worker.hold).
	held bool
}

func (b *batch) size() int64 { return int64(b.hi - b.lo + 1) }

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
		if !send(batch{lo: lo, hi: hi, recs: b.recs[start:j:j], held: b.held}) {
			return false
		}
		lo, start = hi+1, j
	}
	return true
}
