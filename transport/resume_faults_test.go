package transport_test

// The run process killed while workers that outlive it go on: they finish
// the pieces they hold and take the ones still queued, publishing results
// that no one takes until a --resume does. The resumed run must end, with
// the output exactly the in-memory run's and the counts exact.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/transport"
)

// resumeStages: a slow stage (one record a piece) feeding a cheap one
// (the batches at hand gathered into a piece, cut differently by each
// process), a filter that leaves gaps in the ranges the cheap stage
// gathers, and records that change at each stage, so that a record that
// skipped a stage, or was written twice or not at all, shows.
const resumeStages = `ordered: true
stages:
  - name: slow
    use: sleep
    workers: 4
    with: {duration: 3ms}
  - name: keep
    use: grep
    with: {pattern: '7 of', invert: true}
  - name: up
    use: upper
    workers: 2
`

// TestScaleOutRunKilledWorkersGoOn kills the run process (kill -9) once
// its output holds some lines, while two worker processes go on, then
// resumes it with the same journal, at several moments. The resumed run must end (the
// results the dead run had taken must not make the broker drop the
// answers of pieces sent again: it did, and the run waited for ever), its
// output byte for byte the in-memory run's, and its counts exact: every
// record after the journal's mark once into each stage and the output.
func TestScaleOutRunKilledWorkersGoOn(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	const n = 2000
	// When to kill: after so many lines of the output (of 1800), -1 once
	// it is whole (the journal may say the run finished, or not yet).
	// Killing the resumed runs too: TestScaleOutResumeChained.
	for _, kills := range [][]int{{1}, {n / 3}, {2 * n / 3}, {-1}} {
		t.Run(fmt.Sprint(kills), func(t *testing.T) {
			s := newScaleRun(t, "resumed", n, resumeStages)
			want := s.inMemory(t, noSleep...)
			whole := bytes.Count(want, []byte("\n"))
			w1, w2 := s.startWorker(t, b.url), s.startWorker(t, b.url)
			journal := filepath.Join(s.dir, "journal")
			extra := []string{"--journal", journal}
			for i, at := range kills {
				run := s.startRun(t, b.url, extra...)
				if at < 0 {
					waitForLines(s.output, whole, run)
				} else if !waitForLines(s.output, at, run) {
					got, _ := os.ReadFile(s.output)
					t.Fatalf("run %d ended, or did not end within %v, before its output had %d lines (it has %d): exit %d; stderr:\n%s\nthe broker:\n%s",
						i+1, runLimit, at, bytes.Count(got, []byte("\n")), run.code, run.stderr, brokerState(t, b.url))
				}
				run.kill()
				extra = []string{"--journal", journal, "--resume"}
			}
			run := s.startRun(t, b.url, extra...)
			select {
			case <-run.done:
			case <-time.After(runLimit):
				t.Fatalf("resumed run still running after %v; stderr:\n%s\nthe broker:\n%s", runLimit, run.stderr, brokerState(t, b.url))
			}
			if code := run.code; code != 0 {
				t.Fatalf("resumed run: exit %d; stderr:\n%s\nworker:\n%s", code, run.stderr, w1.stderr)
			}
			got, _ := os.ReadFile(s.output)
			if !bytes.Equal(got, want) {
				t.Errorf("output after the resume differs from the in-memory run's: %s", lineDiff(want, got))
			}
			var st stats
			raw, _ := os.ReadFile(s.stats)
			if err := json.Unmarshal(raw, &st); err != nil {
				t.Fatalf("stats: %v\n%s", err, raw)
			}
			// The records after the journal's mark, once into each stage
			// and the output; keep drops those whose number ends in 7.
			done := st.Input.Resumed.Records
			left, kept := int64(n)-done, int64(0)
			for _, l := range strings.SplitAfter(string(want), "\n") {
				var seq int64
				if _, err := fmt.Sscanf(l, "RECORD %d", &seq); err == nil && seq > done {
					kept++
				}
			}
			if st.Input.Records != left {
				t.Errorf("stats: %d records read after the %d resumed; want %d", st.Input.Records, done, left)
			}
			wantIO := [][2]int64{{left, left}, {left, kept}, {kept, kept}}
			for i, sg := range st.Stages {
				if sg.In != wantIO[i][0] || sg.Out != wantIO[i][1] || sg.Errors != 0 {
					t.Errorf("stage %s: in %d, out %d, errors %d; want in %d, out %d", sg.Name, sg.In, sg.Out, sg.Errors, wantIO[i][0], wantIO[i][1])
				}
			}
			if st.Output.Records != kept {
				t.Errorf("stats: %d records out after the resume; want %d", st.Output.Records, kept)
			}
			// The run is over: nothing of it is left on the broker.
			waitNoStream(t, b.url, "resumed")
			for _, w := range []*proc{w1, w2} {
				if w.exited() {
					t.Errorf("a worker exited (%d); stderr:\n%s", w.code, w.stderr)
				}
				w.stop(t)
			}
		})
	}
}

// waitForLines waits until the file holds at least n lines, and says
// false when the process ended first (bounded by runLimit).
func waitForLines(path string, n int, p *proc) bool {
	for deadline := time.Now().Add(runLimit); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if p.exited() {
			return false
		}
		b, _ := os.ReadFile(path)
		if bytes.Count(b, []byte("\n")) >= n {
			return true
		}
	}
	return false
}

// inMemory is the output of the in-memory run, as expected but for a
// pipeline that may drop records.
func (s *scaleRun) inMemory(t *testing.T, extra ...string) []byte {
	t.Helper()
	out := filepath.Join(s.dir, "expected.txt")
	args := append([]string{"run", s.pipeline, "-i", s.input, "-o", out, "--progress", "none", "-q"}, extra...)
	p, _ := startProc(t, "flowrun run (in memory)", false, args...)
	if code := p.wait(t, runLimit); code != 0 {
		t.Fatalf("in-memory run: exit %d; stderr:\n%s", code, p.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitNoStream waits until the broker has no stream of the pipeline's
// runs, for 10 s at most.
func waitNoStream(t *testing.T, url, pipeline string) {
	t.Helper()
	var left []string
	if !pollBroker(t, url, 100, func(js jetstream.JetStream) bool { left = runStreams(js, pipeline); return len(left) == 0 }) {
		t.Errorf("streams of pipeline %q still on the broker after 10s: %v", pipeline, left)
	}
}

// brokerState says what the broker holds of flowrun's runs: each stream's
// messages by subject and its consumers' counts.
func brokerState(t *testing.T, url string) string {
	nc, err := transport.Dial(context.Background(), url, transport.DialOptions{})
	if err != nil {
		return err.Error()
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	var b strings.Builder
	for name := range js.StreamNames(ctx).Name() {
		st, err := js.Stream(ctx, name)
		if err != nil {
			continue
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(">"))
		if err != nil {
			continue
		}
		fmt.Fprintf(&b, "%s: %d messages %v\n", name, info.State.Msgs, info.State.Subjects)
		for ci := range st.ListConsumers(ctx).Info() {
			fmt.Fprintf(&b, "  %s: pending %d, ack pending %d, redelivered %d, waiting %d, ack floor %d\n", ci.Name, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting, ci.AckFloor.Stream)
		}
	}
	return b.String()
}
