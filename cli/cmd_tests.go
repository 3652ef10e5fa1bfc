package cli

// The `flowrun test` command. (Not cmd_test.go: Go would take that name
// for a test file and leave the command out of the binary.)

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	urfave "github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
)

func testCommand(stdout io.Writer) *urfave.Command {
	return &urfave.Command{
		Name:      "test",
		Usage:     "run a pipeline's test cases",
		ArgsUsage: "FILE... | DIR | DIR/...",
		Description: `Runs the test cases of each pipeline FILE: the cases under its tests: key
(which flowrun run ignores) and those in a sibling NAME_test.yaml. A DIR runs
every pipeline in it, DIR/... every pipeline under it. Each case:

   name:        what it checks (required)
   input:       a list of records (for jsonl, mappings are written as JSON)
   input_file:  or a file of them, relative to the pipeline's directory
   set:         overrides, as --set: {stages.NAME.workers: 4}
   env:         variables for ${VAR} in the pipeline: {LIMIT: "3"}
   expect:      the records expected out (or expect_file)
   expect_dead: [{stage: NAME, record: ...}], the records dead-lettered
   expect_exit: the exit code flowrun run would give (default 0, or 3
                with expect_dead)
   ordered:     compare in order (true) or as a multiset (false); by
                default in order when the pipeline is ordered or ends in
                a sort
   timeout:     how long the case may run before it fails (default 1m)

JSON records compare by value, others byte for byte; a pipeline with
ordered: false compares its records as a multiset, unless its last stage
is a sort, whose order is the output's. One line per case,
ok or FAIL, and for a failure the case's file:line and a diff.`,
		Action: func(c *urfave.Context) error {
			if c.NArg() == 0 {
				return usagef("test takes pipeline FILEs or DIRs, got none")
			}
			return runTests(c.Context, c.Args().Slice(), stdout)
		},
	}
}

// testCase is one case, as written.
type testCase struct {
	Name       string
	Pos        spec.Pos
	Input      []*yaml.Node
	InputFile  string
	Set        []string
	Env        map[string]string
	Expect     []*yaml.Node
	HasExpect  bool
	ExpectFile string
	ExpectDead []deadExpect
	HasDead    bool
	ExpectExit *int
	Timeout    time.Duration
	Ordered    *bool // nil: as the pipeline puts its records out
}

// defaultCaseTimeout bounds a case that says no timeout:, so that a
// pipeline that never ends fails its case instead of hanging the run.
const defaultCaseTimeout = time.Minute

type deadExpect struct {
	Stage  string
	Record *yaml.Node
}

var caseKeys = []string{"name", "input", "input_file", "set", "env", "expect", "expect_file", "expect_dead", "expect_exit", "ordered", "timeout"}

