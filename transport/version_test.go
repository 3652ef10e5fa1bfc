package transport_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScaleOutRefusesAnotherBuild: two builds of different code with the
// same version and revision (here none: -buildvcs=false, as for a tree
// with uncommitted changes they differ only there) do not work together:
// the worker refuses the run, saying both builds, and the run says so.
// Told apart by their version and revision alone, they were taken for the
// same flowrun.
func TestScaleOutRefusesAnotherBuild(t *testing.T) {
	dir := t.TempDir()
	build := func(name string, overlay map[string]string) string {
		t.Helper()
		bin := filepath.Join(dir, name)
		args := []string{"build", "-buildvcs=false", "-o", bin}
		if overlay != nil {
			b, _ := json.Marshal(map[string]any{"Replace": overlay})
			o := filepath.Join(dir, name+".json")
			writeFile(t, o, string(b))
			args = append(args, "-overlay", o)
		}
		out, err := exec.Command("go", append(args, "github.com/flowrun/flowrun")...).CombinedOutput()
		if err != nil {
			t.Fatalf("go build: %v\n%s", err, out)
		}
		return bin
	}
	wd, _ := os.Getwd()
	extra := filepath.Join(dir, "another.go")
	writeFile(t, extra, `package main

import "os"

// anotherBuild makes this build's code differ.
var anotherBuild = "another build"

func init() {
	if os.Getenv("FLOWRUN_NEVER_SET") == anotherBuild {
		os.Exit(9)
	}
}
`)
	runBin := build("flowrun-a", nil)
	workerBin := build("flowrun-b", map[string]string{filepath.Join(filepath.Dir(wd), "another_build.go"): extra})

	b := startTestBroker(t, "flowrun-broker")
	s := newScaleRun(t, "builds", 10, sleepUpper)
	w, _ := startBin(t, workerBin, "flowrun worker (another build)", false, "worker", s.pipeline, "--broker", b.url)
	run, _ := startBin(t, runBin, "flowrun run", false, "run", s.pipeline, "--broker", b.url, "--no-local-workers",
		"-i", s.input, "-o", s.output, "--progress", "none", "-q")
	deadline := time.Now().Add(runLimit)
	for !strings.Contains(run.stderr.String(), "refused run") && time.Now().Before(deadline) && !run.exited() {
		time.Sleep(50 * time.Millisecond)
	}
	run.kill()
	w.stop(t)
	got := w.stderr.String()
	if !strings.Contains(run.stderr.String(), "refused run") || !strings.Contains(got, "refusing run") {
		t.Fatalf("the worker of another build did not refuse the run; run:\n%s\nworker:\n%s", run.stderr, got)
	}
	// Both builds named, each by its executable's hash.
	if strings.Count(got, ", executable build ") < 2 {
		t.Errorf("the refusal does not say both builds:\n%s", got)
	}
}
