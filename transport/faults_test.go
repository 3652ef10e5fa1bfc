package transport_test

// The faults of issue 11, each with several flowrun processes on
// loopback: a run (--no-local-workers, so that every record goes through
// the broker), workers, and a broker that is `flowrun broker` or Debian's
// nats-server. What a fault may change is how long a run takes and which
// records run twice; never the output, which must be the in-memory run's,
// byte for byte, nor the counts in --stats.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/transport"
)

// runLimit bounds every run here: a hang fails the test instead of CI.
const runLimit = 90 * time.Second

// scaleRun is a pipeline with its input, run through a broker.
type scaleRun struct {
	dir, pipeline, input, output, stats string
	n                                   int
}

// newScaleRun writes the pipeline yaml (its name: name) and an input of
// n numbered lines, padded so that records are not trivially small.
func newScaleRun(t *testing.T, name string, n int, yaml string) *scaleRun {
	t.Helper()
	dir := t.TempDir()
	s := &scaleRun{dir: dir, n: n,
		pipeline: filepath.Join(dir, name+".yaml"), input: filepath.Join(dir, "in.txt"),
		output: filepath.Join(dir, "out.txt"), stats: filepath.Join(dir, "stats.json")}
	writeFile(t, s.pipeline, "name: "+name+"\n"+yaml)
	var in bytes.Buffer
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&in, "record %06d of %s, padded to look like a line of a log file\n", i, name)
	}
	writeFile(t, s.input, in.String())
	return s
}

// expected is the output of the in-memory run, the same binary without a
// broker, with a line per record; extra are more flags (a --set that
// makes it quicker without changing the output).
func (s *scaleRun) expected(t *testing.T, extra ...string) []byte {
	t.Helper()
	b := s.inMemory(t, extra...)
	if got := bytes.Count(b, []byte("\n")); got != s.n {
		t.Fatalf("in-memory run wrote %d lines; want %d", got, s.n)
	}
	return b
}

// startRun starts the run on the broker at url, working no stage itself.
func (s *scaleRun) startRun(t *testing.T, url string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"run", s.pipeline, "--broker", url, "--no-local-workers",
		"-i", s.input, "-o", s.output, "--stats", s.stats, "--progress", "none", "-q"}, extra...)
	p, _ := startProc(t, "flowrun run", false, args...)
	return p
}

func (s *scaleRun) startWorker(t *testing.T, url string, extra ...string) *proc {
	t.Helper()
	p, _ := startProc(t, "flowrun worker", false, append([]string{"worker", s.pipeline, "--broker", url}, extra...)...)
	return p
}

// stats is what the tests read of --stats.
type stats struct {
	Input struct {
		Records int64 `json:"records"`
		Resumed struct {
			Records      int64 `json:"records"`
			DeadLettered int64 `json:"dead_lettered"`
		} `json:"resumed"`
	} `json:"input"`
	Output struct {
		Records int64 `json:"records"`
	} `json:"output"`
	Stages []struct {
		Name         string `json:"name"`
		In           int64  `json:"in"`
		Out          int64  `json:"out"`
		Errors       int64  `json:"errors"`
		Retries      int64  `json:"retries"`
		DeadLettered int64  `json:"dead_lettered"`
		Remote       bool   `json:"remote"`
		Redelivered  int64  `json:"redelivered"`
	} `json:"stages"`
}

// check waits for the run to end and checks that it did everything once:
// exit 0, the output the in-memory run's, and the counts exact.
func (s *scaleRun) check(t *testing.T, run *proc, want []byte) stats {
	t.Helper()
	return s.checkOutput(t, run, want, true)
}

