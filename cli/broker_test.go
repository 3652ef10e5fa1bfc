package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
)

// broker is one connector as the end-to-end tests use it: a source and a
// sink URL for a queue, on the package's shared server.
type broker struct {
	name   string
	server func(testing.TB) *brokertest.Server
	urls   func(s *brokertest.Server, queue string) (in, out string)
	// redelivery is how long a message of a killed consumer takes to
	// come back: JetStream waits ack_wait, the others at once.
	redelivery time.Duration
	// backTwice: a message flowrun handed back unsettled may come back
	// twice (at least once). JetStream does so when a consumer naks many
	// messages at its close: the next consumer was seen to get one of
	// them at once and again after ack_wait.
	backTwice bool
}

// back is what a test finds left in the input queue after a run, with a
// message that came back twice counted once where b allows that.
func (b broker) back(left []string) []string {
	if !b.backTwice {
		return left
	}
	s := sorted(left)
	return slices.Compact(s)
}

var brokers = []broker{
	{name: "rabbitmq", server: brokertest.RabbitMQ, urls: func(s *brokertest.Server, q string) (string, string) {
		return s.URL + "?queue=" + q, s.URL + "?queue=" + q
	}},
	{name: "redis", server: brokertest.Redis, urls: func(s *brokertest.Server, q string) (string, string) {
		return s.URL + "?list=" + q + "&consumer=test", s.URL + "?list=" + q
	}},
	{name: "nats", server: brokertest.NATS, redelivery: 2 * time.Second, backTwice: true, urls: func(s *brokertest.Server, q string) (string, string) {
		return s.URL + "?stream=" + q + "&ack_wait=2s", s.URL + "?stream=" + q + "&subject=" + q + ".in"
	}},
}

var queueSeq int

// queues returns the input and output queues of a test: the URLs
// flowrun reads and writes, and those the test writes and reads.
func (b broker) queues(t *testing.T) (in, out struct{ src, sink string }) {
	s := b.server(t)
	queueSeq++
	base := fmt.Sprintf("e2e-%d-%d", time.Now().UnixNano()%1e9, queueSeq)
	in.src, in.sink = b.urls(s, base+"-in")
	out.src, out.sink = b.urls(s, base+"-out")
	return in, out
}

func publish(t *testing.T, url string, bodies []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	snk, _, err := connect.OpenSink(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer snk.Close()
	msgs := make([]connect.Message, len(bodies))
	for i, b := range bodies {
		msgs[i] = connect.Message{Data: []byte(b)}
	}
	if err := snk.Write(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if err := snk.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func numbered(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = "m" + strconv.Itoa(i+1)
	}
	return s
}

// drain reads and acks what is in the queue: at least atLeast messages
// (waiting for them up to half a minute, however slow a loaded machine
// is), then more until idle goes by without one.
func drain(t *testing.T, url string, atLeast int, idle time.Duration) []string {
	t.Helper()
	ctx := context.Background()
	src, _, err := connect.OpenSource(ctx, url, nil, 256)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var got []string
	buf := make([]connect.Message, 0, 256)
	deadline := time.Now().Add(30 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, idle)
		ms, err := src.Receive(rctx, buf[:0])
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			if len(got) >= atLeast || time.Now().After(deadline) {
				return got
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			got = append(got, string(m.Data))
		}
		if err := src.Settle(ctx, ms, connect.Ack); err != nil {
			t.Fatal(err)
		}
	}
}

func pipeline(t *testing.T, yaml string) string {
	return writeFile(t, t.TempDir(), "p.yaml", yaml)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func forEachBroker(t *testing.T, f func(t *testing.T, b broker)) {
	for _, b := range brokers {
		t.Run(b.name, func(t *testing.T) { f(t, b) })
	}
}

// Every message in comes out once, processed, and the input queue is
// empty after the run: nothing unacked, nothing lost.
func TestBrokerEveryMessageOnce(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker) {
		in, out := b.queues(t)
		publish(t, in.sink, numbered(300))
		p := pipeline(t, "stages: [{use: upper, workers: 4}]\n")
		_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "--until-idle", "2s", "-i", in.src, "-o", out.sink, p)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		got := sorted(drain(t, out.src, 300, 300*time.Millisecond))
		want := numbered(300)
		for i := range want {
			want[i] = strings.ToUpper(want[i])
		}
		if !slices.Equal(got, sorted(want)) {
			t.Fatalf("output: %d messages, want each of %d once", len(got), len(want))
		}
		if left := drain(t, in.src, 0, 300*time.Millisecond+b.redelivery); len(left) > 0 {
			t.Fatalf("%d messages left in the input, acked too late or not at all: %v", len(left), left[:min(5, len(left))])
		}
	})
}

