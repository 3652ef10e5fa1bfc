package cli_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// interruptPipeline is a slow stage and a cheap one, both on workers:
// the run holds records on the broker for seconds.
const interruptPipeline = `name: gone
stages:
  - {name: slow, use: sleep, with: {duration: 30ms}, workers: 2}
  - {name: upper, use: upper}
`

// abortedSummary is what --stats says of an aborted run on a broker.
type abortedSummary struct {
	Stopped bool
	Dropped int64
	Input   struct{ Records, Unread int64 }
	Output  struct{ Records int64 }
	Stages  []struct {
		Name               string
		In, Out            int64
		Unanswered, Unsent int64
	}
}

// unfinished is how many records the summary says the run left in no
// other count.
func (s abortedSummary) unfinished() int64 {
	n := s.Dropped
	for _, st := range s.Stages {
		n += st.Unanswered + st.Unsent
	}
	return n
}

// ctrlC types Ctrl-C on the terminal: the terminal sends SIGINT to
// flowrun, as a person's key does.
func (term *terminal) ctrlC(t *testing.T) {
	t.Helper()
	if _, err := term.pty.Write([]byte{3}); err != nil {
		t.Fatal(err)
	}
}

// text is the whole text flowrun wrote to the terminal, escapes cut
// and lines joined, words single-spaced: a wrapped line reads whole.
func (term *terminal) text() string {
	term.mu.Lock()
	defer term.mu.Unlock()
	return strings.Join(strings.Fields(escapes.ReplaceAllString(term.raw.String(), "")), " ")
}

// waitText waits, for at most a minute, until what flowrun wrote holds s.
func (term *terminal) waitText(t *testing.T, s string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !strings.Contains(term.text(), s); time.Sleep(10 * time.Millisecond) {
		select {
		case <-term.done:
			t.Fatalf("flowrun ended without writing %q:\n%s", s, term.text())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("flowrun did not write %q within a minute:\n%s", s, term.text())
		}
	}
}

// TestTerminalCtrlCWorkersGone: a run on a broker with --no-local-workers
// whose one worker was killed (kill -9) gets Ctrl-C on its terminal. No
// one can drain what it sent, so it stops at once rather than wait for
// ever (it waited for a second Ctrl-C, then summed up without the records
// on the broker: 600 read, 100 out, the rest in no count): it says why,
// exits 130, and says how many records it left unfinished and where.
// Output and those add up to the input, and the --resume it points to
// finishes them: the output is then every record once.
func TestTerminalCtrlCWorkersGone(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", interruptPipeline)
	const n = 600
	in := writeFile(t, dir, "in.txt", rLines(n))
	out, journal, stats := filepath.Join(dir, "out.txt"), filepath.Join(dir, "journal"), filepath.Join(dir, "stats.json")
	cmd := exec.Command(flowrunBin, "run", "--broker", "embedded", "--no-local-workers", "--progress-every", "100ms",
		"--journal", journal, "--stats", stats, "-i", in, "-o", out, p)
	term := startOnTerminal(t, cmd, 100, 30, []string{"input", "slow", "upper", "output"})
	url := term.waitRaw(t, regexp.MustCompile(`embedded broker at (nats://[0-9.:]+)`))
	w := startWorker(t, p, "--broker", url)
	host, _ := os.Hostname()
	name := host + ":" + strconv.Itoa(w.cmd.Process.Pid)
	term.waitRaw(t, regexp.MustCompile(`(?m)^ (`+regexp.QuoteMeta(name)+`)\s+busy [1-3]/3`))
	w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
	term.waitText(t, "worker "+name+" is gone")
	term.ctrlC(t)
	// It must stop by itself: no one is left to drain.
	stuck := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	code := term.wait(t, cmd)
	if !stuck.Stop() {
		t.Fatalf("the run did not stop within a minute of Ctrl-C:\n%s", term.text())
	}
	if code != 130 {
		t.Errorf("exit %d, want 130:\n%s", code, term.text())
	}
	text := term.text()
	if !strings.Contains(text, "flowrun: stopping without draining: no worker works run") || !strings.Contains(text, "the worker that joined is gone") {
		t.Errorf("the run does not say it stops without draining, and why:\n%s", text)
	}
	if strings.Contains(text, "signal again to abort") {
		t.Errorf("the run waits for a drain that no worker can do:\n%s", text)
	}
	s, b, lines := abortCounts(t, stats, out)
	left := s.unfinished()
	if !s.Stopped || lines != s.Output.Records || lines+left+s.Input.Unread != n || left == 0 {
		t.Errorf("output %d + unfinished %d + unread %d, want %d, and stopped:\n%s", lines, left, s.Input.Unread, n, b)
	}
	// What the person reads: the count, where the records are, and what
	// to do.
	said := regexp.MustCompile(`flowrun: the run was aborted with (\d+) records unfinished: (\d+) sent to the broker without results yet \(slow \d+[^)]*\).*the same command with --resume finishes them`).FindStringSubmatch(text)
	if said == nil {
		t.Fatalf("the run does not say what it left unfinished and how to finish it:\n%s", text)
	}
	if said[1] != strconv.FormatInt(left, 10) {
		t.Errorf("the run says %s records unfinished, --stats %d", said[1], left)
	}

	// The resume it points to, with a worker again, finishes the run.
	resume := exec.Command(flowrunBin, "run", "--broker", "embedded", "--no-local-workers", "--progress", "plain",
		"--journal", journal, "--resume", "-i", in, "-o", out, p)
	var resumeErr lockedBuffer
	resume.Stderr = &resumeErr
	if err := resume.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- resume.Wait() }()
	t.Cleanup(func() {
		resume.Process.Kill()
		<-done
	})
	var m []string
	for deadline := time.Now().Add(time.Minute); m == nil; time.Sleep(10 * time.Millisecond) {
		if m = regexp.MustCompile(`embedded broker at (nats://[0-9.:]+)`).FindStringSubmatch(resumeErr.String()); m == nil && time.Now().After(deadline) {
			t.Fatalf("the resumed run does not say where its broker is:\n%s", &resumeErr)
		}
	}
	w2 := startWorker(t, p, "--broker", m[1])
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the resumed run did not end:\n%s", &resumeErr)
	}
	done <- err
	if err != nil {
		t.Fatalf("resumed run: %v\n%s", err, &resumeErr)
	}
	got, _ := os.ReadFile(out)
	if want := lineSet(strings.ToUpper(rLines(n))); strings.Join(lineSet(string(got)), "\n") != strings.Join(want, "\n") || strings.Count(string(got), "\n") != n {
		t.Errorf("after --resume the output has %d lines, want each of the %d records once", strings.Count(string(got), "\n"), n)
	}
	w2.stop(t)
}

