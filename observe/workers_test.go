package observe_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/cli"
)

// The tests here run a pipeline on the run's embedded broker with no
// local workers, and a `flowrun worker` (in-process, named, since it
// shares the test's pid) that works every stage.

var brokerLine = regexp.MustCompile(`embedded broker at (nats://[0-9.:]+)`)

// liveWorker is flowrun worker in-process with --metrics on a free port.
type liveWorker struct {
	addr   string
	stderr *syncBuffer
	code   chan int
	stop   context.CancelFunc
}

func startLiveWorker(t *testing.T, pipeline, url, name string) *liveWorker {
	t.Helper()
	p := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(p, []byte(pipeline), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &liveWorker{stderr: &syncBuffer{}, code: make(chan int, 1), stop: cancel}
	go func() {
		w.code <- cli.Run(ctx, []string{"flowrun", "worker", p, "--broker", url, "--name", name, "--metrics", "127.0.0.1:0"}, strings.NewReader(""), &syncBuffer{}, w.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		<-w.code
	})
	waitFor(t, "the worker's metrics address", func() bool {
		m := addrLine.FindStringSubmatch(w.stderr.String())
		if m != nil {
			w.addr = m[1]
		}
		return m != nil && strings.Contains(w.stderr.String(), "waiting for runs")
	})
	return w
}

// brokered starts a run of pipeline on an embedded broker with no local
// workers, and a worker named name for it.
func brokered(t *testing.T, pipeline, name string, args ...string) (*liveRun, *liveWorker) {
	t.Helper()
	lr := startLive(t, pipeline, append([]string{"--broker", "embedded", "--no-local-workers"}, args...)...)
	var url string
	waitFor(t, "the embedded broker's URL on stderr", func() bool {
		m := brokerLine.FindStringSubmatch(lr.stderr.String())
		if m != nil {
			url = m[1]
		}
		return m != nil
	})
	return lr, startLiveWorker(t, pipeline, url, name)
}

// TestWorkerMetrics scrapes a worker's /metrics while it works a run:
// its stages' metrics, each with the worker label (its name) besides
// pipeline and stage, in an exposition Prometheus's parser reads; its
// slots as flowrun_workers; no input or output metrics (a worker has
// none).
func TestWorkerMetrics(t *testing.T) {
	defer goleak.VerifyNone(t)
	lr, w := brokered(t, slowPipeline, "laptop-7")
	lr.feed(t, 0, 40)
	var fams map[string]*dto.MetricFamily
	waitFor(t, "the worker's metrics to count 40 records through nap", func() bool {
		fams = scrape(t, w.addr)
		return value(t, fams, "flowrun_records_in_total", "nap") == 40
	})
	for _, name := range []string{"flowrun_records_in_total", "flowrun_records_out_total", "flowrun_workers", "flowrun_workers_busy", "flowrun_stage_duration_seconds", "flowrun_running"} {
		f := fams[name]
		if f == nil || len(f.Metric) == 0 {
			t.Errorf("no %s", name)
			continue
		}
		for _, m := range f.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["worker"] != "laptop-7" || labels["pipeline"] != "live" {
				t.Errorf("%s %v: want worker laptop-7, pipeline live", name, labels)
			}
		}
	}
	if got := value(t, fams, "flowrun_records_in_total", "shout"); got != 40 {
		t.Errorf("shout: %v records in, want 40", got)
	}
	if got := value(t, fams, "flowrun_workers", "nap"); got != 2 {
		t.Errorf("flowrun_workers{stage=nap} %v, want the worker's 2 slots", got)
	}
	if got := value(t, fams, "flowrun_stage_duration_seconds", "nap"); got != 40 {
		t.Errorf("nap's histogram counts %v records, want 40", got)
	}
	for _, name := range []string{"flowrun_input_records_total", "flowrun_output_records_total", "flowrun_queue_length"} {
		if fams[name] != nil {
			t.Errorf("a worker serves %s", name)
		}
	}
	// The run's own metrics count its workers by state.
	run := scrape(t, lr.addr)
	byState := map[string]float64{}
	for _, m := range run["flowrun_broker_workers"].GetMetric() {
		for _, l := range m.Label {
			if l.GetName() == "state" {
				byState[l.GetValue()] = m.Gauge.GetValue()
			}
		}
	}
	if byState["working"] != 1 || byState["gone"] != 0 || byState["left"] != 0 {
		t.Errorf("the run's flowrun_broker_workers by state: %v, want 1 working", byState)
	}
	if code := lr.end(t); code != 0 {
		t.Fatalf("run: exit %d:\n%s", code, lr.stderr)
	}
	if !strings.Contains(lr.stderr.String(), "worker laptop-7 joined run") {
		t.Errorf("the run did not say the worker joined:\n%s", lr.stderr)
	}
	w.stop()
	if code := <-w.code; code != 0 {
		t.Errorf("worker: exit %d:\n%s", code, w.stderr)
	}
	w.code <- 0 // for the cleanup
}

