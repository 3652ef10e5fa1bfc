package transport_test

// A broker restarted on an empty store loses every run on it, and the
// runs bucket the workers watch. A worker must outlive that as it
// outlives a restart on the store: wait for the runs that start from then
// on, and work them.

import (
	"bufio"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestScaleOutWorkerOutlivesEmptyBroker kills the broker (kill -9) under
// an idle worker, restarts it on an empty store, and starts a run: the
// worker must still be there and work it. It exited ("the watch of runs
// ended"), and the run waited for ever for a worker.
func TestScaleOutWorkerOutlivesEmptyBroker(t *testing.T) {
	store := t.TempDir()
	var b *proc
	url := ""
	start := func(listen string) {
		var out *bufio.Reader
		b, out = startProc(t, "flowrun broker", true, "broker", "--listen", listen, "--store", store)
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("flowrun broker printed no URL (%v); stderr:\n%s", err, b.stderr)
		}
		go io.Copy(io.Discard, out)
		url = strings.TrimSpace(line)
	}
	start("127.0.0.1:0")
	s := newScaleRun(t, "emptied", 300, sleepUpper)
	want := s.expected(t, noSleep...)
	w := s.startWorker(t, url)
	waitForBucket(t, url)
	b.kill()
	if err := os.RemoveAll(store); err != nil {
		t.Fatal(err)
	}
	start(strings.TrimPrefix(url, "nats://"))
	// The worker notices the runs bucket gone once it is back: it
	// exited then, or says so and waits for new runs.
	deadline := time.Now().Add(30 * time.Second)
	for !w.exited() && !strings.Contains(w.stderr.String(), "are gone") {
		if time.Now().After(deadline) {
			t.Fatalf("the worker did not notice the broker's empty store within 30s; stderr:\n%s", w.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if w.exited() {
		t.Fatalf("the worker exited (%d) when the broker came back on an empty store; stderr:\n%s", w.code, w.stderr)
	}
	run := s.startRun(t, url)
	s.check(t, run, want)
	w.stop(t)
	b.stop(t)
}

// waitForBucket waits until the broker has the runs bucket (a worker
// made it, to watch it), for 30 s at most.
func waitForBucket(t *testing.T, url string) {
	t.Helper()
	if !pollBroker(t, url, 300, func(js jetstream.JetStream) bool {
		_, err := js.KeyValue(context.Background(), "flowrun_runs")
		return err == nil
	}) {
		t.Fatal("no runs bucket on the broker after 30s")
	}
}
