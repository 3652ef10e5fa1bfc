package observe_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/observe"
	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

// runObserved runs a pipeline over n input lines from a file with an
// Observer sampling every few milliseconds, and returns its advice.
func runObserved(t *testing.T, yaml string, n int) observe.Advice {
	t.Helper()
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "record %d\n", i)
	}
	if err := os.WriteFile(in, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := spec.Parse(filepath.Join(dir, "p.yaml"), []byte(yaml), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Input.From = in
	o := observe.New(p, observe.BuildInfo{})
	o.Every = 5 * time.Millisecond
	var out bytes.Buffer
	_, err = runner.Run(context.Background(), p, runner.Options{Stdout: &out, Watch: o.Watch})
	o.Finish()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(out.String(), "\n"); got != n {
		t.Fatalf("%d records out, want %d", got, n)
	}
	a := o.Advice()
	t.Log(a.Line)
	return a
}

// TestAdviceNamesTheSlowStage: a stage a thousand times slower than the
// others, with records waiting for it, is named, with its numbers.
func TestAdviceNamesTheSlowStage(t *testing.T) {
	a := runObserved(t, `
stages:
  - {name: shout, use: upper, buffer: 8}
  - {name: download, use: sleep, workers: 2, buffer: 8, with: {duration: 2ms}}
  - {name: quiet, use: lower, buffer: 8}
`, 200)
	if a.Limit != "download" || !a.Conclusive {
		t.Fatalf("advice %+v, want it to name download", a)
	}
	for _, want := range []string{"bottleneck: download — workers busy ", "% of the run; more workers there would help (shout and quiet were idle "} {
		if !strings.Contains(a.Line, want) {
			t.Errorf("advice %q lacks %q", a.Line, want)
		}
	}
}

func init() {
	// A slow stage that, like take or dedupe, has one worker by design.
	stages.Register(stages.Spec{
		Name:       "observetest.serial",
		Doc:        "Waits 2ms per record, in one worker only.",
		MaxWorkers: 1,
		New: func(stages.Config) (stages.Stage, error) {
			return stages.Func(func(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
				time.Sleep(2 * time.Millisecond)
				return append(out, rec), nil
			}), nil
		},
	})
}

// TestAdviceSingleWorkerStage: the advice does not ask for workers a
// stage cannot have.
func TestAdviceSingleWorkerStage(t *testing.T) {
	a := runObserved(t, `
stages:
  - {name: tally, use: observetest.serial, buffer: 4}
  - {name: shout, use: upper}
`, 100)
	if a.Limit != "tally" || !strings.Contains(a.Line, "it runs one worker by design") || strings.Contains(a.Line, "more workers") {
		t.Fatalf("advice %+v, want it to name tally without asking for workers", a)
	}
}

// TestAdviceBalancedNamesNone: two stages of the same cost and workers
// are both the limit; the advice names neither. The run is 1000 records
// (a second or so): a pause of the whole process on a loaded machine
// (180-290 ms seen under -race) counts as busy time of the records in
// flight, and the first stage, its queue full, always has one in each
// worker, the second not; in a run of 200 records (250 ms) one such pause
// made left 98% busy and right 72% (2 runs in 30 at load 25).
func TestAdviceBalancedNamesNone(t *testing.T) {
	a := runObserved(t, `
stages:
  - {name: left, use: sleep, workers: 2, buffer: 8, with: {duration: 2ms}}
  - {name: right, use: sleep, workers: 2, buffer: 8, with: {duration: 2ms}}
`, 1000)
	if a.Limit != "" || !a.Conclusive {
		t.Fatalf("advice %+v, want a conclusive one naming no stage", a)
	}
	if !strings.Contains(a.Line, "no single stage") {
		t.Errorf("advice %q, want it to say no single stage is the limit", a.Line)
	}
}

// TestAdviceTooShort: a run of a few records says it cannot tell.
func TestAdviceTooShort(t *testing.T) {
	a := runObserved(t, "stages: [{use: upper}]\n", 3)
	if a.Conclusive || a.Limit != "" {
		t.Fatalf("advice %+v for a run of 3 records, want it too short to tell", a)
	}
}

// TestAdviceNamesTheStageWithFewestWorkers: stages of one cost with 3, 4
// and 5 workers; the one with 3 is the limit, and what comes after it
// waits for its records.
func TestAdviceNamesTheStageWithFewestWorkers(t *testing.T) {
	a := runObserved(t, `
stages:
  - {name: download, use: sleep, workers: 3, buffer: 16, with: {duration: 2ms}}
  - {name: resize, use: sleep, workers: 4, buffer: 16, with: {duration: 2ms}}
  - {name: upload, use: sleep, workers: 5, buffer: 16, with: {duration: 2ms}}
`, 300)
	if a.Limit != "download" {
		t.Fatalf("advice %+v, want it to name download", a)
	}
}

// TestServerURL checks that the address printed for a person opens in a
// browser: a server on every interface is at localhost, not at [::].
func TestServerURL(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := &spec.Pipeline{Name: "p"}
	for addr, want := range map[string]string{":0": `^http://localhost:\d+/$`, "127.0.0.1:0": `^http://127\.0\.0\.1:\d+/$`, "0.0.0.0:0": `^http://localhost:\d+/$`} {
		srv, err := observe.New(p, observe.BuildInfo{}).Listen(addr)
		if err != nil {
			t.Fatal(err)
		}
		if got := srv.URL(); !regexp.MustCompile(want).MatchString(got) {
			t.Errorf("Listen(%q).URL() = %q, want %s", addr, got, want)
		}
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
	}
}

// TestAdviceRemoteSlotsJoinLate: a stage on a broker has no slots until a
// worker process joins (half the run here), then all of its 2 slots busy
// and records waiting: it is the limit. Its busy share is of the slots it
// had over the run, not of the 2 it has at the end (50%: "none stands
// out", the summary of such a run said).
func TestAdviceRemoteSlotsJoinLate(t *testing.T) {
	for _, queued := range []int{256, 0} {
		t.Run(fmt.Sprintf("queue %d of 256", queued), func(t *testing.T) { adviceRemoteSlotsJoinLate(t, queued) })
	}
}

// adviceRemoteSlotsJoinLate is TestAdviceRemoteSlotsJoinLate with the
// run's queue before the stage at queued: full, or empty since the run
// hands its records to the broker at once, where they wait (unseen by the
// run), which is how a run on a broker goes since pieces gather records.
func adviceRemoteSlotsJoinLate(t *testing.T, queued int) {
	defer goleak.VerifyNone(t)
	p, err := spec.Parse("p.yaml", []byte("stages: [{name: slow, use: sleep, with: {duration: 5ms}}]\n"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := observe.New(p, observe.BuildInfo{})
	o.Every = 5 * time.Millisecond
	const half = 20
	var mu sync.Mutex
	var calls int
	var joined time.Time
	done := make(chan struct{})
	o.Watch(func() runner.Snapshot {
		mu.Lock()
		defer mu.Unlock()
		calls++
		st := runner.StageSnapshot{Name: "slow", Use: "sleep", Remote: true, Queued: queued, Cap: 256}
		if calls > half {
			if joined.IsZero() {
				joined = time.Now()
			}
			st.Workers, st.Busy, st.BusyTime = 2, 2, 2*time.Since(joined)
		}
		if calls == 2*half {
			close(done)
		}
		return runner.Snapshot{TotalBytes: -1, Stages: []runner.StageSnapshot{st}}
	})
	<-done
	o.Finish()
	if a := o.Advice(); a.Limit != "slow" {
		t.Fatalf("advice %+v, want it to name slow", a)
	}
}
