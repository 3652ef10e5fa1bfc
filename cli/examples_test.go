package cli_test

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/spec"
)

// example says how to run one pipeline of pipelines/: its input, and
// anything it needs around it. Its output is compared with the golden
// file testdata/examples/NAME.out (rewrite with -update) unless check is
// set.
type example struct {
	input string                                          // a file, relative to the repository
	setup func(t *testing.T) (stdin string, env []string) // instead of input
	check func(t *testing.T, stdout string)
	args  []string // more flags for run
}

var examples = map[string]example{
	"clean":                  {input: "testdata/examples/names.txt"},
	"logs":                   {input: "testdata/examples/app.log"},
	"jsonl":                  {input: "testdata/examples/users.jsonl"},
	"csv_to_jsonl":           {input: "testdata/examples/people.csv"},
	"sales":                  {input: "testdata/examples/orders.jsonl"},
	"plugin":                 {input: "pipelines/plugin/reviews.txt"},
	"download_resize_upload": {setup: func(*testing.T) (string, []string) { return lines(200), nil }},
	"wasm":                   {input: "pipelines/plugin/reviews.txt", setup: buildWasmExample},
	"thumbnails":             {setup: serveImages, check: checkThumbnails},
	"task_queue":             brokerExample("task_queue"),
	"redis_worker":           brokerExample("redis_worker"),
	"nats_stream":            brokerExample("nats_stream"),
}

func lines(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "%d\n", i)
	}
	return b.String()
}

// TestExamples runs every pipeline in pipelines/ through the built CLI, as
// a user would.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob("../pipelines/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatal("no examples", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			ex, ok := examples[name]
			if !ok {
				t.Fatalf("pipelines/%s.yaml has no case in examples: every example must run in the tests", name)
			}
			var stdin string
			var env []string
			if ex.setup != nil {
				stdin, env = ex.setup(t)
			}
			if ex.input != "" {
				data, err := os.ReadFile(filepath.Join("..", ex.input))
				if err != nil {
					t.Fatal(err)
				}
				stdin = string(data)
			}
			cmd := exec.Command(flowrunBin, append(append([]string{"run", "--progress", "none", "-q"}, ex.args...), file)...)
			cmd.Stdin = strings.NewReader(stdin)
			cmd.Env = append(os.Environ(), env...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v\n%s", err, stderr.String())
			}
			if ex.check != nil {
				ex.check(t, string(out))
				return
			}
			golden := filepath.Join("..", "testdata", "examples", name+".out")
			if *update {
				if err := os.WriteFile(golden, out, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if string(out) != string(want) {
				t.Errorf("output differs from %s:\n got:\n%s\nwant:\n%s", golden, out, want)
			}
		})
	}
}

// buildWasmExample compiles the example plugin as its README says.
func buildWasmExample(t *testing.T) (string, []string) {
	module := filepath.Join(t.TempDir(), "upper.wasm")
	// go test puts its own toolchain first on PATH.
	build := exec.Command("go", "build", "-o", module, "./pipelines/wasm/upper")
	build.Dir = ".."
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the wasm example: %v\n%s", err, out)
	}
	return "", []string{"WASM_MODULE=" + module}
}

// thumbnailServer serves generated PNGs of different sizes on 127.0.0.1.
var thumbSizes = map[string][2]int{"wide.png": {800, 400}, "tall.png": {300, 900}, "small.png": {100, 50}, "square.png": {512, 512}}

func serveImages(t *testing.T) (string, []string) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		size, ok := thumbSizes[strings.TrimPrefix(r.URL.Path, "/img/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		img := image.NewRGBA(image.Rect(0, 0, size[0], size[1]))
		for x := 0; x < size[0]; x++ {
			img.Set(x, x%size[1], color.RGBA{R: 200, A: 255})
		}
		png.Encode(w, img)
	}))
	t.Cleanup(srv.Close)
	var urls strings.Builder
	for name := range thumbSizes {
		fmt.Fprintf(&urls, "%s/img/%s\n", srv.URL, name)
	}
	dir := t.TempDir()
	return urls.String(), []string{"OUT_DIR=" + filepath.Join(dir, "thumbs"), "DEAD_LETTER=" + filepath.Join(dir, "failed.jsonl")}
}

func checkThumbnails(t *testing.T, stdout string) {
	paths := strings.Fields(stdout)
	sort.Strings(paths)
	if len(paths) != len(thumbSizes) {
		t.Fatalf("wrote %d thumbnails, want %d: %q", len(paths), len(thumbSizes), stdout)
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		src := thumbSizes[filepath.Base(p)]
		// fit: contain within 256×256 keeps the aspect ratio and never
		// enlarges.
		scale := min(256/float64(src[0]), 256/float64(src[1]), 1)
		w, h := int(float64(src[0])*scale+0.5), int(float64(src[1])*scale+0.5)
		if abs(cfg.Width-w) > 1 || abs(cfg.Height-h) > 1 {
			t.Errorf("%s: %dx%d, want %dx%d", p, cfg.Width, cfg.Height, w, h)
		}
	}
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// TestExamplesWriteOutsideTheCheckout loads every example as a user who
// sets no variable would run it: nothing it writes by default (output,
// dead letters, file.write's directory) may land in the repository.
func TestExamplesWriteOutsideTheCheckout(t *testing.T) {
	repo, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../pipelines/*.yaml")
	unset := func(string) (string, bool) { return "", false }
	inRepo := func(path, base string) bool {
		if !filepath.IsAbs(path) {
			path = filepath.Join(base, path)
		}
		abs, err := filepath.Abs(path)
		return err == nil && (abs == repo || strings.HasPrefix(abs, repo+string(filepath.Separator)))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			p, err := spec.Load(file, spec.Options{Env: unset})
			if err != nil {
				if strings.Contains(err.Error(), "is not set") {
					t.Skipf("needs a variable: %v", err) // it writes nothing without it
				}
				t.Fatal(err)
			}
			// Run from the checkout's root, as the README does.
			if !isStdPath(p.Output.To) && connect.Scheme(p.Output.To) == "" && inRepo(p.Output.To, repo) {
				t.Errorf("output %s is in the checkout", p.Output.To)
			}
			if p.DeadLetter != "" && inRepo(p.DeadLetter, repo) {
				t.Errorf("dead_letter %s is in the checkout", p.DeadLetter)
			}
			for _, s := range p.Stages {
				if s.Use == "file.write" && inRepo(s.Config.String("dir"), filepath.Join(repo, "pipelines")) {
					t.Errorf("stage %s writes into %s, in the checkout", s.Name, s.Config.String("dir"))
				}
			}
		})
	}
}

func isStdPath(s string) bool { return s == "" || s == "-" || s == "stdout" }