// checkOutput is check, for an output in input order (ordered) or in any
// order, each line once.
func (s *scaleRun) checkOutput(t *testing.T, run *proc, want []byte, ordered bool) stats {
	t.Helper()
	if code := run.wait(t, runLimit); code != 0 {
		t.Fatalf("run: exit %d; stderr:\n%s", code, run.stderr)
	}
	got, err := os.ReadFile(s.output)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case ordered && !bytes.Equal(got, want):
		t.Errorf("output differs from the in-memory run's: %s", lineDiff(want, got))
	case !ordered && !sameLines(want, got):
		t.Errorf("output is not the in-memory run's lines, each once: %s", lineDiff(want, got))
	}
	var st stats
	b, err := os.ReadFile(s.stats)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("stats: %v\n%s", err, b)
	}
	n := int64(s.n)
	if st.Input.Records != n || st.Output.Records != n {
		t.Errorf("stats: %d records in, %d out; want %d and %d", st.Input.Records, st.Output.Records, n, n)
	}
	for _, sg := range st.Stages {
		if sg.In != n || sg.Out != n || sg.Errors != 0 {
			t.Errorf("stage %s: in %d, out %d, errors %d; want %d, %d, 0", sg.Name, sg.In, sg.Out, sg.Errors, n, n)
		}
		if !sg.Remote {
			t.Errorf("stage %s did not run on the workers", sg.Name)
		}
	}
	return st
}

// lineDiff says how two outputs of lines differ: counts, the first
// difference, the lines missing and those doubled.
func lineDiff(want, got []byte) string {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	count := map[string]int{}
	for _, l := range w {
		count[l]++
	}
	for _, l := range g {
		count[l]--
	}
	var missing, extra []string
	for l, c := range count {
		switch {
		case c > 0:
			missing = append(missing, l)
		case c < 0:
			extra = append(extra, l)
		}
	}
	first := ""
	for i := 0; i < len(w) && i < len(g); i++ {
		if w[i] != g[i] {
			first = fmt.Sprintf("line %d is %q, want %q", i+1, g[i], w[i])
			break
		}
	}
	cut := func(s []string) []string { return s[:min(len(s), 5)] }
	return fmt.Sprintf("%d lines, want %d; %s; missing %d %q; doubled or unknown %d %q",
		len(g)-1, len(w)-1, first, len(missing), cut(missing), len(extra), cut(extra))
}

// A stage that takes a while per record, so that a run lasts long
// enough for faults to land in the middle of it, and one that changes
// the record, so that a record that skipped a stage would show.
const sleepUpper = `ordered: true
stages:
  - name: slow
    use: sleep
    workers: 4
    with: {duration: 2ms}
  - name: up
    use: upper
    workers: 2
`

// noSleep makes the in-memory run of sleepUpper quick; its output is the
// same.
var noSleep = []string{"--set", "stages.slow.with.duration=0s"}

// TestScaleOutSameOutput: workers on two brokers give the in-memory
// run's output, ordered, and a multiset-equal one unordered.
func TestScaleOutSameOutput(t *testing.T) {
	for _, kind := range brokerKinds {
		t.Run(kind, func(t *testing.T) {
			b := startTestBroker(t, kind)
			for _, ordered := range []bool{true, false} {
				yaml := sleepUpper
				if !ordered {
					yaml = strings.Replace(yaml, "ordered: true", "ordered: false", 1)
				}
				s := newScaleRun(t, fmt.Sprintf("same-%v", ordered), 2000, yaml)
				want := s.expected(t)
				w1, w2 := s.startWorker(t, b.url), s.startWorker(t, b.url)
				run := s.startRun(t, b.url)
				s.checkOutput(t, run, want, ordered)
				w1.stop(t)
				w2.stop(t)
			}
		})
	}
}

// sameLines reports whether got has the lines of want, each as often.
func sameLines(want, got []byte) bool {
	w, g := strings.Split(string(want), "\n"), strings.Split(string(got), "\n")
	slices.Sort(w)
	slices.Sort(g)
	return slices.Equal(w, g)
}

// TestScaleOutWorkerKilledRepeatedly kills a worker with SIGKILL, again
// and again, while the run goes on, starting another each time: the
// records the dead ones held are delivered again after the ack wait, and
// the output is exactly the in-memory run's: byte for byte when ordered,
// each line once when not (the run keeps the first results of a piece).
func TestScaleOutWorkerKilledRepeatedly(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	for _, ordered := range []bool{true, false} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) {
			yaml := strings.Replace(sleepUpper, "2ms", "5ms", 1)
			if !ordered {
				yaml = strings.Replace(yaml, "ordered: true", "ordered: false", 1)
			}
			s := newScaleRun(t, fmt.Sprintf("killworker-%v", ordered), 3000, yaml)
			want := s.expected(t, noSleep...)
			workers := []*proc{s.startWorker(t, b.url), s.startWorker(t, b.url)}
			run := s.startRun(t, b.url, "--ack-wait", "2s")
			kills := 0
			for i := 0; kills < 6 && !run.exited(); i++ {
				select {
				case <-run.done:
				case <-time.After(500 * time.Millisecond):
					k := i % len(workers)
					workers[k].kill()
					kills++
					workers[k] = s.startWorker(t, b.url)
				}
			}
			st := s.checkOutput(t, run, want, ordered)
			if kills < 3 {
				t.Errorf("the run ended after %d kills: too short to show anything", kills)
			}
			var redelivered int64
			for _, sg := range st.Stages {
				redelivered += sg.Redelivered
			}
			t.Logf("%d workers killed, %d pieces redelivered", kills, redelivered)
			if redelivered == 0 {
				t.Error("no piece counted as redelivered in --stats, though workers died holding pieces")
			}
			for _, w := range workers {
				w.stop(t)
			}
		})
	}
}

