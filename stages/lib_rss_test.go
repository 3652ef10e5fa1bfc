package stages_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/flowrun/flowrun/stages"
)

// The peak memory tests run each case in a child process, the test binary
// run again with FLOWRUN_RSS_CASE set, which reports its peak resident set
// (VmHWM in /proc/self/status). The child's peak must stay within 1.5
// times what the stage's limits allow its workers to hold, plus the peak
// of a child that only sets the case up (base).

// rssCase is one stage's workers at their limits.
type rssCase struct {
	workers int
	limit   int64 // what one worker may hold by its options, in bytes
	// setup makes what the workers share (a server, an input) and returns
	// the work of one worker, or nil for a run that only sets up (base).
	setup func(t *testing.T) (work func(t *testing.T, worker int))
}

var rssCases = map[string]rssCase{
	// Gzip bombs: 128 MiB of zeros in 128 KiB, against max_size 64 MiB,
	// and a record that decompresses to just under it.
	"gunzip": {workers: 2, limit: 64 << 20, setup: func(t *testing.T) func(*testing.T, int) {
		bomb := gzipZeros(t, 128<<20)
		fits := gzipZeros(t, 60<<20)
		return func(t *testing.T, _ int) {
			st := libbStage(t, "gunzip", map[string]any{"max_size": 64 << 20})
			for _, rec := range [][]byte{bomb, bomb, fits} {
				out, err := st.Process(context.Background(), bytes.Clone(rec), nil)
				if (len(rec) == len(bomb)) != (err != nil) {
					t.Errorf("gunzip of %d bytes: %d records, error %v", len(rec), len(out), err)
				}
			}
		}
	}},
	// An endless body without a Content-Length, against max_body 16 MiB.
	"http.get": {workers: 4, limit: 16 << 20, setup: func(t *testing.T) func(*testing.T, int) {
		chunk := bytes.Repeat([]byte("z"), 32<<10)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			for r.Context().Err() == nil {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		}))
		t.Cleanup(srv.Close)
		return func(t *testing.T, _ int) {
			st := libbStage(t, "http.get", map[string]any{"max_body": 16 << 20})
			for range 3 {
				if _, err := libbRun(st, srv.URL+"/endless"); err == nil || !strings.Contains(err.Error(), "more than") {
					t.Errorf("endless body: error %v, want one about max_body", err)
				}
			}
		}
	}},
	// A 3000×2000 JPEG into a thumbnail. What a worker must hold is the
	// record and the decoded image, counted at 4 bytes a pixel (RGBA; a
	// JPEG decodes to YCbCr, 1.5 bytes a pixel, a PNG to RGBA).
	"image.resize": {workers: 4, limit: 3000*2000*4 + rssImageSize, setup: func(t *testing.T) func(*testing.T, int) {
		data := rssImage(t, "jpeg")
		return func(t *testing.T, _ int) {
			st := libbStage(t, "image.resize", map[string]any{"width": 200})
			for range 2 {
				if _, err := st.Process(context.Background(), bytes.Clone(data), nil); err != nil {
					t.Error(err)
				}
			}
		}
	}},
	// The JPEG in a blob record, as http.get emit: json makes it.
	"image.resize/blob": {workers: 4, limit: 3000*2000*4 + 2*rssImageSize, setup: func(t *testing.T) func(*testing.T, int) {
		data := []byte(`{"name":"big.jpg","data_base64":"` + base64.StdEncoding.EncodeToString(rssImage(t, "jpeg")) + `"}`)
		return func(t *testing.T, _ int) {
			st := libbStage(t, "image.resize", map[string]any{"width": 200})
			for range 2 {
				if _, err := st.Process(context.Background(), bytes.Clone(data), nil); err != nil {
					t.Error(err)
				}
			}
		}
	}},
	// The same as a PNG: measured, not checked (see TestStagePeakRSS).
	"image.resize/png": {workers: 4, limit: 3000*2000*4 + rssImageSize, setup: func(t *testing.T) func(*testing.T, int) {
		data := rssImage(t, "png")
		return func(t *testing.T, _ int) {
			st := libbStage(t, "image.resize", map[string]any{"width": 200})
			for range 2 {
				if _, err := st.Process(context.Background(), bytes.Clone(data), nil); err != nil {
					t.Error(err)
				}
			}
		}
	}},
	// A module that allocates without end, against max_memory 64 MiB.
	"wasm": {workers: 1, limit: 64 << 20, setup: func(t *testing.T) func(*testing.T, int) {
		probe := wasmModule(t, "probe")
		warm := wasmStage(t, 0, map[string]any{"module": probe, "max_memory": 64 << 20})
		wasmCheck(t, "warm", wasmProcess(context.Background(), warm, "a"), wasmWant{out: "A"}) // compiled, in base too
		return func(t *testing.T, _ int) {
			st := wasmStage(t, 0, map[string]any{"module": probe, "max_memory": 64 << 20})
			for range 2 {
				wasmCheck(t, "hog", wasmProcess(context.Background(), st, "hog"), wasmWant{errText: "max_memory"})
			}
		}
	}},
}

