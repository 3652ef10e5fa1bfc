package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/stages"
)

// TestValidateChecksWhatRunChecks runs validate and run on pipelines that
// cannot start: both must report the same problems, each at its place,
// exit 2, and leave the output and dead-letter files as they were.
func TestValidateChecksWhatRunChecks(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	in := writeFile(t, dir, "in.txt", "a\n")
	writeFile(t, dir, "garbage.wasm", "not a wasm module")
	out := filepath.Join(dir, "out.txt")
	dl := filepath.Join(dir, "dl.jsonl")
	tests := []struct {
		name  string
		yaml  string
		flags []string
		want  string // stderr, with FILE for the pipeline's path and DIR for the directory
	}{
		{"input file missing", "input: {from: nope.txt}\nstages: [{use: upper}]\n", nil,
			"FILE:1:15: input: nope.txt: no such file\n"},
		{"input glob matches nothing", "input: {from: 'DIR/nope-*.txt'}\nstages: [{use: upper}]\n", nil,
			"FILE:1:15: input: no file matches DIR/nope-*.txt\n"},
		{"-i missing", "stages: [{use: upper}]\n", []string{"-i", "DIR/nope.txt"},
			"flowrun: -i: input: DIR/nope.txt: no such file\n"},
		{"--set input.from missing", "stages: [{use: upper}]\n", []string{"--set", "input.from=DIR/nope.txt"},
			"flowrun: --set input.from=DIR/nope.txt: input: DIR/nope.txt: no such file\n"},
		{"output directory missing", "output: {to: DIR/no/out.txt}\nstages: [{use: upper}]\n", []string{"-i", in},
			"FILE:1:14: output: cannot create DIR/no/out.txt: no directory DIR/no\n"},
		{"output is a directory", "stages: [{use: upper}]\n", []string{"-i", in, "-o", "DIR"},
			"flowrun: -o: output: DIR is a directory\n"},
		{"dead-letter directory missing", "dead_letter: DIR/no/dl.jsonl\nstages: [{use: upper, on_error: dead-letter}]\n", []string{"-i", in},
			"FILE:1:14: dead letter: cannot create DIR/no/dl.jsonl: no directory DIR/no\n"},
		{"--dead-letter directory missing", "stages: [{use: upper, on_error: dead-letter}]\n", []string{"-i", in, "--dead-letter", "DIR/no/dl.jsonl"},
			"flowrun: --dead-letter: dead letter: cannot create DIR/no/dl.jsonl: no directory DIR/no\n"},
		{"exec program not on PATH", "stages:\n  - use: exec\n    with: {command: [flowrun-no-such-program, x]}\n", []string{"-i", in},
			"FILE:3:21: stage \"exec\": option command: exec: \"flowrun-no-such-program\": no such program in $PATH\n"},
		{"exec program not at its path", "stages:\n  - use: exec\n    with: {command: [./nope.sh]}\n", []string{"-i", in},
			"FILE:3:21: stage \"exec\": option command: exec: \"./nope.sh\": no such file (looked for DIR/nope.sh)\n"},
		{"exec command as a string", "stages:\n  - name: score\n    use: exec\n    with:\n      command: python3 -u score.py\n", []string{"-i", in},
			"FILE:5:16: stage \"score\": option command: exec: \"python3 -u score.py\": no such program in $PATH" +
				" (command is a list, one item per argument: write command: [python3, -u, score.py])\n"},
		{"wasm module missing", "stages: [{use: wasm, with: {module: nope.wasm}}]\n", []string{"-i", in},
			"FILE:1:37: stage \"wasm\": option module: wasm: \"nope.wasm\": no such file\n"},
		{"a broker URL is checked by its connector", "stages: [{use: upper}]\n", []string{"-i", "redis://127.0.0.1:1/0?lst=x"},
			"flowrun: -i: input: redis option \"lst\": no such option (did you mean \"list\"?)\n"},
		{"input name with a NUL", "input: {from: \"in\\0.txt\"}\nstages: [{use: upper}]\n", nil,
			"FILE:1:15: input: \"in\\x00.txt\": a file name cannot hold a NUL byte\n"}, // was the system's "stat in\x00.txt: invalid argument", the NUL raw
		{"output name with a NUL", "output: {to: \"o\\0\"}\nstages: [{use: upper}]\n", []string{"-i", in},
			"FILE:1:14: output: \"o\\x00\": a file name cannot hold a NUL byte\n"},
		{"dead letter name with a NUL", "dead_letter: \"d\\0\"\nstages: [{use: upper, on_error: dead-letter}]\n", []string{"-i", in},
			"FILE:1:14: dead letter: \"d\\x00\": a file name cannot hold a NUL byte\n"},
		{"output is the input", "stages: [{use: upper}]\n", []string{"-i", "DIR/*.txt", "-o", in},
			"flowrun: -o: output: DIR/in.txt is also the input: writing it would destroy what is being read; write to another file\n"},
		{"output is the input, as a file URL", "stages: [{use: upper}]\n", []string{"-i", in, "-o", "file://DIR/in.txt"},
			"flowrun: -o: output: DIR/in.txt is also the input: writing it would destroy what is being read; write to another file\n"},
		{"input file URL missing", "input: {from: 'file://DIR/nope.txt'}\nstages: [{use: upper}]\n", nil,
			"FILE:1:15: input: DIR/nope.txt: no such file\n"},
		{"dead letter is the input by another name", "dead_letter: DIR/./in.txt\nstages: [{use: upper, on_error: dead-letter}]\n", []string{"-i", in},
			"FILE:1:14: dead letter: DIR/./in.txt is the input file DIR/in.txt: writing it would destroy what is being read; write to another file\n"},
		{"dead letter is the output", "stages: [{use: upper, on_error: dead-letter}]\n", []string{"-i", in, "-o", out, "--dead-letter", "DIR/./out.txt"},
			"flowrun: --dead-letter: dead letter: DIR/./out.txt is also the output: the dead letters would overwrite the records; write them to another file\n"},
		{"a stage whose New panics", "stages:\n  - use: clitest.panicky\n", []string{"-i", in},
			"FILE:2:5: stage \"clitest.panicky\": making the stage panicked (a bug in clitest.panicky): boom\n"},
		{"every problem at once", "input: {from: nope.txt}\noutput: {to: DIR/no/out.txt}\nstages:\n  - use: wasm\n    with: {module: garbage.wasm}\n  - use: exec\n    with: {command: [flowrun-no-such-program]}\n", nil,
			"FILE:1:15: input: nope.txt: no such file\nFILE:2:14: output: cannot create DIR/no/out.txt: no directory DIR/no\n" +
				"FILE:4:5: stage \"wasm\": wasm: compile garbage.wasm: invalid magic number\n" +
				"FILE:7:21: stage \"exec\": option command: exec: \"flowrun-no-such-program\": no such program in $PATH\n"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := writeFile(t, dir, "p"+string(rune('a'+i))+".yaml", strings.ReplaceAll(tt.yaml, "DIR", dir))
			want := strings.NewReplacer("FILE", file, "DIR", dir).Replace(tt.want)
			flags := make([]string, len(tt.flags))
			for j, f := range tt.flags {
				flags[j] = strings.ReplaceAll(f, "DIR", dir)
			}
			vout, verr, code := runCLI(t, "", append(append([]string{"validate"}, flags...), file)...)
			if code != 2 || vout != "" || verr != want {
				t.Errorf("validate: exit %d, stdout %q, stderr\n%s\nwant exit 2, stderr\n%s", code, vout, verr, want)
			}
			if err := os.WriteFile(out, []byte("kept\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			os.Remove(dl)
			// The output and dead-letter files that run would write, when
			// the pipeline does not say otherwise.
			if !strings.Contains(strings.Join(flags, " "), "-o") && !strings.Contains(tt.yaml, "output:") {
				flags = append(flags, "-o", out)
			}
			if !strings.Contains(strings.Join(flags, " "), "--dead-letter") && strings.Contains(tt.yaml, "on_error") && !strings.Contains(tt.yaml, "dead_letter") {
				flags = append(flags, "--dead-letter", dl)
			}
			rout, rerr, code := runCLI(t, "", append(append([]string{"run", "-q", "--progress", "none"}, flags...), file)...)
			if code != 2 || rout != "" || !strings.HasSuffix(rerr, strings.SplitN(want, "\n", 2)[1]) {
				t.Errorf("run: exit %d, stdout %q, stderr\n%s\nwant exit 2 and the same problems", code, rout, rerr)
			}
			if b, _ := os.ReadFile(out); string(b) != "kept\n" {
				t.Errorf("run touched the output: %q", b)
			}
			if _, err := os.Stat(dl); err == nil {
				t.Errorf("run created the dead-letter file")
			}
		})
	}
}

func TestValidateFlagsAreRuns(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	in := writeFile(t, dir, "in.txt", "a\n")
	p := writeFile(t, dir, "p.yaml", "stages: [{use: upper, on_error: dead-letter}]\n")
	out, errs, code := runCLI(t, "", "validate", "-i", in, "-o", filepath.Join(dir, "out.txt"), "--dead-letter", filepath.Join(dir, "dl.jsonl"), p)
	if code != 0 || out != p+": ok: pipeline \"p\", 1 stages\n" || errs != "" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("validate wrote files: %v", entries)
	}
}

