package spec_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flowrun/spec"
)

// specGood parses testdata/spec/good/name.yaml with the test environment.
func specGood(t *testing.T, name string, sets ...string) *spec.Pipeline {
	t.Helper()
	file := filepath.Join("..", "testdata", "spec", "good", name+".yaml")
	p, err := spec.Load(file, spec.Options{Env: specEnv, Set: sets})
	if err != nil {
		t.Fatalf("Load(%s): %v", file, err)
	}
	return p
}

func specStage(t *testing.T, p *spec.Pipeline, name string) spec.Stage {
	t.Helper()
	for _, st := range p.Stages {
		if st.Name == name {
			return st
		}
	}
	t.Fatalf("no stage %q in %v", name, p.Stages)
	return spec.Stage{}
}

func specEqual(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

func TestGood(t *testing.T) {
	tests := []struct {
		file  string
		sets  []string
		check func(t *testing.T, p *spec.Pipeline)
	}{
		{"minimal", nil, func(t *testing.T, p *spec.Pipeline) {
			specEqual(t, "Name", p.Name, "minimal")
			specEqual(t, "File", p.File, filepath.Join("..", "testdata", "spec", "good", "minimal.yaml"))
			specEqual(t, "Dir", p.Dir, filepath.Join("..", "testdata", "spec", "good"))
			specEqual(t, "Input", p.Input, spec.Input{From: "stdin", Format: "lines", MaxRecordSize: spec.DefaultMaxRecordSize, OnError: spec.Fail})
			specEqual(t, "Output", p.Output, spec.Output{To: "stdout", Format: "lines"})
			specEqual(t, "Ordered", p.Ordered, false)
			specEqual(t, "ReorderWindow", p.ReorderWindow, 0)
			specEqual(t, "DeadLetter", p.DeadLetter, "")
			st := specStage(t, p, "upper")
			specEqual(t, "Use", st.Use, "upper")
			specEqual(t, "Workers", st.Workers, spec.DefaultWorkers)
			specEqual(t, "Buffer", st.Buffer, spec.DefaultBuffer)
			specEqual(t, "Timeout", st.Timeout, time.Duration(0))
			specEqual(t, "Retry", st.Retry, spec.Retry{Attempts: 1, Backoff: 100 * time.Millisecond, MaxBackoff: 30 * time.Second})
			specEqual(t, "OnError", st.OnError, spec.Fail)
			specEqual(t, "Spec.Name", st.Spec.Name, "upper")
			specEqual(t, "Config.Stage", st.Config.Stage, "upper")
			specEqual(t, "Pos", st.Pos, spec.Pos{File: p.File, Line: 2, Col: 5})
		}},
		{"full", nil, func(t *testing.T, p *spec.Pipeline) {
			specEqual(t, "Name", p.Name, "thumbnails")
			specEqual(t, "Input", p.Input, spec.Input{From: "/home/ann/in/*.jsonl", Format: "jsonl", MaxRecordSize: 64 << 10, OnError: spec.DeadLetter, Pos: spec.Pos{File: p.File, Line: 3, Col: 16}})
			specEqual(t, "Output", p.Output, spec.Output{To: "out.csv", Format: "csv", Pos: spec.Pos{File: p.File, Line: 4, Col: 14}})
			specEqual(t, "Ordered", p.Ordered, true)
			specEqual(t, "ReorderWindow", p.ReorderWindow, 4096)
			specEqual(t, "DeadLetter", p.DeadLetter, "failed.jsonl")
			specEqual(t, "DeadLetterPos", p.DeadLetterPos, spec.Pos{File: p.File, Line: 7, Col: 14})
			specEqual(t, "stages", len(p.Stages), 3)
			f := specStage(t, p, "fetch")
			specEqual(t, "Workers", f.Workers, 4)
			specEqual(t, "Buffer", f.Buffer, 64)
			specEqual(t, "Timeout", f.Timeout, 10*time.Second)
			specEqual(t, "Config.Timeout", f.Config.Timeout, 10*time.Second)
			specEqual(t, "Retry", f.Retry, spec.Retry{Attempts: 3, Backoff: 200 * time.Millisecond, MaxBackoff: 5 * time.Second})
			specEqual(t, "OnError", f.OnError, spec.DeadLetter)
			specEqual(t, "duration", f.Config.Duration("duration"), 90*time.Second)
			specEqual(t, "jitter", f.Config.Duration("jitter"), 250*time.Millisecond)
			specEqual(t, "Config.Dir", f.Config.Dir, p.Dir)
			g := specStage(t, p, "keep-errors")
			specEqual(t, "pattern", g.Config.String("pattern"), "^err")
			specEqual(t, "invert", g.Config.Bool("invert"), true)
			specEqual(t, "upper.OnError", specStage(t, p, "upper").OnError, spec.Skip)
		}},
		{"options", nil, func(t *testing.T, p *spec.Pipeline) {
			c := specStage(t, p, "spectest.all").Config
			specEqual(t, "mode", c.String("mode"), "slow")
			specEqual(t, "count", c.Int("count"), 7)
			specEqual(t, "ratio", c.Float("ratio"), 0.25)
			specEqual(t, "loud", c.Bool("loud"), true)
			specEqual(t, "wait", c.Duration("wait"), 2*time.Second)
			// Expansion is textual: a command substitution stays as written.
			specEqual(t, "command", c.Strings("command"), []string{"python3", "/home/ann/score.py", "$(rm -rf /)", "${LITERAL}", "$(rm -rf /)"})
			specEqual(t, "env", c.Map("env"), map[string]string{"LANG": "C", "HOME": "/home/ann", "EMPTY": "fallback"})
			one := specStage(t, p, "one-command").Config
			specEqual(t, "command", one.Strings("command"), []string{"sort"})
			specEqual(t, "text", one.String("text"), "")
			specEqual(t, "text set", one.Has("text"), true)
			specEqual(t, "mode default", one.String("mode"), "fast")
			specEqual(t, "mode set", one.Has("mode"), false)
			specEqual(t, "replacement", specStage(t, p, "empty-replacement").Config.String("replacement"), "")
		}},
		{"dotted-names", nil, func(t *testing.T, p *spec.Pipeline) {
			specEqual(t, "MaxRecordSize", p.Input.MaxRecordSize, 1<<30)
			specEqual(t, "DeadLetter", p.DeadLetter, "dead.jsonl")
			specEqual(t, "a.b.c workers", specStage(t, p, "a.b.c").Workers, 2)
			// A backoff above the default cap raises the cap.
			specEqual(t, "Retry", specStage(t, p, "a_b-c").Retry, spec.Retry{Attempts: 1, Backoff: time.Minute, MaxBackoff: time.Minute})
		}},
		{"dotted-names", []string{
			"stages.a.b.c.workers=3", "stages.a.b.workers=5", "stages.a_b-c.retry.attempts=4",
			"input.format=csv", "output.to=${HOME_DIR}/out", "ordered=true", "dead_letter=",
		}, func(t *testing.T, p *spec.Pipeline) {
			specEqual(t, "a.b.c workers", specStage(t, p, "a.b.c").Workers, 3)
			specEqual(t, "a.b workers", specStage(t, p, "a.b").Workers, 5)
			specEqual(t, "attempts", specStage(t, p, "a_b-c").Retry.Attempts, 4)
			specEqual(t, "Input.Format", p.Input.Format, "csv")
			specEqual(t, "Output.To", p.Output.To, "/home/ann/out")
			specEqual(t, "Ordered", p.Ordered, true)
			specEqual(t, "DeadLetter", p.DeadLetter, "")
		}},
		{"full", []string{"stages.keep-errors.with.pattern=x+", "stages.fetch.with.duration=1s", "stages.upper.with.x=1=2"}, nil},
		{"options", []string{"stages.spectest.all.with.command=ls"}, func(t *testing.T, p *spec.Pipeline) {
			specEqual(t, "command", specStage(t, p, "spectest.all").Config.Strings("command"), []string{"ls"})
		}},
		// A mapping option is reached entry by entry: an entry the file
		// has is replaced, a new one added, a stage without the option
		// gets it.
		{"options", []string{"stages.spectest.all.with.env.HOME=/root", "stages.spectest.all.with.env.NEW.DOTTED=${WORKERS}", "stages.one-command.with.env.X=1"}, func(t *testing.T, p *spec.Pipeline) {
			specEqual(t, "env", specStage(t, p, "spectest.all").Config.Map("env"), map[string]string{"LANG": "C", "HOME": "/root", "EMPTY": "fallback", "NEW.DOTTED": "4"})
			specEqual(t, "env of one-command", specStage(t, p, "one-command").Config.Map("env"), map[string]string{"X": "1"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file+"/"+strings.Join(tt.sets, ","), func(t *testing.T) {
			if tt.check == nil {
				// A --set that must fail: upper takes no options.
				_, err := spec.Load(filepath.Join("..", "testdata", "spec", "good", tt.file+".yaml"), spec.Options{Env: specEnv, Set: tt.sets})
				got := specErrorText(t, err)
				want := "--set stages.upper.with.x=1=2: stage upper takes no options, not \"x\"\n"
				if got != want {
					t.Errorf("got %q, want %q", got, want)
				}
				return
			}
			tt.check(t, specGood(t, tt.file, tt.sets...))
		})
	}
}

func TestParseInline(t *testing.T) {
	tests := []struct {
		name, yaml, want string // want: the errors, or "" for none
	}{
		{"flow style", `{stages: [{use: upper}, {use: lower, workers: 2}]}`, ""},
		{"lone dollars", "name: a$b$\nstages: [{use: upper}]\n", ""},
		{"default with colons", "name: ${NOPE:-a:-b}\nstages: [{use: upper}]\n", ""},
		{"crlf", "stages:\r\n  - use: upper\r\n", ""},
		{"quoted numbers", "stages:\n  - use: upper\n    workers: \"3\"\n", ""},
		{"env default when empty", "stages:\n  - use: upper\n    workers: ${EMPTY:-2}\n", ""},
		{"size with space", "input: {max_record_size: 16 MiB}\nstages: [{use: upper}]\n", ""},
		{"size overflow", "input: {max_record_size: 99999999999999GiB}\nstages: [{use: upper}]\n",
			"x.yaml:1:26: max_record_size: size \"99999999999999GiB\" is too large\n"},
		{"unknown anchor", "stages: *nope\n", "x.yaml:1:1: YAML syntax: unknown anchor 'nope' referenced\n"},
		{"merge key", "base: &b {workers: 2}\nstages:\n  - <<: *b\n    use: upper\n",
			"x.yaml:3:9: YAML aliases (*b) are not supported: write the value out\n"},
		{"invalid utf-8", "stages: [{use: \xff}]\n", "x.yaml:1:1: YAML syntax: invalid leading UTF-8 octet\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := spec.Parse("x.yaml", []byte(tt.yaml), spec.Options{Env: specEnv})
			if got := specErrorText(t, err); got != tt.want {
				t.Fatalf("errors:\n%s\nwant:\n%s", got, tt.want)
			}
			if err == nil && (p == nil || len(p.Stages) == 0) {
				t.Fatalf("no error and no stages: %+v", p)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		_, err := spec.Load(filepath.Join(t.TempDir(), "nope.yaml"), spec.Options{})
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("err = %v, want a not-exist error", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "big.yaml")
		data := []byte("stages: [{use: upper}]\n#" + strings.Repeat("x", spec.MaxFileSize) + "\n")
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := spec.Load(file, spec.Options{})
		want := file + ":1:1: the file is larger than 16 MiB: not a pipeline\n"
		if got := specErrorText(t, err); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
	t.Run("environment", func(t *testing.T) {
		t.Setenv("SPECTEST_WORKERS", "6")
		file := filepath.Join(t.TempDir(), "env.yaml")
		if err := os.WriteFile(file, []byte("stages: [{use: upper, workers: \"$"+"{SPECTEST_WORKERS}\"}]\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := spec.Load(file, spec.Options{})
		if err != nil {
			t.Fatal(err)
		}
		specEqual(t, "Workers", p.Stages[0].Workers, 6)
		specEqual(t, "Name", p.Name, "env")
	})
}

func TestHostile(t *testing.T) {
	tests := []struct {
		name string
		data string
		want string
	}{
		{"many tokens", "stages: [" + strings.Repeat("a,", spec.MaxTokens) + "]\n",
			"x.yaml:1:1: the file holds more than 500000 commas, colons and lines: not a pipeline\n"},
		{"deep flow", "stages: " + strings.Repeat("[", 20000) + strings.Repeat("]", 20000) + "\n",
			"x.yaml:1:1: YAML syntax: exceeded max depth of 10000\n"},
		{"deep block", "stages:\n" + specDeepBlock(100), "x.yaml:32:63: nested more than 32 levels deep\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := spec.Parse("x.yaml", []byte(tt.data), spec.Options{})
			if got := specErrorText(t, err); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// specDeepBlock returns n nested block mappings.
func specDeepBlock(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "%sk%d:\n", strings.Repeat("  ", i+1), i)
	}
	return b.String()
}

// TestManyStages parses 10,000 stages, and --set reaches the last one.
func TestManyStages(t *testing.T) {
	var b strings.Builder
	b.WriteString("stages:\n")
	for i := range 10000 {
		fmt.Fprintf(&b, "  - name: s%d\n    use: grep\n    workers: 2\n    with: {pattern: \"x%d\"}\n", i, i)
	}
	p, err := spec.Parse("many.yaml", []byte(b.String()), spec.Options{Set: []string{"stages.s9999.workers=3"}})
	if err != nil {
		t.Fatal(err)
	}
	specEqual(t, "stages", len(p.Stages), 10000)
	specEqual(t, "last workers", p.Stages[9999].Workers, 3)
	specEqual(t, "last pattern", p.Stages[9999].Config.String("pattern"), "x9999")
}

// input.with and output.with are a broker connector's options, kept as
// written (with ${VAR} expanded) for the connector, which lets them
// override the URL's query.
func TestConnectorWith(t *testing.T) {
	yaml := "input:\n  from: amqp://localhost/?queue=jobs&prefetch=2\n  with: {prefetch: 16, declare: '${DECLARE:-false}'}\n" +
		"output: {to: 'redis://localhost/0?list=done', with: {push: lpush}}\nstages: [{use: upper}]\n"
	p, err := spec.Parse("p.yaml", []byte(yaml), spec.Options{Env: func(string) (string, bool) { return "", false }})
	if err != nil {
		t.Fatal(err)
	}
	specEqual(t, "Input.With", p.Input.With, map[string]string{"prefetch": "16", "declare": "false"})
	specEqual(t, "Input.WithPos[prefetch]", p.Input.WithPos["prefetch"], spec.Pos{File: "p.yaml", Line: 3, Col: 10})
	specEqual(t, "Output.With", p.Output.With, map[string]string{"push": "lpush"})
}
