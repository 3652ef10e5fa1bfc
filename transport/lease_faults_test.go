package transport_test

// A run killed (kill -9) without a journal leaves its stream and its
// active entry on the broker. Workers pulled its stream for ever, each
// idle pull holding a slot of the stage for up to a second, which
// starved every live run of the pipeline (7 min 48 s for a run of
// 1.8 s). The run's lease ends that: workers stop pulling a run that has
// not touched its entry for a while, and the runs that start later
// delete what it left.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/transport"
)

// leaseStages is a stage of one worker a process whose records take long
// enough to go one or two to a piece: a slot held a second out of two by
// the dead run's idle pulls shows.
const leaseStages = `ordered: true
stages:
  - name: slow
    use: sleep
    workers: 1
    with: {duration: 25ms}
  - name: up
    use: upper
`

// leaseLimit bounds the run after the dead one: about 6 s of sleeps on
// one slot, minutes when the dead run's idle pulls take every other turn
// of the slot (as they did).
const leaseLimit = 60 * time.Second

// TestScaleOutDeadRunWithoutJournal kills a run without a journal mid-run
// (its lease 100 ms: the worker stops pulling it after 500 ms, the next
// runs delete it after 3 s), then runs the pipeline again with the worker
// that outlived it: the run must end within leaseLimit with the in-memory
// run's output and exact counts, and a run that starts once the dead one
// is 3 s silent, of another pipeline, deletes its stream, saying so.
func TestScaleOutDeadRunWithoutJournal(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	const n = 240
	s := newScaleRun(t, "leased", n, leaseStages)
	want := s.expected(t, noSleep...)
	w := s.startWorker(t, b.url)
	lease := []string{"--broker-lease", "100ms"}
	dead := s.startRun(t, b.url, lease...)
	if !waitForLines(s.output, 20, dead) {
		t.Fatalf("the run to kill ended, or did not write 20 lines within %v: exit %d; stderr:\n%s", runLimit, dead.code, dead.stderr)
	}
	dead.kill()

	run := s.startRun(t, b.url, lease...)
	select {
	case <-run.done:
	case <-time.After(leaseLimit):
		t.Fatalf("the run after the dead one still running after %v (the dead run's pulls starve the stage's one slot); stderr:\n%s\nthe broker:\n%s", leaseLimit, run.stderr, brokerState(t, b.url))
	}
	s.check(t, run, want)

	// n records of 25 ms on one slot: the dead run is silent for more
	// than 30 leases (3 s) by now.
	other := newScaleRun(t, "other", 10, "stages:\n  - name: up\n    use: upper\n")
	p, _ := startProc(t, "flowrun run (another pipeline)", false, "run", other.pipeline, "--broker", b.url,
		"-i", other.input, "-o", filepath.Join(other.dir, "out.txt"), "--progress", "none", "-q")
	if code := p.wait(t, runLimit); code != 0 {
		t.Fatalf("run of another pipeline: exit %d; stderr:\n%s", code, p.stderr)
	}
	if got := p.stderr.String(); strings.Count(got, "flowrun: deleted run ") != 1 || !strings.Contains(got, `of pipeline "leased"`) {
		t.Errorf("the run of another pipeline did not say once that it deleted the dead run; stderr:\n%s", got)
	}
	waitNoStream(t, b.url, "leased")
	if w.exited() {
		t.Errorf("the worker exited (%d); stderr:\n%s", w.code, w.stderr)
	}
	w.stop(t)
}

