package transport_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScaleOutBrokerRestartedEmpty kills the broker mid-run and starts it
// again on an empty store (its data lost, or another server at its
// address): the run fails at once (exit 1) saying that its stream is gone
// from the broker with what was queued in it, and that --resume can
// continue it; the workers stay, watch the runs anew and work the
// resumed run to the right output. The run failed after about 30s in
// the client library's words ("no heartbeat received") and the workers
// exited ("the watch of runs ended").
func TestScaleOutBrokerRestartedEmpty(t *testing.T) {
	for _, kind := range brokerKinds {
		t.Run(kind, func(t *testing.T) {
			b := startTestBroker(t, kind)
			s := newScaleRun(t, "emptied", 4000, strings.Replace(sleepUpper, "2ms", "4ms", 1))
			want := s.expected(t, noSleep...)
			journal := filepath.Join(s.dir, "journal")
			w1, w2 := s.startWorker(t, b.url), s.startWorker(t, b.url)
			run := s.startRun(t, b.url, "--journal", journal)
			// Mid-run: the run's stream is there and some output written,
			// bounded in count.
			waitForStream(t, b.url, "emptied")
			for i := 0; i < 300; i++ {
				if fi, err := os.Stat(s.output); err == nil && fi.Size() > 0 || run.exited() {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if run.exited() {
				t.Fatalf("the run ended before the broker could be killed: exit %d; stderr:\n%s", run.code, run.stderr)
			}
			b.kill()
			if err := os.RemoveAll(b.store); err != nil {
				t.Fatal(err)
			}
			b.restart()
			if code := run.wait(t, runLimit); code != 1 {
				t.Fatalf("run: exit %d, want 1; stderr:\n%s", code, run.stderr)
			}
			msg := run.stderr.String()
			for _, says := range []string{"broker " + b.url, "is gone from the broker", "lost", "--resume"} {
				if !strings.Contains(msg, says) {
					t.Errorf("the run's error does not say %q:\n%s", says, msg)
				}
			}
			if strings.Contains(msg, "nats: ") || strings.Contains(msg, "heartbeat") || strings.Contains(msg, "stays on the broker") {
				t.Errorf("the run's error is in the client library's words, or says the run is still on the broker:\n%s", msg)
			}
			for _, w := range []*proc{w1, w2} {
				if w.exited() {
					t.Fatalf("a worker exited (%d) when the broker restarted empty; stderr:\n%s", w.code, w.stderr)
				}
			}
			resumed := s.startRun(t, b.url, "--journal", journal, "--resume")
			select {
			case <-resumed.done:
			case <-time.After(runLimit):
				resumed.kill()
				t.Fatalf("the resumed run is still running after %v; stderr:\n%s\nworkers:\n%s\n%s", runLimit, resumed.stderr, w1.stderr, w2.stderr)
			}
			if code := resumed.code; code != 0 {
				t.Fatalf("resumed run: exit %d; stderr:\n%s\nworkers:\n%s\n%s", code, resumed.stderr, w1.stderr, w2.stderr)
			}
			got, _ := os.ReadFile(s.output)
			if !bytes.Equal(got, want) {
				t.Errorf("after the resume, the output differs from the in-memory run's: %s", lineDiff(want, got))
			}
			for _, w := range []*proc{w1, w2} {
				if code := w.stop(t); code != 0 {
					t.Errorf("worker: exit %d; stderr:\n%s", code, w.stderr)
				}
				if ws := w.stderr.String(); strings.Contains(ws, "nats: ") || strings.Contains(ws, "_INBOX") {
					t.Errorf("a worker said what happened in the client library's words:\n%s", ws)
				}
			}
		})
	}
}
