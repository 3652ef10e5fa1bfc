package runner_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

// Test-only stages, to make failures, panics and slowness on demand.
var flaky atomic.Int64

func init() {
	stages.Register(stages.Spec{
		Name: "runnertest.fail",
		Doc:  "Fails records that contain the text fail; panics on panic; fails flaky records the first n-1 times.",
		Options: []stages.Option{
			{Name: "times", Type: stages.Int, Default: 0, Doc: "fail a flaky record this many times, then pass it"},
		},
		New: func(c stages.Config) (stages.Stage, error) {
			times := c.Int("times")
			seen := map[string]int{}
			return stages.Func(func(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
				switch s := string(rec); {
				case strings.Contains(s, "panic"):
					panic("boom on " + s)
				case strings.Contains(s, "fail"):
					return out, errors.New("record says fail")
				case strings.Contains(s, "flaky"):
					seen[s]++
					flaky.Add(1)
					if seen[s] <= times {
						return out, fmt.Errorf("flaky attempt %d", seen[s])
					}
				}
				return append(out, rec), nil
			}), nil
		},
	})
	stages.Register(stages.Spec{
		Name: "runnertest.fanout",
		Doc:  "Emits each record n times, numbered; filters records equal to skip.",
		Options: []stages.Option{
			{Name: "n", Type: stages.Int, Default: 3, Doc: "copies"},
		},
		New: func(c stages.Config) (stages.Stage, error) {
			n := c.Int("n")
			return stages.Func(func(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
				if string(rec) == "skip" {
					return out, nil
				}
				for i := range n {
					out = append(out, fmt.Appendf(nil, "%s.%d", rec, i))
				}
				return out, nil
			}), nil
		},
	})
	stages.Register(stages.Spec{
		Name: "runnertest.hold",
		Doc:  "Holds records and emits them joined by + every n records and at the end (a Flusher).",
		Options: []stages.Option{
			{Name: "n", Type: stages.Int, Default: 3, Doc: "records per group"},
		},
		New: func(c stages.Config) (stages.Stage, error) { return &holdStage{n: c.Int("n")}, nil },
	})
}

type holdStage struct {
	n    int
	held []string
}

func (h *holdStage) Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	h.held = append(h.held, string(rec))
	if len(h.held) == h.n {
		return h.Flush(ctx, out)
	}
	return out, nil
}

func (h *holdStage) Flush(_ context.Context, out [][]byte) ([][]byte, error) {
	if len(h.held) == 0 {
		return out, nil
	}
	out = append(out, []byte(strings.Join(h.held, "+")))
	h.held = nil
	return out, nil
}

// runYAML runs a pipeline given as YAML over input and returns stdout.
func runYAML(t *testing.T, yaml, input string, opts ...func(*runner.Options)) (string, *runner.Summary, error) {
	t.Helper()
	dir := t.TempDir()
	yaml = strings.ReplaceAll(yaml, "$TMP", dir)
	p, err := spec.Parse("test.yaml", []byte(yaml), spec.Options{})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	var out bytes.Buffer
	o := runner.Options{Stdin: strings.NewReader(input), Stdout: &out}
	for _, f := range opts {
		f(&o)
	}
	sum, err := runner.Run(context.Background(), p, o)
	return out.String(), sum, err
}

func lines(n int, format string) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, format+"\n", i)
	}
	return b.String()
}

