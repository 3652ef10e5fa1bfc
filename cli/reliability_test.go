package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/stages"
)

// relChaos is the directory of the misbehaving plugins.
func relChaos(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "stages", "testdata", "chaos", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// relStats is the part of --stats that the reliability tests check.
type relStats struct {
	Input struct {
		Records, Errors, Skipped int64
		DeadLettered             int64 `json:"dead_lettered"`
	}
	Output struct{ Records int64 }
	Stages []struct {
		Name                     string
		In, Out, Errors, Retries int64
		Skipped                  int64
		DeadLettered             int64 `json:"dead_lettered"`
	}
	Stopped bool
	Error   string
}

func relReadStats(t *testing.T, path string) relStats {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	var s relStats
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatalf("stats %s: %v", data, err)
	}
	return s
}

// relResult is how a run of the built binary ended.
type relResult struct {
	stdout, stderr string
	code           int // -1 when killed by a signal
	signal         syscall.Signal
}

// relRun runs the built binary to its end, at most a minute.
func relRun(t *testing.T, stdin io.Reader, env []string, args ...string) relResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, flowrunBin, args...)
	cmd.Stdin = stdin
	cmd.Env = append(os.Environ(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("flowrun %v did not exit within a minute; stderr:\n%s", args, relTail(errb.String()))
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return relResult{out.String(), errb.String(), cmd.ProcessState.ExitCode(), relSignal(cmd)}
}

func relSignal(cmd *exec.Cmd) syscall.Signal {
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal()
	}
	return 0
}

// relTail shortens a long stderr for a failure message.
func relTail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

// relPids returns the pids that the chaos plugins recorded in dir, by the
// name of the file: kind.PID.
func relPids(t *testing.T, dir string) map[int]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	pids := map[int]string{}
	for _, e := range entries {
		kind, num, _ := strings.Cut(e.Name(), ".")
		if pid, err := strconv.Atoi(num); err == nil {
			pids[pid] = kind
		}
	}
	return pids
}