// runTests runs the cases of every pipeline that args name.
func runTests(ctx context.Context, args []string, w io.Writer) error {
	files, err := testFiles(args)
	if err != nil {
		return err
	}
	invalid, failed := false, false
	for _, f := range files {
		began := time.Now()
		cases, err := loadCases(f)
		if err != nil {
			fmt.Fprintf(w, "FAIL\t%s\t[invalid]\n%s\n", f, indent(errorMessage(err)))
			invalid = true
			continue
		}
		if len(cases) == 0 {
			fmt.Fprintf(w, "?   \t%s\t[no test cases]\n", f)
			continue
		}
		nfail := 0
		for _, tc := range cases {
			caseBegan := time.Now()
			problem, err := runCase(ctx, f, tc)
			took := time.Since(caseBegan).Seconds()
			switch {
			case err != nil:
				fmt.Fprintf(w, "FAIL\t%s/%s (%.2fs)\n    %s: %s\n", f, tc.Name, took, tc.Pos, indent(errorMessage(err))[4:])
				invalid = true
				nfail++
			case problem != "":
				fmt.Fprintf(w, "FAIL\t%s/%s (%.2fs)\n    %s: %s\n", f, tc.Name, took, tc.Pos, strings.TrimPrefix(indent(problem), "    "))
				nfail++
			default:
				fmt.Fprintf(w, "ok  \t%s/%s (%.2fs)\n", f, tc.Name, took)
			}
		}
		took := time.Since(began).Seconds()
		if nfail > 0 {
			failed = true
			fmt.Fprintf(w, "FAIL\t%s\t%d of %d cases failed\t%.2fs\n", f, nfail, len(cases), took)
		} else {
			fmt.Fprintf(w, "ok  \t%s\t%s\t%.2fs\n", f, plural(len(cases), "case"), took)
		}
	}
	switch {
	case invalid: // exit 2; what was wrong is on stdout
		return usageError{errShown}
	case failed: // exit 1
		return errShown
	}
	return nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// testFiles expands the arguments into pipeline files: a file as given
// (NAME_test.yaml stands for NAME.yaml), a directory's pipelines, and
// DIR/... every pipeline under DIR.
func testFiles(args []string) ([]string, error) {
	var files []string
	add := func(f string) {
		if !slices.Contains(files, f) {
			files = append(files, f)
		}
	}
	isPipeline := func(name string) bool {
		return (strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")) && !isTestFile(name)
	}
	for _, a := range args {
		if a == "-" {
			// Its cases live beside it (NAME_test.yaml, input_file:): a
			// pipeline on stdin has no beside.
			return nil, usagef("test reads each pipeline from its FILE, not from stdin (-)")
		}
		if dir, ok := strings.CutSuffix(a, "/..."); ok || a == "..." {
			if a == "..." {
				dir = "."
			}
			err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				if !d.IsDir() && isPipeline(d.Name()) {
					add(path)
				}
				return nil
			})
			var pe *fs.PathError
			if errors.As(err, &pe) {
				return nil, usagef("test %s: %s", a, pathProblem(pe, "a directory"))
			} else if err != nil {
				return nil, usagef("test %s: %v", a, err)
			}
			continue
		}
		fi, err := os.Stat(a)
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, usagef("test: %s", pathProblem(pe, "a pipeline file"))
		} else if err != nil {
			return nil, usagef("test: %v", err)
		}
		if fi.IsDir() {
			entries, err := os.ReadDir(a)
			if errors.As(err, &pe) {
				return nil, usagef("test: %s", pathProblem(pe, "a pipeline file"))
			} else if err != nil {
				return nil, usagef("test: %v", err)
			}
			for _, e := range entries {
				if !e.IsDir() && isPipeline(e.Name()) {
					add(filepath.Join(a, e.Name()))
				}
			}
			continue
		}
		if isTestFile(a) {
			a = pipelineOf(a)
		}
		add(a)
	}
	if len(files) == 0 {
		return nil, usagef("test %s: no pipeline files there", strings.Join(args, " "))
	}
	return files, nil
}

func isTestFile(name string) bool {
	return strings.HasSuffix(name, "_test.yaml") || strings.HasSuffix(name, "_test.yml")
}

func pipelineOf(testFile string) string {
	ext := filepath.Ext(testFile)
	return strings.TrimSuffix(testFile, "_test"+ext) + ext
}

func siblingOf(pipeline string) string {
	ext := filepath.Ext(pipeline)
	return strings.TrimSuffix(pipeline, ext) + "_test" + ext
}

