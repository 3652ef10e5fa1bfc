package stages_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/stages"
)

// wasmPlugins are the Go sources the tests build with GOOS=wasip1.
var wasmPlugins = map[string]string{
	"upper": "../pipelines/wasm/upper", // the user-facing example
	"probe": "testdata/wasm/probe",
}

var wasmBuilt sync.Map // plugin name → func() (string, error)

// wasmModule returns the path of the plugin called name, built once per
// test binary and cached in os.TempDir by a hash of its source and of the
// toolchain, so reruns skip the build.
func wasmModule(tb testing.TB, name string) string {
	tb.Helper()
	build, _ := wasmBuilt.LoadOrStore(name, sync.OnceValues(func() (string, error) {
		return wasmBuild(wasmPlugins[name])
	}))
	file, err := build.(func() (string, error))()
	if errors.Is(err, errWasmNoToolchain) {
		tb.Skipf("cannot build wasip1 plugins here: %v", err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	return file
}

var errWasmNoToolchain = errors.New("no Go toolchain")

func wasmBuild(dir string) (string, error) {
	goTool, err := exec.LookPath("go") // go test puts its own toolchain first on PATH
	if err != nil {
		return "", fmt.Errorf("%w: %v", errWasmNoToolchain, err)
	}
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), dir)
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("no Go files in %s", dir)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(f), len(b))
		h.Write(b)
	}
	out := filepath.Join(os.TempDir(), "flowrun-wasm-"+filepath.Base(dir)+"-"+hex.EncodeToString(h.Sum(nil))[:16]+".wasm")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp := out + ".tmp" + strconv.Itoa(os.Getpid())
	cmd := exec.Command(goTool, "build", "-o", tmp, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		if strings.Contains(string(msg), "unsupported GOOS/GOARCH") {
			return "", fmt.Errorf("%w for wasip1: %s", errWasmNoToolchain, msg)
		}
		return "", fmt.Errorf("go build %s: %v\n%s", dir, err, msg)
	}
	// Renamed into place, so that test binaries running at once never
	// see half a module.
	return out, os.Rename(tmp, out)
}

