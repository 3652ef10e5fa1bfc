package transport_test

// A run killed (kill -9) without a journal leaves its stream and its
// active entry on the broker. Workers pulled its stream for ever, each
// idle pull holding a slot of the stage for up to a second, which
// starved every live run of the pipeline (7 min 48 s for a run of
// 1.8 s). The run's lease ends that: workers stop pulling a run that has
// not touched its entry for a while, and the runs that start later
// delete what it left.

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
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
