package stages

import (
	"bufio"
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

func init() {
	Register(Spec{
		Name: "wasm",
		// A module that stops answering is reported after a minute;
		// one spinning in a loop needs interruptible to be stopped.
		DefaultTimeout: time.Minute,
		Doc: "Runs a WASI (wasip1) WebAssembly module in-process, one instance per worker: it reads records as lines " +
			"on stdin and answers each with one line on stdout. Sandboxed: no network, and no files beyond the directories granted.",
		Options: []Option{
			{Name: "module", Type: String, Required: true, Doc: "the .wasm file, relative to the pipeline's directory"},
			{Name: "args", Type: Strings, Default: []string{}, Doc: "arguments the module sees after its name"},
			{Name: "env", Type: StringMap, Default: map[string]string{}, Doc: "the module's environment (nothing of flowrun's is passed)"},
			{Name: "allow_dirs", Type: StringMap, Default: map[string]string{}, Doc: "read-only mounts, guest path to host directory: {/data: ./data}"},
			{Name: "write_dirs", Type: StringMap, Default: map[string]string{}, Doc: "read-write mounts, guest path to host directory"},
			{Name: "inflight", Type: Int, Default: 256, Doc: "how many records may be written ahead of their answers"},
			{Name: "max_output", Type: Int, Default: 64 << 20, Doc: "the most bytes of one answer line; a module that writes more without a newline is stopped"},
			{Name: "max_memory", Type: Int, Default: 256 << 20, Doc: "the most linear memory one instance may have, in bytes (whole 64 KiB pages); " +
				"a module that asks for more fails the record at hand and is restarted for the next"},
			{Name: "interruptible", Type: Bool, Doc: "let a timeout stop a module stuck in a loop, at a cost of 5-30x in speed (a module waiting for input, sleeping or writing stops without it); default: true when the pipeline sets the stage's timeout"},
		},
		Check: checkWasm,
		New:   newWasmStage,
	})
}

// wasmCloseGrace is how long Close waits for a module to exit on its own
// once its stdin has ended, before stopping it.
const wasmCloseGrace = 2 * time.Second

// wasmPage is the size of a WebAssembly memory page.
const wasmPage = 64 << 10

// wasmStderrTail bounds the stderr kept for error messages.
const wasmStderrTail = 4 << 10

func checkWasm(c Config) error {
	if strings.TrimSpace(c.String("module")) == "" {
		return OptionErrorf("module", "is empty: name a .wasm file")
	}
	if n := c.Int("max_output"); n < 1 {
		return OptionErrorf("max_output", "%d: must be at least 1", n)
	}
	if n := c.Int("inflight"); n < 1 {
		return OptionErrorf("inflight", "%d: must be at least 1", n)
	}
	if n := c.Int("max_memory"); n < wasmPage || n > 1<<32 {
		return OptionErrorf("max_memory", "%d: must be from 65536 (one page) to 4294967296 (4 GiB)", n)
	}
	for name := range c.Map("env") {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return OptionErrorf("env", "%q is not a variable name", name)
		}
	}
	guests := map[string]string{}
	for _, option := range []string{"allow_dirs", "write_dirs"} {
		for guest, host := range c.Map(option) {
			if !path.IsAbs(guest) {
				return OptionErrorf(option, "guest path %q must be absolute, like /data", guest)
			}
			if host == "" {
				return OptionErrorf(option, "%q: the host directory is empty", guest)
			}
			clean := path.Clean(guest)
			if other, dup := guests[clean]; dup {
				return OptionErrorf(option, "%q is mounted twice (also in %s)", guest, other)
			}
			guests[clean] = option
		}
	}
	return nil
}

// wasmRuntimes are the wazero runtimes of the process, with and without
// interruption. Sharing one lets every worker of every wasm stage
// instantiate the same compiled module: compiling a Go-built module takes
// seconds, instantiating it a millisecond. They are never closed: their
// compiled code lives as long as the process may make stages.
//
// Interruption (CloseOnContextDone) is what lets a timeout stop a guest
// spinning in a loop, but wazero implements it as a call out to Go on
// every loop iteration: measured here, the example module upper-cases
// 45-byte lines 8 times slower with it, 200 kB lines 30 times. Hence the
// option, and its default: only a stage with a timeout pays.
var wasmRuntimes = [2]func() wazero.Runtime{newWasmRuntime(false), newWasmRuntime(true)}