// workersPage is run in the page: its rows of workers, as drawn.
const workersPage = `(() => [...document.querySelectorAll('#wrows tr')].map(tr => ({
  name: tr.dataset.worker,
  state: tr.querySelector('.wstate').textContent,
  busy: tr.querySelector('.wbusy').textContent,
  stages: tr.querySelector('.wstages').textContent,
  records: tr.querySelector('.wrecords').textContent,
  shown: !document.getElementById('workers').hidden,
})))()`

type workerRow struct {
	Name, State, Busy, Stages, Records string
	Shown                              bool
}

// TestLivePageWorkers opens the live page of a run on a broker in
// headless Chromium: it lists the worker that joined, with its state,
// busy slots, stages and records, and shows it left once it stops.
func TestLivePageWorkers(t *testing.T) {
	bin := chromium(t)
	defer goleak.VerifyNone(t)
	lr, w := brokered(t, slowPipeline, "laptop-7", "--metrics-linger", "1m")
	lr.feed(t, 0, 60)

	ctx, closePage := openPage(t, bin, "http://"+lr.addr+"/", 640)
	defer closePage()
	read := func() []workerRow {
		t.Helper()
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](workersPage))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		var rows []workerRow
		if err := json.Unmarshal(raw, &rows); err != nil {
			t.Fatal(err)
		}
		return rows
	}
	var rows []workerRow
	waitFor(t, "the page to list the worker with the 60 records", func() bool {
		rows = read()
		return len(rows) == 1 && rows[0].Records == "120" // 60 through shout, 60 through nap
	})
	if r := rows[0]; r.Name != "laptop-7" || r.State != "working" || r.Stages != "shout ×1, nap ×2" || !regexp.MustCompile(`^[0-3] / 3$`).MatchString(r.Busy) || !r.Shown {
		t.Errorf("the page's worker: %+v", r)
	}
	path := *screenshot
	if path == "" {
		path = filepath.Join(t.TempDir(), "page.png")
	} else {
		path = strings.TrimSuffix(path, ".png") + "-workers.png"
	}
	if png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot()); err != nil {
		t.Fatalf("screenshot: %v", err)
	} else if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot in %s", path)

	// The worker stops: the page says it left.
	w.stop()
	if code := <-w.code; code != 0 {
		t.Errorf("worker: exit %d:\n%s", code, w.stderr)
	}
	w.code <- 0 // for the cleanup
	waitFor(t, "the page to show the worker left", func() bool {
		rows = read()
		return len(rows) == 1 && rows[0].State == "left"
	})
	closePage()
	lr.stdin.Close()
	waitFor(t, "the run to end", func() bool { return strings.Contains(lr.stderr.String(), "--metrics-linger") })
	lr.cancel() // ends the linger
	if code := lr.wait(t); code != 0 {
		t.Fatalf("run: exit %d; stderr:\n%s", code, lr.stderr)
	}
}

// TestWorkerPage opens the page of a worker's --metrics while it works a
// run: its stages, and nothing that is the run's. It showed an input
// "stdin (lines)" and an output "stdout" with 0 records, "Workers none
// joined yet", and advice about the input ("the first queue empty 100% of
// the run"), all made up, since a worker has none of them.
func TestWorkerPage(t *testing.T) {
	bin := chromium(t)
	t.Cleanup(func() { goleak.VerifyNone(t) }) // after the worker's and the run's cleanups
	lr, w := brokered(t, slowPipeline, "laptop-9")
	lr.feed(t, 0, 60)

	ctx, closePage := openPage(t, bin, "http://"+w.addr+"/", 640)
	defer closePage()
	type page struct {
		Stages                 []string
		Input, Output, Workers bool
		State, Advice          string
	}
	var got page
	waitFor(t, "the worker's page to show its stages with the 60 records", func() bool {
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[json.RawMessage](`(() => ({
  stages: [...document.querySelectorAll('[data-stage]')].map(b => b.dataset.stage + " " + b.querySelector('[data-k="io"]').textContent),
  input: !!document.getElementById('input'),
  output: !!document.getElementById('output'),
  workers: !document.getElementById('workers').hidden,
  state: document.getElementById('state').textContent,
  advice: document.getElementById('advice').textContent,
}))()`))
		if err != nil {
			t.Fatalf("read the page: %v", err)
		}
		got = page{}
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		return strings.Join(got.Stages, ", ") == "shout 60 / 60, nap 60 / 60"
	})
	if got.Input || got.Output || got.Workers || got.Advice != "" || !regexp.MustCompile(`^worker laptop-9 \(id [0-9a-f]{8}\)$`).MatchString(got.State) {
		t.Errorf("the worker's page shows the run's parts: %+v", got)
	}
	closePage()
	if code := lr.end(t); code != 0 {
		t.Fatalf("run: exit %d; stderr:\n%s", code, lr.stderr)
	}
}
