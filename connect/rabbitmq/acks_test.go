package rabbitmq

import (
	"slices"
	"testing"
)

// Acks settled out of order become one multiple-ack up to the first gap
// and single acks above it; the multiple-ack never names a tag already
// acked alone (the broker would close the channel for an unknown tag).
func TestAcksBatch(t *testing.T) {
	var a acks
	steps := []struct {
		settle  []uint64
		upTo    uint64
		singles []uint64
	}{
		{[]uint64{1, 2, 3}, 3, nil},
		{[]uint64{5, 6}, 0, []uint64{5, 6}}, // 4 still at work
		{[]uint64{4}, 4, nil},               // 5 and 6 were acked alone
		{[]uint64{8, 7}, 8, nil},
		{[]uint64{8}, 0, nil}, // settled twice: nothing more
	}
	for i, s := range steps {
		upTo, singles := a.done(s.settle)
		slices.Sort(singles)
		if upTo != s.upTo || !slices.Equal(singles, s.singles) {
			t.Errorf("step %d: upTo %d singles %v, want %d %v", i, upTo, singles, s.upTo, s.singles)
		}
	}
}