func newWasmRuntime(interruptible bool) func() wazero.Runtime {
	return sync.OnceValue(func() wazero.Runtime {
		ctx := context.Background()
		rc := wazero.NewRuntimeConfig().WithCloseOnContextDone(interruptible)
		if cache := wasmDiskCache(); cache != nil {
			rc = rc.WithCompilationCache(cache)
		}
		r := wazero.NewRuntimeWithConfig(ctx, rc)
		wasi_snapshot_preview1.MustInstantiate(ctx, r)
		return r
	})
}

func wasmRuntime(interruptible bool) wazero.Runtime {
	if interruptible {
		return wasmRuntimes[1]()
	}
	return wasmRuntimes[0]()
}

// wasmDiskCache keeps compiled modules across runs, as the go command
// keeps its builds: a run then starts in milliseconds instead of spending
// seconds compiling a Go-built module. wazero keys the files by its
// version, the platform, the module's hash and the compilation options.
// Without a user cache directory, modules are compiled on every run.
var wasmDiskCache = sync.OnceValue(func() wazero.CompilationCache {
	dir, err := os.UserCacheDir()
	if err != nil {
		return nil
	}
	cache, err := wazero.NewCompilationCacheWithDir(filepath.Join(dir, "flowrun", "wasm"))
	if err != nil {
		return nil
	}
	return cache
})

// wasmCompiled caches compiled modules by file, modification time and size,
// so a module rebuilt while flowrun runs as a library is compiled again.
var wasmCompiled sync.Map // wasmModuleKey → *wasmCompiledEntry

type wasmModuleKey struct {
	path          string
	mtime         time.Time
	size          int64
	interruptible bool
}

type wasmCompiledEntry struct {
	once sync.Once
	mod  wazero.CompiledModule
	err  error
}

// compileWasm returns the compiled module at the absolute path file.
func compileWasm(file string, info os.FileInfo, interruptible bool) (wazero.CompiledModule, error) {
	key := wasmModuleKey{file, info.ModTime(), info.Size(), interruptible}
	v, _ := wasmCompiled.LoadOrStore(key, &wasmCompiledEntry{})
	e := v.(*wasmCompiledEntry)
	e.once.Do(func() {
		code, err := os.ReadFile(file)
		if err != nil {
			e.err = err
			return
		}
		e.mod, e.err = wasmRuntime(interruptible).CompileModule(context.Background(), code)
	})
	return e.mod, e.err
}

func newWasmStage(c Config) (Stage, error) {
	file := c.String("module")
	if !filepath.IsAbs(file) {
		file = filepath.Join(c.Dir, file)
	}
	info, err := os.Stat(file)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, OptionErrorf("module", "wasm: %q: no such file", c.String("module"))
		}
		return nil, &OptionError{Option: "module", Err: err}
	}
	// Without a timeout nothing needs to stop a module mid-loop: a record
	// that never ends hangs the run either way, until flowrun exits.
	interruptible := c.Timeout > 0 && c.TimeoutSet // not for the default timeout: it would slow every module
	if c.Has("interruptible") {
		interruptible = c.Bool("interruptible")
	}
	compiled, err := compileWasm(file, info, interruptible)
	if err != nil {
		return nil, fmt.Errorf("wasm: compile %s: %w", c.String("module"), err)
	}
	if _, ok := compiled.ExportedFunctions()["_start"]; !ok {
		return nil, fmt.Errorf("wasm: %s exports no _start: build a WASI command (GOOS=wasip1 GOARCH=wasm go build), not a library", c.String("module"))
	}

	fsc := wazero.NewFSConfig()
	for _, option := range []string{"allow_dirs", "write_dirs"} {
		for guest, host := range c.Map(option) {
			if !filepath.IsAbs(host) {
				host = filepath.Join(c.Dir, host)
			}
			if info, err := os.Stat(host); err != nil || !info.IsDir() {
				return nil, fmt.Errorf("wasm: %s %q: %s is not a directory", option, guest, host)
			}
			if option == "write_dirs" {
				fsc = fsc.WithDirMount(host, guest)
			} else {
				fsc = fsc.WithReadOnlyDirMount(host, guest)
			}
		}
	}
	mc := wazero.NewModuleConfig().
		WithName(""). // anonymous: many instances of one module may run at once
		WithStartFunctions().
		WithArgs(append([]string{filepath.Base(file)}, c.Strings("args")...)...).
		WithFSConfig(fsc).
		WithSysWalltime().
		WithSysNanotime().
		WithRandSource(crand.Reader)
	for name, value := range c.Map("env") {
		mc = mc.WithEnv(name, value)
	}

	s := &wasmStage{
		name:          c.String("module"),
		interruptible: interruptible,
		compiled:      compiled,
		config:        mc,
		inflight:      c.Int("inflight"),
		maxOutput:     c.Int("max_output"),
		maxMemory:     uint64(c.Int("max_memory")) / wasmPage * wasmPage,
		timeout:       c.Timeout,
	}
	// Instantiate now, so that a module whose imports cannot be met fails
	// the run before any record, rather than every record.
	if _, err := s.instance(); err != nil {
		return nil, err
	}
	return s, nil
}

