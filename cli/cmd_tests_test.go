package cli_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// TestFlowrunTestExamples runs the test cases of pipelines/ as a user
// would, `flowrun test ./pipelines/...`: every example with cases
// passes, and each case has its line.
func TestFlowrunTestExamples(t *testing.T) {
	defer goleak.VerifyNone(t)
	out, errs, code := runCLI(t, "", "test", "../pipelines/...")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errs)
	}
	for _, name := range []string{"clean", "logs", "jsonl", "csv_to_jsonl", "plugin", "download_resize_upload", "thumbnails", "sales"} {
		if !regexp.MustCompile(`(?m)^ok  \t\.\./pipelines/` + name + `\.yaml\t\d+ cases?\t`).MatchString(out) {
			t.Errorf("no ok line for pipelines/%s.yaml:\n%s", name, out)
		}
	}
	if strings.Count(out, "\nok  \t") < 16 {
		t.Errorf("fewer cases than the examples hold:\n%s", out)
	}
}

// TestFlowrunTestReportsFailures: a failing case says FAIL with its
// file:line and a diff of the records; exit 1. Another case in the file
// still passes.
func TestFlowrunTestReportsFailures(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "shout.yaml", `name: shout
ordered: true
stages: [{use: upper}]
tests:
  - name: passes
    input: [a]
    expect: [A]
  - name: fails
    input: [a, b, c]
    expect: [A, X, C]
`)
	out, _, code := runCLI(t, "", "test", p)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	want := "ok  \t" + p + "/passes (" // the time follows
	if !strings.Contains(out, want) {
		t.Errorf("no ok line %q:\n%s", want, out)
	}
	for _, want := range []string{
		"FAIL\t" + p + "/fails (",
		p + ":8:5: output differs (-expected +received):\n          A\n        - X\n        + B\n          C\n",
		"FAIL\t" + p + "\t1 of 2 cases failed\t",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestFlowrunTestComparisons: JSON by value whatever the key order and
// spacing, an unordered pipeline as a multiset, dead letters with their
// stage, env and set applied, and expect_exit.
func TestFlowrunTestComparisons(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "people.yaml", `name: people
input: {format: jsonl}
output: {format: jsonl}
ordered: false
dead_letter: dead.jsonl
stages:
  - name: adults
    use: filter
    with: {expr: "age >= ${MIN_AGE:-18}"}
    on_error: dead-letter
  - name: slow
    use: sleep
    workers: 3
    with: {duration: 1ms, jitter: 3ms}
`)
	writeFile(t, dir, "people_test.yaml", `tests:
  - name: by value, any order
    input:
      - {name: ann, age: 30}
      - {name: ben, age: 40}
      - {name: cy, age: 10}
      - '{"name": "dee", "age": 50}'
    expect:
      - '{ "age": 50, "name": "dee" }'
      - {age: 40, name: ben}
      - {name: ann, age: 30}
  - name: env
    env: {MIN_AGE: "35"}
    input: [{name: ann, age: 30}, {name: ben, age: 40}]
    expect: [{name: ben, age: 40}]
  - name: dead letters
    input: [{name: ann, age: 30}, {name: bad}]
    expect: [{name: ann, age: 30}]
    expect_dead: [{stage: adults, record: {name: bad}}]
  - name: set
    set: {stages.slow.workers: 1}
    input: [{age: 20}]
    expect: [{age: 20}]
    expect_exit: 0
  - name: a wrong count is a failure, not a pass
    input: [{age: 20}, {age: 20}]
    expect: [{age: 20}]
`)
	out, _, code := runCLI(t, "", "test", p)
	if code != 1 {
		t.Fatalf("exit %d, want 1 (one case fails):\n%s", code, out)
	}
	for _, name := range []string{"by value, any order", "env", "dead letters", "set"} {
		if !strings.Contains(out, "ok  \t"+p+"/"+name+" (") {
			t.Errorf("case %q did not pass:\n%s", name, out)
		}
	}
	want := filepath.Join(dir, "people_test.yaml") + `:25:5: output differs (-expected +received):
          {"age":20}
        + {"age":20}`
	if !strings.Contains(out, want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
}

// TestFlowrunTestInvalid: a case with a mistake, or an invalid pipeline,
// is exit 2 with the place of the mistake.
func TestFlowrunTestInvalid(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct{ yaml, want string }{
		{"stages: [{use: upper}]\ntests:\n  - name: x\n    inptu: [a]\n    expect: [A]\n", `bad.yaml:4:5: unknown key "inptu" in a test case`},
		{"stages: [{use: upper}]\ntests:\n  - name: x\n    expect: [A]\n", `bad.yaml:3:5: test case "x" has no input: or input_file:`},
		{"stages: [{use: uper}]\n", `bad.yaml:1:16: unknown stage "uper"`},
		{"stages: [{use: upper}]\ntests: {name: x}\n", `bad.yaml:2:8: tests must be a list of cases`},
	} {
		p := writeFile(t, dir, "bad.yaml", tt.yaml)
		out, _, code := runCLI(t, "", "test", p)
		if code != 2 || !strings.Contains(out, tt.want) || !strings.Contains(out, "FAIL\t"+p+"\t[invalid]") {
			t.Errorf("flowrun test on\n%s: exit %d, output:\n%s\nwant exit 2 and %q", tt.yaml, code, out, tt.want)
		}
	}
	if _, errs, code := runCLI(t, "", "test"); code != 2 || !strings.Contains(errs, "test takes pipeline FILEs") {
		t.Errorf("flowrun test with no file: exit %d, %q", code, errs)
	}
}

// TestRunIgnoresTests: flowrun run does not mind a tests: key.
func TestRunIgnoresTests(t *testing.T) {
	p := writeFile(t, t.TempDir(), "p.yaml", "stages: [{use: upper}]\ntests:\n  - {name: x, input: [a], expect: [A]}\n")
	out, errs, code := runCLI(t, "a\n", "run", "-q", "--progress", "none", p)
	if code != 0 || out != "A\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errs)
	}
}