// relAlive says pid runs (a zombie is dead: it only waits to be reaped by
// whoever inherited it).
func relAlive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// relAllGone fails the test if a process recorded in dir still runs a few
// seconds after flowrun exited.
func relAllGone(t *testing.T, dir string) {
	t.Helper()
	pids := relPids(t, dir)
	for range 100 {
		alive := 0
		for pid := range pids {
			if relAlive(pid) {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for pid, kind := range pids {
		if relAlive(pid) {
			t.Errorf("%s (pid %d) outlived flowrun", kind, pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// TestRelChaosKill kills a stream plugin with SIGKILL at random moments
// while 20,000 records flow: every record must come out exactly once and
// in order, or be in the dead-letter file after its attempts.
func TestRelChaosKill(t *testing.T) {
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	if err := os.Mkdir(pids, 0o755); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(dir, "dead.jsonl")
	stats := filepath.Join(dir, "stats.json")
	p := writeFile(t, dir, "p.yaml", fmt.Sprintf(`
ordered: true
dead_letter: %s
stages:
  - name: echo
    use: exec
    workers: 2
    retry: {attempts: 5, backoff: 1ms}
    on_error: dead-letter
    with: {command: [%s], env: {CHAOS_PIDS: %s, CHAOS_SLOW: "1"}, inflight: 32}
`, dead, relChaos(t, "echo.sh"), pids))
	const n = 20000
	cmd := exec.Command(flowrunBin, "run", "-q", "--progress", "none", "--stats", stats, p)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })

	// The records go in paced, so that the run lasts long enough for
	// many kills whatever the machine's speed.
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		defer stdin.Close()
		w := bufio.NewWriter(stdin)
		for i := 1; i <= n; i++ {
			fmt.Fprintf(w, "record-%d\n", i)
			if i%100 == 0 {
				if w.Flush() != nil {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}
		w.Flush()
	}()
	var kills atomic.Int64
	stopKiller := make(chan struct{})
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-stopKiller:
				return
			case <-time.After(time.Duration(10+rng.IntN(40)) * time.Millisecond):
			}
			for pid := range relPids(t, pids) {
				// Only a live plugin of this flowrun: a pid may have
				// been reused since the plugin recorded it.
				if relAlive(pid) && relParent(pid) == cmd.Process.Pid && rng.IntN(2) == 0 {
					if syscall.Kill(pid, syscall.SIGKILL) == nil {
						kills.Add(1)
					}
				}
			}
		}
	}()
	<-fed
	code := exitOf(t, cmd)
	close(stopKiller)
	<-killerDone
	relAllGone(t, pids)

	if kills.Load() < 10 {
		t.Fatalf("only %d kills: the test proved nothing", kills.Load())
	}
	// What is not in the output must be in the dead-letter file.
	deadSeq := map[int]bool{}
	if data, err := os.ReadFile(dead); err == nil {
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if l == "" {
				continue
			}
			var d struct {
				Seq    int
				Record string
			}
			if err := json.Unmarshal([]byte(l), &d); err != nil || d.Record != fmt.Sprintf("record-%d", d.Seq) {
				t.Fatalf("dead letter %q: %v", l, err)
			}
			deadSeq[d.Seq] = true
		}
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	next := 0
	for i := 1; i <= n; i++ {
		if deadSeq[i] {
			continue
		}
		if next >= len(lines) || lines[next] != fmt.Sprintf("record-%d", i) {
			got := "the end"
			if next < len(lines) {
				got = strconv.Quote(lines[next])
			}
			t.Fatalf("output line %d is %s, want record-%d (%d kills; stderr:\n%s)", next+1, got, i, kills.Load(), relTail(errb.String()))
		}
		next++
	}
	if next != len(lines) {
		t.Fatalf("%d lines more than the records: %q…", len(lines)-next, lines[next])
	}
	s := relReadStats(t, stats)
	if s.Input.Records != n || s.Output.Records+int64(len(deadSeq)) != n || s.Stages[0].DeadLettered != int64(len(deadSeq)) {
		t.Errorf("stats: in %d out %d dead %d (file %d)", s.Input.Records, s.Output.Records, s.Stages[0].DeadLettered, len(deadSeq))
	}
	wantCode := 0
	if len(deadSeq) > 0 {
		wantCode = 3
	}
	if code != wantCode {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, wantCode, relTail(errb.String()))
	}
	t.Logf("%d records, %d kills: output identical but for %d dead letters; %d errors, %d retries", n, kills.Load(), len(deadSeq), s.Stages[0].Errors, s.Stages[0].Retries)
}

// relParent returns the parent pid of pid, or 0.
func relParent(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// TestRelMisbehavingPlugins runs plugins that hang, say nothing, say too
// much, close their stdout or flood their stderr: each run ends with a
// clear error or a correct output, and leaves no process behind.
func TestRelMisbehavingPlugins(t *testing.T) {
	tests := []struct {
		name   string
		script string
		stage  string // the rest of the stage's YAML
		env    []string
		in     string
		code   int
		stdout string   // exact, when the run succeeds
		stderr []string // substrings
	}{
		{"hang: the timeout kills the group, grandchild included", "hang.sh",
			"timeout: 300ms, retry: {attempts: 2, backoff: 1ms}", nil, "a\n", 1, "",
			[]string{`record 1 "a": after 2 attempts: `, "no answer within 300ms"}},
		{"hang per-record", "hang.sh", "timeout: 300ms, with: {mode: per-record}", nil, "a\n", 1, "",
			[]string{"gave no result within 300ms (the stage's timeout): killed its process group"}},
		{"prints nothing", "silent.sh", "timeout: 300ms", nil, "a\nb\n", 1, "",
			[]string{`record 1 "a": exec stream: no answer within 300ms`}},
		{"prints nothing, skipped", "silent.sh", "timeout: 300ms, on_error: skip", nil, "a\nb\n", 3, "", nil},
		{"prints two lines for one", "twolines.sh", "", nil, "a\nb\n", 1, "",
			[]string{"answered more lines than it was sent"}},
		{"closes stdout early", "closeout.sh", "", nil, "a\nb\nc\n", 1, "",
			[]string{`record 2 "b": exec stream: `, "closed its stdout"}},
		{"10 MB of stderr, then correct answers", "stderr10m.sh", "", nil, "a\nb\n", 0, "a\nb\n", nil},
		{"10 MB of stderr, then exit 3 at the end of input", "stderr10m.sh", "", []string{"CHAOS_FAIL=1"}, "a\nb\n", 1, "",
			[]string{"exit status 3", "stderr10m: the last words"}},
		{"10 MB of stderr per record, exit 3", "stderr10m.sh", "with: {mode: per-record}", []string{"CHAOS_FAIL=1"}, "a\n", 1, "",
			[]string{`record 1 "a": exec per-record: `, "exit status 3", "stderr10m: the last words"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pids := filepath.Join(dir, "pids")
			if err := os.Mkdir(pids, 0o755); err != nil {
				t.Fatal(err)
			}
			stage := "{name: plugin, use: exec"
			if tt.stage != "" {
				stage += ", " + tt.stage
			}
			stage += "}"
			p := writeFile(t, dir, "p.yaml", "stages: ["+stage+"]\n")
			// with: the command goes in by --set, so that each case's
			// with: block keeps its own options.
			res := relRun(t, strings.NewReader(tt.in), append([]string{"CHAOS_PIDS=" + pids}, tt.env...),
				"run", "-q", "--progress", "none", "--set", "stages.plugin.with.command="+relChaos(t, tt.script), p)
			relAllGone(t, pids)
			if res.code != tt.code {
				t.Errorf("exit %d, want %d; stdout %q; stderr:\n%s", res.code, tt.code, res.stdout, relTail(res.stderr))
			}
			if tt.code == 0 && res.stdout != tt.stdout {
				t.Errorf("stdout %q, want %q", res.stdout, tt.stdout)
			}
			for _, want := range tt.stderr {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, relTail(res.stderr))
				}
			}
			if len(res.stderr) > 64<<10 {
				t.Errorf("stderr has %d bytes: a plugin's stderr must be cut to its end", len(res.stderr))
			}
		})
	}
}

var relRegister sync.Once

// relFaultyStage panics on a record holding "panic", outlives any
// timeout on "slow", and fails a record holding "flaky" on its first two
// attempts.
func relRegisterFaulty() {
	relRegister.Do(func() {
		stages.Register(stages.Spec{
			Name: "clitest.faulty",
			Doc:  "Panics on panic, blocks on slow, fails flaky twice.",
			New: func(stages.Config) (stages.Stage, error) {
				tries := map[string]int{}
				return stages.Func(func(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
					s := string(rec)
					switch {
					case strings.Contains(s, "panic"):
						panic("reliability test panics on " + s)
					case strings.Contains(s, "slow"):
						<-ctx.Done()
						return out, ctx.Err()
					case strings.Contains(s, "flaky"):
						if tries[s]++; tries[s] < 3 {
							return out, fmt.Errorf("attempt %d fails", tries[s])
						}
					}
					return append(out, rec), nil
				}), nil
			},
		})
	})
}

// TestRelStageFaults runs a panicking stage, one slower than its timeout,
// and retries that succeed on the third attempt through the CLI, checking
// the --stats counts.
func TestRelStageFaults(t *testing.T) {
	defer goleak.VerifyNone(t)
	relRegisterFaulty()
	dir := t.TempDir()
	const stage = "name: f, use: clitest.faulty, workers: 2, timeout: 50ms, retry: {attempts: 3, backoff: 1ms}"
	tests := []struct {
		name, onError, in string
		code              int
		out               string
		errors, retries   int64
		skipped, dead     int64
		stderr            string
	}{
		{"flaky succeeds on the third attempt", "fail", "a\nflaky-1\nb\nflaky-2\n", 0, "a\nflaky-1\nb\nflaky-2\n", 4, 4, 0, 0, ""},
		{"panic is the record's error", "fail", "a\npanic-1\n", 1, "", 3, 2, 0, 0,
			`stage "f" record 2 "panic-1": after 3 attempts: panic: reliability test panics on panic-1`},
		{"slower than its timeout", "fail", "slow-1\n", 1, "", 3, 2, 0, 0,
			`stage "f" record 1 "slow-1": after 3 attempts: no result within the stage's timeout of 50ms`},
		{"panic and slow skipped", "skip", "a\npanic-1\nslow-1\nflaky-1\nb\n", 3, "a\nflaky-1\nb\n", 8, 6, 2, 0, ""},
		{"panic and slow dead-lettered", "dead-letter", "panic-1\nx\nslow-1\n", 3, "x\n", 6, 4, 0, 2, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stats := filepath.Join(dir, "stats.json")
			p := writeFile(t, dir, "p.yaml", fmt.Sprintf("ordered: true\ndead_letter: %s\nstages: [{%s, on_error: %s}]\n",
				filepath.Join(dir, "dead.jsonl"), stage, tt.onError))
			out, errs, code := runCLI(t, tt.in, "run", "-q", "--progress", "none", "--stats", stats, p)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, errs)
			}
			if tt.code != 1 && out != tt.out {
				t.Errorf("stdout %q, want %q", out, tt.out)
			}
			if !strings.Contains(errs, tt.stderr) {
				t.Errorf("stderr %q lacks %q", errs, tt.stderr)
			}
			if strings.Contains(errs, "goroutine ") || strings.Contains(errs, ".go:") {
				t.Errorf("stderr has a stack trace:\n%s", errs)
			}
			s := relReadStats(t, stats)
			st := s.Stages[0]
			if st.Errors != tt.errors || st.Retries != tt.retries || st.Skipped != tt.skipped || st.DeadLettered != tt.dead {
				t.Errorf("stats errors %d retries %d skipped %d dead %d, want %d %d %d %d",
					st.Errors, st.Retries, st.Skipped, st.DeadLettered, tt.errors, tt.retries, tt.skipped, tt.dead)
			}
			if tt.code != 1 && s.Input.Records != s.Output.Records+st.Skipped+st.DeadLettered {
				t.Errorf("in %d != out %d + skipped %d + dead %d", s.Input.Records, s.Output.Records, st.Skipped, st.DeadLettered)
			}
		})
	}
}