// TestScaleOutLeaseOutlivesBrokerAway: a broker away for longer than a
// dead run's silence (30 leases) made every run look dead by its entry's
// age, and the first run to start after the restart deleted a live one
// (without a journal) before it could reconnect: it failed, its queued
// records lost. Here the broker is killed while one run lives and
// another, killed, lies dead; restarted on its store after 4 s (40
// leases of 100 ms), a third run starts before the live one is back
// (stopped till then) and lives 17 s. It must leave the live run alone, which ends with the
// in-memory output and exact counts, and delete the dead one only once
// it has watched it silent while the broker served.
func TestScaleOutLeaseOutlivesBrokerAway(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	lease := []string{"--broker-lease", "100ms"}
	dead := newScaleRun(t, "dead", 2000, leaseStages)
	d := dead.startRun(t, b.url, lease...)
	waitForEntry(t, b.url, "dead", d)
	d.kill()
	d.wait(t, runLimit)

	live := newScaleRun(t, "live", 600, strings.Replace(leaseStages, "25ms", "5ms", 1))
	want := live.expected(t, "--set", "stages.slow.with.duration=0s")
	lw := live.startWorker(t, b.url)
	run := live.startRun(t, b.url, lease...)
	if !waitForLines(live.output, 20, run) {
		t.Fatalf("the live run ended, or did not write 20 lines within %v: exit %d; stderr:\n%s", runLimit, run.code, run.stderr)
	}
	// Stopped while the broker is away, and until the next run is under
	// way: a live run not yet reconnected when another starts.
	run.signal(syscall.SIGSTOP)
	b.kill()
	time.Sleep(4 * time.Second)
	b.restart()

	// 170 records of 100 ms on one slot: 17 s, past reapWatchMin (15 s).
	later := newScaleRun(t, "later", 170, strings.Replace(leaseStages, "25ms", "100ms", 1))
	p := later.startRun(t, b.url, lease...)
	w := later.startWorker(t, b.url)
	waitForLines(later.output, 5, p)
	run.signal(syscall.SIGCONT)
	live.check(t, run, want)
	if code := p.wait(t, runLimit); code != 0 {
		t.Fatalf("the run after the restart: exit %d; stderr:\n%s", code, p.stderr)
	}
	got := p.stderr.String()
	if strings.Contains(got, `of pipeline "live"`) || strings.Count(got, "flowrun: deleted run ") != 1 || !strings.Contains(got, `of pipeline "dead"`) {
		t.Errorf("the run after the restart should have deleted the dead run, and only it; stderr:\n%s", got)
	}
	waitNoStream(t, b.url, "dead")
	lw.stop(t)
	w.stop(t)
}

// TestScaleOutStoppedRunDeleted: a run without a journal stopped
// (SIGSTOP) past 30 leases is dead to the others, and the next run
// deletes it. Continued, it put its entry back as active, with no
// stream, and failed saying the broker had lost its store. It must fail
// saying another run deleted it, and leave no entry behind.
func TestScaleOutStoppedRunDeleted(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	lease := []string{"--broker-lease", "100ms"}
	s := newScaleRun(t, "stopped", 2000, leaseStages)
	w := s.startWorker(t, b.url)
	run := s.startRun(t, b.url, lease...)
	if !waitForLines(s.output, 20, run) {
		t.Fatalf("the run to stop ended, or did not write 20 lines within %v: exit %d; stderr:\n%s", runLimit, run.code, run.stderr)
	}
	run.signal(syscall.SIGSTOP)
	time.Sleep(4 * time.Second) // 40 leases
	other := newScaleRun(t, "other", 10, "stages:\n  - name: up\n    use: upper\n")
	p := other.startRun(t, b.url)
	ow := other.startWorker(t, b.url)
	if code := p.wait(t, runLimit); code != 0 {
		t.Fatalf("run of another pipeline: exit %d; stderr:\n%s", code, p.stderr)
	}
	if got := p.stderr.String(); !strings.Contains(got, `flowrun: deleted run `) || !strings.Contains(got, `of pipeline "stopped"`) {
		t.Errorf("the run of another pipeline did not delete the stopped run; stderr:\n%s", got)
	}
	run.signal(syscall.SIGCONT)
	if code := run.wait(t, runLimit); code != 1 {
		t.Errorf("the stopped run, continued: exit %d, want 1; stderr:\n%s", code, run.stderr)
	}
	if got := run.stderr.String(); !strings.Contains(got, "another run deleted it from the broker") || strings.Contains(got, "empty store") {
		t.Errorf("the stopped run does not say another run deleted it; stderr:\n%s", got)
	}
	if left := runEntries(t, b.url, "stopped"); len(left) != 0 {
		t.Errorf("entries of the deleted run left in the runs bucket: %v", left)
	}
	w.stop(t)
	ow.stop(t)
}