// A take leaves what it did not take in the queue: only the records it
// passed on are acked.
func TestBrokerTakeLeavesRest(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker) {
		in, out := b.queues(t)
		publish(t, in.sink, numbered(50))
		p := pipeline(t, "stages: [{use: take, with: {n: 10}}]\n")
		_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "--until-idle", "500ms", "-i", in.src, "-o", out.sink, p)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		taken := drain(t, out.src, 10, 300*time.Millisecond)
		left := b.back(drain(t, in.src, 40, 300*time.Millisecond+b.redelivery))
		if len(taken) != 10 || len(left) != 40 {
			t.Fatalf("took %d and left %d, want 10 and 40", len(taken), len(left))
		}
		if all := sorted(append(taken, left...)); !slices.Equal(all, sorted(numbered(50))) {
			t.Fatalf("taken and left are not the input: %v", all)
		}
	})
}

// Records read past a take's cut that a stage dead-lettered are in the
// dead-letter file: their messages are settled (rejected), not handed
// back, or the next run would dead-letter them again and the file would
// hold them twice.
func TestBrokerTakeDeadLettersOnce(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker) {
		in, out := b.queues(t)
		msgs := numbered(40)
		for i := 3; i < len(msgs); i += 4 {
			msgs[i] = "bad" + msgs[i]
		}
		for i, m := range msgs {
			if !strings.HasPrefix(m, "bad") {
				msgs[i] = fmt.Sprintf("%q", m)
			}
		}
		publish(t, in.sink, msgs)
		dir := t.TempDir()
		dl := filepath.Join(dir, "dead.jsonl")
		p := writeFile(t, dir, "p.yaml", "dead_letter: "+dl+"\nstages:\n"+
			"  - {use: json.validate, on_error: dead-letter}\n  - {use: take, with: {n: 3}}\n")
		// The second run waits out what the first handed back, which
		// JetStream may redeliver only after ack_wait.
		idle := (time.Second + b.redelivery).String()
		for run := 1; run <= 2; run++ {
			_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "--until-idle", idle, "-i", in.src, "-o", out.sink, p)
			if code != 0 && code != 3 {
				t.Fatalf("run %d: exit %d: %s", run, code, errs)
			}
		}
		done := drain(t, out.src, 6, 300*time.Millisecond)
		left := b.back(drain(t, in.src, 0, 300*time.Millisecond+b.redelivery))
		data, err := os.ReadFile(dl)
		if err != nil {
			t.Fatal(err)
		}
		var dead []string
		for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			var d struct{ Record string }
			if err := json.Unmarshal([]byte(line), &d); err != nil {
				t.Fatalf("dead-letter line %q: %v", line, err)
			}
			dead = append(dead, d.Record)
		}
		if len(done) != 6 {
			t.Fatalf("two takes of 3 output %d: %v", len(done), done)
		}
		if c := slices.Compact(sorted(dead)); len(c) != len(dead) {
			t.Fatalf("the dead-letter file holds a record twice: %v", sorted(dead))
		}
		if all := sorted(slices.Concat(done, dead, left)); !slices.Equal(all, sorted(msgs)) {
			t.Fatalf("output %v, dead letters %v and left %v are not the input", done, dead, left)
		}
	})
}

// A run that fails on a record leaves that record in the queue, with
// those after it; what was done before it is in the output and acked.
func TestBrokerFailedRunLeavesMessage(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker) {
		in, out := b.queues(t)
		var msgs []string
		for i := 1; i <= 20; i++ {
			msgs = append(msgs, fmt.Sprintf(`{"n":%d}`, i))
		}
		msgs[7] = "oops"
		publish(t, in.sink, msgs)
		p := pipeline(t, "stages: [{use: json.validate}]\n")
		// The run ends at the failure: the idle wait never comes to
		// pass, unless a loaded machine's broker is slow to hand over
		// the messages, which must not end the run first.
		_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "--until-idle", "20s", "-i", in.src, "-o", out.sink, p)
		if code != 1 || !strings.Contains(errs, "json.validate") {
			t.Fatalf("exit %d, want 1 naming the stage: %s", code, errs)
		}
		done := drain(t, out.src, 7, 300*time.Millisecond)
		left := b.back(drain(t, in.src, 13, 300*time.Millisecond+b.redelivery))
		if !slices.Contains(left, "oops") {
			t.Fatalf("the failing message is not back in the queue: left %v", left)
		}
		if all := sorted(append(done, left...)); !slices.Equal(all, sorted(msgs)) {
			t.Fatalf("done %v and left %v are not the input", done, left)
		}
	})
}