// TestFlowrunTestNumbers: JSON numbers compare by value, exactly: 1 and
// 1.0 and 1e0 are one number, but two integers past float64's 2^53 that
// differ in their last digit are two, in expect: and in expect_file.
func TestFlowrunTestNumbers(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "big.out", "{\"n\":9007199254740992}\n")
	p := writeFile(t, dir, "nums.yaml", `name: nums
input: {format: jsonl}
output: {format: jsonl}
ordered: true
stages: [{use: pick, with: {fields: [n]}}]
tests:
  - name: one is one
    input: ['{"n": 1}', '{"n": 2.50}']
    expect: ['{"n": 1.0}', {n: 2.5}]
  - name: the exponent is the same number
    input: ['{"n": 100}']
    expect: ['{"n": 1e2}']
  - name: big integers differ in expect
    input: ['{"n": 9007199254740993}']
    expect: [{n: 9007199254740992}]
  - name: big integers differ in expect_file
    input: ['{"n": 9007199254740993}']
    expect_file: big.out
  - name: big integers past int64 differ
    input: ['{"n": 123456789012345678901234567891}']
    expect: ['{"n": 123456789012345678901234567890}']
`)
	out, _, code := runCLI(t, "", "test", p)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, name := range []string{"one is one", "the exponent is the same number"} {
		if !strings.Contains(out, "ok  \t"+p+"/"+name+" (") {
			t.Errorf("case %q did not pass:\n%s", name, out)
		}
	}
	for _, want := range []string{
		"+ {\"n\":9007199254740993}",
		"+ {\"n\":123456789012345678901234567891}",
		"FAIL\t" + p + "\t3 of 5 cases failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestFlowrunTestTimeout: a case whose pipeline never ends fails after
// its timeout: (a minute unless it says), and the next case still runs.
func TestFlowrunTestTimeout(t *testing.T) {
	defer goleak.VerifyNone(t)
	p := writeFile(t, t.TempDir(), "stuck.yaml", `name: stuck
stages: [{name: wait, use: sleep, with: {duration: 1h}}]
tests:
  - name: never ends
    timeout: 200ms
    input: [a]
    expect: [a]
  - name: a bad timeout
    timeout: soon
    input: [a]
    expect: [a]
`)
	out, _, code := runCLI(t, "", "test", p)
	if code != 2 || !strings.Contains(out, p+`:9:14: timeout must be a duration, like 30s`) {
		t.Fatalf("exit %d, want 2 and the bad timeout's place:\n%s", code, out)
	}
	p = writeFile(t, t.TempDir(), "stuck.yaml", `name: stuck
stages: [{name: wait, use: sleep, with: {duration: 1h}}]
tests:
  - name: never ends
    timeout: 200ms
    input: [a]
    expect: [a]
  - name: ends
    set: {stages.wait.with.duration: 1ms}
    input: [a]
    expect: [a]
`)
	out, _, code = runCLI(t, "", "test", p)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{
		"FAIL\t" + p + "/never ends (",
		p + ":4:5: did not end within 200ms (the case's timeout:)",
		"ok  \t" + p + "/ends (",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestFlowrunTestSortEndingInOrder: a pipeline that ends in a sort puts
// its records out in the sort's order even with ordered: false, so its
// cases compare in order; a case's ordered: says otherwise either way.
func TestFlowrunTestSortEndingInOrder(t *testing.T) {
	p := writeFile(t, t.TempDir(), "ranked.yaml", `name: ranked
input: {format: jsonl}
output: {format: jsonl}
stages:
  - {name: rank, use: sort, with: {by: [n], numeric: true}}
tests:
  - name: in the sort's order
    input: [{n: 2}, {n: 1}]
    expect: [{n: 1}, {n: 2}]
  - name: the wrong order is a failure
    input: [{n: 2}, {n: 1}]
    expect: [{n: 2}, {n: 1}]
  - name: a case may ask for a multiset
    ordered: false
    input: [{n: 2}, {n: 1}]
    expect: [{n: 2}, {n: 1}]
  - name: ordered must be true or false
    ordered: sometimes
    input: [a]
    expect: [a]
`)
	out, _, code := runCLI(t, "", "test", p)
	if code != 2 || !strings.Contains(out, p+":18:14: ordered must be true or false") {
		t.Fatalf("exit %d, want 2 and the bad ordered's place:\n%s", code, out)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Split(string(b), "  - name: ordered must")[0]
	p = writeFile(t, filepath.Dir(p), "ranked.yaml", src)
	out, _, code = runCLI(t, "", "test", p)
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{
		"ok  \t" + p + "/in the sort's order (",
		"FAIL\t" + p + "/the wrong order is a failure (",
		"ok  \t" + p + "/a case may ask for a multiset (",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