// TestRelSignals sends SIGINT and SIGTERM at the moments that break
// programs: at startup, while records flow, twice quickly, and during a
// drain that cannot finish. Each run exits 130 (or dies of the SIGINT that
// came before flowrun could catch it), writes only whole records, and
// leaves no plugin or grandchild behind.
func TestRelSignals(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		records int           // written before the first signal, then more while it runs
		delay   time.Duration // from start to the first signal, when records is 0
		sigs    []syscall.Signal
		gap     time.Duration // between signals; quick ones may merge into one
	}{
		{"SIGINT at once", "echo.sh", 0, 0, []syscall.Signal{syscall.SIGINT}, 0},
		{"SIGINT during startup", "echo.sh", 0, 20 * time.Millisecond, []syscall.Signal{syscall.SIGINT}, 0},
		{"SIGINT while records flow", "echo.sh", 1000, 0, []syscall.Signal{syscall.SIGINT}, 0},
		{"SIGINT twice quickly", "echo.sh", 1000, 0, []syscall.Signal{syscall.SIGINT, syscall.SIGINT}, 0},
		{"SIGINT then SIGTERM", "echo.sh", 1000, 0, []syscall.Signal{syscall.SIGINT, syscall.SIGTERM}, time.Millisecond},
		{"SIGTERM while records flow", "echo.sh", 1000, 0, []syscall.Signal{syscall.SIGTERM}, 0},
		{"second SIGINT aborts a drain that cannot end", "hang.sh", 1, 0, []syscall.Signal{syscall.SIGINT, syscall.SIGINT}, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pids := filepath.Join(dir, "pids")
			if err := os.Mkdir(pids, 0o755); err != nil {
				t.Fatal(err)
			}
			p := writeFile(t, dir, "p.yaml", fmt.Sprintf(
				"ordered: true\nstages: [{use: exec, workers: 2, with: {command: [%s], env: {CHAOS_PIDS: %s}}}]\n",
				relChaos(t, tt.script), pids))
			cmd, stdin, stdout, stderr := startFlowrun(t, "run", "-q", "--progress", "none", p)
			var out []byte
			read := make(chan struct{})
			go func() {
				defer close(read)
				out, _ = io.ReadAll(stdout)
			}()
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				w := bufio.NewWriter(stdin)
				for i := 1; i <= tt.records; i++ {
					fmt.Fprintf(w, "record-%d\n", i)
				}
				w.Flush()
			}()
			<-wrote
			if tt.records > 0 {
				// Wait until a plugin runs: the signal then finds
				// records in flight.
				for i := 0; len(relPids(t, pids)) == 0 && i < 500; i++ {
					time.Sleep(10 * time.Millisecond)
				}
			} else {
				time.Sleep(tt.delay)
			}
			for i, s := range tt.sigs {
				if i > 0 {
					time.Sleep(tt.gap)
				}
				cmd.Process.Signal(s)
			}
			// Keep stdin open: flowrun must stop on the signal, not on
			// the end of its input. Its stdout ends when it exits.
			select {
			case <-read:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-read
				relAllGone(t, pids)
				t.Fatalf("flowrun did not exit; stderr:\n%s", relTail(stderr.String()))
			}
			code := exitOf(t, cmd)
			stdin.Close()
			relAllGone(t, pids)
			if code != 130 && relSignal(cmd) != syscall.SIGINT {
				t.Errorf("exit %d, want 130; stderr:\n%s", code, relTail(stderr.String()))
			}
			got := string(out)
			n := strings.Count(got, "\n")
			var want strings.Builder
			for i := 1; i <= n; i++ {
				fmt.Fprintf(&want, "record-%d\n", i)
			}
			if got != want.String() {
				t.Errorf("output is not a prefix of whole records in order (%d lines): %q", n, relTail(got))
			}
		})
	}
}