// rssImageSize bounds the size of image.resize's records.
const rssImageSize = 2 << 20

// rssImage returns a 3000×2000 image encoded as format.
func rssImage(t *testing.T, format string) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 3000, 2000))
	for y := range 2000 {
		for x := range 3000 {
			img.SetRGBA(x, y, color.RGBA{uint8(x / 16), uint8(y / 16), 128, 255}) // compresses well: the record is small
		}
	}
	var buf bytes.Buffer
	var err error
	if format == "png" {
		err = (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, img)
	} else {
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 80})
	}
	if err != nil {
		t.Fatal(err)
	}
	if buf.Len() > rssImageSize {
		t.Fatalf("the %s is %d bytes, more than rssImageSize", format, buf.Len())
	}
	img = nil
	runtime.GC()
	return buf.Bytes()
}

func gzipZeros(t *testing.T, n int) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zeros := make([]byte, 1<<20)
	for range n >> 20 {
		zw.Write(zeros)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestRSSChild is the child of TestStagePeakRSS.
func TestRSSChild(t *testing.T) {
	name, base := os.Getenv("FLOWRUN_RSS_CASE"), os.Getenv("FLOWRUN_RSS_BASE") != ""
	if name == "" {
		t.Skip("run by TestStagePeakRSS")
	}
	c := rssCases[name]
	work := c.setup(t)
	if !base {
		var wg sync.WaitGroup
		for i := range c.workers {
			wg.Go(func() { work(t, i) })
		}
		wg.Wait()
	}
	fmt.Printf("VmHWM %d\n", vmHWM(t))
}

// vmHWM returns the process's peak resident set, in bytes.
func vmHWM(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmHWM in /proc/self/status")
	return 0
}

// TestStagePeakRSS checks that each stage's peak memory is bounded by its
// limits: gunzip's max_size, http.get's max_body, the decoded image of
// image.resize, wasm's max_memory.
func TestStagePeakRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("no /proc/self/status")
	}
	child := os.Args[0]
	if raceEnabled {
		// The race detector multiplies memory: the children are this
		// package's tests built without it (quick, from the build cache).
		child = filepath.Join(t.TempDir(), "stages.test")
		goTool, err := exec.LookPath("go") // go test puts its own toolchain first on PATH
		if err != nil {
			t.Skipf("built with -race and no go command to build the children without it: %v", err)
		}
		if out, err := exec.Command(goTool, "test", "-c", "-o", child, ".").CombinedOutput(); err != nil {
			t.Fatalf("go test -c: %v\n%s", err, out)
		}
	}
	for _, name := range []string{"gunzip", "http.get", "image.resize", "image.resize/blob", "image.resize/png", "wasm"} {
		t.Run(name, func(t *testing.T) {
			c := rssCases[name]
			base := rssChild(t, child, name, true)
			peak := rssChild(t, child, name, false)
			bound := base + c.limit*int64(c.workers)*3/2
			t.Logf("%s: %d workers at %d MiB: peak %d MiB, base %d MiB, bound %d MiB",
				name, c.workers, c.limit>>20, peak>>20, base>>20, bound>>20)
			// A PNG decodes to RGBA, the limit itself; its half-size
			// copy adds a quarter, and the garbage collector, which lets
			// the heap reach twice what is live, the rest.
			if peak > bound && name != "image.resize/png" {
				t.Errorf("peak RSS %d MiB is more than %d MiB (base %d MiB + 1.5 × %d MiB × %d workers)",
					peak>>20, bound>>20, base>>20, c.limit>>20, c.workers)
			}
		})
	}
}

func rssChild(t *testing.T, binary, name string, base bool) int64 {
	cmd := exec.Command(binary, "-test.run=^TestRSSChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "FLOWRUN_RSS_CASE="+name)
	if base {
		cmd.Env = append(cmd.Env, "FLOWRUN_RSS_BASE=1")
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child %s: %v\n%s", name, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				return n
			}
		}
	}
	if strings.Contains(string(out), "SKIP") {
		t.Skipf("child %s skipped:\n%s", name, out)
	}
	t.Fatalf("child %s printed no VmHWM:\n%s", name, out)
	return 0
}

var _ = stages.ErrPermanent
