package runner

import (
	"math/rand/v2"
	"testing"
)

// FuzzReorder cuts 1..n into random ranges, pushes them in random order
// and checks that every range comes out once, in order; dropping some
// ranges, drain must still emit the rest in order, once.
func FuzzReorder(f *testing.F) {
	f.Add(uint64(1), uint16(10), uint8(0))
	f.Add(uint64(42), uint16(1000), uint8(3))
	f.Add(uint64(7), uint16(1), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, size uint16, dropEvery uint8) {
		n := uint64(size)%5000 + 1
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		var ranges []batch
		for lo := uint64(1); lo <= n; {
			hi := min(n, lo+uint64(rng.IntN(70)))
			b := batch{lo: lo, hi: hi}
			// Records within the range: some filtered, some fanned out.
			for s := lo; s <= hi; s++ {
				for range rng.IntN(3) {
					b.recs = append(b.recs, record{seq: s})
				}
			}
			ranges = append(ranges, b)
			lo = hi + 1
		}
		rng.Shuffle(len(ranges), func(i, j int) { ranges[i], ranges[j] = ranges[j], ranges[i] })
		dropped := map[uint64]bool{}
		if dropEvery > 0 {
			for i := range ranges {
				if i%int(dropEvery) == 0 {
					dropped[ranges[i].lo] = true
				}
			}
		}
		var emitted []batch
		emit := func(b batch) error {
			emitted = append(emitted, b)
			return nil
		}
		ro := newReorder()
		for _, b := range ranges {
			if dropped[b.lo] {
				continue
			}
			if err := ro.push(b, emit); err != nil {
				t.Fatal(err)
			}
		}
		if len(dropped) == 0 && len(ro.pending) != 0 {
			t.Fatalf("%d batches pending after the whole range came", len(ro.pending))
		}
		if err := ro.drain(emit); err != nil {
			t.Fatal(err)
		}
		var lastHi uint64
		var lastSeq uint64
		seen := map[uint64]bool{}
		for _, b := range emitted {
			if b.lo <= lastHi {
				t.Fatalf("batch %d..%d emitted after %d", b.lo, b.hi, lastHi)
			}
			if len(dropped) == 0 && b.lo != lastHi+1 {
				t.Fatalf("batch %d..%d emitted after %d: a gap", b.lo, b.hi, lastHi)
			}
			if seen[b.lo] || dropped[b.lo] {
				t.Fatalf("batch %d..%d emitted twice or dropped", b.lo, b.hi)
			}
			seen[b.lo] = true
			for _, r := range b.recs {
				if r.seq < lastSeq {
					t.Fatalf("record %d after %d", r.seq, lastSeq)
				}
				lastSeq = r.seq
			}
			lastHi = b.hi
		}
		if len(seen)+len(dropped) != len(ranges) {
			t.Fatalf("%d batches emitted, %d dropped, of %d", len(seen), len(dropped), len(ranges))
		}
	})
}
