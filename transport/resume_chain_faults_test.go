package transport_test

// Resumes chained: the run process killed (kill -9), resumed, the resumed
// run killed too, resumed again, while workers that outlive every run go
// on. Each resumed run finds on the broker what every dead run before it
// left: pieces queued, pieces answered, and results no run took.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chainStages: a stage that waits (its pieces of several records once
// it knows how long one takes), then cheap stages that gather the
// batches at hand into pieces, in the order their results came (a piece
// of them may begin with a later record than it ends with), a filter
// (keep drops the records whose number ends in 7) and a stage whose
// failures are dead-lettered (valid: those ending in 5, which quote left
// as they were).
const chainStages = `ordered: %v
dead_letter: %s
stages:
  - name: slow
    use: sleep
    workers: 4
    with: {duration: 3ms}
  - name: keep
    use: grep
    with: {pattern: '7 of', invert: true}
  - name: quote
    use: replace
    with: {pattern: '^(record \d*[0-46-9] of .*)$', replacement: '"$1"'}
  - name: valid
    use: json.validate
    on_error: dead-letter
  - name: up
    use: upper
    workers: 2
`

// TestScaleOutResumeChained kills the run (kill -9) at some lines of its
// output, resumes it with --resume, kills the resumed run too at more
// lines, and so on, then lets the last resumed run end, with two worker
// processes and a broker process that outlive them all; ordered and not
// (a journaled run writes in input order all the same). The last run
// must end (it waited for ever, 1 in 5, for the results of pieces a dead
// run had left that were never to come), its output byte for byte the
// in-memory run's, each dead letter once, and its counts exact.
func TestScaleOutResumeChained(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	const n = 2000
	for _, c := range []struct {
		ordered bool
		kills   []int // after so many lines of the output (of 1620)
	}{
		{true, []int{200, 1000, 1400}},
		{true, []int{150, 400, 700, 1000, 1300}},
		{false, []int{30, 600}},
		{false, []int{500, 800, 1100, 1300}},
	} {
		ordered, kills := c.ordered, c.kills
		t.Run(fmt.Sprintf("ordered=%v/%v", ordered, kills), func(t *testing.T) {
			dir := t.TempDir()
			dl := filepath.Join(dir, "dead.jsonl")
			s := newScaleRun(t, "chain", n, fmt.Sprintf(chainStages, ordered, dl))
			want, wantDead := chainInMemory(t, s)
			w1, w2 := s.startWorker(t, b.url), s.startWorker(t, b.url)
			journal := filepath.Join(s.dir, "journal")
			extra := []string{"--journal", journal}
			for i, at := range kills {
				run := s.startRun(t, b.url, extra...)
				if !waitForLines(s.output, at, run) {
					got, _ := os.ReadFile(s.output)
					t.Fatalf("run %d ended, or did not end within %v, before its output had %d lines (it has %d): exit %d; stderr:\n%s\nthe broker:\n%s",
						i+1, runLimit, at, bytes.Count(got, []byte("\n")), run.code, run.stderr, brokerState(t, b.url))
				}
				run.kill()
				logRescues(t, i+1, run)
				extra = []string{"--journal", journal, "--resume"}
			}
			run := s.startRun(t, b.url, extra...)
			defer logRescues(t, len(kills)+1, run)
			select {
			case <-run.done:
			case <-time.After(runLimit):
				state := brokerState(t, b.url)
				run.signal(syscall.SIGQUIT) // its goroutines, on its stderr
				<-run.done
				t.Fatalf("the last resumed run still running after %v; the broker:\n%s\nstderr:\n%s", runLimit, state, tail(run.stderr.String(), 40000))
			}
			if code := run.code; code != 3 { // records dead-lettered
				t.Fatalf("the last resumed run: exit %d, want 3; stderr:\n%s\nworker:\n%s", code, run.stderr, w1.stderr)
			}
			got, _ := os.ReadFile(s.output)
			if !bytes.Equal(got, want) {
				t.Errorf("output after the resumes differs from the in-memory run's: %s", lineDiff(want, got))
			}
			gotDead := deadSeqs(t, dl)
			if !slices.Equal(gotDead, wantDead) {
				t.Errorf("dead letters of records %v; want those of %v, each once", gotDead, wantDead)
			}
			checkChainStats(t, s, want, wantDead)
			waitNoStream(t, b.url, "chain")
			for _, w := range []*proc{w1, w2} {
				if w.exited() {
					t.Errorf("a worker exited (%d); stderr:\n%s", w.code, w.stderr)
				}
				w.stop(t)
			}
		})
	}
}