// TestScaleOutBrokerRestarted kills the broker with SIGKILL mid-run and
// starts it again on its store: the workers and the run reconnect by
// themselves and finish with nothing lost or doubled.
func TestScaleOutBrokerRestarted(t *testing.T) {
	for _, kind := range brokerKinds {
		t.Run(kind, func(t *testing.T) {
			b := startTestBroker(t, kind)
			s := newScaleRun(t, "killbroker", 3000, strings.Replace(sleepUpper, "2ms", "4ms", 1))
			want := s.expected(t, noSleep...)
			w1, w2 := s.startWorker(t, b.url), s.startWorker(t, b.url)
			run := s.startRun(t, b.url, "--ack-wait", "3s")
			// Killed once the run is open: a broker gone while a run
			// starts fails it (exit 2), another story.
			waitForStream(t, b.url, "killbroker")
			restarts := 0
			for restarts < 2 && !run.exited() {
				select {
				case <-run.done:
				case <-time.After(1200 * time.Millisecond):
					b.kill()
					time.Sleep(300 * time.Millisecond) // the clients see it gone
					b.restart()
					restarts++
				}
			}
			s.check(t, run, want)
			t.Logf("broker killed and restarted %d times mid-run", restarts)
			if restarts == 0 {
				t.Error("the run ended before the broker could be killed")
			}
			for _, w := range []*proc{w1, w2} {
				if w.exited() {
					t.Errorf("a worker exited (%d) when the broker restarted; stderr:\n%s", w.code, w.stderr)
				}
				w.stop(t)
			}
		})
	}
}

// TestScaleOutWorkerJoinsLate: a run with no worker waits; one that
// joins later works it to the end.
func TestScaleOutWorkerJoinsLate(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	s := newScaleRun(t, "late", 500, sleepUpper)
	want := s.expected(t, noSleep...)
	run := s.startRun(t, b.url)
	// Until the run's stream exists nothing is waiting for a worker;
	// then a while with none.
	waitForStream(t, b.url, "late")
	time.Sleep(500 * time.Millisecond)
	if run.exited() {
		t.Fatalf("the run ended without a worker: exit %d; stderr:\n%s", run.code, run.stderr)
	}
	w := s.startWorker(t, b.url)
	s.check(t, run, want)
	w.stop(t)
}

// TestScaleOutTwoPipelines: two runs of different pipelines on one
// broker at once, each with its own workers, each output its own.
func TestScaleOutTwoPipelines(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	a := newScaleRun(t, "first", 1500, sleepUpper)
	c := newScaleRun(t, "second", 1500, strings.Replace(sleepUpper, "use: upper", "use: lower", 1))
	wantA, wantC := a.expected(t, noSleep...), c.expected(t, noSleep...)
	wa, wc := a.startWorker(t, b.url), c.startWorker(t, b.url)
	ra, rc := a.startRun(t, b.url), c.startRun(t, b.url)
	a.check(t, ra, wantA)
	c.check(t, rc, wantC)
	for _, w := range []*proc{wa, wc} {
		w.stop(t)
	}
}