// flowrun killed with SIGKILL in the middle of a run, then run again:
// every message comes out, and at most what was in flight (the
// prefetch, by default from the stages' workers) twice.
func TestBrokerKillMidRun(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker) {
		in, out := b.queues(t)
		const n, workers = 1000, 4
		publish(t, in.sink, numbered(n))
		p := pipeline(t, "stages: [{use: sleep, with: {duration: 1ms}, workers: 4}, {use: upper}]\n")
		prefetch := connect.DefaultPrefetch(workers + 1)

		var mu sync.Mutex
		seen := map[string]int{}
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // the consumer of the output, all along
			defer wg.Done()
			src, _, err := connect.OpenSource(context.Background(), out.src, nil, 256)
			if err != nil {
				t.Error(err)
				return
			}
			defer src.Close()
			buf := make([]connect.Message, 0, 256)
			for {
				ms, err := src.Receive(ctx, buf[:0])
				if err != nil {
					return
				}
				mu.Lock()
				for _, m := range ms {
					seen[string(m.Data)]++
				}
				mu.Unlock()
				src.Settle(context.Background(), ms, connect.Ack)
			}
		}()
		count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }

		cmd := exec.Command(flowrunBin, "run", "-q", "--progress", "none", "-i", in.src, "-o", out.sink, p)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for start := time.Now(); count() < n/4; time.Sleep(5 * time.Millisecond) {
			if time.Since(start) > time.Minute {
				t.Fatalf("no output from flowrun: %s", stderr.String())
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if count() >= n {
			t.Fatalf("the run was done before the kill: %s", stderr.String())
		}

		idle := 2*time.Second + 2*b.redelivery
		again := exec.Command(flowrunBin, "run", "-q", "--progress", "none", "--until-idle", idle.String(), "-i", in.src, "-o", out.sink, p)
		if msg, err := again.CombinedOutput(); err != nil {
			t.Fatalf("second run: %v: %s", err, msg)
		}
		deadline := time.Now().Add(10 * time.Second)
		for count() < n && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		stop()
		wg.Wait()
		twice := 0
		for i := 1; i <= n; i++ {
			c := seen["M"+strconv.Itoa(i)]
			if c == 0 {
				t.Fatalf("M%d lost", i)
			}
			twice += c - 1
		}
		t.Logf("%d of %d messages came out twice", twice, n)
		if twice > prefetch {
			t.Fatalf("%d messages came out twice, more than the %d in flight", twice, prefetch)
		}
	})
}

// A broker that is not there, or refuses the password, is exit 2 within
// seconds, naming the broker and the reason; the password is not shown.
func TestBrokerStartErrors(t *testing.T) {
	port, _ := brokertest.FreePort()
	rabbit := brokertest.RabbitMQ(t)
	p := pipeline(t, "stages: [{use: upper}]\n")
	for _, tc := range []struct{ in, out, want string }{
		{fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/?queue=q", port), "-",
			fmt.Sprintf("flowrun: input: rabbitmq amqp://guest:xxxxx@127.0.0.1:%d/: cannot connect: connection refused", port)},
		{strings.Replace(rabbit.URL, "guest:guest", "guest:wrong", 1) + "?queue=q", "-",
			fmt.Sprintf("flowrun: input: rabbitmq amqp://guest:xxxxx@127.0.0.1:%d/: username or password refused", rabbit.Port)},
		{"-", fmt.Sprintf("redis://127.0.0.1:%d/0?list=q", port),
			fmt.Sprintf("flowrun: output: redis redis://127.0.0.1:%d/0: cannot connect: connection refused", port)},
		{fmt.Sprintf("nats://127.0.0.1:%d?stream=s", port), "-",
			fmt.Sprintf("flowrun: input: nats nats://127.0.0.1:%d: cannot connect: no server answers", port)},
		{"amqp://h/?queue=q&prefech=2", "-", `rabbitmq option "prefech": no such option (did you mean "prefetch"?)`},
	} {
		_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "-i", tc.in, "-o", tc.out, p)
		if code != 2 || !strings.Contains(errs, tc.want) || strings.Contains(errs, ":wrong@") {
			t.Errorf("-i %s -o %s: exit %d, %q; want 2 and %q", tc.in, tc.out, code, errs, tc.want)
		}
	}
}