// chainInMemory is the output and dead letters of the in-memory run of
// s, in input order.
func chainInMemory(t *testing.T, s *scaleRun) ([]byte, []uint64) {
	t.Helper()
	out, dl := filepath.Join(s.dir, "expected.txt"), filepath.Join(s.dir, "expected-dead.jsonl")
	p, _ := startProc(t, "flowrun run (in memory)", false, "run", s.pipeline, "-i", s.input, "-o", out, "--dead-letter", dl,
		"--set", "stages.slow.with.duration=0s", "--set", "ordered=true", "--progress", "none", "-q")
	if code := p.wait(t, runLimit); code != 3 {
		t.Fatalf("in-memory run: exit %d, want 3 (records dead-lettered); stderr:\n%s", code, p.stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b, deadSeqs(t, dl)
}

// checkChainStats checks the last run's --stats: the records after the
// journal's mark went once into each stage and the output, and the
// records before it were counted as resumed, their dead letters too.
func checkChainStats(t *testing.T, s *scaleRun, want []byte, dead []uint64) {
	t.Helper()
	var st stats
	raw, _ := os.ReadFile(s.stats)
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("stats: %v\n%s", err, raw)
	}
	done := uint64(st.Input.Resumed.Records)
	left := int64(s.n) - int64(done)
	if left == 0 && len(st.Stages) == 0 {
		return // the run killed last had finished: its journal said so
	}
	// After the mark: kept by keep (not ending in 7), dead (ending in 5),
	// and out.
	var kept, deadAfter, deadBefore, out int64
	for seq := done + 1; seq <= uint64(s.n); seq++ {
		if seq%10 != 7 {
			kept++
		}
	}
	for _, seq := range dead {
		if seq > done {
			deadAfter++
		} else {
			deadBefore++
		}
	}
	for _, l := range strings.SplitAfter(string(want), "\n") {
		var seq uint64
		if _, err := fmt.Sscanf(l, `"RECORD %d`, &seq); err == nil && seq > done {
			out++
		}
	}
	if out != kept-deadAfter {
		t.Fatalf("the in-memory output has %d records after %d, want %d: the test's arithmetic is off", out, done, kept-deadAfter)
	}
	if st.Input.Records != left {
		t.Errorf("stats: %d records read after the %d resumed; want %d", st.Input.Records, done, left)
	}
	if st.Input.Resumed.DeadLettered != deadBefore {
		t.Errorf("stats: %d dead letters resumed; want %d", st.Input.Resumed.DeadLettered, deadBefore)
	}
	type io struct{ in, out, dead int64 }
	wantIO := []io{{left, left, 0}, {left, kept, 0}, {kept, kept, 0}, {kept, out, deadAfter}, {out, out, 0}}
	if len(st.Stages) != len(wantIO) {
		t.Fatalf("stats: %d stages; want %d", len(st.Stages), len(wantIO))
	}
	for i, sg := range st.Stages {
		w := wantIO[i]
		if sg.In != w.in || sg.Out != w.out || sg.DeadLettered != w.dead || sg.Errors != w.dead {
			t.Errorf("stage %s: in %d, out %d, errors %d, dead-lettered %d; want in %d, out %d, errors and dead-lettered %d", sg.Name, sg.In, sg.Out, sg.Errors, sg.DeadLettered, w.in, w.out, w.dead)
		}
	}
	if st.Output.Records != out {
		t.Errorf("stats: %d records out after the resume; want %d", st.Output.Records, out)
	}
}

// deadSeqs are the record numbers of the dead-letter file's entries,
// sorted (a run on a broker writes them as results come).
func deadSeqs(t *testing.T, path string) []uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var seqs []uint64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e struct {
			Seq uint64 `json:"seq"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("dead letter %q: %v", sc.Text(), err)
		}
		seqs = append(seqs, e.Seq)
	}
	slices.Sort(seqs)
	return seqs
}

// logRescues says in the test's log what run i (from 1) sent again of
// what dead runs left, for a look at how often it comes to that.
func logRescues(t *testing.T, i int, run *proc) {
	for _, l := range strings.Split(run.stderr.String(), "\n") {
		if strings.Contains(l, "can no longer be answered") {
			t.Logf("run %d: %s", i, l)
		}
	}
}

// tail is the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
