package stages

import (
	"bytes"
	"io"
	"testing"
)

// BenchmarkExecStderr measures how fast a stream plugin's stderr is
// drained when it floods it: the plugin blocks on a full pipe whenever
// flowrun reads slower than it writes. Short lines are the hard case: all
// but a few are dropped, so their cost is the rate limiter's.
func BenchmarkExecStderr(b *testing.B) {
	for _, c := range []struct {
		name string
		line []byte
	}{
		{"2B", []byte("y\n")},
		{"80B", append(bytes.Repeat([]byte("e"), 79), '\n')},
		{"100KB", append(bytes.Repeat([]byte("e"), 100000), '\n')},
	} {
		b.Run(c.name, func(b *testing.B) {
			chunk := bytes.Repeat(c.line, (64<<10)/len(c.line)+1)[:64<<10]
			e := &execStderr{log: newExecLog(io.Discard, "plugin")}
			b.SetBytes(int64(len(chunk)))
			for i := 0; i < b.N; i++ {
				_, _ = e.Write(chunk)
			}
		})
	}
}