// wasmStage is one worker's instance of a module, restarted on the next
// record after it dies.
type wasmStage struct {
	name          string
	interruptible bool
	compiled      wazero.CompiledModule
	config        wazero.ModuleConfig
	inflight      int
	maxOutput     int
	maxMemory     uint64
	timeout       time.Duration

	inst *wasmInstance // nil after a death, until the next record
	long []byte        // an answer longer than the read buffer
	// overflow says the instance was stopped for an answer longer than
	// maxOutput.
	overflow bool
	out      [][]byte // for emit
}

// instance returns the running instance, starting one if there is none.
func (s *wasmStage) instance() (*wasmInstance, error) {
	if s.inst != nil {
		return s.inst, nil
	}
	inst, err := startWasm(wasmRuntime(s.interruptible), s.compiled, s.config, s.interruptible, s.maxMemory)
	if err != nil {
		return nil, fmt.Errorf("wasm: instantiate %s: %w", s.name, err)
	}
	s.inst = inst
	return inst, nil
}

// Process sends rec and waits for its answer, lock-step.
func (s *wasmStage) Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if bytes.IndexByte(rec, '\n') >= 0 {
		return out, errWasmNewline
	}
	inst, err := s.ready()
	if err != nil {
		return out, err
	}
	stop := context.AfterFunc(ctx, func() { inst.kill(ctx) })
	defer stop()
	inst.stdin.writeLine(rec)
	answer, err := s.answer(inst)
	if err != nil {
		return out, s.fail(inst)
	}
	return append(out, reuse(rec, answer)), nil
}

// ProcessBatch writes up to inflight records ahead of the answer it waits
// for, so that the module never waits for the host between records.
func (s *wasmStage) ProcessBatch(ctx context.Context, recs [][]byte, emit func(i int, out [][]byte, err error)) {
	inst, err := s.ready()
	if err != nil {
		for i := range recs {
			emit(i, nil, err)
		}
		return
	}
	stop := context.AfterFunc(ctx, func() { inst.kill(ctx) })
	defer stop()
	// The timer runs only while waiting for an answer, not while emit
	// waits on the runner.
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	sent := 0
	for i, rec := range recs {
		for ; sent < len(recs) && sent-i < s.inflight; sent++ {
			if bytes.IndexByte(recs[sent], '\n') < 0 {
				inst.stdin.writeLine(recs[sent])
			}
		}
		if bytes.IndexByte(rec, '\n') >= 0 {
			emit(i, nil, errWasmNewline)
			continue
		}
		switch {
		case s.timeout == 0:
		case timer == nil:
			timer = time.AfterFunc(s.timeout, inst.expire)
		default:
			timer.Reset(s.timeout)
		}
		answer, err := s.answer(inst)
		if timer != nil {
			timer.Stop()
		}
		if err != nil {
			emit(i, nil, s.fail(inst))
			for j := i + 1; j < len(recs); j++ {
				if bytes.IndexByte(recs[j], '\n') >= 0 {
					emit(j, nil, errWasmNewline)
				} else {
					emit(j, nil, fmt.Errorf("wasm: the module stopped with this record in flight: %w", ErrLost))
				}
			}
			return
		}
		s.out = append(s.out[:0], reuse(rec, answer))
		emit(i, s.out, nil)
	}
	if len(s.out) > 0 {
		s.out[0] = nil // keep no record alive
	}
}

