package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// workersStats is the part of --stats about the workers.
type workersStats struct {
	Stages []struct {
		Name    string
		Workers int
		In      int64
	}
	Workers []struct {
		Name    string
		Local   bool
		State   string
		Records int64
		Stages  []struct {
			Name    string
			Slots   int
			Records int64
		}
	}
}

// TestBrokerWorkerGone: a worker killed with SIGKILL sends no more
// reports; the run says it is gone (after a few periods without one),
// and its --stats lists both workers that took part, the dead one gone,
// with the records each did: together, every record of each stage. A
// remote stage's workers in the summary are the slots that joined. (The
// stage sleeps: the run outlasts the kill by more than goneAfter, 5s.)
func TestBrokerWorkerGone(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after the broker's and the processes' cleanups
	url := embeddedBroker(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", `name: gone
stages:
  - name: slow
    use: sleep
    with: {duration: 30ms}
    workers: 2
  - use: upper
`)
	const n = 1000
	in := writeFile(t, dir, "in.txt", rLines(n))
	out, stats := filepath.Join(dir, "out.txt"), filepath.Join(dir, "stats.json")
	w1 := startWorker(t, p, "--broker", url, "--name", "doomed")
	w2 := startWorker(t, p, "--broker", url, "--name", "steady", "--set", "stages.slow.workers=3")
	run := exec.Command(flowrunBin, "run", "--progress", "plain", "--progress-every", "500ms", "--broker", url, "--no-local-workers",
		"--ack-wait", "1s", "-i", in, "-o", out, "--stats", stats, p)
	var runErr lockedBuffer
	run.Stderr = &runErr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- run.Wait() }()
	t.Cleanup(func() {
		run.Process.Kill()
		<-runDone
	})
	// Once the run lists it working, the first worker dies.
	for deadline := time.Now().Add(time.Minute); !strings.Contains(runErr.String(), "doomed busy"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the run's status lines never showed the worker:\n%s", &runErr)
		}
	}
	w1.cmd.Process.Signal(syscall.SIGKILL)
	<-w1.done
	var err error
	select {
	case err = <-runDone:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the run did not end:\n%s", &runErr)
	}
	runDone <- err // for the cleanup
	if err != nil {
		t.Fatalf("run: %v\n%s\nsteady:\n%s", err, &runErr, w2.stderr)
	}
	if !strings.Contains(runErr.String(), "flowrun: worker doomed is gone: no word from it for 5s") {
		t.Errorf("the run did not say the killed worker is gone:\n%s", &runErr)
	}
	if !strings.Contains(runErr.String(), "doomed gone") {
		t.Errorf("no status line shows the killed worker gone:\n%s", &runErr)
	}
	var s workersStats
	b, _ := os.ReadFile(stats)
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Stages) != 2 || s.Stages[0].Workers != 5 || s.Stages[1].Workers != 2 {
		t.Errorf("the stages' workers %+v, want the slots that joined: slow 2+3, upper 1+1", s.Stages)
	}
	states := map[string]string{}
	var slow, upper int64
	for _, w := range s.Workers {
		states[w.Name] = w.State
		for _, st := range w.Stages {
			switch st.Name {
			case "slow":
				slow += st.Records
			case "upper":
				upper += st.Records
			}
		}
	}
	if states["doomed"] != "gone" || states["steady"] != "working" || len(states) != 2 {
		t.Errorf("the workers in --stats: %v, want doomed gone and steady working:\n%s", states, b)
	}
	if slow != n || upper != n {
		t.Errorf("the workers' records: slow %d, upper %d, want %d each:\n%s", slow, upper, n, b)
	}
	if got, _ := os.ReadFile(out); strings.Count(string(got), "\n") != n {
		t.Errorf("output: %d lines, want %d", strings.Count(string(got), "\n"), n)
	}
	w2.stop(t)
}