// abortCounts reads what an aborted run's --stats say, and the lines of
// its output.
func abortCounts(t *testing.T, stats, out string) (s abortedSummary, b []byte, lines int64) {
	t.Helper()
	b, _ = os.ReadFile(stats)
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	return s, b, int64(strings.Count(string(got), "\n"))
}

// drainingRun starts on a terminal a run of n records on an embedded
// broker, works it with one slow worker, and types Ctrl-C once the worker
// is busy: the run drains.
func drainingRun(t *testing.T, n int) (term *terminal, cmd *exec.Cmd, w *process, out, stats string) {
	t.Helper()
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", strings.Replace(interruptPipeline, "30ms", "300ms", 1))
	in := writeFile(t, dir, "in.txt", rLines(n))
	out, stats = filepath.Join(dir, "out.txt"), filepath.Join(dir, "stats.json")
	cmd = exec.Command(flowrunBin, "run", "--broker", "embedded", "--no-local-workers", "--progress-every", "100ms",
		"--stats", stats, "-i", in, "-o", out, p)
	term = startOnTerminal(t, cmd, 100, 30, []string{"input", "slow", "upper", "output"})
	url := term.waitRaw(t, regexp.MustCompile(`embedded broker at (nats://[0-9.:]+)`))
	w = startWorker(t, p, "--broker", url)
	host, _ := os.Hostname()
	name := host + ":" + strconv.Itoa(w.cmd.Process.Pid)
	term.waitRaw(t, regexp.MustCompile(`(?m)^ (`+regexp.QuoteMeta(name)+`)\s+busy [1-3]/3`))
	term.ctrlC(t)
	term.waitText(t, "draining records in flight (signal again to abort)")
	return term, cmd, w, out, stats
}

// TestTerminalSecondCtrlCCountsBroker: a run on a broker whose worker
// lives but is slow gets Ctrl-C twice: the first drains, the second
// aborts. The records it had sent to the broker and had no results of
// were in no count of the summary; now it says how many, and that
// without --journal they are not in the output, and output and those add
// up to the input.
func TestTerminalSecondCtrlCCountsBroker(t *testing.T) {
	const n = 300
	term, cmd, w, out, stats := drainingRun(t, n)
	term.ctrlC(t)
	if code := term.wait(t, cmd); code != 130 {
		t.Errorf("exit %d, want 130:\n%s", code, term.text())
	}
	text := term.text()
	if !strings.Contains(text, "flowrun: aborting") {
		t.Errorf("the second Ctrl-C does not abort:\n%s", text)
	}
	s, b, lines := abortCounts(t, stats, out)
	left := s.unfinished()
	if !s.Stopped || lines != s.Output.Records || lines+left+s.Input.Unread != n || left == 0 {
		t.Errorf("output %d + unfinished %d + unread %d, want %d, and stopped:\n%s", lines, left, s.Input.Unread, n, b)
	}
	said := regexp.MustCompile(`flowrun: the run was aborted with (\d+) records? unfinished: .*they are not in the output, and a run without --journal cannot be resumed`).FindStringSubmatch(text)
	if said == nil {
		t.Fatalf("the run does not say what it left unfinished:\n%s", text)
	}
	if said[1] != strconv.FormatInt(left, 10) {
		t.Errorf("the run says %s records unfinished, --stats %d", said[1], left)
	}
	w.stop(t)
}

// TestTerminalDrainWorkersGone: a run on a broker drains after Ctrl-C
// while its worker lives, and the worker is then killed: with no one
// left to drain, the run stops by itself (it waited for ever, for a
// second Ctrl-C), says why, exits 130, and counts what it left.
func TestTerminalDrainWorkersGone(t *testing.T) {
	const n = 300
	term, cmd, w, out, stats := drainingRun(t, n)
	w.cmd.Process.Signal(syscall.SIGKILL)
	<-w.done
	stuck := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	code := term.wait(t, cmd)
	if !stuck.Stop() {
		t.Fatalf("the drain did not stop within a minute of its last worker's death:\n%s", term.text())
	}
	if code != 130 {
		t.Errorf("exit %d, want 130:\n%s", code, term.text())
	}
	text := term.text()
	if !strings.Contains(text, "flowrun: aborting the drain: no worker works run") || !strings.Contains(text, "the worker that joined is gone") {
		t.Errorf("the run does not say it stops the drain, and why:\n%s", text)
	}
	s, b, lines := abortCounts(t, stats, out)
	if left := s.unfinished(); lines+left+s.Input.Unread != n || left == 0 || !strings.Contains(text, "flowrun: the run was aborted with "+strconv.FormatInt(left, 10)+" record") {
		t.Errorf("output %d + unfinished %d + unread %d, want %d, and the count said:\n%s\n%s", lines, left, s.Input.Unread, n, b, text)
	}
}
