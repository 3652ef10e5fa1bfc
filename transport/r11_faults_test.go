package transport_test

// Faults found by attacking the scale-out commands as a hostile user
// would (issue 11's review): each failed on the code before its fix.

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestScaleOutNoWorkerStopsOnSignal: a run with --no-local-workers and
// no worker says that it waits for one, and a first SIGINT ends it (exit
// 130): nothing could ever drain the pieces it sent, so a drain would
// wait for ever (it did, until a second signal).
func TestScaleOutNoWorkerStopsOnSignal(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	s := newScaleRun(t, "noworker", 500, sleepUpper)
	run := s.startRun(t, b.url)
	waitForStream(t, b.url, "noworker")
	for i := 0; !strings.Contains(run.stderr.String(), "waiting for a worker"); i++ {
		if i == 100 || run.exited() {
			t.Fatalf("the run did not say it waits for a worker; stderr:\n%s", run.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	run.signal(syscall.SIGINT)
	if code := run.wait(t, 20*time.Second); code != 130 {
		t.Fatalf("run stopped by SIGINT: exit %d; want 130; stderr:\n%s", code, run.stderr)
	}
}