// shared models a stage whose workers share what the first one's New
// loads and the last one's Close drops (lookup's reference table).
var shared struct {
	sync.Mutex
	refs, loads int
}

func init() {
	stages.Register(stages.Spec{
		Name: "clitest.panicky",
		Doc:  "Panics in New: a bug in a stage.",
		New:  func(stages.Config) (stages.Stage, error) { panic("boom") },
	})
	stages.Register(stages.Spec{
		Name: "clitest.shared",
		Doc:  "Shares one loaded resource between its workers.",
		New: func(stages.Config) (stages.Stage, error) {
			shared.Lock()
			defer shared.Unlock()
			if shared.refs == 0 {
				shared.loads++
			}
			shared.refs++
			return &sharedStage{}, nil
		},
	})
}

type sharedStage struct{ closed bool }

func (s *sharedStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	return append(out, rec), nil
}

func (s *sharedStage) Close() error {
	shared.Lock()
	defer shared.Unlock()
	if !s.closed {
		s.closed = true
		shared.refs--
	}
	return nil
}

// TestPreflightDoesNotLoadTwice checks that the stages run makes to check
// the pipeline live until the run's own are made: what a stage's workers
// share is loaded once per run, not once for the check and once for the
// run.
func TestPreflightDoesNotLoadTwice(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := writeFile(t, t.TempDir(), "p.yaml", "ordered: true\nstages: [{use: clitest.shared, workers: 3}]\n")
	shared.Lock()
	shared.loads = 0
	shared.Unlock()
	out, errs, code := runCLI(t, "a\nb\n", "run", "-q", "--progress", "none", p)
	if code != 0 || out != "a\nb\n" {
		t.Fatalf("exit %d, stdout %q: %s", code, out, errs)
	}
	shared.Lock()
	defer shared.Unlock()
	if shared.loads != 1 || shared.refs != 0 {
		t.Errorf("loaded %d times, %d references left; want 1 and 0", shared.loads, shared.refs)
	}
}

