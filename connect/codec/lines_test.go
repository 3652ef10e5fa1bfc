package codec

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
)

// TestLongLines decodes lines around and far past the chunk size, read in
// small pieces: a long line is gathered in pieces and comes out whole, one
// past the limit is an error for its line alone, and the lines after both
// are intact.
func TestLongLines(t *testing.T) {
	sizes := []int{0, 1, chunkSize/2 - 1, chunkSize / 2, chunkSize/2 + 1, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 7, 200_000}
	for _, limit := range []int{1 << 30, chunkSize, 150_000} {
		var data bytes.Buffer
		for i, n := range sizes {
			data.WriteString(strings.Repeat(string(rune('a'+i)), n))
			if i%2 == 0 {
				data.WriteByte('\r')
			}
			data.WriteByte('\n')
		}
		data.WriteString(strings.Repeat("z", 70_000)) // a last line without '\n'
		want := fuzzLines(data.Bytes())
		rng := rand.New(rand.NewPCG(uint64(limit), 1))
		steps := make([]byte, 64)
		for i := range steps {
			steps[i] = byte(rng.IntN(256))
		}
		// Reads of up to 97 bytes, and reads of whatever is asked.
		for _, steps := range [][]byte{steps, nil} {
			var n atomic.Int64
			dec := NewDecoder(&fuzzReader{data: bytes.Clone(data.Bytes()), steps: steps}, Options{Format: "lines", MaxRecordSize: limit}, &n)
			got := fuzzDecode(t, dec, steps, data.Len())
			if len(got) != len(want) {
				t.Fatalf("limit %d: %d items, want %d", limit, len(got), len(want))
			}
			for i, it := range got {
				switch {
				case len(want[i]) > limit:
					if it.Err == nil || !it.Truncated || !bytes.Equal(it.Data, want[i][:64]) {
						t.Errorf("limit %d line %d (%d bytes): err %v, data %q…, want an error and its start", limit, i+1, len(want[i]), it.Err, it.Data[:min(len(it.Data), 8)])
					}
				case it.Err != nil || !bytes.Equal(it.Data, want[i]) || cap(it.Data) != len(it.Data):
					t.Errorf("limit %d line %d: %d bytes (err %v), want %d", limit, i+1, len(it.Data), it.Err, len(want[i]))
				}
			}
			if dec.Consumed() != int64(data.Len()) || n.Load() != int64(data.Len()) {
				t.Errorf("limit %d: consumed %d, read %d of %d bytes", limit, dec.Consumed(), n.Load(), data.Len())
			}
		}
	}
}

// BenchmarkLineDecoder decodes short lines, the W1 and W2 reading path.
func BenchmarkLineDecoder(b *testing.B) {
	for _, format := range []string{"lines", "jsonl"} {
		b.Run(format, func(b *testing.B) {
			var data bytes.Buffer
			for i := range 200_000 {
				data.WriteString(`{"n":` + strings.Repeat("7", i%20) + "}\n")
			}
			b.SetBytes(int64(data.Len()))
			for range b.N {
				var n atomic.Int64
				dec := NewDecoder(bytes.NewReader(data.Bytes()), Options{Format: format, MaxRecordSize: 1 << 30}, &n)
				for {
					items, err := dec.Next(1024, make([]Record, 0, 1024))
					_ = items
					if err != nil {
						break
					}
				}
			}
		})
	}
}
