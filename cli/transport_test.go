package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// brokerStats is what these tests read of --stats.
type brokerStats struct {
	Output struct{ Records int64 }
	Stages []struct {
		Name                              string
		In, Out, Errors, Retries, Skipped int64
		DeadLettered                      int64 `json:"dead_lettered"`
		Remote                            bool
		Redelivered                       int64
	}
}

// TestBrokerSameOutput runs pipelines of pipelines/ and a few of its own
// through --broker embedded and without, in this process: the output is
// the same (byte for byte when ordered, the same multiset otherwise), and
// so are the counts.
func TestBrokerSameOutput(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	var many strings.Builder
	for i := 1; i <= 5000; i++ {
		fmt.Fprintf(&many, " line %d \n", i)
		if i%7 == 0 {
			fmt.Fprintf(&many, "\n")
		}
	}
	var jsonl strings.Builder
	for i := 1; i <= 3000; i++ {
		if i%500 == 0 {
			fmt.Fprintf(&jsonl, "{\"n\": %d, \"bad\": true}\n", i)
			continue
		}
		fmt.Fprintf(&jsonl, "{\"n\": %d, \"words\": \"a b c\"}\n", i)
	}
	tests := []struct {
		name, file, input string
		ordered           bool
		args              []string
		code              int // of both runs, when not 0 or 3
	}{
		{"clean", "../pipelines/clean.yaml", "../testdata/examples/names.txt", true, nil, 0},
		{"logs", "../pipelines/logs.yaml", "../testdata/examples/app.log", true, nil, 0},
		{"jsonl", "../pipelines/jsonl.yaml", "../testdata/examples/users.jsonl", true, nil, 0},
		{"csv_to_jsonl", "../pipelines/csv_to_jsonl.yaml", "../testdata/examples/people.csv", true, nil, 0},
		{"sales", "../pipelines/sales.yaml", "../testdata/examples/orders.jsonl", true, nil, 0},
		{"many workers, fan-out, unordered", writeFile(t, dir, "fan.yaml", `name: fan
stages:
  - use: trim
    workers: 3
  - use: grep
    with: {pattern: '^$', invert: true}
  - use: split
    with: {sep: " "}
    workers: 4
  - use: upper
`), writeFile(t, dir, "many.txt", many.String()), false, nil, 0},
		{"ordered fan-out, one record a message", writeFile(t, dir, "ofan.yaml", `name: ofan
ordered: true
stages:
  - use: split
    with: {sep: " "}
    workers: 3
  - use: sleep
    with: {duration: 0s}
    workers: 4
`), writeFile(t, dir, "many2.txt", many.String()), true, nil, 0},
		{"ordered, a waiting stage then a cheap fan-out gathering its batches", writeFile(t, dir, "gather.yaml", `name: gather
ordered: true
stages:
  - use: sleep
    with: {duration: 0s}
    workers: 4
  - use: split
    with: {sep: " "}
  - use: grep
    with: {pattern: '^$', invert: true}
    workers: 2
`), writeFile(t, dir, "many3.txt", many.String()), true, nil, 0},
		{"dead letters and skips", writeFile(t, dir, "dl.yaml", `name: dl
input: {format: jsonl}
output: {format: jsonl}
dead_letter: `+filepath.Join(dir, "dl-DL.jsonl")+`
stages:
  - use: filter
    with: {expr: 'n % 3 != 0'}
    workers: 2
  - name: words
    use: map
    with: {fields: {w: 'split(words, " ")'}}
    on_error: dead-letter
    retry: {attempts: 2, backoff: 1ms}
    workers: 2
`), writeFile(t, dir, "in.jsonl", jsonl.String()), false, nil, 0},
		{"a record fails the run", writeFile(t, dir, "fail.yaml", `name: fail
input: {format: jsonl}
output: {format: jsonl}
ordered: true
stages:
  - name: words
    use: map
    with: {fields: {w: 'split(words, " ")'}}
    workers: 3
  - use: pick
    with: {fields: [n, w]}
`), writeFile(t, dir, "in2.jsonl", jsonl.String()), true, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var outs [2]string
			var sums [2]brokerStats
			var dls [2]string
			for i, broker := range []bool{false, true} {
				out := filepath.Join(dir, fmt.Sprintf("%s-%d.out", strings.ReplaceAll(tt.name, " ", "_"), i))
				stats := out + ".stats"
				args := []string{"run", "-q", "--progress", "none", "-i", tt.input, "-o", out, "--stats", stats}
				if broker {
					args = append(args, "--broker", "embedded")
				}
				args = append(append(args, tt.args...), tt.file)
				_, stderr, code := runCLI(t, "", args...)
				if tt.code != 0 && code != tt.code || tt.code == 0 && code != 0 && code != 3 {
					t.Fatalf("broker %v: exit %d: %s", broker, code, stderr)
				}
				if tt.code == 1 && !strings.Contains(stderr, `stage "words" record 500`) {
					t.Errorf("broker %v: the failure is not record 500's:\n%s", broker, stderr)
				}
				b, err := os.ReadFile(out)
				if err != nil {
					t.Fatal(err)
				}
				outs[i] = string(b)
				s, err := os.ReadFile(stats)
				if err != nil {
					t.Fatal(err)
				}
				if err := json.Unmarshal(s, &sums[i]); err != nil {
					t.Fatal(err)
				}
				if d, err := os.ReadFile(filepath.Join(dir, "dl-DL.jsonl")); err == nil {
					dls[i] = string(d)
					os.Remove(filepath.Join(dir, "dl-DL.jsonl"))
				}
			}
			if outs[0] == "" {
				t.Fatal("the in-memory run wrote nothing: the test proves nothing")
			}
			if tt.ordered {
				if outs[0] != outs[1] {
					t.Errorf("through the broker the output differs:\n%s\nwithout:\n%s", head(outs[1]), head(outs[0]))
				}
			} else if a, b := lineSet(outs[0]), lineSet(outs[1]); !slices.Equal(a, b) {
				t.Errorf("through the broker %d records, without %d; or they differ", len(b), len(a))
			}
			if strings.HasPrefix(tt.name, "dead letters") && dls[0] == "" {
				t.Fatal("no dead letters: the test proves nothing")
			}
			if !slices.Equal(lineSet(dls[0]), lineSet(dls[1])) {
				t.Errorf("dead letters through the broker:\n%s\nwithout:\n%s", head(dls[1]), head(dls[0]))
			}
			remote := 0
			for k := range sums[0].Stages {
				a, b := sums[0].Stages[k], sums[1].Stages[k]
				if b.Remote {
					remote++
				}
				if tt.code != 0 {
					continue // how far the stages got past the failure is not fixed, with workers or without
				}
				if a.In != b.In || a.Out != b.Out || a.Errors != b.Errors || a.Retries != b.Retries || a.Skipped != b.Skipped || a.DeadLettered != b.DeadLettered {
					t.Errorf("stage %s: through the broker %+v, without %+v", a.Name, b, a)
				}
			}
			if remote == 0 {
				t.Error("no stage ran on the broker")
			}
			if sums[0].Output.Records != sums[1].Output.Records && tt.code == 0 {
				t.Errorf("output records: through the broker %d, without %d", sums[1].Output.Records, sums[0].Output.Records)
			}
		})
	}
}

func lineSet(s string) []string {
	l := strings.Split(s, "\n")
	slices.Sort(l)
	return l
}

func head(s string) string {
	if len(s) > 600 {
		return s[:600] + "…"
	}
	return s
}