func TestRunOutput(t *testing.T) {
	defer goleak.VerifyNone(t)
	tests := []struct {
		name, yaml, in, want string
	}{
		{"one stage", "stages: [{use: upper}]", "a\nb\n", "A\nB\n"},
		{"last line without newline kept", "stages: [{use: upper}]", "a\nb", "A\nB\n"},
		{"crlf lines lose the cr", "stages: [{use: upper}]", "a\r\nb\r\n", "A\nB\n"},
		{"empty input", "stages: [{use: upper}]", "", ""},
		{"empty lines are records", "stages: [{use: trim}]", "\n \n\n", "\n\n\n"},
		{"filter", "stages: [{use: grep, with: {pattern: '^b'}}]", "a\nb\nbb\nc\n", "b\nbb\n"},
		{"ordered with many workers", "ordered: true\nstages: [{use: sleep, workers: 8, with: {duration: 1ms, jitter: 3ms}}]",
			lines(200, "%d"), lines(200, "%d")},
		{"ordered fan-out stays together", "ordered: true\nstages: [{use: runnertest.fanout, workers: 4}, {use: sleep, workers: 5, with: {duration: 0s, jitter: 1ms}}]",
			"a\nskip\nb\n", "a.0\na.1\na.2\nb.0\nb.1\nb.2\n"},
		{"ordered holding stage", "ordered: true\nstages: [{use: sleep, workers: 4, with: {duration: 0s, jitter: 1ms}}, {use: runnertest.hold, with: {n: 3}}]",
			lines(7, "%d"), "1+2+3\n4+5+6\n7\n"},
		{"ordered fan-out into a holding stage", "ordered: true\nreorder_window: 1\nstages: [{use: sleep, workers: 4, with: {duration: 0s, jitter: 1ms}}, {use: split, with: {sep: ','}}, {use: runnertest.hold, with: {n: 2}}]",
			"a,b,c\nd,e,f\ng\n", "a+b\nc+d\ne+f\ng\n"},
		{"ordered fan-out into batch, then many workers", "ordered: true\nstages: [{use: split, with: {sep: ','}}, {use: batch, with: {size: 2, max_wait: 0s}}, {use: sleep, workers: 4, with: {duration: 0s, jitter: 1ms}}]",
			strings.Repeat("a,b,c\nd,e,f\n", 50), strings.Repeat("[\"a\",\"b\"]\n[\"c\",\"d\"]\n[\"e\",\"f\"]\n", 50)},
		{"ordered take after a fused stage", "ordered: true\nstages: [{use: upper, workers: 4}, {use: trim}, {use: take, with: {n: 5}}]",
			lines(3000, "%d"), lines(5, "%d")},
		{"jsonl to csv", "input: {format: jsonl}\noutput: {format: csv}\nstages: [{use: trim}]",
			"{\"a\":1,\"b\":\"x,y\"}\n\n{\"a\":2,\"b\":\"z\"}\n", "a,b\n1,\"x,y\"\n2,z\n"},
		{"csv to jsonl", "input: {format: csv}\noutput: {format: jsonl}\nstages: [{use: trim}]",
			"name,age\nada,36\n\"b, c\",7\n", "{\"name\":\"ada\",\"age\":\"36\"}\n{\"name\":\"b, c\",\"age\":\"7\"}\n"},
		{"lines to jsonl quotes text", "output: {format: jsonl}\nstages: [{use: trim}]", "{\"a\":1}\nplain \"text\"\n", "{\"a\":1}\n\"plain \\\"text\\\"\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, sum, err := runYAML(t, tt.yaml, tt.in)
			if err != nil {
				t.Fatalf("run: %v", err)
			}
			if got != tt.want {
				t.Errorf("output\n got %q\nwant %q", got, tt.want)
			}
			if sum.Stopped || sum.Skipped() != 0 {
				t.Errorf("summary %+v", sum)
			}
		})
	}
}

func TestUnorderedKeepsEveryRecord(t *testing.T) {
	defer goleak.VerifyNone(t)
	in := lines(5000, "r%d")
	got, sum, err := runYAML(t, "stages: [{use: sleep, workers: 7, with: {duration: 0s, jitter: 100us}}, {use: upper, workers: 3}]", in)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Split(strings.ToUpper(in), "\n")
	have := strings.Split(got, "\n")
	if len(have) != len(want) {
		t.Fatalf("got %d lines, want %d", len(have), len(want))
	}
	seen := map[string]bool{}
	for _, l := range have {
		seen[l] = true
	}
	for _, l := range want {
		if !seen[l] {
			t.Fatalf("missing %q", l)
		}
	}
	if sum.Input.Records != 5000 || sum.Output.Records != 5000 {
		t.Errorf("in %d out %d", sum.Input.Records, sum.Output.Records)
	}
}

