package runner_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

func init() {
	stages.Register(stages.Spec{
		Name: "reltest.flaky",
		Doc: "Fails about 1% of records, chosen by a hash of the record and salt: half of them on every attempt, " +
			"the other half on their first two attempts only.",
		Options: []stages.Option{
			{Name: "salt", Type: stages.Int, Default: 0, Doc: "changes which records fail"},
		},
		Batch: true,
		New: func(c stages.Config) (stages.Stage, error) {
			salt := c.Int("salt")
			tries := map[string]int{}
			return stages.Func(func(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
				switch relFlaky(salt, rec) {
				case relAlwaysFails:
					return out, errors.New("fails for good")
				case relFailsTwice:
					if tries[string(rec)]++; tries[string(rec)] <= 2 {
						return out, fmt.Errorf("attempt %d fails", tries[string(rec)])
					}
				}
				return append(out, rec), nil
			}), nil
		},
	})
}

// The fates reltest.flaky deals a record.
const (
	relPasses = iota
	relAlwaysFails
	relFailsTwice
)

func relFlaky(salt int, rec []byte) int {
	h := fnv.New64a()
	fmt.Fprint(h, salt)
	h.Write(rec)
	n := h.Sum64()
	switch {
	case n%100 != 0:
		return relPasses
	case (n/100)%2 == 0:
		return relAlwaysFails
	}
	return relFailsTwice
}

// TestRelSoak sends 2,000,000 records through a stage that fails 1% of
// them (half for good, retried to the dead-letter file; half twice, then
// passing on the third attempt) and one that skips 1%: every record is
// accounted for, exactly, and the output is exactly the records expected,
// in order.
func TestRelSoak(t *testing.T) {
	defer goleak.VerifyNone(t)
	const n = 2_000_000
	var in, want strings.Builder
	var dead, skipped, retried int64
	for i := 1; i <= n; i++ {
		rec := fmt.Appendf(nil, "r%d", i)
		in.Write(rec)
		in.WriteByte('\n')
		switch relFlaky(1, rec) {
		case relAlwaysFails:
			dead++
			continue
		case relFailsTwice:
			retried++
		}
		if relFlaky(2, rec) != relPasses {
			skipped++
			continue
		}
		want.Write(rec)
		want.WriteByte('\n')
	}
	got, sum, err := runYAML(t, `
ordered: true
dead_letter: $TMP/dead.jsonl
stages:
  - {name: flaky, use: reltest.flaky, workers: 4, with: {salt: 1}, retry: {attempts: 3, backoff: 0s}, on_error: dead-letter}
  - {name: skip, use: reltest.flaky, workers: 2, with: {salt: 2}, on_error: skip}
`, in.String())
	if err != nil {
		t.Fatal(err)
	}
	fl, sk := sum.Stages[0], sum.Stages[1]
	if sum.Input.Records != n || sum.Output.Records+sum.DeadLettered()+sum.Skipped() != n {
		t.Errorf("in %d != out %d + dead %d + skipped %d", sum.Input.Records, sum.Output.Records, sum.DeadLettered(), sum.Skipped())
	}
	if fl.DeadLettered != dead || sk.Skipped != skipped || fl.Retries != 2*dead+2*retried || fl.Errors != 3*dead+2*retried {
		t.Errorf("dead %d skipped %d retries %d errors %d; want %d %d %d %d",
			fl.DeadLettered, sk.Skipped, fl.Retries, fl.Errors, dead, skipped, 2*dead+2*retried, 3*dead+2*retried)
	}
	if got != want.String() {
		t.Errorf("output differs from the %d records expected (got %d lines)", n-dead-skipped, strings.Count(got, "\n"))
	}
	t.Logf("%d records: %d dead-lettered, %d retried to success, %d skipped", n, dead, retried, skipped)
}

