package table_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowrun/flowrun/cli"
	"github.com/flowrun/flowrun/stages"
)

// newStage makes one worker's Stage of the registered stage name, checking
// its options as the spec package does.
func newStage(t testing.TB, name string, with map[string]any) stages.Stage {
	t.Helper()
	spec, ok := stages.Lookup(name)
	if !ok {
		t.Fatalf("stage %q is not registered", name)
	}
	c, err := stages.NewConfig(spec, name, t.TempDir(), with)
	if err == nil && spec.Check != nil {
		err = spec.Check(c)
	}
	if err != nil {
		t.Fatalf("%s %v: %v", name, with, err)
	}
	st, err := spec.New(c)
	if err != nil {
		t.Fatalf("%s %v: New: %v", name, with, err)
	}
	t.Cleanup(func() {
		if c, ok := st.(interface{ Close() error }); ok {
			c.Close()
		}
	})
	return st
}

// runStage sends every record through st the way the runner does (the
// record's buffer is overwritten once Process returns), flushes it, and
// returns the output, failing t on an error.
func runStage(t testing.TB, st stages.Stage, recs ...string) []string {
	t.Helper()
	var all []string
	var buf []byte
	for i, rec := range recs {
		buf = append(buf[:0], rec...)
		out, err := st.Process(context.Background(), buf, nil)
		if err != nil {
			t.Fatalf("record %d %q: %v", i+1, rec, err)
		}
		all = append(all, texts(out)...)
		for j := range buf {
			buf[j] = '#'
		}
	}
	return append(all, flushAll(t, st)...)
}

// flushAll flushes a Flusher until it has nothing more, as the runner
// does with a Drainer.
func flushAll(t testing.TB, st stages.Stage) []string {
	t.Helper()
	f, ok := st.(stages.Flusher)
	if !ok {
		return nil
	}
	var all []string
	for {
		out, err := f.Flush(context.Background(), nil)
		if err != nil {
			t.Fatalf("flush: %v", err)
		}
		all = append(all, texts(out)...)
		if d, ok := st.(stages.Drainer); !ok || !d.More() {
			return all
		}
	}
}

// processErr runs one record through a fresh st and returns its error.
func processErr(st stages.Stage, rec string) error {
	_, err := st.Process(context.Background(), []byte(rec), nil)
	return err
}

func texts(out [][]byte) []string {
	s := make([]string, len(out))
	for i, b := range out {
		s[i] = string(b)
	}
	return s
}

// runPipeline runs the pipeline yaml on stdin through the CLI in-process
// and returns its output, its messages and its exit code.
func runPipeline(t testing.TB, yaml, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	argv := append([]string{"flowrun", "run", "-q", "--progress", "none"}, args...)
	code = cli.Run(context.Background(), append(argv, p), strings.NewReader(stdin), &out, &errb)
	return out.String(), strings.ReplaceAll(errb.String(), p, "p.yaml"), code
}

// needTool returns the path of a reference tool the test compares with.
// A missing tool skips the test, or fails it under
// FLOWRUN_REQUIRE_SERVERS=1 (as .ci/run sets), so that CI never passes by
// not comparing.
func needTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("FLOWRUN_REQUIRE_SERVERS") == "1" {
			t.Fatalf("%s is needed (FLOWRUN_REQUIRE_SERVERS=1): %v", name, err)
		}
		t.Skipf("%s is not installed: %v", name, err)
	}
	return path
}

// tool runs a reference tool with stdin and returns its output.
func tool(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(needTool(t, name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

func isPermanent(err error) bool { return errors.Is(err, stages.ErrPermanent) }