var errWasmOverflow = errors.New("answer longer than max_output")

var errWasmNewline = Permanent(errors.New("wasm: the record contains a newline, which the line protocol cannot carry"))

// ready returns the running instance after checking that it has not
// answered lines it was never sent: those would be taken as the answers
// to the records sent next.
func (s *wasmStage) ready() (*wasmInstance, error) {
	if s.inst != nil && s.inst.isDead() {
		// Stopped after its last answer arrived (a timer or a context that
		// fired late): start afresh rather than blame the next record.
		s.inst.stop()
		s.inst = nil
	}
	inst, err := s.instance()
	if err != nil {
		return nil, err
	}
	if inst.answers.Buffered() > 0 || inst.stdout.len() > 0 {
		inst.stop()
		s.inst = nil
		return nil, fmt.Errorf("wasm: %s answered more lines than it was sent, so earlier answers may be out of step; restarted it", s.name)
	}
	return inst, nil
}

// answer reads the next answer line, without its newline. The slice is
// valid until the next read.
func (s *wasmStage) answer(inst *wasmInstance) ([]byte, error) {
	line, err := inst.answers.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		s.long = append(s.long[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) {
			if len(s.long) > s.maxOutput {
				// A module that writes without end must not take the
				// host's memory with it.
				s.overflow = true
				return nil, errWasmOverflow
			}
			line, err = inst.answers.ReadSlice('\n')
			s.long = append(s.long, line...)
		}
		line = s.long
	}
	if len(line) > s.maxOutput+1 { // +1: the newline
		s.overflow = true
		return nil, errWasmOverflow
	}
	if err != nil {
		// A partial line at the end is no answer: the module died writing it.
		return nil, err
	}
	return line[:len(line)-1], nil
}

// fail stops inst, forgets it so the next record starts a new one, and
// says why it gave no answer.
func (s *wasmStage) fail(inst *wasmInstance) error {
	inst.stop()
	s.inst = nil
	if s.overflow {
		s.overflow = false
		s.long = nil
		return Permanent(fmt.Errorf("wasm: %s wrote more than max_output (%d bytes) without ending its answer; stopped it", s.name, s.maxOutput))
	}
	tail := inst.stderr.String()
	if tail != "" {
		tail = fmt.Sprintf(" (stderr: %q)", tail)
	}
	var exit *sys.ExitError
	exitErr := inst.exited()
	stoppedBy, timedOut := inst.stopReason()
	if stoppedBy != nil {
		if err := context.Cause(stoppedBy); !errors.Is(err, context.DeadlineExceeded) || s.timeout == 0 {
			return fmt.Errorf("wasm: stopped %s waiting for an answer: %w", s.name, err)
		}
		timedOut = true
	}
	switch {
	case inst.mem.refused.Load():
		// Not the stderr: the Go runtime's "out of memory" is followed by
		// the stacks of all its goroutines.
		return fmt.Errorf("wasm: %s ran out of memory: it asked for more than max_memory (%s); restarted it", s.name, mebibytes(s.maxMemory))
	case timedOut:
		return fmt.Errorf("wasm: no answer from %s within %s for this record (does it flush its output after each line?); stopped it%s: %w",
			s.name, s.timeout, tail, context.DeadlineExceeded)
	case errors.As(exitErr, &exit):
		return fmt.Errorf("wasm: %s exited with code %d without answering this record%s", s.name, exit.ExitCode(), tail)
	case exitErr != nil:
		msg, _, _ := strings.Cut(exitErr.Error(), "\n") // the rest is a wasm stack trace
		return fmt.Errorf("wasm: %s failed: %s%s", s.name, msg, tail)
	}
	return fmt.Errorf("wasm: %s returned without answering this record%s", s.name, tail)
}

