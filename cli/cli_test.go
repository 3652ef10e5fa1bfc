package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/cli"
	"github.com/flowrun/flowrun/connect/brokertest"
	"github.com/flowrun/flowrun/stages"
)

var update = flag.Bool("update", false, "rewrite golden files")

// flowrunBin is the CLI built once for the tests that need a real process:
// signals, pipes, /dev/full.
var flowrunBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "flowrun-cli-test")
	if err != nil {
		panic(err)
	}
	flowrunBin = filepath.Join(dir, "flowrun")
	build := exec.Command("go", "build", "-o", flowrunBin, "github.com/flowrun/flowrun")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		panic("build flowrun: " + err.Error())
	}
	code := m.Run()
	brokertest.StopAll() // the servers the broker tests started
	os.RemoveAll(dir)
	os.Exit(code)
}

// runCLI runs the CLI in-process.
func runCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = cli.Run(context.Background(), append([]string{"flowrun"}, args...), strings.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

// writeFile writes a file under dir and returns its path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExitCodes(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	good := writeFile(t, dir, "good.yaml", "stages: [{use: trim}, {use: upper}]\n")
	skip := writeFile(t, dir, "skip.yaml", "input: {format: jsonl, on_error: skip}\nstages: [{use: trim}]\n")
	bad := writeFile(t, dir, "bad.yaml", "stages:\n  - use: uper\n    workers: 0\n")
	dlNeeded := writeFile(t, dir, "dl.yaml", "input: {format: jsonl, on_error: dead-letter}\nstages: [{use: json.validate, on_error: skip, with: {object: true}}]\n")
	writeFile(t, dir, "in-b.txt", "b1\n")
	writeFile(t, dir, "in-a.txt", "a1\na2") // no newline at the end: still a record
	tests := []struct {
		name   string
		stdin  string
		args   []string
		code   int
		stdout string
		stderr string // a substring
	}{
		{"run", " a \nb\n", []string{"run", "-q", good}, 0, "A\nB\n", ""},
		{"flags after the file", " a \n", []string{"run", good, "-q", "--progress", "none"}, 0, "A\n", ""},
		{"skipped records exit 3", "{}\nnope\n", []string{"run", "-q", skip}, 3, "{}\n", ""},
		{"invalid pipeline exits 2 with line and column", "", []string{"run", bad}, 2, "",
			bad + `:2:10: unknown stage "uper" (did you mean "upper"?)`},
		{"validate ok", "", []string{"validate", good}, 0, good + `: ok: pipeline "good", 2 stages` + "\n", ""},
		{"validate bad", "", []string{"validate", bad}, 2, "", bad + ":3:14: "},
		{"missing file", "", []string{"run", filepath.Join(dir, "nope.yaml")}, 2, "", "nope.yaml"},
		{"no file", "", []string{"run"}, 2, "", "run takes one pipeline FILE"},
		{"unknown flag", "", []string{"run", "--frobnicate", good}, 2, "", "flowrun: run has no flag --frobnicate; `flowrun help run` lists them\n"},
		{"bad --set", "", []string{"run", "--set", "stages.trim.workers=many", good}, 2, "", `--set stages.trim.workers=many: workers: "many" is not a whole number`},
		{"--set", "x\n", []string{"run", "-q", "--set", "stages.upper.workers=3", good}, 0, "X\n", ""},
		{"--set reaches a mapping option's entry", `{"a":1}` + "\n", []string{"run", "-q", "--set", "stages.map.with.fields.b=a+1", writeFile(t, dir, "map.yaml", "stages: [{use: map, with: {fields: {c: a}}}]\n")}, 0, `{"a":1,"b":2,"c":1}` + "\n", ""},
		{"pipeline from stdin, records from -i", "stages: [{use: upper}]\n", []string{"run", "-q", "-i", filepath.Join(dir, "in-b.txt"), "-"}, 0, "B1\n", ""},
		{"pipeline from stdin needs -i", "stages: [{use: upper}]\n", []string{"run", "-q", "-"}, 2, "", "the pipeline came from stdin (-), so its records cannot: give them with -i FILE"},
		{"validate a pipeline from stdin", "stages: [{use: uper}]\n", []string{"validate", "-"}, 2, "", `<stdin>:1:16: unknown stage "uper" (did you mean "upper"?)`},
		{"--dead-letter satisfies on_error: dead-letter", "{}\nx\n[1]\n", []string{"run", "--progress", "none", "--dead-letter", filepath.Join(dir, "dl.jsonl"), dlNeeded}, 3, "{}\n",
			"\nflowrun: 1 record dead-lettered to " + filepath.Join(dir, "dl.jsonl") + ", 1 skipped\n"},
		{"exit 3 says why", "{}\nnope\nno\n", []string{"run", "--progress", "none", skip}, 3, "{}\n", "\nflowrun: 2 records skipped\n"},
		{"without --dead-letter it is missing", "", []string{"validate", dlNeeded}, 2, "", "dead-letter needs a dead_letter: FILE at the top of the pipeline (or --dead-letter FILE)"},
		{"negative --progress-every", "", []string{"run", "--progress-every", "-1s", good}, 2, "", "--progress-every -1s: must not be negative"},
		{"negative duration in --set", "", []string{"run", "--set", "stages.trim.timeout=-1s", good}, 2, "", "--set stages.trim.timeout=-1s: timeout must not be negative"},
		{"bad progress", "", []string{"run", "--progress", "loud", good}, 2, "", `--progress "loud"`},
		{"stage fails the run", "x\n", []string{"run", "-q", "-i", "-", writeFile(t, dir, "fail.yaml", "stages: [{use: sleep, timeout: 1ms, with: {duration: 1s}}]")}, 1, "",
			`flowrun: stage "sleep" record 1 "x": no result within the stage's timeout of 1ms`},
		{"unknown stage name", "", []string{"stages", "nope"}, 2, "", `no stage "nope"`},
		{"workers: auto", "x\n", []string{"run", "-q", writeFile(t, dir, "auto.yaml", "stages: [{use: upper, workers: auto}]")}, 0, "X\n", ""},
		{"glob input in lexical order", "", []string{"run", "-q", "-i", filepath.Join(dir, "in-*.txt"), good}, 0, "A1\nA2\nB1\n", ""},
		{"glob matching nothing", "", []string{"run", "-q", "-i", filepath.Join(dir, "none-*.txt"), good}, 2, "", "no file matches"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runCLI(t, tt.stdin, tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, errs)
			}
			if out != tt.stdout {
				t.Errorf("stdout %q, want %q", out, tt.stdout)
			}
			if !strings.Contains(errs, tt.stderr) {
				t.Errorf("stderr %q, want it to contain %q", errs, tt.stderr)
			}
			if slices.Contains(tt.args, "-q") && tt.code == 3 && errs != "" {
				t.Errorf("-q, but stderr %q", errs)
			}
			if strings.Contains(errs, "goroutine ") || strings.Contains(errs, ".go:") {
				t.Errorf("stderr looks like a stack trace:\n%s", errs)
			}
		})
	}
}