// TestRelStdoutClosedAtStart runs flowrun with its stdout closed. The Go
// runtime opens /dev/null on a closed standard descriptor before main, so
// flowrun cannot tell this from >/dev/null: the run must still account
// for every record and neither crash nor hang.
func TestRelStdoutClosedAtStart(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: upper}]\n")
	stats := filepath.Join(dir, "stats.json")
	cmd := exec.Command("sh", "-c", `seq 1 1000 | "$0" run -q --progress none --stats "$1" "$2" >&-`, flowrunBin, stats, p)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if code := exitOf(t, cmd); code != 0 {
		t.Errorf("exit %d; stderr:\n%s", code, stderr.String())
	}
	if s := relReadStats(t, stats); s.Input.Records != 1000 || s.Output.Records != 1000 {
		t.Errorf("in %d out %d", s.Input.Records, s.Output.Records)
	}
}

// TestRelHostileConfig feeds the CLI pipelines built to hurt: an alias
// bomb, deep nesting, and ${VAR} values and records that would run
// commands if anything passed them through a shell.
func TestRelHostileConfig(t *testing.T) {
	dir := t.TempDir()
	pwned := filepath.Join(dir, "pwned")
	bomb := "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
	for c := 'b'; c <= 'k'; c++ {
		prev := string(c - 1)
		bomb += fmt.Sprintf("%c: &%c [*%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s, *%s]\n", c, c, prev, prev, prev, prev, prev, prev, prev, prev, prev, prev)
	}
	bomb += "stages: [{use: trim}]\n"
	deep := "stages: [{use: trim, with: " + strings.Repeat("[", 100) + strings.Repeat("]", 100) + "}]\n"
	hostile := "$(touch " + pwned + ")"
	tests := []struct {
		name, yaml, in string
		env            []string
		code           int
		stdout, stderr string
	}{
		{"alias bomb", bomb, "", nil, 2, "", "YAML aliases (*"},
		{"deep nesting", deep, "", nil, 2, "", "nested more than"},
		{"unknown keys", "stages: [{use: trim, wrokers: 2}]\n", "", nil, 2, "", `wrokers`},
		{"${VAR} with a command substitution", "stages: [{use: exec, with: {mode: per-record, command: [/bin/echo, '${X}', '`touch " + pwned + "`']}}]\n",
			"r\n", []string{"X=" + hostile}, 0, hostile + " `touch " + pwned + "`\n", ""},
		{"${VAR} default with a command substitution", "stages: [{use: exec, with: {mode: per-record, command: [/bin/echo, '${UNSET_REL_VAR:-$(touch " + pwned + ")}']}}]\n",
			"r\n", nil, 0, hostile + "\n", ""},
		{"records never reach a shell", "stages: [{name: a, use: exec, with: {command: [cat], mode: per-record}}, {name: b, use: exec, with: {command: [sed, -u, '']}}]\n",
			hostile + "\n`touch " + pwned + "`\n; touch " + pwned + "\n", nil, 0, hostile + "\n`touch " + pwned + "`\n; touch " + pwned + "\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, dir, "p.yaml", tt.yaml)
			res := relRun(t, strings.NewReader(tt.in), tt.env, "run", "-q", "--progress", "none", p)
			if res.code != tt.code || res.stdout != tt.stdout || !strings.Contains(res.stderr, tt.stderr) {
				t.Errorf("exit %d stdout %q stderr %q; want %d %q %q", res.code, res.stdout, relTail(res.stderr), tt.code, tt.stdout, tt.stderr)
			}
			if _, err := os.Stat(pwned); err == nil {
				t.Fatalf("%s exists: a value was run as a command", pwned)
			}
		})
	}
}

