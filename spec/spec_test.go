package spec_test

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/flowrun/flowrun/connect/all" // input.with and output.with are checked against the connectors' specs
	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func init() {
	newNop := func(stages.Config) (stages.Stage, error) {
		return stages.Func(func(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
			return append(out, rec), nil
		}), nil
	}
	stages.Register(stages.Spec{
		Name:       "spectest.one",
		Doc:        "Needs to see every record: one worker at most.",
		MaxWorkers: 1,
		New:        newNop,
	})
	stages.Register(stages.Spec{
		Name: "spectest.all",
		Doc:  "Has an option of every type.",
		Options: []stages.Option{
			{Name: "mode", Type: stages.String, Default: "fast", Enum: []string{"fast", "slow"}, Doc: "how"},
			{Name: "count", Type: stages.Int, Default: 1, Doc: "how many"},
			{Name: "ratio", Type: stages.Float, Default: 0.5, Doc: "how much"},
			{Name: "loud", Type: stages.Bool, Default: false, Doc: "whether"},
			{Name: "wait", Type: stages.Duration, Default: time.Second, Doc: "how long"},
			{Name: "command", Type: stages.Strings, Doc: "what to run"},
			{Name: "env", Type: stages.StringMap, Doc: "its environment"},
			{Name: "text", Type: stages.String, Doc: "anything"},
		},
		New: newNop,
	})
	stages.Register(stages.Spec{
		Name: "spectest.check",
		Doc:  "Checks its query: bad is an option error, plain a plain error, panic a panic.",
		Options: []stages.Option{
			{Name: "query", Type: stages.String, Default: "ok", Doc: "the query"},
			{Name: "other", Type: stages.String, Doc: "blamed when the query is blame-other"},
		},
		Check: func(c stages.Config) error {
			switch c.String("query") {
			case "bad":
				return stages.OptionErrorf("query", "cannot compile %q", "bad")
			case "blame-other":
				return stages.OptionErrorf("other", "needed when query is blame-other")
			case "plain":
				return errors.New("not an option error")
			case "panic":
				panic("check exploded")
			}
			return nil
		},
		New: newNop,
	})
}

// specEnv is the environment every test in this file sees.
func specEnv(name string) (string, bool) {
	v, ok := map[string]string{
		"HOME_DIR": "/home/ann",
		"WORKERS":  "4",
		"EMPTY":    "",
		"PATTERN":  "^err",
		"CMD":      "$(rm -rf /)",
	}[name]
	return v, ok
}

// specErrorText returns err as the golden files hold it, one problem a
// line, or "" for nil; it fails the test on an error that is not Errors.
func specErrorText(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var es spec.Errors
	if !errors.As(err, &es) {
		t.Fatalf("error is %T, not spec.Errors: %v", err, err)
	}
	if len(es) == 0 {
		t.Fatal("empty spec.Errors returned as an error")
	}
	return es.Error() + "\n"
}

// TestBad parses every testdata/spec/bad/*.yaml, with the --set overrides
// in the .set file next to it if any, and compares the errors with the
// .err file.
func TestBad(t *testing.T) {
	files, err := filepath.Glob("../testdata/spec/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad pipelines: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var sets []string
			if s, err := os.ReadFile(strings.TrimSuffix(file, ".yaml") + ".set"); err == nil {
				sets = strings.Split(strings.TrimRight(string(s), "\n"), "\n")
			}
			p, err := spec.Parse(filepath.Base(file), data, spec.Options{Env: specEnv, Set: sets})
			if err == nil {
				t.Fatalf("parsed without error: %+v", p)
			}
			if p != nil {
				t.Errorf("got a Pipeline along with the error")
			}
			specGolden(t, strings.TrimSuffix(file, ".yaml")+".err", specErrorText(t, err))
		})
	}
}

// specGolden compares got with the golden file, or rewrites it with
// -update.
func specGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if got != string(want) {
		t.Errorf("differs from %s\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}
