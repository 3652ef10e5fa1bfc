package runner_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
)

// The benchmarks here measure the runner's hot path through its public
// API, as the CLI drives it: per-record overhead per stage, the reorder
// buffer (ordered vs unordered), workers, and the W1 and W2 pipelines of
// bench/ for profiling:
//
//	go test ./runner -run '^$' -bench . -benchmem
//	go test ./runner -run '^$' -bench 'BenchmarkW1$' -cpuprofile w1.prof && go tool pprof -top w1.prof

// benchLines returns n W1 lines ("rec-000123 alpha beta"), padded with
// blanks for trim when padded, every tenth one carrying the word drop.
func benchLines(n int, padded bool) []byte {
	words := []string{"alpha", "beta", "gamma", "delta", "echo"}
	var b bytes.Buffer
	for i := range n {
		if padded {
			b.WriteString("  ")
		}
		fmt.Fprintf(&b, "rec-%06d %s ", i, words[i%len(words)])
		if i%10 == 3 {
			b.WriteString("drop")
		} else {
			b.WriteString(words[(i/5)%len(words)])
		}
		if padded {
			b.WriteString("  ")
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// benchJSON returns n W2 records; every other one is active and scores
// are spread over 0..99.
func benchJSON(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"id":%d,"name":"name-%d","score":%d.5,"tags":["a","b"],"active":%t}`+"\n",
			i, i%1000, (i*37)%100, i%2 == 0)
	}
	return b.Bytes()
}

// benchPassThrough returns a pipeline of n trim stages with workers each.
func benchPassThrough(n, workers int, ordered bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "name: pass\nordered: %t\nstages:\n", ordered)
	for i := range n {
		fmt.Fprintf(&b, "  - {name: t%d, use: trim, workers: %d}\n", i, workers)
	}
	return b.String()
}

const benchW1 = `
name: w1
ordered: true
stages:
  - use: trim
  - use: upper
  - use: grep
    with: {pattern: DROP, invert: true}
`

const benchW2 = `
name: w2
input:  {format: jsonl}
output: {format: jsonl}
ordered: true
stages:
  - use: filter
    with: {expr: "active && score > 50"}
    workers: 2
  - use: map
    with:
      fields: {name_upper: "upper(name)"}
    workers: 2
`

// benchJSONL passes JSON records through unchanged: what it costs is the
// JSONL reader and writer, which check that every record is JSON.
const benchJSONL = `
name: jsonl
input:  {format: jsonl}
output: {format: jsonl}
ordered: true
stages:
  - use: trim
`

// benchRun runs the pipeline in yaml over data once per iteration and
// reports records/s and ns/record, records being the input's lines.
func benchRun(b *testing.B, yaml string, data []byte) {
	// The benchmark framework runs its own goroutines: ignore those alive now.
	defer goleak.VerifyNone(b, goleak.IgnoreCurrent())
	p, err := spec.Parse("bench.yaml", []byte(yaml), spec.Options{})
	if err != nil {
		b.Fatal(err)
	}
	records := bytes.Count(data, []byte("\n"))
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		if _, err := runner.Run(ctx, p, runner.Options{Stdin: bytes.NewReader(data), Stdout: io.Discard}); err != nil {
			b.Fatal(err)
		}
	}
	total := float64(records) * float64(b.N)
	b.ReportMetric(total/b.Elapsed().Seconds(), "records/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/total, "ns/record")
}

// BenchmarkPassThrough measures what a stage costs per record when it
// does no work: trim on records that are already trimmed.
func BenchmarkPassThrough(b *testing.B) {
	data := benchLines(20000, false)
	for _, stages := range []int{1, 3, 10} {
		for _, ordered := range []bool{true, false} {
			for _, workers := range []int{1, 2} {
				name := "stages=" + strconv.Itoa(stages) + "/ordered=" + strconv.FormatBool(ordered) + "/workers=" + strconv.Itoa(workers)
				b.Run(name, func(b *testing.B) {
					benchRun(b, benchPassThrough(stages, workers, ordered), data)
				})
			}
		}
	}
}

// BenchmarkW1 is workload W1 (trim, upper, grep -v DROP) in-process.
func BenchmarkW1(b *testing.B) {
	benchRun(b, benchW1, benchLines(100000, true))
}

// BenchmarkW2 is workload W2 (filter, map on JSON) in-process.
func BenchmarkW2(b *testing.B) {
	benchRun(b, benchW2, benchJSON(20000))
}

// BenchmarkJSONL is W2's records through a stage that changes nothing,
// JSONL in and out: the runner's JSON input and output path alone.
func BenchmarkJSONL(b *testing.B) {
	benchRun(b, benchJSONL, benchJSON(20000))
}

// TestBenchPipelines checks that the benchmarked pipelines do the work
// they are named for, so that a fast benchmark is not a broken one.
func TestBenchPipelines(t *testing.T) {
	tests := []struct {
		name, yaml string
		in         []byte
		want       func(out string) error
	}{
		{"w1", benchW1, benchLines(50, true), func(out string) error {
			got := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(got) != 45 {
				return fmt.Errorf("%d lines out, want 45", len(got))
			}
			if got[0] != "REC-000000 ALPHA ALPHA" {
				return fmt.Errorf("first line %q, want %q", got[0], "REC-000000 ALPHA ALPHA")
			}
			if strings.Contains(out, "DROP") {
				return fmt.Errorf("output keeps a DROP line: %q", out)
			}
			return nil
		}},
		{"w2", benchW2, benchJSON(4), func(out string) error {
			// Record 0: active, score 0.5; 1: inactive; 2: active, 74.5; 3: inactive.
			want := `{"id":2,"name":"name-2","score":74.5,"tags":["a","b"],"active":true,"name_upper":"NAME-2"}` + "\n"
			if out != want {
				return fmt.Errorf("output %q, want %q", out, want)
			}
			return nil
		}},
		{"jsonl", benchJSONL, benchJSON(300), func(out string) error {
			if want := string(benchJSON(300)); out != want {
				return fmt.Errorf("output differs from input: %d bytes, want %d", len(out), len(want))
			}
			return nil
		}},
		{"pass-through", benchPassThrough(10, 2, true), benchLines(300, false), func(out string) error {
			if want := string(benchLines(300, false)); out != want {
				return fmt.Errorf("output differs from input: %d bytes, want %d", len(out), len(want))
			}
			return nil
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)
			p, err := spec.Parse("bench.yaml", []byte(tt.yaml), spec.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if _, err := runner.Run(context.Background(), p, runner.Options{Stdin: bytes.NewReader(tt.in), Stdout: &out}); err != nil {
				t.Fatal(err)
			}
			if err := tt.want(out.String()); err != nil {
				t.Error(err)
			}
		})
	}
}