// loadCases validates the pipeline (as a run would) and reads its cases
// from its tests: key and its sibling NAME_test.yaml.
func loadCases(file string) ([]testCase, error) {
	var cases []testCase
	var errs spec.Errors
	read := func(path string, top bool) error {
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return fmt.Errorf("%s: %v", path, err)
		}
		if len(doc.Content) == 0 {
			return nil
		}
		root := doc.Content[0]
		list := root
		if root.Kind == yaml.MappingNode {
			list = nil
			for i := 0; i+1 < len(root.Content); i += 2 {
				if root.Content[i].Value == "tests" {
					list = root.Content[i+1]
				}
			}
			if list == nil {
				if !top {
					errs = append(errs, spec.Error{Pos: spec.Pos{File: path, Line: root.Line, Col: root.Column}, Msg: "a test file holds a list of cases, or tests: with one"})
				}
				return nil
			}
		}
		if list.Kind != yaml.SequenceNode {
			errs = append(errs, spec.Error{Pos: spec.Pos{File: path, Line: list.Line, Col: list.Column}, Msg: "tests must be a list of cases, each with name:"})
			return nil
		}
		for _, n := range list.Content {
			tc, e := parseCase(path, n)
			errs = append(errs, e...)
			if len(e) == 0 {
				cases = append(cases, tc)
			}
		}
		return nil
	}
	if err := read(file, true); err != nil {
		return nil, usageError{err}
	}
	if sib := siblingOf(file); fileExists(sib) {
		if err := read(sib, false); err != nil {
			return nil, usageError{err}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	if len(cases) == 0 {
		// Nothing will run it with its cases' env and set: check it as is.
		if _, err := load(file, spec.Options{}, nil); err != nil {
			return nil, err
		}
	}
	return cases, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// parseCase reads one case, with every mistake at its place.
func parseCase(file string, n *yaml.Node) (testCase, spec.Errors) {
	pos := func(n *yaml.Node) spec.Pos { return spec.Pos{File: file, Line: n.Line, Col: n.Column} }
	tc := testCase{Pos: pos(n), Timeout: defaultCaseTimeout}
	var errs spec.Errors
	bad := func(n *yaml.Node, format string, args ...any) {
		errs = append(errs, spec.Error{Pos: pos(n), Msg: fmt.Sprintf(format, args...)})
	}
	if n.Kind != yaml.MappingNode {
		bad(n, "a test case must be a mapping with name:, input: and expect:")
		return tc, errs
	}
	list := func(v *yaml.Node, key string) []*yaml.Node {
		if v.Kind != yaml.SequenceNode {
			bad(v, "%s must be a list of records", key)
			return nil
		}
		return v.Content
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "name":
			tc.Name = v.Value
		case "input":
			tc.Input = list(v, "input")
		case "input_file":
			tc.InputFile = v.Value
		case "expect":
			tc.Expect, tc.HasExpect = list(v, "expect"), true
		case "expect_file":
			tc.ExpectFile = v.Value
		case "set":
			switch v.Kind {
			case yaml.MappingNode:
				for j := 0; j+1 < len(v.Content); j += 2 {
					tc.Set = append(tc.Set, v.Content[j].Value+"="+v.Content[j+1].Value)
				}
			case yaml.SequenceNode:
				for _, s := range v.Content {
					tc.Set = append(tc.Set, s.Value)
				}
			default:
				bad(v, "set must be a mapping of KEY: VALUE, like stages.NAME.workers: 4")
			}
		case "env":
			if v.Kind != yaml.MappingNode {
				bad(v, "env must be a mapping of NAME: VALUE")
				continue
			}
			tc.Env = map[string]string{}
			for j := 0; j+1 < len(v.Content); j += 2 {
				tc.Env[v.Content[j].Value] = v.Content[j+1].Value
			}
		case "expect_dead":
			tc.HasDead = true
			for _, d := range list(v, "expect_dead") {
				var de deadExpect
				if d.Kind != yaml.MappingNode {
					bad(d, "each of expect_dead is {stage: NAME, record: ...}")
					continue
				}
				for j := 0; j+1 < len(d.Content); j += 2 {
					switch d.Content[j].Value {
					case "stage":
						de.Stage = d.Content[j+1].Value
					case "record":
						de.Record = d.Content[j+1]
					default:
						bad(d.Content[j], "unknown key %q in expect_dead (stage, record)", d.Content[j].Value)
					}
				}
				tc.ExpectDead = append(tc.ExpectDead, de)
			}
		case "expect_exit":
			var code int
			if err := v.Decode(&code); err != nil {
				bad(v, "expect_exit must be an exit code, like 3")
				continue
			}
			tc.ExpectExit = &code
		case "ordered":
			var o bool
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" || v.Decode(&o) != nil {
				bad(v, "ordered must be true or false")
				continue
			}
			tc.Ordered = &o
		case "timeout":
			d, err := time.ParseDuration(v.Value)
			if err != nil || d <= 0 || v.Kind != yaml.ScalarNode {
				bad(v, "timeout must be a duration, like 30s")
				continue
			}
			tc.Timeout = d
		default:
			bad(k, "unknown key %q in a test case (one of: %s)", k.Value, strings.Join(caseKeys, ", "))
		}
	}
	if tc.Name == "" {
		bad(n, "a test case needs a name:")
	}
	if tc.Input == nil && tc.InputFile == "" {
		bad(n, "test case %q has no input: or input_file:", tc.Name)
	}
	if !tc.HasExpect && tc.ExpectFile == "" && !tc.HasDead && tc.ExpectExit == nil {
		bad(n, "test case %q expects nothing: give expect:, expect_file:, expect_dead: or expect_exit:", tc.Name)
	}
	return tc, errs
}