// The broker killed and restarted in the middle of a run: flowrun
// reconnects, its input and its output, and every message comes out (at
// least once); then a SIGTERM drains and ends the endless run.
func TestBrokerRestartMidRun(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker) {
		srv := brokertest.Own(t, b.name)
		in, out := struct{ src, sink string }{}, struct{ src, sink string }{}
		in.src, in.sink = b.urls(srv, "restart-in")
		out.src, out.sink = b.urls(srv, "restart-out")
		const n = 300
		publish(t, in.sink, numbered(n))
		p := pipeline(t, "stages: [{use: sleep, with: {duration: 2ms}, workers: 4}, {use: upper}]\n")

		var mu sync.Mutex
		seen := map[string]bool{}
		count := func() int { mu.Lock(); defer mu.Unlock(); return len(seen) }
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		src, _, err := connect.OpenSource(context.Background(), out.src, nil, 256)
		if err != nil {
			t.Fatal(err)
		}
		// Both queues exist: a clean restart has the broker write them
		// down before the crash (see brokertest.Server.CleanRestart).
		if err := srv.CleanRestart(); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer src.Close()
			buf := make([]connect.Message, 0, 256)
			for {
				ms, err := src.Receive(ctx, buf[:0])
				if err != nil {
					return
				}
				mu.Lock()
				for _, m := range ms {
					seen[string(m.Data)] = true
				}
				mu.Unlock()
				src.Settle(context.Background(), ms, connect.Ack)
			}
		}()

		cmd := exec.Command(flowrunBin, "run", "-q", "--progress", "none", "-i", in.src, "-o", out.sink, p)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Process.Kill()
		for start := time.Now(); count() < n/5; time.Sleep(5 * time.Millisecond) {
			if time.Since(start) > time.Minute {
				t.Fatalf("no output from flowrun: %s", stderr.String())
			}
		}
		if err := srv.Restart(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for count() < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGTERM)
		err = cmd.Wait()
		stop()
		wg.Wait()
		if c := count(); c < n {
			var missing []string
			for i := 1; i <= n; i++ {
				if m := "M" + strconv.Itoa(i); !seen[m] {
					missing = append(missing, m)
				}
			}
			t.Fatalf("%d of %d messages came out after the restart (missing %v); flowrun: %v %s", c, n, missing, err, stderr.String())
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Errorf("after SIGTERM: %v, want exit 130: %s", err, stderr.String())
		}
	})
}

// --until-idle counts only a wait with nothing in flight: a broker hands
// over no more than the prefetch unacked, so while a slow stage (or a
// slow confirm, on a loaded machine) holds them no message comes, and
// the queue is not drained for that.
func TestBrokerUntilIdleWaitsForInFlight(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker) {
		in, out := b.queues(t)
		publish(t, in.sink, numbered(2))
		p := pipeline(t, "stages: [{use: sleep, with: {duration: 1500ms}}]\n")
		_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "--until-idle", "1s", "-i", in.src+"&prefetch=1", "-o", out.sink, p)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		got := drain(t, out.src, 0, 300*time.Millisecond)
		left := drain(t, in.src, 0, 300*time.Millisecond+b.redelivery)
		if !slices.Equal(sorted(got), numbered(2)) || len(left) > 0 {
			t.Fatalf("the run ended with %d done and %d left in the queue, want 2 and 0", len(got), len(left))
		}
	})
}

// A broker worker that writes a file is run again and again (after a
// Ctrl-C, a kill, a --until-idle batch): each run appends to the output
// and to the dead-letter file, since what an earlier run wrote there was
// acked and is nowhere else. A record half written when flowrun was
// killed (a line without its newline) was not acked and comes again: it
// is cut, not glued to the next.
func TestBrokerFileOutputKeepsEarlierRuns(t *testing.T) {
	forEachBroker(t, func(t *testing.T, b broker) {
		in, _ := b.queues(t)
		dir := t.TempDir()
		out, dl := filepath.Join(dir, "out.jsonl"), filepath.Join(dir, "dead.jsonl")
		p := pipeline(t, "dead_letter: "+dl+"\nstages: [{use: json.validate, on_error: dead-letter}]\n")
		runOnce := func(msgs ...string) {
			t.Helper()
			publish(t, in.sink, msgs)
			_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "--until-idle", "1s", "-i", in.src, "-o", out, p)
			if code != 3 {
				t.Fatalf("exit %d, want 3 (a record dead-lettered): %s", code, errs)
			}
		}
		runOnce(`{"n":1}`, "oops1", `{"n":2}`)
		// What a kill -9 in the middle of a write leaves.
		for _, f := range []string{out, dl} {
			file, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			file.WriteString(`{"n":`)
			file.Close()
		}
		runOnce(`{"n":3}`, "oops2")
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if got := sorted(strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")); !slices.Equal(got, []string{`{"n":1}`, `{"n":2}`, `{"n":3}`}) {
			t.Fatalf("output after two runs: %q, want the three records of both", data)
		}
		data, err = os.ReadFile(dl)
		if err != nil {
			t.Fatal(err)
		}
		var recs []string
		for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
			var d struct{ Record string }
			if err := json.Unmarshal([]byte(line), &d); err != nil {
				t.Fatalf("dead-letter file line %q: %v", line, err)
			}
			recs = append(recs, d.Record)
		}
		if !slices.Equal(sorted(recs), []string{"oops1", "oops2"}) {
			t.Fatalf("dead-letter file after two runs holds %v, want oops1 and oops2", recs)
		}
	})
}
