package cli_test

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestCommandsBehaveLikeTheirPeers checks the CLI's surface: help,
// version, unknown names and what each command's help promises.
func TestCommandsBehaveLikeTheirPeers(t *testing.T) {
	defer goleak.VerifyNone(t)
	type cliCase struct {
		name           string
		args           []string
		code           int
		stdout, stderr string // substrings
		notStdout      string // must not appear in stdout
	}
	tests := []cliCase{
		{"bare flowrun prints help and fails", nil, 2, "", "COMMANDS:", ""},
		{"--version", []string{"--version"}, 0, "flowrun ", "", ""},
		{"version", []string{"version"}, 0, runtime.Version(), "", ""},
		{"help", []string{"help"}, 0, "COMMANDS:", "", ""},
		{"--help", []string{"--help"}, 0, "COMMANDS:", "", ""},
		{"-h", []string{"-h"}, 0, "COMMANDS:", "", ""},
		{"--help COMMAND", []string{"--help", "run"}, 0, "flowrun run - run a pipeline", "", ""},
		{"-h of an unknown command", []string{"-h", "rnu"}, 2, "", `unknown command "rnu" (did you mean "run"?)`, ""},
		{"help COMMAND", []string{"help", "validate"}, 0, "flowrun validate - check a pipeline", "", ""},
		{"help of an unknown command", []string{"help", "valdiate"}, 2, "", `unknown command "valdiate" (did you mean "validate"?)`, ""},
		{"unknown command", []string{"rnu", "p.yaml"}, 2, "", `flowrun: unknown command "rnu" (did you mean "run"?)`, ""},
		{"unknown command, nothing near", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"; ` + "`flowrun help`", ""},
		{"run's help has every exit status", []string{"help", "run"}, 0, "   130  stopped by SIGINT", "", ""},
		{"validate's help has only its own", []string{"help", "validate"}, 0, "   2    it is not", "", "130"},
		{"stages' help has only its own", []string{"stages", "--help"}, 0, "   2    a NAME that is no stage", "", "   3 "},
		{"graph's help has only its own", []string{"help", "graph"}, 0, "   0    graph printed", "", "   1 "},
		{"--progress-every below 10ms", []string{"run", "--progress-every", "1ns", "p.yaml"}, 2, "", "flowrun: --progress-every 1ns: at least 10ms", ""},
		{"a flag near one of the command's", []string{"run", "--stat", "s.json", "p.yaml"}, 2, "", "flowrun: run has no flag --stat (did you mean --stats?); `flowrun help run` lists them\n", ""},
		{"a flag near one of flowrun's", []string{"--verison"}, 2, "", "flowrun: no flag --verison (did you mean --version?); `flowrun help` lists them\n", ""},
		{"a flag without its value", []string{"run", "-i"}, 2, "", "flowrun: -i needs a value\n", ""},
		{"stages NAME suggests a near name", []string{"stages", "uppr"}, 2, "", `no stage "uppr" (did you mean "upper"?)`, ""},
	}
	// Every command has a help with its exit statuses, by either road.
	for _, name := range []string{"run", "validate", "stages", "graph", "connectors", "version", "help"} {
		tests = append(tests,
			cliCase{"help " + name, []string{"help", name}, 0, "\nEXIT STATUS:\n   0 ", "", ""},
			cliCase{name + " --help", []string{name, "--help"}, 0, "\nEXIT STATUS:\n   0 ", "", ""})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs, code := runCLI(t, "", tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", code, tt.code, errs)
			}
			if !strings.Contains(out, tt.stdout) {
				t.Errorf("stdout %q, want it to contain %q", out, tt.stdout)
			}
			if !strings.Contains(errs, tt.stderr) {
				t.Errorf("stderr %q, want it to contain %q", errs, tt.stderr)
			}
			if tt.notStdout != "" && strings.Contains(out, tt.notStdout) {
				t.Errorf("stdout has %q:\n%s", tt.notStdout, out)
			}
		})
	}
}

// TestReadmeListsTheCommandLine keeps README.md's "Command line" block in
// step with the CLI: every command, and every flag of run and validate.
func TestReadmeListsTheCommandLine(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(data), "## Command line\n\n```\n")
	if ok {
		block, _, ok = strings.Cut(block, "```")
	}
	if !ok {
		t.Fatal("README.md has no ``` block under ## Command line")
	}
	help, _, _ := runCLI(t, "", "help")
	_, cmds, _ := strings.Cut(help, "COMMANDS:\n")
	cmds, _, _ = strings.Cut(cmds, "\n\n")
	for _, line := range strings.Split(cmds, "\n") {
		name := strings.Fields(line)[0]
		if !strings.Contains(block, "\nflowrun "+name+" ") && !strings.HasPrefix(block, "flowrun "+name+" ") {
			t.Errorf("README.md's command line lacks flowrun %s", name)
		}
	}
	for _, cmd := range []string{"run", "validate"} {
		out, _, _ := runCLI(t, "", "help", cmd)
		flags := regexp.MustCompile(`(?m)^\s+--([a-z-]+)`).FindAllStringSubmatch(out, -1)
		if len(flags) < 4 {
			t.Fatalf("found %d flags in flowrun help %s: has its layout changed?\n%s", len(flags), cmd, out)
		}
		for _, m := range flags {
			if m[1] != "help" && !strings.Contains(block, "--"+m[1]) {
				t.Errorf("README.md's command line lacks %s's --%s", cmd, m[1])
			}
		}
	}
}

// TestPipelineFileProblemsInWords: a pipeline file that cannot be read is
// said in words at its path, not as the system call that failed ("open
// p.yaml: no such file or directory"), and `flowrun test -` with a file
// named "-" about is refused rather than a crash reading a nil stdin.
func TestPipelineFileProblemsInWords(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	t.Chdir(dir)
	writeFile(t, dir, "-", "stages: [{use: trim}]\n")
	tests := []struct {
		args []string
		want string // stderr, whole
	}{
		{[]string{"run", "nosuch.yaml"}, "flowrun: nosuch.yaml: no such file\n"},
		{[]string{"validate", "nosuch/p.yaml"}, "flowrun: nosuch/p.yaml: no such file\n"},
		{[]string{"graph", "."}, "flowrun: . is a directory, not a pipeline file\n"},
		{[]string{"test", "nosuch.yaml"}, "flowrun: test: nosuch.yaml: no such file\n"},
		{[]string{"test", "nosuch/..."}, "flowrun: test nosuch/...: nosuch: no such file\n"},
		{[]string{"test", "-"}, "flowrun: test reads each pipeline from its FILE, not from stdin (-)\n"},
	}
	for _, tt := range tests {
		_, errs, code := runCLI(t, "", tt.args...)
		if code != 2 || errs != tt.want {
			t.Errorf("flowrun %s: exit %d, stderr %q; want 2, %q", strings.Join(tt.args, " "), code, errs, tt.want)
		}
	}
}