// TestRelNoStartTouchesNothing runs pipelines that cannot start: each
// exits 2 and leaves the output file as it was, or never creates it. A
// run whose output is one of its inputs is refused the same way.
func TestRelNoStartTouchesNothing(t *testing.T) {
	dir := t.TempDir()
	in := writeFile(t, dir, "in.txt", "a\nb\n")
	if err := os.Symlink(in, filepath.Join(dir, "link.txt")); err != nil {
		t.Fatal(err)
	}
	const old = "the old output\n"
	tests := []struct {
		name, yaml string
		args       []string // after the pipeline; -o OUT unless given
		out        string   // the output that must stay; "" = dir/out.txt
		stderr     string
	}{
		{"missing plugin program", "stages: [{use: exec, with: {command: [/nonexistent/plugin]}}]\n", nil, "", "/nonexistent/plugin"},
		{"missing wasm module", "stages: [{use: wasm, with: {module: /nonexistent.wasm}}]\n", nil, "", "nonexistent.wasm"},
		{"unwritable dead-letter path (under a file)", "dead_letter: " + filepath.Join(in, "dead.jsonl") + "\nstages: [{use: upper, on_error: dead-letter}]\n", nil, "", "dead letter"},
		{"dead-letter path in a missing directory", "dead_letter: " + filepath.Join(dir, "no", "dead.jsonl") + "\nstages: [{use: upper, on_error: dead-letter}]\n", nil, "", "dead letter"},
		{"-i X -o X", "stages: [{use: upper}]\n", []string{"-o", in}, in, "is also the input"},
		{"-o a symlink to the input", "stages: [{use: upper}]\n", []string{"-o", filepath.Join(dir, "link.txt")}, in, "is the input file"},
		{"a glob that includes the output", "stages: [{use: upper}]\n", []string{"-i", filepath.Join(dir, "*.txt"), "-o", in}, in, "the input"},
		{"journal in a missing directory", "stages: [{use: upper}]\n", []string{"--journal", filepath.Join(dir, "no", "j")}, "", "journal"},
		{"journal that is the input", "stages: [{use: upper}]\n", []string{"--journal", in, "-o", filepath.Join(dir, "o2.txt")}, in, "is also the input"},
		{"journal that is the output", "stages: [{use: upper}]\n", []string{"--journal", filepath.Join(dir, "out.txt")}, "", "is also the output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := tt.out
			args := tt.args
			if out == "" {
				out = writeFile(t, dir, "out.txt", old)
				args = append(args, "-o", out)
			}
			before, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			p := writeFile(t, dir, "p.yaml", tt.yaml)
			res := relRun(t, nil, nil, append([]string{"run", "-q", "--progress", "none", "-i", in, p}, args...)...)
			if res.code != 2 || !strings.Contains(res.stderr, tt.stderr) {
				t.Errorf("exit %d, want 2; stderr %q lacks %q", res.code, res.stderr, tt.stderr)
			}
			if after, _ := os.ReadFile(out); string(after) != string(before) {
				t.Errorf("%s was %q before the run and is %q after it", out, before, after)
			}
		})
	}
	t.Run("a missing output is not created", func(t *testing.T) {
		out := filepath.Join(dir, "new.txt")
		p := writeFile(t, dir, "p.yaml", "stages: [{use: exec, with: {command: [/nonexistent/plugin]}}]\n")
		if res := relRun(t, nil, nil, "run", "-q", "--progress", "none", "-i", in, "-o", out, p); res.code != 2 {
			t.Errorf("exit %d, want 2", res.code)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s was created by a run that could not start", out)
		}
	})
}

