package observe_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/cli"
)

// syncBuffer is a bytes.Buffer that a run writes while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor polls cond until it holds, failing the test after a bound
// generous enough for a loaded machine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// liveRun is flowrun run in-process with --metrics on a free port, its
// stdin a pipe the test writes when it likes.
type liveRun struct {
	addr   string
	stdin  *io.PipeWriter
	stdout *syncBuffer
	stderr *syncBuffer
	code   chan int
	cancel context.CancelFunc // ends a --metrics-linger early
}

var addrLine = regexp.MustCompile(`metrics at http://([^/]+)/metrics`)

func startLive(t *testing.T, pipeline string, args ...string) *liveRun {
	t.Helper()
	p := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(p, []byte(pipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	r, w := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	lr := &liveRun{stdin: w, stdout: &syncBuffer{}, stderr: &syncBuffer{}, code: make(chan int, 1), cancel: cancel}
	argv := append([]string{"flowrun", "run", p, "--metrics", "127.0.0.1:0", "--progress", "none"}, args...)
	go func() {
		lr.code <- cli.Run(ctx, argv, r, lr.stdout, lr.stderr)
		r.Close()
	}()
	t.Cleanup(func() {
		cancel()
		w.Close()
	})
	waitFor(t, "the metrics address on stderr", func() bool {
		m := addrLine.FindStringSubmatch(lr.stderr.String())
		if m != nil {
			lr.addr = m[1]
		}
		return m != nil
	})
	return lr
}

// feed writes records from..to-1 as lines.
func (lr *liveRun) feed(t *testing.T, from, to int) {
	t.Helper()
	var b strings.Builder
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "record %d\n", i)
	}
	if _, err := io.WriteString(lr.stdin, b.String()); err != nil {
		t.Fatal(err)
	}
}

// end closes stdin and returns the exit code.
func (lr *liveRun) end(t *testing.T) int {
	t.Helper()
	lr.stdin.Close()
	return lr.wait(t)
}

// wait returns the exit code.
func (lr *liveRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-lr.code:
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("the run did not end; stderr:\n%s", lr.stderr)
	}
	return -1
}

func get(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}

// scrape reads /metrics with Prometheus's own text parser.
func scrape(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	body := get(t, "http://"+addr+"/metrics")
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, body)
	}
	return fams
}

// value returns the value of the family's metric whose stage label is
// stage ("" for a metric without one).
func value(t *testing.T, fams map[string]*dto.MetricFamily, name, stage string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range f.Metric {
		got := ""
		for _, l := range m.Label {
			if l.GetName() == "stage" {
				got = l.GetValue()
			}
		}
		if got != stage {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no %s for stage %q", name, stage)
	return 0
}

const slowPipeline = `name: live
stages:
  - name: shout
    use: upper
  - name: nap
    use: sleep
    workers: 2
    buffer: 8
    with: {duration: 1ms}
`

// TestMetricsDuringRun scrapes a run while it goes: every metric of
// DESIGN.md is there with its pipeline and stage labels, in an
// exposition Prometheus's parser reads, the stages move between two
// scrapes, and no counter goes down.
func TestMetricsDuringRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	lr := startLive(t, slowPipeline)
	lr.feed(t, 0, 20)
	var first map[string]*dto.MetricFamily
	waitFor(t, "the first records through nap", func() bool {
		first = scrape(t, lr.addr)
		return value(t, first, "flowrun_records_in_total", "nap") >= 20
	})

	want := map[string]dto.MetricType{
		"flowrun_records_in_total":       dto.MetricType_COUNTER,
		"flowrun_records_out_total":      dto.MetricType_COUNTER,
		"flowrun_record_errors_total":    dto.MetricType_COUNTER,
		"flowrun_retries_total":          dto.MetricType_COUNTER,
		"flowrun_dead_letters_total":     dto.MetricType_COUNTER,
		"flowrun_queue_length":           dto.MetricType_GAUGE,
		"flowrun_queue_capacity":         dto.MetricType_GAUGE,
		"flowrun_workers":                dto.MetricType_GAUGE,
		"flowrun_workers_busy":           dto.MetricType_GAUGE,
		"flowrun_stage_duration_seconds": dto.MetricType_HISTOGRAM,
		"flowrun_build_info":             dto.MetricType_GAUGE,
		"flowrun_input_records_total":    dto.MetricType_COUNTER,
		"flowrun_output_records_total":   dto.MetricType_COUNTER,
		"go_goroutines":                  dto.MetricType_GAUGE,
		"process_cpu_seconds_total":      dto.MetricType_COUNTER,
	}
	for name, typ := range want {
		f, ok := first[name]
		if !ok {
			t.Errorf("no metric %s", name)
			continue
		}
		if f.GetType() != typ {
			t.Errorf("%s is a %v, want a %v", name, f.GetType(), typ)
		}
		if !strings.HasPrefix(name, "flowrun_") || name == "flowrun_build_info" {
			continue
		}
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["pipeline"] != "live" {
				t.Errorf("%s has pipeline=%q, want live", name, labels["pipeline"])
			}
			if _, ok := labels["stage"]; !ok && !strings.HasPrefix(name, "flowrun_input") && !strings.HasPrefix(name, "flowrun_output") {
				t.Errorf("%s has no stage label: %v", name, labels)
			}
		}
	}
	if got := value(t, first, "flowrun_workers", "nap"); got != 2 {
		t.Errorf("flowrun_workers{stage=nap} = %v, want 2", got)
	}
	if got := value(t, first, "flowrun_stage_duration_seconds", "nap"); got < 20 {
		t.Errorf("flowrun_stage_duration_seconds{stage=nap} counts %v records, want at least 20", got)
	}

	lr.feed(t, 20, 60)
	var second map[string]*dto.MetricFamily
	waitFor(t, "the stages to move", func() bool {
		second = scrape(t, lr.addr)
		return value(t, second, "flowrun_records_out_total", "nap") >= 60
	})
	assertGrew(t, first, second)

	if code := lr.end(t); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, lr.stderr)
	}
}

