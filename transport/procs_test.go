package transport_test

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowrun/flowrun/connect/brokertest"
)

// The flowrun binary, built once for the tests that run flowrun as
// processes (brokers, workers, runs), and removed after the package's
// tests (see TestMain).
var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func flowrunBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "flowrun-transport-test-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "flowrun")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/flowrun/flowrun").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func removeBin() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// proc is a flowrun process a test started: in its own process group, so
// that a kill takes its plugin processes with it.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{} // closed once it exited
	code   int
}

// startProc starts flowrun with args; stdout goes to the returned
// reader's pipe when wantStdout, to nothing otherwise. The process is
// killed in the test's cleanup if it is still there.
func startProc(t *testing.T, name string, wantStdout bool, args ...string) (*proc, *bufio.Reader) {
	t.Helper()
	return startBin(t, flowrunBin(t), name, wantStdout, args...)
}

// startBin is startProc of the flowrun binary bin.
func startBin(t *testing.T, bin, name string, wantStdout bool, args ...string) (*proc, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proc{name: name, cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	var out *bufio.Reader
	if wantStdout {
		r, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		out = bufio.NewReader(r)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.signal(syscall.SIGKILL)
		<-p.done
	})
	return p, out
}

func (p *proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

// kill is kill -9 of the process and its plugins, waiting until it is
// gone.
func (p *proc) kill() {
	p.signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for the exit, killing it after a while.
func (p *proc) stop(t *testing.T) int {
	t.Helper()
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.kill()
		t.Errorf("%s did not stop within 20s of SIGTERM; stderr:\n%s", p.name, p.stderr)
	}
	return p.code
}

// wait waits for the process to exit by itself, and fails the test when
// it has not within limit: a guard against a hang, not a measure of speed.
// A process that hangs is sent SIGQUIT first: the Go runtime prints its
// goroutines to stderr, which the failure shows.
func (p *proc) wait(t *testing.T, limit time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(limit):
		p.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
		p.kill()
		t.Fatalf("%s still running after %v; stderr:\n%s", p.name, limit, p.stderr)
	}
	return p.code
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// testBroker is a broker the test owns and may kill -9 and restart on the
// same port and store.
type testBroker struct {
	kind    string
	url     string
	kill    func()
	restart func()
	store   string // its store, which a test may remove between kill and restart
}

// brokerKinds are the brokers the scale-out tests run against:
// `flowrun broker` (our embedded server as its own process) and Debian's
// nats-server.
var brokerKinds = []string{"flowrun-broker", "nats-server"}

func startTestBroker(t *testing.T, kind string) *testBroker {
	t.Helper()
	if kind == "nats-server" {
		s := brokertest.Own(t, "nats")
		return &testBroker{kind: kind, url: s.URL, kill: s.Kill, store: filepath.Join(s.Dir, "store"), restart: func() {
			if err := s.Restart(); err != nil {
				t.Fatalf("restart nats-server: %v", err)
			}
		}}
	}
	store := t.TempDir()
	b := &testBroker{kind: kind, store: store}
	var p *proc
	start := func(listen string) {
		var out *bufio.Reader
		p, out = startProc(t, "flowrun broker", true, "broker", "--listen", listen, "--store", store)
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("flowrun broker printed no URL (%v); stderr:\n%s", err, p.stderr)
		}
		go io.Copy(io.Discard, out)
		b.url = strings.TrimSpace(line)
	}
	start("127.0.0.1:0")
	b.kill = func() { p.kill() }
	b.restart = func() { start(strings.TrimPrefix(b.url, "nats://")) }
	t.Cleanup(func() {
		if !p.exited() {
			p.stop(t)
		}
	})
	return b
}