// mebibytes formats n bytes for a message.
func mebibytes(n uint64) string {
	if n%(1<<20) == 0 {
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d bytes", n)
}

// Close ends the module's input and gives it wasmCloseGrace to exit
// before stopping it.
func (s *wasmStage) Close() error {
	inst := s.inst
	if inst == nil {
		return nil
	}
	s.inst = nil
	inst.stdin.close()
	t := time.NewTimer(wasmCloseGrace)
	defer t.Stop()
	select {
	case <-inst.done:
	case <-t.C:
	}
	inst.stop()
	var exit *sys.ExitError
	if stoppedBy, timedOut := inst.stopReason(); stoppedBy != nil || timedOut {
		return nil
	}
	if err := inst.exited(); err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 0) {
		return fmt.Errorf("wasm: %s: %w", s.name, err)
	}
	return nil
}

// wasmInstance is a module instance whose _start runs in its own
// goroutine, fed through in-memory pipes.
type wasmInstance struct {
	stdin, stdout *wasmPipe
	answers       *bufio.Reader
	stderr        *wasmTail
	cancel        context.CancelFunc
	done          chan struct{} // closed when _start has returned
	exit          error         // what _start returned; read with exited
	interruptible bool
	mem           *wasmMemory

	mu        sync.Mutex
	dead      bool
	stoppedBy context.Context // the record's context that was done, if any; read after done
	deadline  bool            // the stage's timer stopped it
}

func startWasm(rt wazero.Runtime, compiled wazero.CompiledModule, mc wazero.ModuleConfig, interruptible bool, maxMemory uint64) (*wasmInstance, error) {
	ctx, cancel := context.WithCancel(context.Background())
	inst := &wasmInstance{
		stdin:         newWasmPipe(),
		stdout:        &wasmPipe{limit: 1 << 20, guest: true},
		stderr:        &wasmTail{},
		cancel:        cancel,
		done:          make(chan struct{}),
		interruptible: interruptible,
		mem:           &wasmMemory{},
	}
	inst.stdout.ready.L = &inst.stdout.mu
	inst.answers = bufio.NewReaderSize(inst.stdout, 64<<10)
	mc = mc.WithStdin(inst.stdin).WithStdout(inst.stdout).WithStderr(inst.stderr).
		WithNanosleep(func(ns int64) {
			t := time.NewTimer(time.Duration(ns))
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
				// A sleeping guest must not outlive its stop. Returning
				// early would not do: the Go runtime, finding the time not
				// yet up, sleeps again. This panic is how wazero's own
				// proc_exit ends a module from a host call.
				panic(sys.NewExitError(sys.ExitCodeContextCanceled))
			}
		})
	mod, err := rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, inst.mem.allocator(maxMemory)), compiled, mc)
	if err != nil {
		cancel()
		return nil, err
	}
	if inst.mem.over.Load() {
		mod.Close(context.Background())
		cancel()
		return nil, fmt.Errorf("its memory at start is more than max_memory (%s)", mebibytes(maxMemory))
	}
	start := mod.ExportedFunction("_start")
	go inst.run(ctx, mod, start)
	return inst, nil
}

func (inst *wasmInstance) run(ctx context.Context, mod api.Module, start api.Function) {
	defer close(inst.done)
	_, inst.exit = start.Call(ctx)
	mod.Close(context.Background())
	// Answers written before the end stay readable, then the reader sees EOF.
	inst.stdout.close()
	inst.stdin.close()
}

// exited returns what _start returned, or nil while it runs on (an
// uninterruptible module that was abandoned).
func (inst *wasmInstance) exited() error {
	select {
	case <-inst.done:
		return inst.exit
	default:
		return nil
	}
}

// kill stops the module because ctx, the record's, is done.
func (inst *wasmInstance) kill(ctx context.Context) {
	inst.mu.Lock()
	if !inst.dead {
		inst.dead = true
		inst.stoppedBy = ctx
	}
	inst.mu.Unlock()
	inst.halt()
}

// expire stops the module because the stage's own timeout expired.
func (inst *wasmInstance) expire() {
	inst.mu.Lock()
	if !inst.dead {
		inst.dead = true
		inst.deadline = true
	}
	inst.mu.Unlock()
	inst.halt()
}