func TestStatsAndSummary(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: trim}, {use: grep, with: {pattern: keep}}]\n")
	stats := filepath.Join(dir, "stats.json")
	_, errs, code := runCLI(t, "keep 1\ndrop\nkeep 2\n", "run", "--progress", "none", "--stats", stats, p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"stage", "p99", "trim", "grep", "3 records in"} {
		if !strings.Contains(errs, want) {
			t.Errorf("summary lacks %q:\n%s", want, errs)
		}
	}
	var sum struct {
		Elapsed float64 `json:"elapsed_seconds"`
		Input   struct{ Records, Bytes int64 }
		Output  struct{ Records, Bytes int64 }
		Stages  []struct {
			Name    string
			In, Out int64
		}
	}
	data, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &sum); err != nil {
		t.Fatal(err)
	}
	if sum.Input.Records != 3 || sum.Output.Records != 2 || len(sum.Stages) != 2 || sum.Stages[1].In != 3 || sum.Stages[1].Out != 2 ||
		sum.Input.Bytes != int64(len("keep 1\ndrop\nkeep 2\n")) || sum.Output.Bytes != int64(len("keep 1\nkeep 2\n")) || sum.Elapsed <= 0 {
		t.Errorf("stats %s", data)
	}
}

func TestPlainProgressHasNoEscapes(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: sleep, with: {duration: 5ms}}]\n")
	_, errs, code := runCLI(t, strings.Repeat("x\n", 40), "run", "--progress", "plain", "--progress-every", "50ms", p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(errs, "flowrun: ") || !strings.Contains(errs, "| sleep ") {
		t.Errorf("no status line in:\n%s", errs)
	}
	if strings.ContainsAny(errs, "\r\x1b") {
		t.Errorf("plain progress wrote \\r or an escape:\n%q", errs)
	}
}

func TestBarsProgress(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{name: slow, use: sleep, workers: 2, with: {duration: 5ms}}]\n")
	in := writeFile(t, dir, "in.txt", strings.Repeat("x\n", 40))
	out, errs, code := runCLI(t, "", "run", "-q", "--progress", "bar", "--progress-every", "20ms", "-i", in, p)
	if code != 0 || out != strings.Repeat("x\n", 40) {
		t.Fatalf("exit %d out %q: %s", code, out, errs)
	}
	for _, want := range []string{"input", "slow", "output", "busy", "/2", "\x1b[", "40 rec"} {
		if !strings.Contains(errs, want) {
			t.Errorf("bars lack %q:\n%q", want, errs)
		}
	}
}