// assertGrew checks that no counter (and no histogram bucket) of a is
// larger than in b.
func assertGrew(t *testing.T, a, b map[string]*dto.MetricFamily) {
	t.Helper()
	key := func(m *dto.Metric) string {
		var s []string
		for _, l := range m.Label {
			s = append(s, l.GetName()+"="+l.GetValue())
		}
		return strings.Join(s, ",")
	}
	for name, fa := range a {
		fb := b[name]
		if fb == nil || !strings.HasPrefix(name, "flowrun_") {
			continue
		}
		later := map[string]*dto.Metric{}
		for _, m := range fb.Metric {
			later[key(m)] = m
		}
		for _, m := range fa.Metric {
			mb := later[key(m)]
			switch {
			case mb == nil:
				t.Errorf("%s{%s} went away", name, key(m))
			case m.Counter != nil && mb.Counter.GetValue() < m.Counter.GetValue():
				t.Errorf("counter %s{%s} went down: %v -> %v", name, key(m), m.Counter.GetValue(), mb.Counter.GetValue())
			case m.Histogram != nil:
				for i, bk := range m.Histogram.Bucket {
					if mb.Histogram.Bucket[i].GetCumulativeCount() < bk.GetCumulativeCount() {
						t.Errorf("%s{%s} bucket le=%v went down", name, key(m), bk.GetUpperBound())
					}
				}
			}
		}
	}
}

// TestAdviceOnSIGUSR1: the advice so far, on demand, while the run goes
// on.
func TestAdviceOnSIGUSR1(t *testing.T) {
	defer goleak.VerifyNone(t)
	lr := startLive(t, slowPipeline)
	lr.feed(t, 0, 10)
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the advice on stderr", func() bool { return strings.Contains(lr.stderr.String(), "flowrun: bottleneck: ") })
	lr.feed(t, 10, 20)
	if code := lr.end(t); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, lr.stderr)
	}
	if got := strings.Count(lr.stdout.String(), "\n"); got != 20 {
		t.Errorf("%d records out after the signal, want 20", got)
	}
}

// TestMetricsFlagMistakes: a bad address or a linger without --metrics
// is a usage mistake (exit 2), said before anything runs.
func TestMetricsFlagMistakes(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(p, []byte("stages: [{use: upper}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--metrics", "127.0.0.1:notaport"}, "flowrun: --metrics 127.0.0.1:notaport: listen tcp"},
		{[]string{"--metrics-linger", "5s"}, "--metrics-linger needs --metrics ADDR"},
	} {
		var out, errb bytes.Buffer
		argv := append([]string{"flowrun", "run", p, "--progress", "none"}, tt.args...)
		code := cli.Run(context.Background(), argv, strings.NewReader("a\n"), &out, &errb)
		if code != 2 || !strings.Contains(errb.String(), tt.want) || out.Len() != 0 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and %q", tt.args, code, out.String(), errb.String(), tt.want)
		}
	}
}