// TestRelFailureKeepsOutput fails a record under on_error: fail through
// the built binary: the output file holds exactly the records before it,
// and the run exits 1.
func TestRelFailureKeepsOutput(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name     string
		n, bad   int
		badLine  string
		pipeline string
	}{
		{"2000 jsonl, record 1500 not JSON", 2000, 1500, "{broken", "input: {format: jsonl}\nordered: true\nstages: [{use: trim, workers: 4}]\n"},
		{"2000 jsonl, record 1500 fails a plugin", 2000, 1500, `{"n":"bad"}`,
			"input: {format: jsonl}\nordered: true\nstages: [{use: exec, workers: 2, with: {command: [sh, -c, 'while read -r l; do case $l in *bad*) exit 3;; esac; echo \"$l\"; done']}}]\n"},
		{"3 good then 1 bad", 4, 4, "{broken", "input: {format: jsonl}\nordered: true\nstages: [{use: trim}]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var in, want strings.Builder
			for i := 1; i <= tt.n; i++ {
				if i == tt.bad {
					in.WriteString(tt.badLine + "\n")
					continue
				}
				fmt.Fprintf(&in, "{\"n\":%d}\n", i)
				if i < tt.bad {
					fmt.Fprintf(&want, "{\"n\":%d}\n", i)
				}
			}
			inFile := writeFile(t, dir, "in.jsonl", in.String())
			out := filepath.Join(dir, "out.jsonl")
			p := writeFile(t, dir, "p.yaml", tt.pipeline)
			res := relRun(t, nil, nil, "run", "-q", "--progress", "none", "-i", inFile, "-o", out, p)
			if res.code != 1 || !strings.Contains(res.stderr, fmt.Sprintf("record %d", tt.bad)) && !strings.Contains(res.stderr, fmt.Sprintf("line %d", tt.bad)) {
				t.Errorf("exit %d, want 1 naming record %d; stderr:\n%s", res.code, tt.bad, relTail(res.stderr))
			}
			got, _ := os.ReadFile(out)
			if string(got) != want.String() {
				t.Errorf("output has %d lines, want the %d before the failing record", strings.Count(string(got), "\n"), tt.bad-1)
			}
		})
	}
}

var (
	stuckOnce sync.Once
	stuckBin  string
)

// relStuckBin builds flowrun with the test.stuck stage
// (testdata/stuckflowrun), once.
func relStuckBin(t *testing.T) string {
	t.Helper()
	stuckOnce.Do(func() {
		bin := filepath.Join(filepath.Dir(flowrunBin), "stuckflowrun")
		build := exec.Command("go", "build", "-o", bin, "./testdata/stuckflowrun")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build stuckflowrun: %v\n%s", err, out)
		}
		stuckBin = bin
	})
	if stuckBin == "" {
		t.Fatal("stuckflowrun did not build")
	}
	return stuckBin
}

// relWaitExit waits for cmd to exit, at most 20 seconds (the run must
// end in about two; the bound only keeps a hang from hanging the suite).
func relWaitExit(t *testing.T, cmd *exec.Cmd, stderr *bytes.Buffer) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("flowrun did not exit; stderr:\n%s", relTail(stderr.String()))
	}
}