func TestStagesDocumentsEveryBuiltin(t *testing.T) {
	defer goleak.VerifyNone(t)
	out, _, code := runCLI(t, "", "stages")
	if code != 0 {
		t.Fatal(code)
	}
	for _, s := range stages.All() {
		if strings.HasPrefix(s.Name, "clitest.") {
			continue
		}
		if !strings.Contains(out, s.Name+"  ") || !strings.Contains(out, s.Doc) {
			t.Errorf("flowrun stages lacks %s", s.Name)
		}
		for _, o := range s.Options {
			if !strings.Contains(out, o.Doc) {
				t.Errorf("flowrun stages lacks %s's option %s", s.Name, o.Name)
			}
		}
	}
}

// TestReadmeStageTable keeps README.md's stage table identical to what the
// registry says; run with -update to rewrite it.
func TestReadmeStageTable(t *testing.T) {
	const begin, end = "<!-- stages:begin -->\n", "<!-- stages:end -->\n"
	readme := filepath.Join("..", "README.md")
	data, err := os.ReadFile(readme)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatalf("README.md lacks the %q ... %q markers", begin, end)
	}
	// The table is of the built-ins; tests of this package register
	// stages of their own (clitest.*, example.*) in the same process.
	builtins := slices.DeleteFunc(stages.All(), func(s stages.Spec) bool {
		return strings.HasPrefix(s.Name, "clitest.") || strings.HasPrefix(s.Name, "example.")
	})
	table := cli.StagesMarkdown(builtins)
	if got := s[i+len(begin) : j]; got != table {
		if *update {
			s = s[:i+len(begin)] + table + s[j:]
			if err := os.WriteFile(readme, []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Errorf("README.md's stage table differs from `flowrun stages --markdown`; run go test ./cli -run ReadmeStageTable -update")
	}
}

func TestGraph(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: trim, workers: 3}, {use: upper}]\n")
	out, errs, code := runCLI(t, "", "graph", p)
	if code != 0 || !strings.Contains(out, "flowchart") || !strings.Contains(out, "trim") {
		t.Errorf("mermaid: exit %d\n%s%s", code, out, errs)
	}
	out, _, code = runCLI(t, "", "graph", "--format", "dot", p)
	if code != 0 || !strings.Contains(out, "digraph") {
		t.Errorf("dot: exit %d\n%s", code, out)
	}
}

// startFlowrun starts the built CLI with stdin and stdout as pipes.
func startFlowrun(t *testing.T, args ...string) (*exec.Cmd, io.WriteCloser, *bufio.Reader, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(flowrunBin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, stdin, bufio.NewReader(stdout), &stderr
}

func exitOf(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("flowrun did not exit")
	}
	return cmd.ProcessState.ExitCode()
}

func TestSigintDrains(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "ordered: true\nstages: [{use: sleep, workers: 4, with: {duration: 10ms}}, {use: upper}]\n")
	cmd, stdin, stdout, stderr := startFlowrun(t, "run", "--progress", "none", p)
	go func() {
		for i := 1; i <= 100000; i++ {
			if _, err := fmt.Fprintf(stdin, "record-%d\n", i); err != nil {
				return
			}
		}
	}()
	// Wait until records flow, then Ctrl-C.
	first, err := stdout.ReadString('\n')
	if err != nil || first != "RECORD-1\n" {
		t.Fatalf("first line %q, %v", first, err)
	}
	cmd.Process.Signal(syscall.SIGINT)
	rest, _ := io.ReadAll(stdout)
	code := exitOf(t, cmd)
	stdin.Close()
	if code != 130 {
		t.Errorf("exit %d, want 130; stderr:\n%s", code, stderr)
	}
	got := first + string(rest)
	n := strings.Count(got, "\n")
	var want strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&want, "RECORD-%d\n", i)
	}
	if got != want.String() {
		t.Errorf("output is not a clean prefix of whole records (%d lines)", n)
	}
	if !strings.Contains(stderr.String(), "stopping: draining") || !strings.Contains(stderr.String(), fmt.Sprintf("output  %d", n)) &&
		!strings.Contains(stderr.String(), "output") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