// runCase runs one case. problem says how it failed; err is a case that
// could not run (its pipeline invalid with its set and env).
func runCase(ctx context.Context, file string, tc testCase) (problem string, err error) {
	env := func(name string) (string, bool) {
		if v, ok := tc.Env[name]; ok {
			return v, true
		}
		return os.LookupEnv(name)
	}
	p, err := spec.Load(file, spec.Options{Set: tc.Set, Env: env})
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp("", "flowrun-test-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)

	in := filepath.Join(tmp, "input")
	if tc.InputFile != "" {
		in = filepath.Join(p.Dir, tc.InputFile)
		if !fileExists(in) {
			return "", usagef("input_file %s: no such file", in)
		}
	} else {
		var b bytes.Buffer
		for _, n := range tc.Input {
			rec, err := recordText(n, p.Input.Format)
			if err != nil {
				return "", err
			}
			b.WriteString(rec)
			b.WriteByte('\n')
		}
		if err := os.WriteFile(in, b.Bytes(), 0o644); err != nil {
			return "", err
		}
	}
	p.Input.From = in
	p.Output.To = filepath.Join(tmp, "output")
	if p.DeadLetter != "" {
		p.DeadLetter = filepath.Join(tmp, "dead.jsonl")
	}
	caseCtx, cancel := context.WithTimeout(ctx, tc.Timeout)
	defer cancel()
	sum, runErr := runner.Run(caseCtx, p, runner.Options{Stdin: strings.NewReader(""), Stdout: io.Discard})
	if ctx.Err() == nil && errors.Is(caseCtx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("did not end within %v (the case's timeout:)", tc.Timeout), nil
	}
	code := exitCode(&outcome{sum: sum, err: runErr})

	var problems []string
	want := 0
	if tc.HasDead {
		want = ExitPartial
	}
	if tc.ExpectExit != nil {
		want = *tc.ExpectExit
	}
	if code != want {
		msg := fmt.Sprintf("exit %d, want %d", code, want)
		if runErr != nil {
			msg += ": " + errorMessage(&outcome{sum: sum, err: runErr})
		}
		problems = append(problems, msg)
	}
	got, err := os.ReadFile(p.Output.To)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if tc.HasExpect || tc.ExpectFile != "" {
		var expect []string
		if tc.ExpectFile != "" {
			b, err := os.ReadFile(filepath.Join(p.Dir, tc.ExpectFile))
			if err != nil {
				return "", usagef("expect_file: %v", err)
			}
			expect = splitRecords(b)
		} else {
			for _, n := range tc.Expect {
				rec, err := recordText(n, p.Output.Format)
				if err != nil {
					return "", err
				}
				expect = append(expect, rec)
			}
		}
		if d := compareRecords(expect, splitRecords(got), p.Output.Format == "jsonl", !inOrder(p, tc)); d != "" {
			problems = append(problems, "output differs (-expected +received):\n"+d)
		}
	}
	if tc.HasDead {
		var dead []string
		if p.DeadLetter != "" {
			b, _ := os.ReadFile(p.DeadLetter)
			for _, line := range splitRecords(b) {
				var dl runner.DeadLetter
				if err := json.Unmarshal([]byte(line), &dl); err == nil {
					dead = append(dead, dl.Stage+": "+canonical(string(dl.Bytes()), p.Input.Format == "jsonl"))
				}
			}
		}
		var expect []string
		for _, d := range tc.ExpectDead {
			rec := ""
			if d.Record != nil {
				if rec, err = recordText(d.Record, p.Input.Format); err != nil {
					return "", err
				}
			}
			expect = append(expect, d.Stage+": "+canonical(rec, p.Input.Format == "jsonl"))
		}
		if d := compareRecords(expect, dead, false, true); d != "" {
			problems = append(problems, "dead letters differ (-expected +received, as STAGE: RECORD):\n"+d)
		}
	}
	return strings.Join(problems, "\n"), nil
}

// inOrder says whether a case compares its records in order: as it says,
// or when the pipeline keeps the input's order or ends in a sort (whose
// one worker emits the sorted records in order, whatever ordered says).
func inOrder(p *spec.Pipeline, tc testCase) bool {
	if tc.Ordered != nil {
		return *tc.Ordered
	}
	return p.Ordered || len(p.Stages) > 0 && p.Stages[len(p.Stages)-1].Use == "sort"
}

// recordText is a record as the case writes it: a scalar's text, and for
// JSON formats a mapping or list as JSON.
func recordText(n *yaml.Node, format string) (string, error) {
	if n.Kind == yaml.ScalarNode {
		return n.Value, nil
	}
	if format != "jsonl" {
		return "", fmt.Errorf("line %d: a %s record is a line of text, not a mapping or list", n.Line, format)
	}
	v, err := nodeJSON(n)
	if err != nil {
		return "", err
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// jsonNumber is the syntax of a JSON number.
var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// nodeJSON is a YAML value as JSON would hold it, its numbers as written
// (a YAML decoder would round an integer past 64 bits to a float).
func nodeJSON(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 1 {
			return nodeJSON(n.Content[0])
		}
	case yaml.AliasNode:
		return nodeJSON(n.Alias)
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := nodeJSON(c)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			v, err := nodeJSON(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[n.Content[i].Value] = v
		}
		return m, nil
	case yaml.ScalarNode:
		if t := n.ShortTag(); (t == "!!int" || t == "!!float") && jsonNumber.MatchString(n.Value) {
			return json.Number(n.Value), nil
		}
	}
	var v any
	err := n.Decode(&v)
	return v, err
}

func splitRecords(b []byte) []string {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// compareRecords returns a diff of want and got, or "" when they are the
// same: JSON by value, the rest byte for byte, as multisets when
// unordered.
func compareRecords(want, got []string, asJSON, unordered bool) string {
	key := func(s string) string { return canonical(s, asJSON) }
	wk, gk := make([]string, len(want)), make([]string, len(got))
	for i, s := range want {
		wk[i] = key(s)
	}
	for i, s := range got {
		gk[i] = key(s)
	}
	if unordered {
		slices.Sort(wk)
		slices.Sort(gk)
	}
	if reflect.DeepEqual(wk, gk) || len(wk) == 0 && len(gk) == 0 {
		return ""
	}
	return diff(wk, gk)
}

// canonical is one text per JSON value (keys sorted, spaces dropped),
// so that records compare by value; s itself when it is not JSON.
func canonical(s string, asJSON bool) string {
	if !asJSON {
		return s
	}
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if d.Decode(&v) != nil || d.More() {
		return s
	}
	b, _ := json.Marshal(exactNumbers(v))
	return string(b)
}

// exactNumbers writes each number of v one way per value: an integer
// (1, 1.0, 1e0) in full, digit for digit however long, any other number
// as the shortest text of its float64.
func exactNumbers(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = exactNumbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = exactNumbers(e)
		}
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil { // beyond float64's range: compare as written
			return v
		}
		if r, ok := new(big.Rat).SetString(string(v)); ok && r.IsInt() {
			return json.Number(r.Num().String())
		}
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64))
	}
	return v
}

// diff is a line diff of a and b (longest common subsequence), with
// records that match shown for context around the differences.
func diff(a, b []string) string {
	if len(a)*len(b) > 4_000_000 { // too big to align: show both heads
		a, b = a[:min(len(a), 2000)], b[:min(len(b), 2000)]
	}
	// lcs[i][j]: length of the LCS of a[i:] and b[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type line struct {
		op  byte
		rec string
	}
	var lines []line
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			lines = append(lines, line{' ', a[i]})
			i++
			j++
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			lines = append(lines, line{'-', a[i]})
			i++
		default:
			lines = append(lines, line{'+', b[j]})
			j++
		}
	}
	var out strings.Builder
	const context = 2
	skipped := false
	for k, l := range lines {
		near := false
		for d := max(0, k-context); d <= min(len(lines)-1, k+context); d++ {
			near = near || lines[d].op != ' '
		}
		if !near {
			if !skipped {
				out.WriteString("      …\n")
			}
			skipped = true
			continue
		}
		skipped = false
		fmt.Fprintf(&out, "    %c %s\n", l.op, l.rec)
	}
	return strings.TrimRight(out.String(), "\n")
}