// TestRelHostileInput feeds the input decoders what breaks parsers.
func TestRelHostileInput(t *testing.T) {
	defer goleak.VerifyNone(t)
	binary := "\xff\xfe\x00abc\x00\n\x00\n\xc3\x28 \t\n\x1b[31mred\n"
	tests := []struct {
		name, yaml, in string
		want           string // the output, when err is ""
		err            string // a substring of the run's error
	}{
		{"invalid UTF-8 and NUL bytes pass untouched", "stages: [{use: runnertest.fail}]", binary, binary, ""},
		{"a lone CR stays, CR LF loses the CR", "stages: [{use: runnertest.fail}]", "a\rb\r\n\r\r\n", "a\rb\n\r\n", ""},
		{"a lone newline is one empty record", "stages: [{use: runnertest.fail}]", "\n", "\n", ""},
		{"no trailing newline, CR kept off", "stages: [{use: runnertest.fail}]", "a\nb\r", "a\nb\n", ""},
		{"malformed JSON names its line", "input: {format: jsonl}\nstages: [{use: trim}]", "{}\n\n{\"a\":\n[1]\n", "", "line 3: not valid JSON"},
		{"JSON with a NUL names its line", "input: {format: jsonl}\nstages: [{use: trim}]", "{}\n\"\x00\"\n", "", "line 2: not valid JSON"},
		{"CSV row short of fields names its line", "input: {format: csv}\nstages: [{use: trim}]", "a,b\n1,2\n3\n", "", "line 3: 1 fields, the header has 2"},
		{"CSV bare quote names its line", "input: {format: csv}\nstages: [{use: trim}]", "a\n1\nx\"y\"\n", "", "line 3: "},
		{"CSV quote open at the end names its line", "input: {format: csv}\nstages: [{use: trim}]", "a,b\n1,2\n\"open\n", "", "line 3: "},
		{"CSV quote open as the first row", "input: {format: csv, on_error: skip}\nstages: [{use: trim}]", "\"open\n", "", ""},
		{"a line past max_record_size in one read is an error", "input: {max_record_size: 1KiB}\nstages: [{use: trim}]",
			"a\n" + strings.Repeat("x", 2048) + "\nb\n", "", "line 2: record longer than max_record_size (1024 bytes)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := runYAML(t, tt.yaml, tt.in)
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("err %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("err %v, want one containing %q", err, tt.err)
			case tt.err == "" && got != tt.want:
				t.Errorf("output %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRelHugeLine passes a 100 MB line under the default limit.
func TestRelHugeLine(t *testing.T) {
	defer goleak.VerifyNone(t)
	big := bytes.Repeat([]byte("0123456789"), 10<<20)
	in := "a\n" + string(big) + "\nb"
	got, sum, err := runYAML(t, "stages: [{use: runnertest.fail}]", in)
	if err != nil {
		t.Fatal(err)
	}
	if got != in+"\n" || sum.Output.Records != 3 {
		t.Errorf("got %d bytes, %d records; want %d bytes, 3 records", len(got), sum.Output.Records, len(in)+1)
	}
}

// TestRelTenThousandStages runs, not just parses, a pipeline of 10,000
// stages.
func TestRelTenThousandStages(t *testing.T) {
	defer goleak.VerifyNone(t)
	var b strings.Builder
	b.WriteString("ordered: true\nstages:\n")
	for i := range 10000 {
		use := "trim"
		if i%2 == 1 {
			use = "upper"
		}
		fmt.Fprintf(&b, "  - {name: s%d, use: %s}\n", i, use)
	}
	p, err := spec.Parse("t.yaml", []byte(b.String()), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	sum, err := runner.Run(context.Background(), p, runner.Options{Stdin: strings.NewReader(" a \nb\n c"), Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if out.String() != "A\nB\nC\n" || len(sum.Stages) != 10000 || sum.Stages[9999].Out != 3 {
		t.Errorf("out %q, %d stages", out.String(), len(sum.Stages))
	}
}
