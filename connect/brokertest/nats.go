package brokertest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// StartNATS starts Debian's nats-server with JetStream on a free loopback
// port, its store in a temporary directory.
func StartNATS() (*Server, error) { return StartNATSWith() }

// StartNATSWith starts Debian's nats-server as StartNATS does, with more
// command-line arguments: credentials (--user, --auth), TLS (--tls
// --tlscert …), a config file (-c; use Dir/store for its store_dir).
// With credentials nobody can ask JetStream whether it is ready without
// them, so a server given arguments is ready once it greets a client: it
// listens only after JetStream has recovered its store.
func StartNATSWith(args ...string) (*Server, error) {
	path, err := find("nats-server")
	if err != nil {
		return nil, err
	}
	s, err := newNATS("nats")
	if err != nil {
		return nil, err
	}
	ready := func() error { return natsReady(s.URL) }
	if len(args) > 0 {
		ready = func() error { return natsGreets(s.Port) }
	}
	s.start = func(s *Server) error {
		all := append([]string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-js", "-sd", filepath.Join(s.Dir, "store")}, args...)
		if err := s.run(path, all, []string{"PATH=/usr/bin:/bin"}, nil); err != nil {
			return err
		}
		err := s.waitFor(20*time.Second, ready)
		if err != nil {
			s.killProcess()
		}
		return err
	}
	s.stop = (*Server).killProcess
	if err := s.start(s); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// OwnNATSWith starts Debian's nats-server with args for one test (see
// StartNATSWith), stopped in the test's cleanup.
func OwnNATSWith(t testing.TB, args ...string) *Server {
	t.Helper()
	s, err := StartNATSWith(args...)
	if err != nil {
		Unavailable(t, "nats", err)
	}
	t.Cleanup(s.Stop)
	return s
}

// StartNATSEmbedded runs a NATS server with JetStream in this process.
func StartNATSEmbedded() (*Server, error) {
	s, err := newNATS("nats-embedded")
	if err != nil {
		return nil, err
	}
	s.start = func(s *Server) error {
		ns, err := server.NewServer(&server.Options{
			Host: "127.0.0.1", Port: s.Port, JetStream: true,
			StoreDir: filepath.Join(s.Dir, "store"), NoLog: true, NoSigs: true,
		})
		if err != nil {
			return err
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			ns.Shutdown()
			return fmt.Errorf("embedded nats-server not ready")
		}
		s.embed = ns
		return natsReady(s.URL)
	}
	s.stop = func(s *Server) {
		if ns, ok := s.embed.(*server.Server); ok {
			ns.Shutdown()
			ns.WaitForShutdown()
			s.embed = nil
		}
	}
	if err := s.start(s); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func newNATS(kind string) (*Server, error) {
	dir, err := os.MkdirTemp("", "flowrun-"+kind+"-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	return &Server{Kind: kind, Dir: dir, Port: port, log: filepath.Join(dir, "server.log"),
		URL: fmt.Sprintf("nats://127.0.0.1:%d", port)}, nil
}

// natsReady connects and asks JetStream for its account info: the server
// answers only once JetStream has recovered its store.
func natsReady(url string) error {
	nc, err := nats.Connect(url, nats.Timeout(time.Second), nats.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	_, err = nc.Request("$JS.API.INFO", nil, time.Second)
	return err
}

// natsGreets reports whether a NATS server on port sends its INFO line.
func natsGreets(port int) error {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "INFO ") {
		return fmt.Errorf("not a NATS greeting: %q", line)
	}
	return nil
}
