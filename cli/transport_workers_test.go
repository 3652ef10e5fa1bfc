package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/transport"
)

// embeddedBroker starts a NATS server with JetStream in the test's
// process, stopped at the test's end.
func embeddedBroker(t *testing.T) string {
	t.Helper()
	s, err := transport.StartEmbedded(context.Background(), transport.EmbeddedOptions{StoreDir: filepath.Join(t.TempDir(), "store")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s.URL()
}

// process is a flowrun process a test started: its stderr as it comes,
// and done, closed once it has exited (err is then what Wait said).
type process struct {
	name   string // "flowrun run", "flowrun worker", for messages
	cmd    *exec.Cmd
	stderr *lockedBuffer
	done   chan struct{}
	err    error
}

// startProcess starts flowrun with args (the command first), killed at
// the test's end if it has not exited.
func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	p := &process{name: "flowrun " + args[0], stderr: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(flowrunBin, args...)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	return p
}

// startWorker starts `flowrun worker` with args and waits until it has
// joined the broker: it says so once it watches for runs.
func startWorker(t *testing.T, args ...string) *process {
	t.Helper()
	w := startProcess(t, append([]string{"worker"}, args...)...)
	w.waitFor(t, "waiting for runs")
	return w
}

// waitFor waits until the process's stderr holds s, for at most a minute.
func (p *process) waitFor(t *testing.T, s string) {
	t.Helper()
	p.waitUntil(t, fmt.Sprintf("saying %q", s), func(stderr string) bool { return strings.Contains(stderr, s) })
}

// waitUntil waits until ok says yes of the process's stderr, for at most
// a minute; what says what it waits for, in the failure.
func (p *process) waitUntil(t *testing.T, what string, ok func(stderr string) bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !ok(p.stderr.String()); {
		select {
		case <-p.done:
			t.Fatalf("%s exited (%v) before %s:\n%s", p.name, p.cmd.ProcessState, what, p.stderr)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not show %s within a minute:\n%s", p.name, what, p.stderr)
		}
	}
}

// wait waits for the process to exit, for at most limit, and returns
// what Wait said (nil: exit 0).
func (p *process) wait(t *testing.T, limit time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		t.Fatalf("%s did not end within %v:\n%s", p.name, limit, p.stderr)
	}
	return p.err
}

// kill ends the process with SIGKILL and waits for it to exit.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// stop ends the process with SIGTERM and returns its exit code.
func (p *process) stop(t *testing.T) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not stop within 30s of SIGTERM:\n%s", p.name, p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

func rLines(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "r%d\n", i)
	}
	return b.String()
}