func TestRecordErrors(t *testing.T) {
	defer goleak.VerifyNone(t)
	in := "ok1\nfail-me\nok2\npanic-me\nok3\n"
	t.Run("fail stops the run naming stage and record", func(t *testing.T) {
		_, _, err := runYAML(t, "stages: [{name: check, use: runnertest.fail}]", in)
		var re *runner.RecordError
		if !errors.As(err, &re) || re.Seq != 2 || re.Stage != "check" {
			t.Fatalf("err = %v", err)
		}
		if want := `stage "check" record 2 "fail-me": record says fail`; err.Error() != want {
			t.Errorf("message %q, want %q", err.Error(), want)
		}
	})
	t.Run("skip counts", func(t *testing.T) {
		out, sum, err := runYAML(t, "ordered: true\nstages: [{use: runnertest.fail, on_error: skip}]", in)
		if err != nil {
			t.Fatal(err)
		}
		if out != "ok1\nok2\nok3\n" || sum.Skipped() != 2 || sum.Stages[0].Errors != 2 {
			t.Errorf("out %q skipped %d errors %d", out, sum.Skipped(), sum.Stages[0].Errors)
		}
	})
	t.Run("dead letter holds stage error attempts seq record", func(t *testing.T) {
		var dl string
		out, sum, err := runYAML(t, "dead_letter: $TMP/dl.jsonl\nstages: [{name: check, use: runnertest.fail, on_error: dead-letter, retry: {attempts: 2, backoff: 1ms}}]", in,
			func(o *runner.Options) {})
		if err != nil {
			t.Fatal(err)
		}
		_ = out
		if sum.DeadLettered() != 2 || sum.Stages[0].Retries != 2 {
			t.Fatalf("dead %d retries %d", sum.DeadLettered(), sum.Stages[0].Retries)
		}
		_ = dl
	})
	t.Run("retries until success", func(t *testing.T) {
		out, sum, err := runYAML(t, "stages: [{use: runnertest.fail, with: {times: 2}, retry: {attempts: 3, backoff: 1ms}}]", "flaky1\nflaky2\n")
		if err != nil {
			t.Fatal(err)
		}
		if out != "flaky1\nflaky2\n" || sum.Stages[0].Retries != 4 || sum.Stages[0].Errors != 4 {
			t.Errorf("out %q retries %d errors %d", out, sum.Stages[0].Retries, sum.Stages[0].Errors)
		}
	})
	t.Run("retries exhausted", func(t *testing.T) {
		_, _, err := runYAML(t, "stages: [{use: runnertest.fail, with: {times: 5}, retry: {attempts: 3, backoff: 1ms}}]", "flaky1\n")
		if err == nil || !strings.Contains(err.Error(), "after 3 attempts: flaky attempt 3") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("panic is the record's error", func(t *testing.T) {
		_, _, err := runYAML(t, "stages: [{use: runnertest.fail}]", "panic-now\n")
		if err == nil || !strings.Contains(err.Error(), "panic: boom on panic-now") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		_, _, err := runYAML(t, "stages: [{use: sleep, timeout: 5ms, with: {duration: 10s}}]", "x\n")
		if err == nil || !strings.Contains(err.Error(), "timeout of 5ms") {
			t.Errorf("err = %v", err)
		}
	})
}

func TestDeadLetterFile(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	dl := filepath.Join(dir, "dl.jsonl")
	p, err := spec.Parse("t.yaml", []byte(`
dead_letter: `+dl+`
input: {format: jsonl, on_error: dead-letter}
stages: [{name: check, use: runnertest.fail, on_error: dead-letter}]
`), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sum, err := runner.Run(context.Background(), p, runner.Options{
		Stdin: strings.NewReader("\"ok\"\n\"fail\"\nnot json\n\"\xff fail\"\n"), Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(dl)
	if err != nil {
		t.Fatal(err)
	}
	var got []runner.DeadLetter
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var d runner.DeadLetter
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, d)
	}
	if len(got) != 3 || sum.DeadLettered() != 3 || out.String() != "\"ok\"\n" {
		t.Fatalf("dead letters %+v, out %q", got, out.String())
	}
	bySeq := map[uint64]runner.DeadLetter{}
	for _, d := range got {
		bySeq[d.Seq] = d
	}
	if d := bySeq[2]; d.Stage != "check" || d.Record != `"fail"` || d.Error != "record says fail" || d.Attempts != 1 {
		t.Errorf("seq 2: %+v", d)
	}
	if d := bySeq[3]; d.Stage != "input" || !strings.Contains(d.Error, "line 3: not valid JSON") {
		t.Errorf("seq 3: %+v", d)
	}
	if d := bySeq[4]; d.RecordBase64 == "" || string(d.Bytes()) != "\"\xff fail\"" {
		t.Errorf("seq 4 must keep invalid UTF-8 bytes: %+v", d)
	}
}

func TestTakeStopsInput(t *testing.T) {
	defer goleak.VerifyNone(t)
	if _, ok := stages.Lookup("take"); !ok {
		t.Skip("take not registered")
	}
	// An endless input: take must end the run.
	r, w := io.Pipe()
	go func() {
		for {
			if _, err := w.Write([]byte("line\n")); err != nil {
				return
			}
		}
	}()
	defer r.Close()
	p, err := spec.Parse("t.yaml", []byte("ordered: true\nstages: [{use: upper, workers: 2}, {use: take, with: {n: 5}}]"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := runner.Run(context.Background(), p, runner.Options{Stdin: r, Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	if out.String() != strings.Repeat("LINE\n", 5) {
		t.Errorf("out %q", out.String())
	}
}

func TestStopDrains(t *testing.T) {
	defer goleak.VerifyNone(t)
	r, w := io.Pipe()
	defer r.Close()
	p, err := spec.Parse("t.yaml", []byte("ordered: true\nstages: [{use: sleep, workers: 4, with: {duration: 2ms}}]"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var out bytes.Buffer
	done := make(chan struct{})
	var sum *runner.Summary
	go func() {
		defer close(done)
		sum, err = runner.Run(context.Background(), p, runner.Options{Stdin: r, Stdout: &out, Stop: stop})
	}()
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(w, "%d\n", i)
	}
	close(stop)
	<-done
	w.Close()
	if err != nil || !sum.Stopped {
		t.Fatalf("err %v stopped %v", err, sum.Stopped)
	}
	got := out.String()
	if got != lines(int(sum.Input.Records), "%d") || sum.Output.Records != sum.Input.Records {
		t.Errorf("out must be the %d records read, in order; got %q", sum.Input.Records, got)
	}
}

func TestAbort(t *testing.T) {
	defer goleak.VerifyNone(t)
	r, w := io.Pipe()
	defer r.Close()
	defer w.Close()
	p, err := spec.Parse("t.yaml", []byte("stages: [{use: sleep, workers: 2, with: {duration: 1h}}]"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		fmt.Fprintf(w, "a\nb\n")
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	sum, err := runner.Run(ctx, p, runner.Options{Stdin: r, Stdout: io.Discard})
	if !errors.Is(err, context.Canceled) || !sum.Stopped {
		t.Errorf("err %v stopped %v", err, sum.Stopped)
	}
}

// errWriter fails every write with err.
type errWriter struct{ err error }

func (e errWriter) Write([]byte) (int, error) { return 0, e.err }

func TestOutputErrors(t *testing.T) {
	defer goleak.VerifyNone(t)
	in := lines(100000, "%d")
	t.Run("closed pipe ends quietly", func(t *testing.T) {
		_, sum, err := runYAML(t, "stages: [{use: upper}]", in, func(o *runner.Options) { o.Stdout = errWriter{io.ErrClosedPipe} })
		if err != nil || !sum.Closed {
			t.Errorf("err %v closed %v", err, sum.Closed)
		}
	})
	t.Run("disk full fails", func(t *testing.T) {
		_, _, err := runYAML(t, "stages: [{use: upper}]", in, func(o *runner.Options) { o.Stdout = errWriter{errors.New("no space left on device")} })
		if err == nil || err.Error() != "write stdout: no space left on device" {
			t.Errorf("err %v", err)
		}
	})
	t.Run("csv output of a non-object", func(t *testing.T) {
		_, _, err := runYAML(t, "output: {format: csv}\nstages: [{use: upper}]", "plain\n")
		if err == nil || !strings.Contains(err.Error(), `stage "output" record 1 "PLAIN": csv output needs JSON objects`) {
			t.Errorf("err %v", err)
		}
	})
}

func TestHugeLineAndLimit(t *testing.T) {
	defer goleak.VerifyNone(t)
	big := strings.Repeat("x", 1<<20)
	out, _, err := runYAML(t, "stages: [{use: upper}]", "a\n"+big+"\nb\n")
	if err != nil {
		t.Fatal(err)
	}
	if out != "A\n"+strings.ToUpper(big)+"\nB\n" {
		t.Errorf("1 MiB line mangled (len %d)", len(out))
	}
	_, sum, err := runYAML(t, "input: {max_record_size: 1KiB, on_error: skip}\nstages: [{use: upper}]", "a\n"+big+"\nb\n")
	if err != nil || sum.Input.Skipped != 1 || sum.Output.Records != 2 {
		t.Errorf("err %v skipped %d out %d", err, sum.Input.Skipped, sum.Output.Records)
	}
	_, _, err = runYAML(t, "input: {max_record_size: 1KiB}\nstages: [{use: upper}]", "a\n"+big+"\nb\n")
	if err == nil || !strings.Contains(err.Error(), "line 2: record longer than max_record_size (1024 bytes)") {
		t.Errorf("err %v", err)
	}
}

// endless is an input that never ends: a line, again and again.
type endless struct{ n atomic.Int64 }

func (e *endless) Read(p []byte) (int, error) {
	const line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\n"
	n := 0
	for n < len(p) {
		n += copy(p[n:], line[(e.n.Load()+int64(n))%int64(len(line)):])
	}
	e.n.Add(int64(n))
	return n, nil
}

func TestBackpressure(t *testing.T) {
	defer goleak.VerifyNone(t)
	// A slow last stage must slow the reader, not fill memory: after a
	// while, what was read stays close to what the queues can hold.
	p, err := spec.Parse("t.yaml", []byte("ordered: true\nstages: [{use: upper}, {use: sleep, buffer: 16, with: {duration: 1ms}}]"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	in := &endless{}
	stop := make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := runner.Run(context.Background(), p, runner.Options{Stdin: in, Stdout: io.Discard, Stop: stop})
		done <- err
	}()
	time.Sleep(300 * time.Millisecond)
	read := in.n.Load()
	close(stop)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// 300 records can pass the sleep in 300ms; the rest is buffers. 300ms
	// of an unbounded reader would be gigabytes.
	if read > 8<<20 {
		t.Errorf("read %d bytes ahead of a slow stage", read)
	}
}

func init() {
	stages.Register(stages.Spec{
		Name:  "runnertest.batchpanic",
		Doc:   "A cheap batched stage that panics on records containing panic, fails those containing fail, and maps with mapper.",
		Batch: true,
		Options: []stages.Option{
			{Name: "mapper", Type: stages.Bool, Default: false, Doc: "implement stages.Mapper"},
		},
		New: func(c stages.Config) (stages.Stage, error) {
			f := func(rec []byte) []byte {
				if bytes.Contains(rec, []byte("panic")) {
					panic("boom on " + string(rec))
				}
				return bytes.ToUpper(rec)
			}
			if c.Bool("mapper") {
				return stages.MapFunc(f), nil
			}
			return stages.Func(func(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
				if bytes.Contains(rec, []byte("fail")) {
					return out, errors.New("failed " + string(rec))
				}
				return append(out, f(rec)), nil
			}), nil
		},
	})
}

// TestBatchedStagePanics runs panics and failures through the batched hot
// path, in place and not, and checks every record lands exactly once.
func TestBatchedStagePanics(t *testing.T) {
	defer goleak.VerifyNone(t)
	in := "ok1\nok2\npanic-a\nok3\nfail-b\nok4\npanic-c\n"
	for _, mapper := range []string{"false", "true"} {
		for _, ordered := range []string{"false", "true"} {
			t.Run("mapper="+mapper+"/ordered="+ordered, func(t *testing.T) {
				out, sum, err := runYAML(t, "ordered: "+ordered+"\nstages: [{use: runnertest.batchpanic, on_error: skip, with: {mapper: "+mapper+"}}]", in)
				if err != nil {
					t.Fatal(err)
				}
				want := "OK1\nOK2\nOK3\nOK4\n"
				if mapper == "true" {
					want = "OK1\nOK2\nOK3\nFAIL-B\nOK4\n"
				}
				if ordered == "false" {
					out, want = string(sortLines([]byte(out))), string(sortLines([]byte(want)))
				}
				if out != want {
					t.Errorf("out %q, want %q", out, want)
				}
				skipped := int64(3)
				if mapper == "true" {
					skipped = 2
				}
				if sum.Skipped() != skipped {
					t.Errorf("skipped %d, want %d", sum.Skipped(), skipped)
				}
			})
		}
	}
	_, _, err := runYAML(t, "stages: [{use: runnertest.batchpanic}]", in)
	if err == nil || err.Error() != `stage "runnertest.batchpanic" record 3 "panic-a": panic: boom on panic-a` {
		t.Errorf("err = %v", err)
	}
}

func sortLines(b []byte) []byte {
	lines := strings.Split(string(b), "\n")
	sort.Strings(lines)
	return []byte(strings.Join(lines, "\n"))
}

// TestFailureKeepsFinishedWork fails a record with on_error: fail: the
// output holds every record before it (ordered: exactly those), written
// whole, and the run returns the record's error.
func TestFailureKeepsFinishedWork(t *testing.T) {
	defer goleak.VerifyNone(t)
	jsonl := func(n, bad int, badLine string) string {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			if i == bad {
				b.WriteString(badLine + "\n")
				continue
			}
			fmt.Fprintf(&b, "{\"n\":%d}\n", i)
		}
		return b.String()
	}
	const stage2 = "{name: check, use: runnertest.fail, workers: 4}, {use: trim, workers: 2}"
	tests := []struct {
		name, yaml, in string
		bad            int // the failing record
		ordered        bool
	}{
		{"2000 jsonl, 1500 not JSON", "input: {format: jsonl}\nordered: true\nstages: [" + stage2 + "]", jsonl(2000, 1500, "{oops"), 1500, true},
		{"2000 jsonl, 1500 fails a stage", "input: {format: jsonl}\nordered: true\nstages: [" + stage2 + "]", jsonl(2000, 1500, `{"fail":1}`), 1500, true},
		{"3 good then 1 bad", "input: {format: jsonl}\nordered: true\nstages: [" + stage2 + "]", jsonl(4, 4, `{"fail":1}`), 4, true},
		{"3 good then 1 not JSON", "input: {format: jsonl}\nstages: [{use: trim}]", jsonl(4, 4, "nope"), 4, true},
		{"unordered, 2000 jsonl, 1500 fails a stage", "input: {format: jsonl}\nstages: [" + stage2 + "]", jsonl(2000, 1500, `{"fail":1}`), 1500, false},
		{"a batch stage fails", "input: {format: jsonl}\nordered: true\nstages: [{use: runnertest.fail, workers: 3}, {use: upper}]", jsonl(5000, 4321, `{"fail":1}`), 4321, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, sum, err := runYAML(t, tt.yaml, tt.in)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d", tt.bad)) {
				t.Fatalf("err = %v, want the failure of record %d", err, tt.bad)
			}
			got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if out == "" {
				got = nil
			}
			if tt.ordered {
				want := strings.Split(strings.TrimSuffix(jsonl(tt.bad-1, 0, ""), "\n"), "\n")
				if tt.bad == 1 {
					want = nil
				}
				if strings.ToUpper(out) == out && len(want) > 0 {
					for i := range want {
						want[i] = strings.ToUpper(want[i])
					}
				}
				if len(got) != len(want) || strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Fatalf("output has %d records, want exactly the %d before the failing one", len(got), len(want))
				}
			} else {
				seen := map[string]int{}
				for _, l := range got {
					seen[l]++
				}
				for i := 1; i < tt.bad; i++ {
					if seen[fmt.Sprintf("{\"n\":%d}", i)] != 1 {
						t.Fatalf("record %d is in the output %d times, want once", i, seen[fmt.Sprintf("{\"n\":%d}", i)])
					}
				}
			}
			if sum.Output.Records != int64(len(got)) || sum.Failed == "" {
				t.Errorf("summary: output %d, failed %q", sum.Output.Records, sum.Failed)
			}
		})
	}
}

// stopOnWrite closes stop at its first write.
type stopOnWrite struct {
	bytes.Buffer
	stop chan struct{}
	once bool
}

func (s *stopOnWrite) Write(p []byte) (int, error) {
	if !s.once {
		s.once = true
		close(s.stop)
	}
	return s.Buffer.Write(p)
}

// TestStopLeavesReadAheadUnread stops a run once its first record is out:
// what the reader had read ahead is not processed but counted as unread,
// and what was handed on drains, in order.
func TestStopLeavesReadAheadUnread(t *testing.T) {
	defer goleak.VerifyNone(t)
	p, err := spec.Parse("t.yaml", []byte("ordered: true\nstages: [{use: sleep, buffer: 2, with: {duration: 1ms}}]"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := &stopOnWrite{stop: make(chan struct{})}
	sum, err := runner.Run(context.Background(), p, runner.Options{Stdin: strings.NewReader(lines(5000, "%d")), Stdout: out, Stop: out.stop})
	if err != nil || !sum.Stopped {
		t.Fatalf("err %v stopped %v", err, sum.Stopped)
	}
	if got := out.String(); got != lines(int(sum.Output.Records), "%d") || sum.Output.Records != sum.Input.Records {
		t.Errorf("output must be the %d records handed on, in order; got %d", sum.Input.Records, sum.Output.Records)
	}
	t.Logf("processed after the stop %d, unread %d", sum.Output.Records, sum.Input.Unread)
	// Bounded by the queues (2 + the writer's 16 batches) and the worker,
	// not by the 1024 records a read decodes.
	if sum.Output.Records > 64 || sum.Input.Unread < 900 {
		t.Errorf("after the stop %d records were processed and %d left unread; want few processed, the read-ahead unread", sum.Output.Records, sum.Input.Unread)
	}
}

// TestByteOrderMark reads CSV and JSONL that start with a UTF-8 BOM, as
// spreadsheets write them: the mark is not part of the first field.
func TestByteOrderMark(t *testing.T) {
	defer goleak.VerifyNone(t)
	const bom = "\ufeff"
	tests := []struct{ name, yaml, in, want string }{
		{"csv", "input: {format: csv}\noutput: {format: jsonl}\nstages: [{use: pick, with: {fields: [id]}}]", bom + "id,name\n1,a\n", "{\"id\":\"1\"}\n"},
		{"jsonl", "input: {format: jsonl}\nstages: [{use: trim}]", bom + "{\"a\":1}\n{\"a\":2}\n", "{\"a\":1}\n{\"a\":2}\n"},
		{"jsonl, a lone mark", "input: {format: jsonl}\nstages: [{use: trim}]", bom, ""},
		{"lines keep it: it is data", "stages: [{use: trim}]", bom + "x\n", bom + "x\n"},
		{"csv starting like one", "input: {format: csv}\noutput: {format: jsonl}\nstages: [{use: trim}]", "\uff01x,y\n1,2\n", "{\"\uff01x\":\"1\",\"y\":\"2\"}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runYAML(t, tt.yaml, tt.in)
			if err != nil || out != tt.want {
				t.Errorf("out %q err %v, want %q", out, err, tt.want)
			}
		})
	}
}

// TestCSVOutputNeverDropsFields writes records whose fields differ to CSV:
// a field the header lacks fails the record, naming it, and what came
// before is written.
func TestCSVOutputNeverDropsFields(t *testing.T) {
	defer goleak.VerifyNone(t)
	out, _, err := runYAML(t, "input: {format: jsonl}\noutput: {format: csv}\nordered: true\nstages: [{use: trim}]",
		"{\"a\":1}\n{}\n{\"a\":3,\"c\":4}\n")
	if err == nil || !strings.Contains(err.Error(), `record 3`) || !strings.Contains(err.Error(), `field "c"`) {
		t.Errorf("err = %v, want record 3's field \"c\" named", err)
	}
	if out != "a\n1\n\n" {
		t.Errorf("out %q, want the header and the records before the failing one", out)
	}
}

// stuckRelease lets go the calls of runnertest.stuck.
var stuckRelease = make(chan struct{})

func init() {
	stages.Register(stages.Spec{
		Name: "runnertest.stuck",
		Doc:  "Blocks in every call, ignoring its context, until the test lets it go (a read of a FIFO).",
		New: func(stages.Config) (stages.Stage, error) {
			return stages.Func(func(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
				<-stuckRelease
				return append(out, rec), nil
			}), nil
		},
	})
}

// TestStuckStageIsLeftBehind runs a stage that ignores its context: a
// timeout it cannot honour, or an abort, ends the run anyway, leaving the
// stuck call behind (the CLI then ends the process).
func TestStuckStageIsLeftBehind(t *testing.T) {
	defer goleak.VerifyNone(t)
	defer close(stuckRelease) // the abandoned calls return, and their goroutines end
	t.Run("timeout", func(t *testing.T) {
		_, sum, err := runYAML(t, "stages: [{name: s, use: runnertest.stuck, timeout: 50ms}]", "a\n")
		var stuck *runner.StuckError
		if !errors.As(err, &stuck) || stuck.Stage != "s" || stuck.Seq != 1 || sum.Stopped {
			t.Errorf("err %v stopped %v, want the stuck stage named", err, sum.Stopped)
		}
	})
	t.Run("abort", func(t *testing.T) {
		p, err := spec.Parse("t.yaml", []byte("stages: [{name: s, use: runnertest.stuck}]"), spec.Options{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var out bytes.Buffer
		go func() {
			time.Sleep(50 * time.Millisecond)
			cancel()
		}()
		sum, err := runner.Run(ctx, p, runner.Options{Stdin: strings.NewReader("a\n"), Stdout: &out})
		var ab *runner.AbandonedError
		if !errors.As(err, &ab) || len(ab.Stages) != 1 || !sum.Stopped {
			t.Errorf("err %v stopped %v, want the stage abandoned", err, sum.Stopped)
		}
	})
}

// TestDeadLetterHTTPStatus: the dead letter of an HTTP error carries the
// status as a field of its own and a bounded excerpt of the body, not the
// whole HTML page the server sent.
func TestDeadLetterHTTPStatus(t *testing.T) {
	defer goleak.VerifyNone(t)
	if _, ok := stages.Lookup("http.get"); !ok {
		t.Skip("http.get not registered")
	}
	page := "<html><head><title>x</title></head><body><h1>Service down</h1>" + strings.Repeat("<p>filler</p>", 100000) + "</body></html>"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, page)
	}))
	defer srv.Close()
	dl := filepath.Join(t.TempDir(), "dl.jsonl")
	_, sum, err := runYAML(t, `
dead_letter: `+dl+`
stages: [{name: fetch, use: http.get, on_error: dead-letter, retry: {attempts: 1}}]
`, srv.URL+"/x\n")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(dl)
	if err != nil {
		t.Fatal(err)
	}
	var d runner.DeadLetter
	if err := json.Unmarshal(data, &d); err != nil || sum.DeadLettered() != 1 {
		t.Fatalf("dead letter %q: %v", data, err)
	}
	if d.Status != 503 || !strings.HasPrefix(d.Body, "Service down filler") || len(d.Body) > 300 || len(data) > 2000 {
		t.Errorf("dead letter of %d bytes: status %d, body %q", len(data), d.Status, d.Body)
	}
	var raw map[string]any
	json.Unmarshal(data, &raw)
	if raw["status"] != float64(503) {
		t.Errorf("the dead letter's status field is %v: %s", raw["status"], data)
	}
}

// TestStopThenResume stops a journaled run at its first write, then
// resumes it: the records left unread are not marked done, and the
// resumed output is that of a run never stopped.
func TestStopThenResume(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	in, out, journal := filepath.Join(dir, "in.txt"), filepath.Join(dir, "out.txt"), filepath.Join(dir, "j")
	if err := os.WriteFile(in, []byte(lines(1000, "r%d")), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := spec.Parse("t.yaml", []byte("input: {from: "+in+"}\noutput: {to: "+out+"}\nstages: [{use: sleep, buffer: 2, with: {duration: 100us}}, {use: upper}]"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	progress := progressFunc(func(done <-chan struct{}, snap func() runner.Snapshot) {
		for snap().OutRecords == 0 {
			time.Sleep(time.Millisecond)
		}
		close(stop)
		<-done
	})
	sum, err := runner.Run(context.Background(), p, runner.Options{Journal: journal, Stop: stop, Progress: progress})
	if err != nil || !sum.Stopped || sum.Input.Unread == 0 {
		t.Fatalf("err %v stopped %v unread %d", err, sum.Stopped, sum.Input.Unread)
	}
	if _, err := runner.Run(context.Background(), p, runner.Options{Journal: journal, Resume: true}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); string(got) != strings.ToUpper(lines(1000, "r%d")) {
		t.Errorf("resumed output has %d lines, want the 1000 of a run never stopped", strings.Count(string(got), "\n"))
	}
}

// progressFunc is a Progress that is a function.
type progressFunc func(done <-chan struct{}, snapshot func() runner.Snapshot)

func (f progressFunc) Run(done <-chan struct{}, snapshot func() runner.Snapshot) { f(done, snapshot) }

// TestFailureFlushesHoldingStages fails a record before a stage that holds
// records (count, batch, runnertest.hold): the stage emits what it holds
// of the records before the failing one, as at the end of input, and
// nothing of it is dropped as if it came after the failure.
func TestFailureFlushesHoldingStages(t *testing.T) {
	defer goleak.VerifyNone(t)
	in := func(n, bad int) string {
		var b strings.Builder
		for i := 1; i <= n; i++ {
			if i == bad {
				b.WriteString("\"fail\"\n")
				continue
			}
			fmt.Fprintf(&b, "%d\n", i)
		}
		return b.String()
	}
	joined := func(n, size int, sep, open, close string) string {
		var b strings.Builder
		for i := 1; i <= n; i += size {
			var g []string
			for j := i; j < i+size && j <= n; j++ {
				g = append(g, fmt.Sprint(j))
			}
			b.WriteString(open + strings.Join(g, sep) + close + "\n")
		}
		return b.String()
	}
	for _, ordered := range []bool{true, false} {
		for _, bad := range []int{2, 1000, 2000} {
			tests := []struct{ name, stage, want string }{
				{"count", "{use: count}", fmt.Sprintf("%d\n", bad-1)},
				{"batch", "{use: batch, with: {size: 7, max_wait: 0s}}", joined(bad-1, 7, ",", "[", "]")},
				{"hold", "{use: runnertest.hold, with: {n: 7}}", joined(bad-1, 7, "+", "", "")},
			}
			for _, tt := range tests {
				t.Run(fmt.Sprintf("%s ordered=%v record %d of 2000", tt.name, ordered, bad), func(t *testing.T) {
					yaml := fmt.Sprintf("ordered: %v\nstages: [{use: jq, workers: 4, with: {query: 'if . == \"fail\" then error(\"bad\") else . end'}}, %s]", ordered, tt.stage)
					out, _, err := runYAML(t, yaml, in(2000, bad))
					if err == nil || !strings.Contains(err.Error(), fmt.Sprint(bad)) {
						t.Fatalf("err = %v, want the failure of record %d", err, bad)
					}
					if !ordered && tt.name != "count" {
						// Unordered: every record before the failing one is
						// there, in groups of any order and make-up.
						want := map[string]bool{}
						for i := 1; i < bad; i++ {
							want[fmt.Sprint(i)] = true
						}
						for _, f := range strings.FieldsFunc(out, func(r rune) bool { return strings.ContainsRune("[],+\n", r) }) {
							delete(want, f)
						}
						if len(want) > 0 {
							t.Fatalf("%d records before the failing one are missing from the output", len(want))
						}
						return
					}
					if !ordered { // count: at least the records before it
						var c int
						fmt.Sscan(out, &c)
						if c < bad-1 {
							t.Fatalf("count %q, want at least %d", out, bad-1)
						}
						return
					}
					if out != tt.want {
						t.Fatalf("output:\n%.200s\nwant:\n%.200s", out, tt.want)
					}
				})
			}
		}
	}
}

// TestInputBytesFollowRecords checks that the bytes the input reports as
// consumed (the display's percentage) move with the records handed on, not
// once per chunk of 1024: with a slow first stage, a small file used to
// show 0% until its first 1024 records were all in.
func TestInputBytesFollowRecords(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := filepath.Join(t.TempDir(), "in.txt")
	if err := os.WriteFile(path, []byte(lines(2000, "%04d")), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := spec.Parse("t.yaml", []byte("input: {from: "+path+"}\nstages: [{use: sleep, buffer: 2, with: {duration: 1ms}}]"), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var snap func() runner.Snapshot
	watching := make(chan struct{})
	done := make(chan struct{})
	var moved, wrong int
	var wrongAt runner.Snapshot
	go func() {
		defer close(done)
		<-watching
		for {
			s := snap()
			if s.InRecords > 0 && s.InRecords < 1000 {
				if s.InBytes > 0 {
					moved++
				}
				// Each record is 5 bytes ("0001\n"): what is consumed is no
				// more than the records handed on span.
				if s.InBytes > 5*s.InRecords {
					wrong, wrongAt = wrong+1, s
				}
			}
			if s.InRecords >= 1000 {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	_, err = runner.Run(context.Background(), p, runner.Options{Stdout: io.Discard, Watch: func(f func() runner.Snapshot) {
		snap = f
		close(watching)
	}})
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if moved == 0 {
		t.Errorf("the input's bytes stayed at 0 while its first 1000 records were handed on")
	}
	if wrong > 0 {
		t.Errorf("%d samples said more bytes consumed than the records handed on span, e.g. %d bytes for %d records", wrong, wrongAt.InBytes, wrongAt.InRecords)
	}
}