// TestScaleOutSlowStageKeptInProgress: records that each take longer
// than the ack wait are kept by their worker with InProgress, not
// delivered again: the stage ran once per record, counted by the plugin
// itself in a file as it starts (a second run of a record would end after
// the run did, its results dropped). Fewer records than slots, and a
// second worker, leave idle slots that would take a piece delivered
// again: without InProgress the 3 records ran 10 times.
func TestScaleOutSlowStageKeptInProgress(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	s := newScaleRun(t, "slow", 3, fmt.Sprintf(`ordered: true
stages:
  - name: slow
    use: exec
    workers: 4
    timeout: 1m
    with: {command: [sh, -c, "echo ran >> %s; sleep 2.5; cat"], mode: per-record}
`, ran))
	want := s.expected(t)
	os.Remove(ran)
	w1, w2 := s.startWorker(t, b.url), s.startWorker(t, b.url)
	run := s.startRun(t, b.url, "--ack-wait", "1s")
	st := s.check(t, run, want)
	b2, _ := os.ReadFile(ran)
	if n := strings.Count(string(b2), "ran"); n != s.n {
		t.Errorf("the slow stage ran %d times for %d records: a record outlived its ack wait and was delivered again", n, s.n)
	}
	for _, sg := range st.Stages {
		if sg.Redelivered != 0 {
			t.Errorf("stage %s: %d redelivered; want none", sg.Name, sg.Redelivered)
		}
	}
	w1.stop(t)
	w2.stop(t)
}

// pollBroker asks ok of the broker at url every 100 ms until it says
// yes, tries times at most, and says whether it did.
func pollBroker(t *testing.T, url string, tries int, ok func(js jetstream.JetStream) bool) bool {
	t.Helper()
	nc, err := transport.Dial(context.Background(), url, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for i := 0; i < tries; i++ {
		if ok(js) {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// runStreams lists the broker's streams of the pipeline's runs
// (FLOWRUN_<pipeline>_<run id>).
func runStreams(js jetstream.JetStream, pipeline string) []string {
	var found []string
	for n := range js.StreamNames(context.Background()).Name() { // to its end, which ends its goroutine
		if strings.HasPrefix(n, "FLOWRUN_"+pipeline+"_") {
			found = append(found, n)
		}
	}
	return found
}

// waitForStream waits until the broker has a stream of the pipeline's
// run, for 30 s at most.
func waitForStream(t *testing.T, url, pipeline string) {
	t.Helper()
	if !pollBroker(t, url, 300, func(js jetstream.JetStream) bool { return len(runStreams(js, pipeline)) > 0 }) {
		t.Fatalf("no stream of pipeline %q after 30s", pipeline)
	}
}

// TestScaleOutWithTokenAndTLS: `flowrun broker` with a token and TLS, and
// a worker and a run given them by flags and by the environment: the
// credentials path end to end, through the CLI.
func TestScaleOutWithTokenAndTLS(t *testing.T) {
	ca := newPKI(t, "scaleout")
	p, out := startProc(t, "flowrun broker", true, "broker", "--listen", "127.0.0.1:0", "--store", t.TempDir(),
		"--token", "tok-s3cret", "--tls-cert", ca.ServerCert, "--tls-key", ca.ServerKey)
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("flowrun broker printed no URL (%v); stderr:\n%s", err, p.stderr)
	}
	url := strings.TrimSpace(line)
	if !strings.HasPrefix(url, "tls://127.0.0.1:") {
		t.Fatalf("flowrun broker with TLS printed %q; want tls://127.0.0.1:PORT", url)
	}
	s := newScaleRun(t, "tls", 300, sleepUpper)
	want := s.expected(t, noSleep...)
	// Without the CA the worker cannot start: exit 2, saying why.
	bad, _ := startProc(t, "flowrun worker", false, "worker", s.pipeline, "--broker", url, "--broker-token", "tok-s3cret")
	if code := bad.wait(t, runLimit); code != 2 || !strings.Contains(bad.stderr.String(), "not signed by a CA this machine trusts") {
		t.Errorf("worker without the CA: exit %d, stderr %q; want 2 and why", code, bad.stderr)
	}
	w := s.startWorker(t, url, "--broker-token", "tok-s3cret", "--broker-tls-ca", ca.CA)
	t.Setenv("FLOWRUN_BROKER_TOKEN", "tok-s3cret")
	t.Setenv("FLOWRUN_BROKER_TLS_CA", ca.CA)
	run := s.startRun(t, url)
	s.check(t, run, want)
	w.stop(t)
	if strings.Contains(run.stderr.String()+w.stderr.String(), "tok-s3cret") {
		t.Error("the token is in a log")
	}
}
