package cli_test

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
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
	run := startProcess(t, "run", "--progress", "plain", "--progress-every", "500ms", "--broker", url, "--no-local-workers",
		"--ack-wait", "1s", "-i", in, "-o", out, "--stats", stats, p)
	// Once the run lists it working, the first worker dies.
	run.waitFor(t, "doomed busy")
	w1.kill()
	if err := run.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("run: %v\n%s\nsteady:\n%s", err, run.stderr, w2.stderr)
	}
	if !strings.Contains(run.stderr.String(), "flowrun: worker doomed is gone: no word from it for 5s") {
		t.Errorf("the run did not say the killed worker is gone:\n%s", run.stderr)
	}
	if !strings.Contains(run.stderr.String(), "doomed gone") {
		t.Errorf("no status line shows the killed worker gone:\n%s", run.stderr)
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

// TestBrokerWorkersOfOneName: two `flowrun worker --name twin` processes
// are two workers to the run, each with its own id: the status line,
// the log, --stats, the metrics and the live page tell them apart by the
// short id after the name they share, and when one is killed with
// SIGKILL the run says that one gone while the other goes on working
// (one table entry by name kept the dead one alive on the other's
// reports, and showed one worker with both's records).
func TestBrokerWorkersOfOneName(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	url := embeddedBroker(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", `name: twins
stages:
  - {name: slow, use: sleep, with: {duration: 30ms}, workers: 2}
  - use: upper
`)
	const n = 600
	in := writeFile(t, dir, "in.txt", rLines(n))
	out, stats := filepath.Join(dir, "out.txt"), filepath.Join(dir, "stats.json")
	idOf := regexp.MustCompile(`flowrun worker: twin \(id ([0-9a-f]{8})\), waiting for runs`)
	var ws [2]*process
	var ids [2]string
	for i := range ws {
		ws[i] = startWorker(t, p, "--broker", url, "--name", "twin")
		m := idOf.FindStringSubmatch(ws[i].stderr.String())
		if m == nil {
			t.Fatalf("worker %d does not say its id:\n%s", i, ws[i].stderr)
		}
		ids[i] = m[1]
	}
	if ids[0][:4] == ids[1][:4] {
		t.Skipf("the two ids share their first 4 digits (%s, %s): labels are longer then", ids[0], ids[1])
	}
	doomed, steady := "twin#"+ids[0][:4], "twin#"+ids[1][:4]
	run := startProcess(t, "run", "--progress", "plain", "--progress-every", "200ms", "--broker", url, "--no-local-workers",
		"--ack-wait", "1s", "--metrics", "127.0.0.1:0", "-i", in, "-o", out, "--stats", stats, p)
	// Both twins work, each shown as itself.
	run.waitUntil(t, "both twins busy", func(s string) bool {
		return strings.Contains(s, doomed+" busy") && strings.Contains(s, steady+" busy")
	})
	ws[0].kill()
	gone := "flowrun: worker " + doomed + " is gone: no word from it for 5s"
	run.waitUntil(t, "the killed twin gone", func(s string) bool { return strings.Contains(s, gone) })
	page := regexp.MustCompile(`metrics at (http://[0-9.:]+/)metrics`).FindStringSubmatch(run.stderr.String())
	if page == nil {
		t.Fatalf("the run does not say where its metrics are:\n%s", run.stderr)
	}
	// While the run goes on: its metrics count one working and one gone,
	// and its page lists each twin by its label, with its id.
	metrics := httpGet(t, page[1]+"metrics")
	for _, want := range []string{`flowrun_broker_workers{pipeline="twins",state="gone"} 1`, `flowrun_broker_workers{pipeline="twins",state="working"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("the run's metrics lack %s:\n%s", want, metrics)
		}
	}
	var view struct {
		Workers []struct{ Name, ID, State string }
	}
	if err := json.Unmarshal([]byte(httpGet(t, page[1]+"api/snapshot")), &view); err != nil {
		t.Fatal(err)
	}
	pageStates := map[string]string{}
	for _, w := range view.Workers {
		pageStates[w.Name+" "+w.ID] = w.State
	}
	if want := map[string]string{doomed + " " + ids[0]: "gone", steady + " " + ids[1]: "working"}; !maps.Equal(pageStates, want) {
		t.Errorf("the page's workers %v, want %v", pageStates, want)
	}
	// A status line after the kill shows the one gone and the other busy.
	run.waitUntil(t, "a status line with one twin gone and the other busy", func(s string) bool {
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, doomed+" gone") && strings.Contains(l, steady+" busy") {
				return true
			}
		}
		return false
	})
	if err := run.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("run: %v\n%s\nsteady:\n%s", err, run.stderr, ws[1].stderr)
	}
	if strings.Contains(run.stderr.String(), "worker "+steady+" is gone") {
		t.Errorf("the run said the live twin gone:\n%s", run.stderr)
	}
	if !regexp.MustCompile(`2 workers: twin#[0-9a-f]{4} slow×2`).MatchString(strings.Join(strings.Fields(run.stderr.String()), " ")) {
		t.Errorf("the summary does not list two twins:\n%s", run.stderr)
	}
	var s struct {
		Workers []struct {
			Name, ID, State string
			Records         int64
		}
	}
	b, _ := os.ReadFile(stats)
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	var records int64
	for _, w := range s.Workers {
		states[w.Name+" "+w.ID] = w.State
		records += w.Records
	}
	if want := map[string]string{doomed + " " + ids[0]: "gone", steady + " " + ids[1]: "working"}; !maps.Equal(states, want) {
		t.Errorf("the workers in --stats: %v, want %v:\n%s", states, want, b)
	}
	if records != 2*n { // each record through slow and upper
		t.Errorf("the workers' records: %d, want %d:\n%s", records, 2*n, b)
	}
	if got, _ := os.ReadFile(out); strings.Count(string(got), "\n") != n {
		t.Errorf("output: %d lines, want %d", strings.Count(string(got), "\n"), n)
	}
	ws[1].stop(t)
}

// httpGet returns the body of url.
func httpGet(t *testing.T, url string) string {
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
	return string(b)
}