// stop stops the module, if it still runs, and waits for its goroutine:
// an uninterruptible module that computes on for wasmCloseGrace is left
// to run, since nothing can stop it.
func (inst *wasmInstance) stop() {
	inst.mu.Lock()
	inst.dead = true
	inst.mu.Unlock()
	inst.halt()
	if inst.interruptible {
		<-inst.done
		return
	}
	t := time.NewTimer(wasmCloseGrace)
	defer t.Stop()
	select {
	case <-inst.done:
	case <-t.C:
	}
}

func (inst *wasmInstance) halt() {
	inst.cancel()
	// The guest may be blocked in a host call reading or writing a pipe,
	// where the cancel does not reach it.
	inst.stdin.close()
	inst.stdout.close()
}

// stopReason says why the instance was stopped: the record's context
// that was done, or the stage's timeout.
func (inst *wasmInstance) stopReason() (stoppedBy context.Context, timedOut bool) {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.stoppedBy, inst.deadline
}

func (inst *wasmInstance) isDead() bool {
	inst.mu.Lock()
	defer inst.mu.Unlock()
	return inst.dead
}

// wasmPipe is an in-memory pipe whose writes never block: the stage bounds
// what is in it by bounding the records in flight. Unlike io.Pipe, a write
// does not wait for a reader, so many lines reach the guest in one read.
type wasmPipe struct {
	mu     sync.Mutex
	ready  sync.Cond
	buf    bytes.Buffer
	closed bool
	limit  int  // Write waits while this much is unread; 0: no limit
	guest  bool // the module writes it (its stdout)
}

func newWasmPipe() *wasmPipe {
	p := &wasmPipe{}
	p.ready.L = &p.mu
	return p
}

// Read blocks until there is data or the pipe is closed; what was written
// before the close is still read.
func (p *wasmPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.buf.Len() == 0 && !p.closed {
		p.ready.Wait()
	}
	if p.buf.Len() == 0 {
		return 0, io.EOF
	}
	n, err := p.buf.Read(b)
	p.ready.Broadcast() // a writer may wait for room
	return n, err
}

func (p *wasmPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for len(b) > 0 {
		for p.limit > 0 && p.buf.Len() >= p.limit && !p.closed {
			p.ready.Wait() // the module's output waits for the host to read
		}
		if p.closed {
			if p.guest {
				// The host stopped listening: end the module here, or a
				// module that ignores write errors spins on.
				panic(sys.NewExitError(sys.ExitCodeContextCanceled))
			}
			return n, io.ErrClosedPipe
		}
		chunk := len(b)
		if p.limit > 0 {
			chunk = min(chunk, p.limit-p.buf.Len()) // one huge write must not be copied whole
		}
		p.buf.Write(b[:chunk])
		n += chunk
		b = b[chunk:]
		p.ready.Broadcast()
	}
	return n, nil
}

// writeLine writes rec and a newline. A write to a closed pipe is dropped:
// the reading side reports what became of the instance.
func (p *wasmPipe) writeLine(rec []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.buf.Write(rec)
	p.buf.WriteByte('\n')
	p.ready.Signal()
}

func (p *wasmPipe) len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Len()
}

func (p *wasmPipe) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	p.ready.Broadcast()
}

// wasmTail keeps the last wasmStderrTail bytes written to it.
type wasmTail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *wasmTail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(b) >= wasmStderrTail {
		t.buf = append(t.buf[:0], b[len(b)-wasmStderrTail:]...)
		return len(b), nil
	}
	t.buf = append(t.buf, b...)
	if len(t.buf) > 2*wasmStderrTail {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-wasmStderrTail:]...)
	}
	return len(b), nil
}

func (t *wasmTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	if len(b) > wasmStderrTail {
		b = b[len(b)-wasmStderrTail:]
	}
	return strings.TrimSpace(string(b))
}

// reuse copies answer into rec's bytes when it fits in them, and into new
// memory when not: the bytes past len(rec) may belong to another record.
func reuse(rec, answer []byte) []byte {
	if len(answer) <= len(rec) {
		n := copy(rec, answer)
		return rec[:n:n]
	}
	return append([]byte(nil), answer...)
}
