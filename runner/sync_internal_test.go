package runner

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/spec"
)

// ledger is what happened to the files and the source, in order.
type ledger struct {
	mu     sync.Mutex
	events []string
}

func (l *ledger) add(format string, args ...any) {
	l.mu.Lock()
	l.events = append(l.events, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// memSource hands out its messages, at most cap(slots) of them
// unsettled (a broker's prefetch), then nothing (a drained queue), and
// notes each Settle with the records it settles.
type memSource struct {
	msgs  chan connect.Message
	slots chan struct{}
	l     *ledger
}

func (s *memSource) Receive(ctx context.Context, buf []connect.Message) ([]connect.Message, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return buf[:0], ctx.Err()
	}
	select {
	case m := <-s.msgs:
		return append(buf[:0], m), nil
	case <-ctx.Done():
		<-s.slots
		return buf[:0], ctx.Err()
	}
}

func (s *memSource) Settle(_ context.Context, msgs []connect.Message, o connect.Outcome) error {
	var b strings.Builder
	for _, m := range msgs {
		b.WriteString(" " + string(m.Data))
		<-s.slots
	}
	s.l.add("%s%s", o, b.String())
	return nil
}

func (s *memSource) Close() error { return nil }

var memSources sync.Map // URL host → the test's connect.Source

func init() {
	connect.Register(connect.Spec{
		Name: "memory", Schemes: []string{"memq"}, URL: "memq://NAME", Doc: "A test's messages.",
		Source: func(_ context.Context, p *connect.Params) (connect.Source, error) {
			s, _ := memSources.Load(p.URL.Host)
			return s.(connect.Source), nil
		},
	})
}

// A broker message is settled only once the output file and the
// dead-letter file that hold what was made of it are fsynced, not
// merely written: one fsync of each per settle batch. An fsync slower
// than --until-idle (a disk that is busy) does not end the input: the
// messages it holds are still in flight.
func TestSettleAfterSync(t *testing.T) {
	for _, tc := range []struct {
		name string
		slow time.Duration
	}{{"fast", 0}, {"slow", 300 * time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) { settleAfterSync(t, tc.slow) })
	}
}

func settleAfterSync(t *testing.T, slow time.Duration) {
	defer goleak.VerifyNone(t)
	l := &ledger{}
	syncFile = func(f *os.File) error {
		time.Sleep(slow)
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		l.add("sync %s %d", filepath.Base(f.Name()), fi.Size())
		return f.Sync()
	}
	defer func() { syncFile = (*os.File).Sync }()
	const n = 20
	src := &memSource{msgs: make(chan connect.Message, n), slots: make(chan struct{}, 4), l: l}
	for i := 1; i <= n; i++ {
		rec := fmt.Sprintf(`{"n":%d}`, i)
		if i%5 == 0 {
			rec = fmt.Sprintf("bad%d", i)
		}
		src.msgs <- connect.Message{Data: []byte(rec)}
	}
	host := strings.NewReplacer("/", "-").Replace(t.Name())
	memSources.Store(host, src)
	defer memSources.Delete(host)

	dir := t.TempDir()
	out, dead := filepath.Join(dir, "out.jsonl"), filepath.Join(dir, "dead.jsonl")
	yaml := fmt.Sprintf("input: {from: 'memq://%s'}\noutput: {to: %s}\ndead_letter: %s\nstages: [{use: json.validate, on_error: dead-letter}]\n", host, out, dead)
	p, err := spec.Parse("t.yaml", []byte(yaml), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), p, Options{Stdout: io.Discard, UntilIdle: 100 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}

	// Replay the ledger: at each settle, every file must have been
	// fsynced at least as long as it was when the records settled had
	// been written; the run's files are those lengths at the end.
	size := func(path string) int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	wantOut, wantDead := size(out), size(dead)
	// end is where the line holding a record ends in its file.
	end := func(path, rec string) int64 {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		i := strings.Index(string(data), rec)
		if i < 0 {
			t.Fatalf("%s is not in %s", rec, path)
		}
		return int64(i + strings.IndexByte(string(data[i:]), '\n') + 1)
	}
	synced := map[string]int64{}
	acked, rejected, syncs := 0, 0, 0
	for _, e := range l.events {
		f := strings.Fields(e)
		switch f[0] {
		case "sync":
			var sz int64
			fmt.Sscan(f[2], &sz)
			synced[f[1]] = sz
			syncs++
		case "ack":
			for _, rec := range f[1:] {
				acked++
				if strings.HasPrefix(rec, "bad") {
					t.Errorf("%s acked, want rejected", rec)
				} else if synced["out.jsonl"] < end(out, rec) {
					t.Errorf("%s acked before the output was fsynced past it (events %q)", rec, l.events)
				}
			}
		case "reject":
			for _, rec := range f[1:] {
				rejected++
				if synced["dead.jsonl"] < end(dead, `"record":"`+rec+`"`) {
					t.Errorf("%s rejected before the dead-letter file was fsynced past it (events %q)", rec, l.events)
				}
			}
		}
	}
	if acked != n-n/5 || rejected != n/5 {
		t.Errorf("%d acked and %d rejected, want %d and %d: %q", acked, rejected, n-n/5, n/5, l.events)
	}
	if synced["out.jsonl"] != wantOut || synced["dead.jsonl"] != wantDead {
		t.Errorf("last fsyncs at %d and %d bytes, want the files' %d and %d: %q", synced["out.jsonl"], synced["dead.jsonl"], wantOut, wantDead, l.events)
	}
	if syncs > 2*(acked+rejected) {
		t.Errorf("%d fsyncs for %d settled", syncs, acked+rejected)
	}
}