// TestBrokerWorkerProcesses: with --no-local-workers, only flowrun worker
// processes work the stages: one works only the slow stage (--stages),
// another every stage with more workers (--set). The output is the
// input's, each record once, and the counts in --stats are exact.
func TestBrokerWorkerProcesses(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after the broker's and the processes' cleanups
	url := embeddedBroker(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", `name: scale
stages:
  - name: slow
    use: sleep
    with: {duration: 1ms}
    workers: 3
  - name: keep
    use: grep
    with: {pattern: '7', invert: true}
  - use: upper
  - use: count
    with: {every: 1000000}
`)
	const n = 3000
	in := writeFile(t, dir, "in.txt", rLines(n))
	w1 := startWorker(t, p, "--broker", url, "--stages", "slow")
	w2 := startWorker(t, p, "--broker", url, "--set", "stages.slow.workers=2")
	out, stats := filepath.Join(dir, "out.txt"), filepath.Join(dir, "stats.json")
	run := startProcess(t, "run", "--progress", "none", "-q", "--broker", url, "--no-local-workers", "-i", in, "-o", out, "--stats", stats, p)
	if err := run.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("run: %v\n%s\nworker 1:\n%s\nworker 2:\n%s", err, run.stderr, w1.stderr, w2.stderr)
	}
	want := 0
	for i := 1; i <= n; i++ {
		if !strings.Contains(strconv.Itoa(i), "7") {
			want++
		}
	}
	got, _ := os.ReadFile(out)
	if string(got) != strconv.Itoa(want)+"\n" {
		t.Errorf("output %q, want the count %d", got, want)
	}
	var s brokerStats
	b, _ := os.ReadFile(stats)
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	wantStages := []struct {
		name    string
		in, out int64
		remote  bool
	}{{"slow", n, n, true}, {"keep", n, int64(want), true}, {"upper", int64(want), int64(want), true}, {"count", int64(want), 1, false}}
	for i, w := range wantStages {
		st := s.Stages[i]
		if st.Name != w.name || st.In != w.in || st.Out != w.out || st.Remote != w.remote {
			t.Errorf("stage %d: %+v, want %+v", i, st, w)
		}
	}
	for _, w := range []*process{w1, w2} {
		w.waitFor(t, "is over")
	}
	if !strings.Contains(w1.stderr.String(), "stages slow\n") || !strings.Contains(w2.stderr.String(), "stages slow, keep, upper\n") {
		t.Errorf("the workers' stages:\n%s\n%s", w1.stderr, w2.stderr)
	}
	for i, w := range []*process{w1, w2} {
		if code := w.stop(t); code != 0 {
			t.Errorf("worker %d: exit %d after SIGTERM:\n%s", i+1, code, w.stderr)
		}
	}
	// Each worker joined the run, and the run heard of both.
	if c := strings.Count(run.stderr.String(), "joined run"); c != 2 {
		t.Errorf("the run saw %d workers join, want 2:\n%s", c, run.stderr)
	}
}

// TestBrokerWorkerKilled: a worker killed with SIGKILL while it holds
// pieces of a stage's input leaves them unacked; after the ack wait the
// broker delivers them to another worker, and the output is still each
// record exactly once, the redeliveries counted.
func TestBrokerWorkerKilled(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after the broker's and the processes' cleanups
	url := embeddedBroker(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", `name: killed
stages:
  - name: slow
    use: sleep
    with: {duration: 20ms}
    workers: 4
  - use: upper
`)
	const n = 200
	in := writeFile(t, dir, "in.txt", rLines(n))
	out, stats := filepath.Join(dir, "out.txt"), filepath.Join(dir, "stats.json")
	run := startProcess(t, "run", "--progress", "none", "--broker", url, "--no-local-workers", "--run-id", "k1",
		"--ack-wait", "1s", "-i", in, "-o", out, "--stats", stats, p)

	doomed := startWorker(t, p, "--broker", url)
	doomed.waitFor(t, "joined run k1")
	// It holds pieces of slow when the consumer says some are unacked.
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(time.Minute); ; {
		c, err := js.Consumer(context.Background(), "FLOWRUN_killed_k1", "in_1_slow")
		if err == nil {
			if info, err := c.Info(context.Background()); err == nil && info.NumAckPending > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker took no piece within a minute:\n%s", doomed.stderr)
		}
		time.Sleep(5 * time.Millisecond)
	}
	doomed.kill()

	rescuer := startWorker(t, p, "--broker", url)
	if err := run.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("run: %v\n%s\nworker:\n%s", err, run.stderr, rescuer.stderr)
	}
	got, _ := os.ReadFile(out)
	var want []string
	for i := 1; i <= n; i++ {
		want = append(want, "R"+strconv.Itoa(i))
	}
	lines := strings.Fields(string(got))
	slices.Sort(lines)
	slices.Sort(want)
	if !slices.Equal(lines, want) {
		t.Errorf("output: %d records, want each of %d once", len(lines), n)
	}
	var s brokerStats
	b, _ := os.ReadFile(stats)
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Stages[0].In != n || s.Stages[0].Out != n || s.Output.Records != n {
		t.Errorf("counts: %+v, output %d; want %d in and out", s.Stages[0], s.Output.Records, n)
	}
	if s.Stages[0].Redelivered == 0 {
		t.Errorf("no redelivery counted: %+v", s.Stages[0])
	}
	var again int64 // the summary's line is over the stages: upper's pieces may be delivered again too
	for _, st := range s.Stages {
		again += st.Redelivered
	}
	if !strings.Contains(run.stderr.String(), fmt.Sprintf("the broker delivered %d pieces of the stages' input again", again)) {
		t.Errorf("the summary does not count the redeliveries:\n%s", run.stderr)
	}
	rescuer.stop(t)
}

// TestBrokerRunResumed: the run process is killed with SIGKILL while its
// pieces wait in the stream (no worker yet); --resume with the same
// journal (hence the same run id) takes up the stream: the pieces queued
// are not sent again, so each record is worked exactly once (a plugin
// logs every call), and the output is whole and in order.
func TestBrokerRunResumed(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	url := embeddedBroker(t)
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls.log")
	p := writeFile(t, dir, "p.yaml", `name: resumed
stages:
  - name: work
    use: exec
    with: {command: [sh, -c, 'tee -a `+calls+`'], mode: per-record}
    workers: 3
  - use: upper
`)
	const n = 300
	in := writeFile(t, dir, "in.txt", rLines(n))
	out, journal := filepath.Join(dir, "out.txt"), filepath.Join(dir, "journal")
	args := []string{"run", "--progress", "none", "-q", "--broker", url, "--no-local-workers", "--journal", journal, "-i", in, "-o", out, p}
	first := exec.Command(flowrunBin, args...)
	var firstErr lockedBuffer
	first.Stderr = &firstErr
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	firstDone := make(chan struct{})
	go func() { first.Wait(); close(firstDone) }()
	t.Cleanup(func() { first.Process.Kill(); <-firstDone })

	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(5 * time.Millisecond) {
		var msgs uint64
		for names := js.StreamNames(context.Background()); ; {
			name, ok := <-names.Name()
			if !ok {
				break
			}
			if s, err := js.Stream(context.Background(), name); err == nil && strings.HasPrefix(name, "FLOWRUN_resumed_") {
				if info, err := s.Info(context.Background()); err == nil {
					msgs = info.State.Msgs
				}
			}
		}
		if msgs > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no piece reached the stream within a minute:\n%s", &firstErr)
		}
	}
	first.Process.Kill()
	<-firstDone

	w := startWorker(t, p, "--broker", url)
	again := exec.Command(flowrunBin, append(args[:len(args)-1], "--resume", p)...)
	var againErr lockedBuffer
	again.Stderr = &againErr
	if err := again.Run(); err != nil {
		t.Fatalf("resumed run: %v\n%s\nworker:\n%s", err, &againErr, w.stderr)
	}
	if !strings.Contains(againErr.String(), "pieces left on the broker") || strings.Contains(againErr.String(), ": 0 pieces left") {
		t.Errorf("the resumed run took up no piece of the stream:\n%s", &againErr)
	}
	var want strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&want, "R%d\n", i)
	}
	if got, _ := os.ReadFile(out); string(got) != want.String() {
		t.Errorf("output after the resume:\n%s", head(string(got)))
	}
	log, _ := os.ReadFile(calls)
	worked := strings.Fields(string(log))
	slices.Sort(worked)
	expect := strings.Fields(rLines(n))
	slices.Sort(expect)
	if !slices.Equal(worked, expect) {
		t.Errorf("the plugin was called %d times for %d records: a piece was worked twice or never", len(worked), n)
	}
	w.stop(t)
}

// TestBrokerWorkerCredentials: a broker that wants a token serves a run
// and a worker that give it (a flag, the environment), and a worker with
// a wrong one is refused at once, exit 2, in words.
func TestBrokerWorkerCredentials(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s, err := transport.StartEmbedded(context.Background(), transport.EmbeddedOptions{Token: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "name: creds\nstages:\n  - use: upper\n    workers: 2\n")
	in := writeFile(t, dir, "in.txt", rLines(50))

	bad := exec.Command(flowrunBin, "worker", p, "--broker", s.URL(), "--broker-token", "wrong")
	stderr, _ := bad.CombinedOutput()
	if code := bad.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(stderr), "token refused") {
		t.Errorf("a wrong token: exit %d:\n%s", code, stderr)
	}

	w := startWorker(t, p, "--broker", s.URL(), "--broker-token", "s3cret")
	out := filepath.Join(dir, "out.txt")
	run := exec.Command(flowrunBin, "run", "-q", "--progress", "none", "--broker", s.URL(), "--no-local-workers", "-i", in, "-o", out, p)
	run.Env = append(os.Environ(), "FLOWRUN_BROKER_TOKEN=s3cret")
	if b, err := run.CombinedOutput(); err != nil {
		t.Fatalf("run: %v\n%s\nworker:\n%s", err, b, w.stderr)
	}
	got, _ := os.ReadFile(out)
	if n := len(strings.Fields(string(got))); n != 50 {
		t.Errorf("%d records out, want 50", n)
	}
	w.stop(t)
}

// TestBrokerMaxDeliver: a record that kills every worker that takes it
// is dead-lettered by the run, saying why, and Termed, and the run exits
// 3; every other record comes out, also those that shared a worker with
// it when it killed the worker (pieces of the next stage and the pieces
// held ahead), and those of the poison's own piece: a worker killed
// spends a delivery of every piece it holds, and with --max-deliver 2
// those were dead-lettered on their next delivery, "without an answer",
// as the poison was (1 run in 3 in CI with 5 records, every run with
// 200). Workers serve both stages, one at a time. With --max-deliver 4
// a piece is worked side by side twice before it is worked alone.
func TestBrokerMaxDeliver(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	for _, tt := range []struct {
		maxDeliver string
		workers    int // killed by the poison, and one to dead-letter it
	}{
		{"2", 3}, // its first delivery, then alone
		{"4", 4}, // its first two, then alone
	} {
		t.Run("max-deliver "+tt.maxDeliver, func(t *testing.T) {
			testMaxDeliver(t, tt.maxDeliver, tt.workers)
		})
	}
}

func testMaxDeliver(t *testing.T, maxDeliver string, want int) {
	url := embeddedBroker(t)
	dir := t.TempDir()
	dl := filepath.Join(dir, "dl.jsonl")
	p := writeFile(t, dir, "p.yaml", `name: poison
dead_letter: `+dl+`
stages:
  - name: deadly
    use: exec
    with: {command: [sh, -c, 'r=$(cat); if [ "$r" = poison ]; then kill -9 $PPID; sleep 5; fi; echo "$r"'], mode: per-record}
    workers: 2
    on_error: dead-letter
  - use: upper
    workers: 2
`)
	const n, poison = 200, 120
	var in, out strings.Builder
	for i := 1; i <= n; i++ {
		if i == poison {
			in.WriteString("poison\n")
			continue
		}
		fmt.Fprintf(&in, "r%d\n", i)
		fmt.Fprintf(&out, "R%d\n", i)
	}
	inFile := writeFile(t, dir, "in.txt", in.String())
	outFile := filepath.Join(dir, "out.txt")
	run := startProcess(t, "run", "--progress", "none", "-q", "--broker", url, "--no-local-workers",
		"--max-deliver", maxDeliver, "--ack-wait", "1s", "-i", inFile, "-o", outFile, p)
	var workers []*process
	for ended := false; !ended; {
		if len(workers) > want+1 {
			t.Fatalf("%d workers died and the run goes on:\n%s", len(workers), run.stderr)
		}
		w := startWorker(t, p, "--broker", url)
		workers = append(workers, w)
		select {
		case <-w.done: // the poison killed it: another
		case <-run.done:
			ended = true
		}
	}
	if code := run.cmd.ProcessState.ExitCode(); code != 3 {
		t.Errorf("run: exit %d, want 3:\n%s", code, run.stderr)
	}
	got, _ := os.ReadFile(outFile)
	if g, w := lineSet(string(got)), lineSet(out.String()); !slices.Equal(g, w) {
		t.Errorf("%d records out, want the %d others; missing: %v", len(g)-1, n-1, missing(w, g))
	}
	letters, _ := os.ReadFile(dl)
	if lines := strings.Split(strings.TrimSpace(string(letters)), "\n"); len(lines) != 1 || !strings.Contains(lines[0], `"record":"poison"`) || !strings.Contains(lines[0], "worked alone, it ended its worker once") {
		t.Errorf("dead letters, want the poison's alone:\n%s", letters)
	}
	if len(workers) != want {
		t.Errorf("%d workers, want %d: %d killed by the record, one to dead-letter it", len(workers), want, want-1)
	}
	workers[len(workers)-1].stop(t)
}

// TestWorkerDeadLetterFromTheRun: a pipeline whose stage dead-letters,
// the file given on the run's command line (--dead-letter), not in the
// pipeline: the worker writes no dead letters (it hands them to the run)
// and must take the pipeline as it is. It refused it ("on_error:
// dead-letter needs a dead_letter: FILE") and the run waited for ever.
func TestWorkerDeadLetterFromTheRun(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	url := embeddedBroker(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", `name: dl
stages:
  - name: valid
    use: json.validate
    on_error: dead-letter
  - use: upper
`)
	in := writeFile(t, dir, "in.txt", "{\"a\":1}\nnot json\n{\"b\":2}\n")
	w := startWorker(t, p, "--broker", url)
	out, dl := filepath.Join(dir, "out.txt"), filepath.Join(dir, "dl.jsonl")
	run := exec.Command(flowrunBin, "run", "--progress", "none", "-q", "--broker", url, "--no-local-workers", "-i", in, "-o", out, "--dead-letter", dl, p)
	var runErr lockedBuffer
	run.Stderr = &runErr
	err := run.Run()
	if code := run.ProcessState.ExitCode(); code != 3 {
		t.Fatalf("run: %v (exit %d, want 3: a record dead-lettered)\n%s\nworker:\n%s", err, code, &runErr, w.stderr)
	}
	if got, _ := os.ReadFile(out); string(got) != "{\"A\":1}\n{\"B\":2}\n" {
		t.Errorf("output %q", got)
	}
	letters, _ := os.ReadFile(dl)
	if strings.Count(string(letters), "\n") != 1 || !strings.Contains(string(letters), `"stage":"valid"`) || !strings.Contains(string(letters), "not json") {
		t.Errorf("dead letters:\n%s", letters)
	}
	if code := w.stop(t); code != 0 {
		t.Errorf("worker: exit %d:\n%s", code, w.stderr)
	}
}

// missing are the lines of want that got lacks (both sorted).
func missing(want, got []string) []string {
	var m []string
	for _, l := range want {
		if _, ok := slices.BinarySearch(got, l); !ok {
			m = append(m, l)
		}
	}
	return m
}