// TestSecondSignalAborts checks that a second signal ends a run whose
// stage is stuck. Each signal is sent once flowrun has shown it is ready
// for it (the record is in the stage; the first signal was taken), not
// after a fixed sleep that a loaded machine outlasts.
func TestSecondSignalAborts(t *testing.T) {
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	p := writeFile(t, dir, "p.yaml", fmt.Sprintf("stages: [{use: exec, with: {command: [sh, -c, 'echo > %s; exec sleep 3600']}}]\n", started))
	cmd := exec.Command(flowrunBin, "run", "--progress", "none", p)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	hung := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() }) // then lines ends, and the exit code says so
	defer hung.Stop()
	lines := make(chan string, 100)
	var stderr strings.Builder // read after lines is closed
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(errPipe)
		for sc.Scan() {
			stderr.WriteString(sc.Text() + "\n")
			lines <- sc.Text()
		}
	}()
	fmt.Fprintln(stdin, "x")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the record never reached the stage")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	for line := range lines {
		if strings.Contains(line, "stopping: draining") {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	for range lines {
	}
	if code := exitOf(t, cmd); code != 130 {
		t.Errorf("exit %d, want 130; stderr:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "aborting") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}

func TestHeadClosesOutput(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: upper}]\n")
	cmd := exec.Command("bash", "-c", `seq 1 2000000 | "$0" run -q --progress none "$1" | head -1; echo "flowrun=${PIPESTATUS[1]}"`, flowrunBin, p)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err, stderr.String())
	}
	if string(out) != "1\nflowrun=0\n" || stderr.Len() != 0 {
		t.Errorf("stdout %q stderr %q", out, stderr.String())
	}
}

func TestDiskFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: upper}]\n")
	cmd := exec.Command(flowrunBin, "run", "-q", "-o", "/dev/full", p)
	cmd.Stdin = strings.NewReader("a\nb\n")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if want := "flowrun: write /dev/full: no space left on device\n"; stderr.String() != want {
		t.Errorf("stderr %q, want %q", stderr.String(), want)
	}
}

// TestStreamingAnswersEachLine checks that a line written to flowrun's
// stdin comes out while the pipe stays open: no stage, batch or buffer
// waits for more input. The bound is generous (seconds); the latency
// itself is measured by bench/latency.
func TestStreamingAnswersEachLine(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "ordered: true\nstages: [{use: trim}, {use: upper, workers: 2}, {use: grep, with: {pattern: DROP, invert: true}}, {use: sleep, with: {duration: 0s}}]\n")
	cmd, stdin, stdout, stderr := startFlowrun(t, "run", "-q", "--progress", "none", p)
	for i := range 5 {
		fmt.Fprintf(stdin, "  line %d  \n", i)
		got := make(chan string, 1)
		go func() {
			line, _ := stdout.ReadString('\n')
			got <- line
		}()
		select {
		case line := <-got:
			if want := fmt.Sprintf("LINE %d\n", i); line != want {
				t.Fatalf("got %q, want %q", line, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("line %d did not come out while stdin stayed open; stderr:\n%s", i, stderr)
		}
	}
	stdin.Close()
	if code := exitOf(t, cmd); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// TestReadmeStatsSchema keeps the README's --stats example in step with
// what --stats writes: the same keys, no more, no fewer.
func TestReadmeStatsSchema(t *testing.T) {
	defer goleak.VerifyNone(t)
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(data), "`--stats FILE` writes the summary")
	if ok {
		_, block, ok = strings.Cut(block, "```jsonc\n")
	}
	if ok {
		block, _, ok = strings.Cut(block, "```")
	}
	if !ok {
		t.Fatal("README.md has no ```jsonc block after \"`--stats FILE` writes the summary\"")
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile(`"(\w+)":`).FindAllStringSubmatch(block, -1) {
		documented[m[1]] = true
	}

	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: trim}]\n")
	stats := filepath.Join(dir, "stats.json")
	if _, errs, code := runCLI(t, "a\n", "run", "-q", "--progress", "none", "--stats", stats, p); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(stats)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	written := map[string]bool{"error": true} // only when the run failed
	var walk func(any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				written[k] = true
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
	for k := range written {
		if !documented[k] {
			t.Errorf("--stats writes %q, which README.md's example lacks", k)
		}
	}
	for k := range documented {
		if !written[k] {
			t.Errorf("README.md's --stats example has %q, which --stats does not write", k)
		}
	}
}

// TestRunFileURLs: -i and -o take file:// URLs, read and written as their
// paths; a file URL on another host is refused before anything runs.
func TestRunFileURLs(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: upper}]\n")
	in := writeFile(t, dir, "in put.txt", "a\nb\n")
	out := filepath.Join(dir, "out.txt")
	_, errs, code := runCLI(t, "", "run", "-q", "--progress", "none", "-i", "file://"+strings.ReplaceAll(in, " ", "%20"), "-o", "file://"+out, p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if b, _ := os.ReadFile(out); string(b) != "A\nB\n" {
		t.Errorf("output %q, want A, B", b)
	}
	_, errs, code = runCLI(t, "", "run", "-q", "-i", "file://elsewhere/in.txt", p)
	if want := "flowrun: -i: file://elsewhere/in.txt: a file URL names a local file (file:///PATH), not one on elsewhere\n"; code != 2 || errs != want {
		t.Errorf("a file URL on another host: exit %d, %q", code, errs)
	}
}