// TestRelAbortEndsAStuckRun sends two signals to a run whose middle
// stage is stuck in a read(2) that ignores cancellation: the process ends
// with exit 130 anyway, and the plugin before it and the plugin's child
// are killed.
// A timeout that the stuck stage cannot honour ends the run too, exit 1.
func TestRelAbortEndsAStuckRun(t *testing.T) {
	bin := relStuckBin(t)
	tests := []struct {
		name   string
		stuck  string // the stuck stage's options
		sigs   int
		code   int
		stderr string
	}{
		{"second signal", "", 2, 130, `stage "stuck" did not stop`},
		{"a timeout it cannot honour", ", timeout: 200ms", 0, 1, `stage "stuck" record 1: no result within the stage's timeout of 200ms, and the stage ignored being cancelled`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pids := filepath.Join(dir, "pids")
			if err := os.Mkdir(pids, 0o755); err != nil {
				t.Fatal(err)
			}
			p := writeFile(t, dir, "p.yaml", fmt.Sprintf(`stages:
  - name: plugin
    use: exec
    with:
      command: [sh, -c, 'sleep 1000 & : > %[1]s/sleep.$!; : > %[1]s/sh.$$; exec sed -u ""']
  - {name: stuck, use: test.stuck%[2]s}
`, pids, tt.stuck))
			cmd := exec.Command(bin, "run", "-q", "--progress", "none", p)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = io.Discard, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer stdin.Close()
			fmt.Fprintln(stdin, "a") // the stuck stage never passes it on
			// Wait until the plugin and its grandchild run.
			for i := 0; len(relPids(t, pids)) < 2 && i < 500; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			if tt.sigs > 0 {
				cmd.Process.Signal(syscall.SIGINT)
				time.Sleep(300 * time.Millisecond) // the drain starts, and cannot end
				cmd.Process.Signal(syscall.SIGINT)
			}
			relWaitExit(t, cmd, &stderr)
			relAllGone(t, pids)
			if code := cmd.ProcessState.ExitCode(); code != tt.code || !strings.Contains(stderr.String(), tt.stderr) {
				t.Errorf("exit %d, want %d; stderr lacks %q:\n%s", code, tt.code, tt.stderr, relTail(stderr.String()))
			}
		})
	}
}

// TestRelSIGHUP closes the terminal on a run, as a dropped ssh session
// does: SIGHUP is a SIGTERM. The run drains and exits 130 with whole
// records; a second one aborts and kills per-record plugins.
func TestRelSIGHUP(t *testing.T) {
	tests := []struct {
		name  string
		stage string
		sigs  int
	}{
		{"drains a stream plugin", "{use: exec, workers: 2, with: {command: [sh, -c, ': > %[1]s/sh.$$; exec sed -u \"\"']}}", 1},
		{"a second one kills hanging per-record plugins", "{use: exec, workers: 2, with: {mode: per-record, command: [sh, -c, ': > %[1]s/sh.$$; sleep 1000 & : > %[1]s/sleep.$!; wait']}}", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pids := filepath.Join(dir, "pids")
			if err := os.Mkdir(pids, 0o755); err != nil {
				t.Fatal(err)
			}
			p := writeFile(t, dir, "p.yaml", "ordered: true\nstages: ["+fmt.Sprintf(tt.stage, pids)+"]\n")
			cmd, stdin, stdout, stderr := startFlowrun(t, "run", "-q", "--progress", "none", p)
			var out []byte
			read := make(chan struct{})
			go func() {
				defer close(read)
				out, _ = io.ReadAll(stdout)
			}()
			for i := 1; i <= 100; i++ {
				fmt.Fprintf(stdin, "record-%d\n", i)
			}
			for i := 0; len(relPids(t, pids)) == 0 && i < 500; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			for i := range tt.sigs {
				if i > 0 {
					time.Sleep(300 * time.Millisecond)
				}
				cmd.Process.Signal(syscall.SIGHUP)
			}
			relWaitExit(t, cmd, stderr)
			<-read
			stdin.Close()
			relAllGone(t, pids)
			if code := cmd.ProcessState.ExitCode(); code != 130 {
				t.Errorf("exit %d (signal %v), want 130; stderr:\n%s", code, relSignal(cmd), relTail(stderr.String()))
			}
			n := strings.Count(string(out), "\n")
			var want strings.Builder
			for i := 1; i <= n; i++ {
				fmt.Fprintf(&want, "record-%d\n", i)
			}
			if string(out) != want.String() {
				t.Errorf("output is not a prefix of whole records: %q", relTail(string(out)))
			}
		})
	}
}

