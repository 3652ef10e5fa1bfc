// Package brokertest starts real brokers for tests: RabbitMQ and Redis
// from Debian's packages, NATS embedded (nats-server/v2) or as Debian's
// binary. Each runs on a free loopback port with its data in a temporary
// directory. Starting RabbitMQ takes seconds, so a test package shares one
// of each: call Main from TestMain, and the servers it started are stopped
// when the package's tests end.
//
// A test that cannot start its server skips, saying why; with
// FLOWRUN_REQUIRE_SERVERS=1 (as CI sets) it fails instead.
package brokertest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Main runs the package's tests, then stops every server they started,
// runs after (the package's own cleanup: a binary it built), checks that
// no goroutine was left behind (a connector's, a client's, an embedded
// server's), and exits.
func Main(m *testing.M, after ...func()) {
	code := m.Run()
	StopAll()
	for _, f := range after {
		f()
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutines left behind: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

var shared struct {
	sync.Mutex
	servers map[string]*Server
	failed  map[string]error
}

// StopAll stops the shared servers.
func StopAll() {
	shared.Lock()
	defer shared.Unlock()
	for k, s := range shared.servers {
		s.Stop()
		delete(shared.servers, k)
	}
}

// Server is a broker process (or an embedded NATS server) the tests own.
type Server struct {
	Kind string // "rabbitmq", "redis", "nats", "nats-embedded"
	URL  string // what a client dials
	Port int
	Dir  string // its data

	start func(s *Server) error
	stop  func(s *Server)
	cmd   *exec.Cmd
	log   string // where its output goes
	embed any    // *server.Server when embedded
}

// Stop stops the server and removes its data.
func (s *Server) Stop() {
	s.Kill()
	os.RemoveAll(s.Dir)
}

// Kill stops the server at once, keeping its data for Restart.
func (s *Server) Kill() {
	if s.stop != nil {
		s.stop(s)
	}
}

// Restart kills the server and starts it again on the same port with the
// same data: what a broker that crashed and came back looks like.
func (s *Server) Restart() error {
	s.Kill()
	return s.start(s)
}

// CleanRestart stops the server as an operator would (SIGTERM: it
// finishes writing down what it acknowledged) and starts it again. A
// test calls it once the queues it needs exist, before it crashes the
// broker with Restart: RabbitMQ acknowledges a queue's declaration (and
// confirms messages into the queue) before its database has the
// declaration on disk, and a node killed within that moment comes back
// without the queue and everything in it ("Recovering 0 queues"). That
// is the broker's own window, which no client can see; the tests are
// about what the connectors do across a crash.
func (s *Server) CleanRestart() error {
	if s.cmd == nil {
		s.Kill() // embedded: its shutdown is a clean one
		return s.start(s)
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
	s.cmd = nil
	return s.start(s)
}

// need returns the shared server of a kind, starting it on first use.
func need(t testing.TB, kind string, start func() (*Server, error)) *Server {
	t.Helper()
	shared.Lock()
	defer shared.Unlock()
	if s, ok := shared.servers[kind]; ok {
		return s
	}
	err := shared.failed[kind]
	if err == nil {
		var s *Server
		s, err = start()
		if err == nil {
			if shared.servers == nil {
				shared.servers = map[string]*Server{}
			}
			shared.servers[kind] = s
			return s
		}
		if shared.failed == nil {
			shared.failed = map[string]error{}
		}
		shared.failed[kind] = err
	}
	Unavailable(t, kind, err)
	return nil
}

// Own starts a server of a kind for one test (one it may kill and
// restart without disturbing the others), stopped in the test's cleanup.
func Own(t testing.TB, kind string) *Server {
	t.Helper()
	starters := map[string]func() (*Server, error){
		"rabbitmq": StartRabbitMQ, "redis": StartRedis,
		"nats": StartNATS, "nats-embedded": StartNATSEmbedded,
	}
	s, err := starters[kind]()
	if err != nil {
		Unavailable(t, kind, err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Unavailable skips the test, or fails it when FLOWRUN_REQUIRE_SERVERS=1.
func Unavailable(t testing.TB, kind string, err error) {
	t.Helper()
	if os.Getenv("FLOWRUN_REQUIRE_SERVERS") == "1" {
		t.Fatalf("cannot start %s (FLOWRUN_REQUIRE_SERVERS=1): %v", kind, err)
	}
	t.Skipf("no %s: %v (install it, or run .ci/test)", kind, err)
}

// RabbitMQ returns the package's RabbitMQ server.
func RabbitMQ(t testing.TB) *Server { return need(t, "rabbitmq", StartRabbitMQ) }

// Redis returns the package's Redis server.
func Redis(t testing.TB) *Server { return need(t, "redis", StartRedis) }

// NATS returns the package's NATS server, Debian's nats-server binary.
func NATS(t testing.TB) *Server { return need(t, "nats", StartNATS) }

// NATSEmbedded returns the package's NATS server run in this process.
func NATSEmbedded(t testing.TB) *Server { return need(t, "nats-embedded", StartNATSEmbedded) }

// FreePort returns a TCP port on 127.0.0.1 that nothing listens on now.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// find looks for a server's command on PATH and in the sbin directories
// Debian installs them in.
func find(cmd string, dirs ...string) (string, error) {
	if p, err := exec.LookPath(cmd); err == nil {
		return p, nil
	}
	for _, d := range append(dirs, "/usr/sbin", "/usr/local/sbin") {
		p := filepath.Join(d, cmd)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (Debian: apt-get install %s)", cmd, map[string]string{
		"rabbitmq-server": "rabbitmq-server", "redis-server": "redis-server", "nats-server": "nats-server",
	}[cmd])
}

// run starts cmd in its own process group, its output to s.log.
func (s *Server) run(path string, args, env []string, cred *syscall.Credential) error {
	out, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(path, args...)
	cmd.Dir = s.Dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	return nil
}

// killProcess kills the server's whole process group and waits for it.
func (s *Server) killProcess() {
	if s.cmd == nil {
		return
	}
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	s.cmd.Wait()
	s.cmd = nil
}

// waitFor polls ready until it succeeds, the process exits, or timeout.
func (s *Server) waitFor(timeout time.Duration, ready func() error) error {
	exited := make(chan struct{})
	cmd := s.cmd
	if cmd != nil {
		go func() {
			// ProcessState is set by Wait, which killProcess calls; here
			// only notice that the process is gone.
			for cmd.ProcessState == nil {
				if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
					close(exited)
					return
				}
				time.Sleep(50 * time.Millisecond)
				select {
				case <-exited:
					return
				default:
				}
			}
		}()
		defer func() {
			select {
			case <-exited:
			default:
				close(exited)
			}
		}()
	}
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = ready(); err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start: %v (log: %s)", s.Kind, err, tail(s.log))
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %v: %v (log: %s)", s.Kind, timeout, err, tail(s.log))
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 800 {
		b = b[len(b)-800:]
	}
	return string(b)
}

// asUser returns the credential to run a server as the named system user
// when this process is root (RabbitMQ refuses root), and chowns dir to it.
func asUser(name, dir string) (*syscall.Credential, error) {
	if os.Getuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("no user %s: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	err = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		return nil, err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

var errNotReady = errors.New("not ready")

// Python is the python3 that Debian's python3-pika and python3-redis
// install into: /usr/bin/python3 where it exists, since a python3 found
// first on $PATH (pyenv, a virtualenv) does not see Debian's packages.
func Python() string {
	if fileExists("/usr/bin/python3") {
		return "/usr/bin/python3"
	}
	return "python3"
}