// wasmStage makes one worker of the wasm stage with the given options.
func wasmStage(tb testing.TB, timeout time.Duration, with map[string]any) stages.Stage {
	tb.Helper()
	spec, ok := stages.Lookup("wasm")
	if !ok {
		tb.Fatal("wasm is not registered")
	}
	c, err := stages.NewConfig(spec, "plugin", tb.TempDir(), with)
	if err != nil {
		tb.Fatal(err)
	}
	if err := spec.Check(c); err != nil {
		tb.Fatal(err)
	}
	c.Timeout, c.TimeoutSet = timeout, timeout > 0 // as the pipeline's own timeout
	s, err := spec.New(c)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.(io.Closer).Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

// wasmResult is what a stage made of one record.
type wasmResult struct {
	out string
	err error
}

func wasmBatch(s stages.Stage, recs ...string) []wasmResult {
	in := make([][]byte, len(recs))
	for i, r := range recs {
		in[i] = []byte(r)
	}
	res := make([]wasmResult, len(recs))
	emitted := make([]int, len(recs))
	s.(stages.BatchStage).ProcessBatch(context.Background(), in, func(i int, out [][]byte, err error) {
		emitted[i]++
		if len(out) == 1 {
			res[i].out = string(out[0])
		} else if len(out) > 1 {
			res[i].out = fmt.Sprintf("%d records", len(out))
		}
		res[i].err = err
	})
	for i, n := range emitted {
		if n != 1 {
			res[i].err = fmt.Errorf("emitted %d times", n)
		}
	}
	return res
}

func wasmProcess(ctx context.Context, s stages.Stage, rec string) wasmResult {
	out, err := s.Process(ctx, []byte(rec), nil)
	if err != nil {
		return wasmResult{err: err}
	}
	if len(out) != 1 {
		return wasmResult{err: fmt.Errorf("%d records out", len(out))}
	}
	return wasmResult{out: string(out[0])}
}

// wasmWant describes an expected result: an answer, or an error that
// contains a text and matches a sentinel.
type wasmWant struct {
	out     string
	errText string
	errIs   error
}

func wasmCheck(t *testing.T, what string, got wasmResult, want wasmWant) {
	t.Helper()
	if want.errText == "" && want.errIs == nil {
		if got.err != nil || got.out != want.out {
			t.Errorf("%s: got %q, %v; want %q", what, got.out, got.err, want.out)
		}
		return
	}
	if got.err == nil {
		t.Errorf("%s: got %q, want an error containing %q", what, got.out, want.errText)
		return
	}
	if !strings.Contains(got.err.Error(), want.errText) {
		t.Errorf("%s: error %q does not contain %q", what, got.err, want.errText)
	}
	if want.errIs != nil && !errors.Is(got.err, want.errIs) {
		t.Errorf("%s: error %q is not %v", what, got.err, want.errIs)
	}
}

func TestWasmCheck(t *testing.T) {
	spec, _ := stages.Lookup("wasm")
	tests := []struct {
		name   string
		with   map[string]any
		option string // "" for a valid configuration
	}{
		{"valid", map[string]any{"module": "a.wasm", "allow_dirs": map[string]string{"/data": "./data"}, "write_dirs": map[string]string{"/out": "out"}}, ""},
		{"empty module", map[string]any{"module": " "}, "module"},
		{"inflight zero", map[string]any{"module": "a.wasm", "inflight": 0}, "inflight"},
		{"relative guest path", map[string]any{"module": "a.wasm", "allow_dirs": map[string]string{"data": "./data"}}, "allow_dirs"},
		{"empty host dir", map[string]any{"module": "a.wasm", "write_dirs": map[string]string{"/out": ""}}, "write_dirs"},
		{"mounted twice", map[string]any{"module": "a.wasm", "allow_dirs": map[string]string{"/d": "a"}, "write_dirs": map[string]string{"/d/": "b"}}, "mounted twice"},
		{"bad env name", map[string]any{"module": "a.wasm", "env": map[string]string{"A=B": "c"}}, "env"},
		{"max_memory under a page", map[string]any{"module": "a.wasm", "max_memory": 1000}, "max_memory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := stages.NewConfig(spec, "plugin", t.TempDir(), tt.with)
			if err != nil {
				t.Fatal(err)
			}
			err = spec.Check(c)
			if tt.option == "" {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			var oe *stages.OptionError
			if !errors.As(err, &oe) {
				t.Fatalf("Check: %v, want an *OptionError", err)
			}
			if oe.Option != tt.option && !strings.Contains(err.Error(), tt.option) {
				t.Errorf("Check: %v, want it about %s", err, tt.option)
			}
		})
	}
}

func TestWasmNewErrors(t *testing.T) {
	// Registered first, so it runs after the cleanups that close the stages.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "junk.wasm"), []byte("not a module"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec, _ := stages.Lookup("wasm")
	tests := []struct {
		name string
		with map[string]any
		want string
	}{
		{"missing module", map[string]any{"module": "scroe.wasm"}, `option module: wasm: "scroe.wasm": no such file`},
		{"not a module", map[string]any{"module": "junk.wasm"}, "compile junk.wasm"},
		{"missing mount", map[string]any{"module": wasmModule(t, "upper"), "allow_dirs": map[string]string{"/data": "nope"}}, "is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := stages.NewConfig(spec, "plugin", dir, tt.with)
			if err != nil {
				t.Fatal(err)
			}
			s, err := spec.New(c)
			if err == nil {
				s.(io.Closer).Close()
				t.Fatalf("New succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestWasmRoundTrip(t *testing.T) {
	// Registered first, so it runs after the cleanups that close the stages.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	upper := wasmModule(t, "upper")
	long := strings.Repeat("ab", 100_000) // longer than any read buffer
	records := []struct{ in, want string }{
		{"hello", "HELLO"},
		{"", ""},
		{"ünïcödé", "ÜNÏCÖDÉ"},
		{"\tsp ace\r", "\tSP ACE\r"},
		{long, strings.ToUpper(long)},
	}
	t.Run("lock-step", func(t *testing.T) {
		s := wasmStage(t, 0, map[string]any{"module": upper})
		for _, r := range records {
			wasmCheck(t, r.in[:min(len(r.in), 10)], wasmProcess(context.Background(), s, r.in), wasmWant{out: r.want})
		}
	})
	for _, tt := range []struct {
		inflight      int
		interruptible bool
	}{{1, true}, {7, true}, {256, true}, {256, false}} {
		t.Run(fmt.Sprintf("batch inflight %d interruptible %v", tt.inflight, tt.interruptible), func(t *testing.T) {
			s := wasmStage(t, 0, map[string]any{"module": upper, "inflight": tt.inflight, "interruptible": tt.interruptible})
			const n = 10_000
			recs := make([]string, n)
			for i := range recs {
				// The long record once: it is slow through an interruptible module.
				recs[i] = records[i%(len(records)-1)].in + " record " + strconv.Itoa(i)
			}
			recs[n/2] = long
			got := wasmBatch(s, recs...)
			for i, r := range got {
				wasmCheck(t, "record "+strconv.Itoa(i), r, wasmWant{out: strings.ToUpper(recs[i])})
				if t.Failed() {
					break
				}
			}
		})
	}
}

func TestWasmCrash(t *testing.T) {
	// Registered first, so it runs after the cleanups that close the stages.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	probe := wasmModule(t, "probe")
	tests := []struct {
		name string
		recs []string
		want []wasmWant
	}{
		{"exit 3", []string{"a", "b", "exit 3", "c", "d"}, []wasmWant{
			{out: "A"}, {out: "B"},
			{errText: "exited with code 3 without answering"},
			{errText: "in flight", errIs: stages.ErrLost}, {errText: "in flight", errIs: stages.ErrLost},
		}},
		{"exit 0", []string{"exit 0", "c"}, []wasmWant{
			{errText: "exited with code 0"}, {errIs: stages.ErrLost},
		}},
		{"panic", []string{"a", "panic", "c"}, []wasmWant{
			{out: "A"}, {errText: "probe asked to panic"}, {errIs: stages.ErrLost},
		}},
		{"newline in record", []string{"a", "b\nc", "d"}, []wasmWant{
			{out: "A"}, {errText: "newline", errIs: stages.ErrPermanent}, {out: "D"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := wasmStage(t, 0, map[string]any{"module": probe})
			for i, got := range wasmBatch(s, tt.recs...) {
				wasmCheck(t, "batch "+tt.recs[i], got, tt.want[i])
			}
			// The next call runs a new instance; lost records succeed alone.
			wasmCheck(t, "after", wasmProcess(context.Background(), s, "again"), wasmWant{out: "AGAIN"})
			// Lock-step sees the same errors.
			for i, rec := range tt.recs {
				if !errors.Is(tt.want[i].errIs, stages.ErrLost) {
					wasmCheck(t, "lock-step "+rec, wasmProcess(context.Background(), s, rec), tt.want[i])
				}
			}
		})
	}
}

// TestWasmMaxMemory checks that a module that allocates without end is
// stopped at max_memory: the record's error says so, and the next record
// runs in a new instance.
func TestWasmMaxMemory(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	probe := wasmModule(t, "probe")
	s := wasmStage(t, 0, map[string]any{"module": probe, "max_memory": 64 << 20})
	wasmCheck(t, "within", wasmProcess(context.Background(), s, "alloc 16"), wasmWant{out: "ok"})
	for _, rec := range []string{"hog", "alloc 80"} {
		wasmCheck(t, rec, wasmProcess(context.Background(), s, rec), wasmWant{errText: "ran out of memory: it asked for more than max_memory (64 MiB); restarted it"})
		wasmCheck(t, "after "+rec, wasmProcess(context.Background(), s, "again"), wasmWant{out: "AGAIN"})
	}
	res := wasmBatch(s, "a", "hog", "b")
	wasmCheck(t, "batch a", res[0], wasmWant{out: "A"})
	wasmCheck(t, "batch hog", res[1], wasmWant{errText: "max_memory"})
	wasmCheck(t, "batch b", res[2], wasmWant{errIs: stages.ErrLost})
}

func TestWasmStall(t *testing.T) {
	// Registered first, so it runs after the cleanups that close the stages.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	probe := wasmModule(t, "probe")
	const timeout = 300 * time.Millisecond
	tests := []struct {
		stall         string
		behind        bool // whether a record may follow it: a silent module takes the next record's answer for its own
		interruptible bool // a module stuck in a loop stops only if interruptible
		byDefault     bool // where the stage has a timeout, leave interruptible to its default
	}{
		{"loop", true, true, false},
		{"loop", true, true, true},
		{"sleep 1h", true, true, false},
		{"silent", false, true, false},
		{"sleep 1h", true, false, false},
		{"silent", false, false, false},
	}
	for _, tt := range tests {
		stall := tt.stall
		with := map[string]any{"module": probe, "interruptible": tt.interruptible}
		withTimeout := with
		if tt.byDefault {
			withTimeout = map[string]any{"module": probe}
		}
		t.Run(fmt.Sprintf("%s interruptible %v default %v", stall, tt.interruptible, tt.byDefault), func(t *testing.T) {
			t.Run("batch timeout", func(t *testing.T) {
				s := wasmStage(t, timeout, withTimeout)
				recs := []string{"a", stall}
				if tt.behind {
					recs = append(recs, "b")
				}
				got := wasmBatch(s, recs...)
				wasmCheck(t, "a", got[0], wasmWant{out: "A"})
				wasmCheck(t, stall, got[1], wasmWant{errText: "no answer from", errIs: context.DeadlineExceeded})
				if tt.behind {
					wasmCheck(t, "b", got[2], wasmWant{errIs: stages.ErrLost})
				}
				wasmCheck(t, "after", wasmProcess(context.Background(), s, "b"), wasmWant{out: "B"})
			})
			t.Run("lock-step deadline", func(t *testing.T) {
				s := wasmStage(t, timeout, withTimeout)
				ctx, cancel := context.WithTimeout(context.Background(), timeout)
				defer cancel()
				wasmCheck(t, stall, wasmProcess(ctx, s, stall), wasmWant{errText: "within 300ms", errIs: context.DeadlineExceeded})
				wasmCheck(t, "after", wasmProcess(context.Background(), s, "b"), wasmWant{out: "B"})
			})
			t.Run("cancel", func(t *testing.T) {
				s := wasmStage(t, 0, with)
				ctx, cancel := context.WithCancel(context.Background())
				time.AfterFunc(50*time.Millisecond, cancel)
				wasmCheck(t, stall, wasmProcess(ctx, s, stall), wasmWant{errText: "stopped", errIs: context.Canceled})
				wasmCheck(t, "after", wasmProcess(context.Background(), s, "b"), wasmWant{out: "B"})
			})
			t.Run("close while stalled", func(t *testing.T) {
				s := wasmStage(t, 0, with)
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan wasmResult)
				go func() { done <- wasmProcess(ctx, s, stall) }()
				time.Sleep(50 * time.Millisecond)
				cancel() // Close is not concurrent with Process: the runner ends the call first
				wasmCheck(t, stall, <-done, wasmWant{errIs: context.Canceled})
				if err := s.(io.Closer).Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
		})
	}
}

func TestWasmDesync(t *testing.T) {
	// Registered first, so it runs after the cleanups that close the stages.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	s := wasmStage(t, 0, map[string]any{"module": wasmModule(t, "probe")})
	wasmCheck(t, "two", wasmProcess(context.Background(), s, "two"), wasmWant{out: "one"})
	// Let the surplus line arrive, so that the check is not a race.
	time.Sleep(100 * time.Millisecond)
	wasmCheck(t, "next", wasmProcess(context.Background(), s, "x"), wasmWant{errText: "answered more lines than it was sent"})
	wasmCheck(t, "after", wasmProcess(context.Background(), s, "x"), wasmWant{out: "X"})
}

func TestWasmSandbox(t *testing.T) {
	// Registered first, so it runs after the cleanups that close the stages.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	probe := wasmModule(t, "probe")
	data, out := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "f.txt"), []byte("granted\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "secret.txt")
	if err := os.WriteFile(secret, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A listener that would accept, so that a failed dial is the sandbox's
	// doing and not a closed port.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	s := wasmStage(t, 10*time.Second, map[string]any{
		"module":     probe,
		"args":       []string{"-x", "two words"},
		"env":        map[string]string{"GREETING": "hi"},
		"allow_dirs": map[string]string{"/data": data},
		"write_dirs": map[string]string{"/out": out},
	})
	tests := []struct {
		rec  string
		want string // the answer's prefix
	}{
		{"open /data/f.txt", "ok: granted"},
		{"open " + secret, "error:"},
		{"open /etc/passwd", "error:"},
		{"open /data/../../../../etc/passwd", "error:"},
		{"create /data/new.txt", "error:"},
		{"create /out/new.txt", "ok"},
		{"create /elsewhere.txt", "error:"},
		{"dial " + ln.Addr().String(), "error:"},
		{"env GREETING", "hi"},
		{"env HOME", ""},
		{"args", "-x two words"},
		{"stderr 10000000", "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.rec, func(t *testing.T) {
			got := wasmProcess(context.Background(), s, tt.rec)
			t.Logf("answer: %.100s", got.out)
			if got.err != nil || !strings.HasPrefix(got.out, tt.want) || (tt.want == "" && got.out != "") {
				t.Errorf("got %q, %v; want an answer starting %q", got.out, got.err, tt.want)
			}
		})
	}
	if b, err := os.ReadFile(filepath.Join(out, "new.txt")); err != nil || string(b) != "written\n" {
		t.Errorf("write_dirs: host file has %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(data, "new.txt")); err == nil {
		t.Error("allow_dirs: the guest wrote into a read-only mount")
	}
}

func TestWasmClose(t *testing.T) {
	// Registered first, so it runs after the cleanups that close the stages.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	probe := wasmModule(t, "probe")
	spec, _ := stages.Lookup("wasm")
	tests := []struct {
		name string
		use  func(s stages.Stage)
	}{
		{"unused", func(stages.Stage) {}},
		{"after records", func(s stages.Stage) { wasmBatch(s, "a", "b", "c") }},
		{"after a crash", func(s stages.Stage) { wasmBatch(s, "exit 3") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := stages.NewConfig(spec, "plugin", t.TempDir(), map[string]any{"module": probe})
			if err != nil {
				t.Fatal(err)
			}
			s, err := spec.New(c)
			if err != nil {
				t.Fatal(err)
			}
			tt.use(s)
			for range 2 {
				if err := s.(io.Closer).Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}
		})
	}
}

func benchmarkWasm(b *testing.B, batch int, interruptible bool) {
	s := wasmStage(b, 0, map[string]any{"module": wasmModule(b, "upper"), "interruptible": interruptible})
	rec := []byte("the quick brown fox jumps over the lazy dog")
	want := bytes.ToUpper(rec)
	recs := make([][]byte, batch)
	for i := range recs {
		recs[i] = make([]byte, len(rec))
	}
	bs := s.(stages.BatchStage)
	var out [][]byte
	b.ResetTimer()
	start := time.Now()
	for n := 0; n < b.N; n += batch {
		k := min(batch, b.N-n)
		for i := range k {
			recs[i] = append(recs[i][:0], rec...)
		}
		if batch == 1 {
			var err error
			if out, err = s.Process(context.Background(), recs[0], out[:0]); err != nil {
				b.Fatal(err)
			}
			continue
		}
		bs.ProcessBatch(context.Background(), recs[:k], func(i int, out [][]byte, err error) {
			if err != nil || !bytes.Equal(out[0], want) {
				b.Fatalf("record %d: %q, %v", i, out, err)
			}
		})
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "records/s")
}

func BenchmarkWasmBatch(b *testing.B) {
	b.Run("interruptible", func(b *testing.B) { benchmarkWasm(b, 1024, true) })
	b.Run("uninterruptible", func(b *testing.B) { benchmarkWasm(b, 1024, false) })
}

func BenchmarkWasmLockstep(b *testing.B) {
	b.Run("interruptible", func(b *testing.B) { benchmarkWasm(b, 1, true) })
	b.Run("uninterruptible", func(b *testing.B) { benchmarkWasm(b, 1, false) })
}