// TestStatsFileCheckedBeforeTheRun: --stats is checked with the other
// paths, before any record moves (it was written after the run, which
// then failed with "open …: no such file or directory"), may not be the
// output, and - writes the JSON to stdout when the records go elsewhere
// (it wrote a file named "-").
func TestStatsFileCheckedBeforeTheRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: upper}]\n")
	in := writeFile(t, dir, "in.txt", "a\n")
	out := filepath.Join(dir, "out.txt")
	for _, tt := range []struct {
		stats, output, want string
	}{
		{filepath.Join(dir, "no", "s.json"), out, "flowrun: --stats: cannot create DIR/no/s.json: no directory DIR/no\n"},
		{out, out, "flowrun: --stats: DIR/out.txt is also the output or the dead-letter file: write the stats to another file\n"},
		{"-", "-", "flowrun: --stats: - is stdout, which carries the records: write the stats to a FILE (or the records with -o)\n"},
	} {
		stdout, stderr, code := runCLI(t, "", "run", "-q", "-i", in, "-o", tt.output, "--stats", tt.stats, p)
		want := strings.ReplaceAll(tt.want, "DIR", dir)
		if code != 2 || stdout != "" || stderr != want {
			t.Errorf("--stats %s: exit %d, stdout %q, stderr %q; want exit 2, %q", tt.stats, code, stdout, stderr, want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("--stats %s: the run started: %s was written", tt.stats, out)
		}
	}
	stdout, stderr, code := runCLI(t, "", "run", "-q", "-i", in, "-o", out, "--stats", "-", p)
	if code != 0 || !strings.Contains(stdout, `"pipeline"`) || !strings.Contains(stdout, `"records": 1`) {
		t.Errorf("--stats -: exit %d, stdout %q, stderr %q; want the JSON on stdout", code, stdout, stderr)
	}
}