// TestRelOrphansDie runs plugins whose children leave the plugin's process
// group (setsid) or are orphaned by a double fork: flowrun inherits them
// as a subreaper and none outlives the run.
func TestRelOrphansDie(t *testing.T) {
	const escape = `setsid sleep 1000 </dev/null >/dev/null 2>&1 & : > %[1]s/setsid.$!; (sleep 1000 </dev/null >/dev/null 2>&1 & : > %[1]s/orphan.$!);`
	tests := []struct{ name, stage string }{
		{"stream", "{use: exec, with: {command: [sh, -c, '" + escape + ` exec sed -u ""']}}`},
		{"per-record", "{use: exec, with: {mode: per-record, command: [sh, -c, '" + escape + ` cat']}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			pids := filepath.Join(dir, "pids")
			if err := os.Mkdir(pids, 0o755); err != nil {
				t.Fatal(err)
			}
			p := writeFile(t, dir, "p.yaml", "ordered: true\nstages: ["+fmt.Sprintf(tt.stage, pids)+"]\n")
			res := relRun(t, strings.NewReader("a\nb\n"), nil, "run", "-q", "--progress", "none", p)
			if res.code != 0 || res.stdout != "a\nb\n" {
				t.Errorf("exit %d stdout %q; stderr:\n%s", res.code, res.stdout, relTail(res.stderr))
			}
			if len(relPids(t, pids)) < 2 {
				t.Fatalf("the plugin recorded %d pids", len(relPids(t, pids)))
			}
			relAllGone(t, pids)
		})
	}
}

// relMaxRSS runs the built binary on pipeline p with stdin from feed and
// returns its peak resident memory in bytes (getrusage of the child).
func relMaxRSS(t *testing.T, p string, feed func(io.Writer)) int64 {
	t.Helper()
	cmd := exec.Command(flowrunBin, "run", "-q", "--progress", "none", p)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	feed(stdin)
	stdin.Close()
	if err := cmd.Wait(); err != nil && cmd.ProcessState.ExitCode() != 3 {
		t.Fatal(err)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Skip("no rusage")
	}
	return ru.Maxrss << 10 // KiB on Linux
}

// TestLongLineMemory feeds a line four times max_record_size: the run's
// peak memory stays within 1.5 × the limit above that of a run without it.
func TestLongLineMemory(t *testing.T) {
	const limit = 32 << 20
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", fmt.Sprintf("input: {max_record_size: %d, on_error: skip}\nstages: [{use: trim}]\n", limit))
	short := func(w io.Writer) { io.WriteString(w, "short\nafter\n") }
	long := func(w io.Writer) {
		io.WriteString(w, "short\n")
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		for range 4 * limit >> 20 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		io.WriteString(w, "\nafter\n")
	}
	base, peak := relMaxRSS(t, p, short), relMaxRSS(t, p, long)
	t.Logf("peak %d MiB, %d MiB without the long line; limit %d MiB", peak>>20, base>>20, limit>>20)
	if peak-base > limit*3/2 {
		t.Errorf("a line past max_record_size (%d MiB) took %d MiB more than a run without it", limit>>20, (peak-base)>>20)
	}
}

// TestRelSignalWhileStarting sends SIGTERM while flowrun is still reading
// its pipeline (from stdin, held open): the signal is flowrun's from the
// start, so the run, once it can start, stops at once and exits 130; it
// is not killed by the signal's default action (exit 143, which a resume
// loop takes for a kill and retries).
func TestRelSignalWhileStarting(t *testing.T) {
	dir := t.TempDir()
	// A run that takes a minute unless it is stopped: the signal, taken
	// in while it starts, has to stop it.
	in := writeFile(t, dir, "in.txt", strings.Repeat("a\n", 600))
	cmd := exec.Command(flowrunBin, "run", "-q", "--progress", "none", "-i", in, "-o", filepath.Join(dir, "out.txt"), "-")
	pipeline, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait until a thread of it blocks reading fd 0 (read is syscall 0 on
	// amd64 and 63 on arm64): it is in main, reading the pipeline.
	reading := func() bool {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", cmd.Process.Pid))
		for _, task := range tasks {
			data, _ := os.ReadFile(task)
			if f := strings.Fields(string(data)); len(f) > 1 && (f[0] == "0" || f[0] == "63") && f[1] == "0x0" {
				return true
			}
		}
		return false
	}
	for i := 0; !reading(); i++ {
		if i == 1000 {
			cmd.Process.Kill()
			cmd.Wait()
			t.Skip("cannot see flowrun block reading its stdin in /proc")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	pipeline.Write([]byte("stages: [{use: sleep, with: {duration: 100ms}}]\n"))
	pipeline.Close()
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("exit %d (%v), want 130", code, err)
	}
}
