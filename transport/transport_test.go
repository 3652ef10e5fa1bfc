package transport_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
	_ "github.com/flowrun/flowrun/stages/all"
	"github.com/flowrun/flowrun/transport"
)

// embeddedConn starts an embedded broker of the test's own and connects
// to it, both closed at the test's end.
func embeddedConn(t *testing.T) *nats.Conn {
	t.Helper()
	srv, err := transport.StartEmbedded(context.Background(), transport.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := transport.Dial(context.Background(), srv.URL(), transport.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func pipeline(t *testing.T, yaml string) *spec.Pipeline {
	t.Helper()
	p, err := spec.Parse("p.yaml", []byte(yaml), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func waitFor(t *testing.T, buf *syncBuffer, s string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(buf.String(), s); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q within a minute:\n%s", s, buf)
		}
	}
}

// TestWorkerRefuses: a worker of another flowrun version, or of a
// pipeline whose stages differ, does not work for a run, and both it and
// the run say why; a worker that differs only in workers joins.
func TestWorkerRefuses(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after embeddedConn's cleanups
	nc := embeddedConn(t)
	const yaml = "name: v\nstages:\n  - use: grep\n    with: {pattern: a}\n"
	p := pipeline(t, yaml)
	var runLog syncBuffer
	run, err := transport.NewRun(nc, p, transport.RunOptions{RunID: "r1", Version: "1.0", Log: &runLog})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := run.Open(ctx, p.Stages); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, yaml, version, says string
	}{
		{"another version", yaml, "2.0", "the run is another build of flowrun: the run's is 1.0; this worker's is 2.0"},
		{"another pipeline", strings.Replace(yaml, "pattern: a", "pattern: b", 1), "1.0", "the run's pipeline differs from this worker's"},
		{"more workers", yaml + "    workers: 5\n", "1.0", "joined run r1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log syncBuffer
			w, err := transport.NewWorker(nc, pipeline(t, tt.yaml), transport.WorkerOptions{Version: tt.version, Log: &log})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			wctx, stop := context.WithCancel(ctx)
			done := make(chan error)
			go func() { done <- w.Serve(wctx) }()
			waitFor(t, &log, tt.says)
			if tt.says != "joined run r1" {
				waitFor(t, &runLog, "refused run r1: "+tt.says)
			}
			stop()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
	if err := run.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestSlowRecordsKeepTheirWorker: records that take several ack waits
// each are not delivered again to the other worker, which has idle slots
// to take them (each worker says InProgress and pulls no more than it can
// start), and the run counts no redelivery.
func TestSlowRecordsKeepTheirWorker(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after embeddedConn's cleanups
	nc := embeddedConn(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	os.WriteFile(in, []byte("a\nb\nc\nd\ne\nf\n"), 0o644)
	yaml := "name: slow\ninput: {from: " + in + "}\noutput: {to: " + filepath.Join(dir, "out.txt") + "}\nstages:\n  - use: sleep\n    with: {duration: 1500ms}\n    workers: 2\n"
	p := pipeline(t, yaml)
	run, err := transport.NewRun(nc, p, transport.RunOptions{AckWait: 600 * time.Millisecond, MaxDeliver: 2, LocalWorkers: true})
	if err != nil {
		t.Fatal(err)
	}
	other, err := transport.NewWorker(nc, pipeline(t, strings.Replace(yaml, "workers: 2", "workers: 6", 1)), transport.WorkerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	wctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- other.Serve(wctx) }()
	sum, err := runner.Run(context.Background(), p, runner.Options{Remote: run})
	stop()
	if serr := <-served; err == nil {
		err = serr
	}
	if cerr := run.Close(context.Background()); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	st := sum.Stages[0]
	if !st.Remote || st.In != 6 || st.Out != 6 || st.Redelivered != 0 || st.Errors != 0 {
		t.Errorf("stage %+v: want 6 in and out through the broker, no redelivery", st)
	}
	out, _ := os.ReadFile(filepath.Join(dir, "out.txt"))
	if len(strings.Fields(string(out))) != 6 {
		t.Errorf("output %q", out)
	}
}

// TestRunIDClaimedOnce opens two runs of one run id at the same moment,
// ten times: exactly one may open, the other is refused saying the run
// is on the broker already. Both looked for the run's stream, found none
// and went on, sharing its consumers, and both waited for ever (1 in 11
// pairs of processes on a loaded machine).
func TestRunIDClaimedOnce(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv, err := transport.StartEmbedded(context.Background(), transport.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	p := pipeline(t, "name: twice\nstages:\n  - use: upper\n")
	for i := range 10 {
		id := fmt.Sprintf("same-%d", i)
		var runs [2]*transport.Run
		var errs [2]error
		var wg sync.WaitGroup
		start := make(chan struct{})
		for k := range runs {
			nc, err := transport.Dial(context.Background(), srv.URL(), transport.DialOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if runs[k], err = transport.NewRun(nc, p, transport.RunOptions{RunID: id, Version: "1.0"}); err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[k] = runs[k].Open(context.Background(), p.Stages)
			}()
		}
		close(start)
		wg.Wait()
		opened := 0
		for k, err := range errs {
			switch {
			case err == nil:
				opened++
			case !strings.Contains(err.Error(), "is on the broker already"):
				t.Errorf("pair %d, run %d: %v", i, k, err)
			}
		}
		if opened != 1 {
			t.Errorf("pair %d: %d of two runs of one id opened (%v), want 1", i, opened, errs)
		}
		for _, r := range runs {
			r.Close(context.Background())
		}
	}
}

// TestWorkerIgnoresAlikeNames: pipelines "x.y" and "x_y" make the same
// token in the runs bucket's keys, and a worker of one took each run of
// the other for its own pipeline changed: it refused it, telling both
// logs to give the worker the same pipeline file. A run of another
// pipeline is none of its business.
func TestWorkerIgnoresAlikeNames(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after embeddedConn's cleanups
	nc := embeddedConn(t)
	const stages = "stages:\n  - use: upper\n"
	p := pipeline(t, "name: x.y\n"+stages)
	var runLog syncBuffer
	run, err := transport.NewRun(nc, p, transport.RunOptions{RunID: "r1", Version: "1.0", Log: &runLog})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := run.Open(ctx, p.Stages); err != nil {
		t.Fatal(err)
	}
	var otherLog, ownLog syncBuffer
	other, err := transport.NewWorker(nc, pipeline(t, "name: x_y\n"+stages), transport.WorkerOptions{Version: "1.0", Log: &otherLog})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	own, err := transport.NewWorker(nc, p, transport.WorkerOptions{Version: "1.0", Log: &ownLog})
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	wctx, stop := context.WithCancel(ctx)
	done := make(chan error, 2)
	go func() { done <- other.Serve(wctx) }()
	go func() { done <- own.Serve(wctx) }()
	waitFor(t, &ownLog, "joined run r1")
	time.Sleep(time.Second) // the other worker has seen the run's entry too
	if strings.Contains(otherLog.String(), "r1") || strings.Contains(runLog.String(), "refused") {
		t.Errorf("a worker of pipeline x_y took notice of a run of x.y; its log:\n%s\nthe run's:\n%s", &otherLog, &runLog)
	}
	stop()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := run.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}
