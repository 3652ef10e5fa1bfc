package runner

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/spec"
)

// windowSource hands out n messages of 1 KiB, at most prefetch of them
// unsettled, as a broker does.
type windowSource struct {
	n, sent int
	body    []byte
	slots   chan struct{}
}

func (s *windowSource) Receive(ctx context.Context, buf []connect.Message) ([]connect.Message, error) {
	buf = buf[:0]
	for len(buf) < cap(buf) && s.sent < s.n {
		if len(buf) == 0 {
			select {
			case s.slots <- struct{}{}:
			case <-ctx.Done():
				return buf, ctx.Err()
			}
		} else {
			select {
			case s.slots <- struct{}{}:
			default:
				return buf, nil
			}
		}
		s.sent++
		buf = append(buf, connect.Message{Data: s.body})
	}
	if len(buf) == 0 {
		<-ctx.Done()
		return buf, ctx.Err()
	}
	return buf, nil
}

func (s *windowSource) Settle(_ context.Context, msgs []connect.Message, _ connect.Outcome) error {
	for range msgs {
		<-s.slots
	}
	return nil
}

func (s *windowSource) Close() error { return nil }

// BenchmarkBrokerToFile is a broker input into a file, the broker's
// prefetch the window of unsettled messages, with each settle batch
// fsynced first (sync) or only flushed (nosync, as before): what the
// fsync costs a run.
func BenchmarkBrokerToFile(b *testing.B) {
	body := make([]byte, 1024)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	for _, prefetch := range []int{4, 256} {
		for _, mode := range []string{"sync", "nosync"} {
			b.Run(fmt.Sprintf("prefetch=%d/%s", prefetch, mode), func(b *testing.B) {
				if mode == "nosync" {
					syncFile = func(*os.File) error { return nil }
					defer func() { syncFile = (*os.File).Sync }()
				}
				src := &windowSource{n: b.N, body: body, slots: make(chan struct{}, prefetch)}
				host := fmt.Sprintf("bench-%d-%s", prefetch, mode)
				memSources.Store(host, src)
				defer memSources.Delete(host)
				out := filepath.Join(b.TempDir(), "out.txt")
				yaml := fmt.Sprintf("input: {from: 'memq://%s'}\noutput: {to: %s}\nstages: [{use: upper, workers: 4}]\n", host, out)
				p, err := spec.Parse("b.yaml", []byte(yaml), spec.Options{})
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(body)))
				b.ResetTimer()
				if _, err := Run(context.Background(), p, Options{Stdout: io.Discard, UntilIdle: 50 * time.Millisecond}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if fi, err := os.Stat(out); err != nil || fi.Size() != int64(b.N)*int64(len(body)+1) {
					b.Fatalf("output %v (%v), want %d records", fi.Size(), err, b.N)
				}
			})
		}
	}
}