// waitForEntry waits until run p of pipeline has its entry in the runs
// bucket: killed before, it leaves a stream that no entry names.
func waitForEntry(t *testing.T, url, pipeline string, p *proc) {
	t.Helper()
	for i := 0; len(runEntries(t, url, pipeline)) == 0; i++ {
		if i == 300 || p.exited() {
			t.Fatalf("no entry of the run of %s after 30s: exit %d; stderr:\n%s", pipeline, p.code, p.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runEntries lists the keys of pipeline's runs in the runs bucket.
func runEntries(t *testing.T, url, pipeline string) []string {
	t.Helper()
	nc, err := transport.Dial(context.Background(), url, transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(context.Background(), "flowrun_runs")
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.ListKeysFiltered(context.Background(), pipeline+".>")
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for k := range keys.Keys() {
		left = append(left, k)
	}
	return left
}

// TestScaleOutWorkerStartSkipsDeadRuns: a worker that starts while the
// runs on the broker are dead (killed without a word) judged their
// silence by the newest of their entries, so each looked alive for the
// last leaseLost leases of its life: the worker joined them and pulled
// their streams, at every start (a worker restarted in a loop never got
// past it). It must take the broker's time now and leave them alone.
func TestScaleOutWorkerStartSkipsDeadRuns(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	s := newScaleRun(t, "deadruns", 2000, leaseStages)
	// A lease of 500 ms: silent for 2.5 s, a worker leaves it alone.
	dead := s.startRun(t, b.url, "--broker-lease", "500ms")
	waitForEntry(t, b.url, "deadruns", dead)
	dead.kill()
	dead.wait(t, runLimit)
	time.Sleep(3500 * time.Millisecond)
	w := s.startWorker(t, b.url)
	time.Sleep(2 * time.Second) // it joined at once
	if got := w.stderr.String(); strings.Contains(got, "joined run") {
		t.Errorf("a worker started after the run died joined it; stderr:\n%s", got)
	}
	w.stop(t)
}

// TestScaleOutSilentRunKeepsPiecesInHand: a run silent past its lease
// (stopped with Ctrl-Z, cut off from the broker) is no longer pulled,
// but the pieces its workers hold are worked to the end and their
// results wait in the stream. The workers gave them back (Nak): worked
// again on the run's return, a delivery spent each time, innocent
// records dead-lettered after a few silences with a reason that blamed
// a dead worker. Here the run stops for 3 leases past its silence while
// its 4 records are at work: each must run once, none be redelivered.
func TestScaleOutSilentRunKeepsPiecesInHand(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	ran := filepath.Join(t.TempDir(), "ran")
	s := newScaleRun(t, "paused", 4, fmt.Sprintf(`ordered: true
stages:
  - name: slow
    use: exec
    workers: 4
    with: {command: [sh, -c, "echo ran >> %s; sleep 2; cat"], mode: per-record}
`, ran))
	want := s.expected(t)
	os.Remove(ran)
	w := s.startWorker(t, b.url)
	run := s.startRun(t, b.url, "--broker-lease", "100ms")
	for i := 0; ; i++ {
		if b, _ := os.ReadFile(ran); strings.Count(string(b), "ran") == s.n {
			break
		}
		if i == 3000 || run.exited() {
			t.Fatalf("the records did not all start within 30s: exit %d; stderr:\n%s", run.code, run.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	run.signal(syscall.SIGSTOP)
	time.Sleep(1500 * time.Millisecond) // leaseLost: 500 ms
	run.signal(syscall.SIGCONT)
	st := s.check(t, run, want)
	got, _ := os.ReadFile(ran)
	if n := strings.Count(string(got), "ran"); n != s.n {
		t.Errorf("the stage ran %d times for %d records: the pieces in hand were given back", n, s.n)
	}
	for _, sg := range st.Stages {
		if sg.Redelivered != 0 {
			t.Errorf("stage %s: %d redelivered; want none", sg.Name, sg.Redelivered)
		}
	}
	if !strings.Contains(w.stderr.String(), "has said nothing") {
		t.Errorf("the worker did not see the run silent; stderr:\n%s", w.stderr)
	}
	w.stop(t)
}

// TestScaleOutResumeOfALiveRunRefused: a --resume of a run that still
// lives (stopped with Ctrl-Z, or simply not dead) must be refused before
// it touches the broker: it took the run over there (its consumers, its
// entry) and was only then refused for the output the live run writes,
// which failed the live run when it went on ("the consumer is not on
// the broker"). The live run must finish exact.
func TestScaleOutResumeOfALiveRunRefused(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	s := newScaleRun(t, "alive", 1500, strings.Replace(leaseStages, "25ms", "2ms", 1))
	want := s.expected(t, "--set", "stages.slow.with.duration=0s")
	journal := filepath.Join(s.dir, "journal")
	w := s.startWorker(t, b.url)
	run := s.startRun(t, b.url, "--journal", journal)
	if !waitForLines(s.output, 20, run) {
		t.Fatalf("the run ended, or did not write 20 lines within %v: exit %d; stderr:\n%s", runLimit, run.code, run.stderr)
	}
	run.signal(syscall.SIGSTOP)
	resume, _ := startProc(t, "flowrun run --resume", false, "run", s.pipeline, "--broker", b.url, "--no-local-workers",
		"-i", s.input, "-o", s.output, "--progress", "none", "-q", "--journal", journal, "--resume")
	code := resume.wait(t, runLimit)
	run.signal(syscall.SIGCONT)
	if code != 2 || !strings.Contains(resume.stderr.String(), "another flowrun is writing it") || strings.Contains(resume.stderr.String(), "resuming run") {
		t.Errorf("the resume of a live run: exit %d, want 2, refused for the output before it resumed anything; stderr:\n%s", code, resume.stderr)
	}
	s.check(t, run, want)
	w.stop(t)
}
