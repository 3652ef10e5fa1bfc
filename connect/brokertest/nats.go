package brokertest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// StartNATS starts Debian's nats-server with JetStream on a free loopback
// port, its store in a temporary directory.
func StartNATS() (*Server, error) {
	path, err := find("nats-server")
	if err != nil {
		return nil, err
	}
	s, err := newNATS("nats")
	if err != nil {
		return nil, err
	}
	s.start = func(s *Server) error {
		args := []string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-js", "-sd", filepath.Join(s.Dir, "store")}
		if err := s.run(path, args, []string{"PATH=/usr/bin:/bin"}, nil); err != nil {
			return err
		}
		err := s.waitFor(20*time.Second, func() error { return natsReady(s.URL) })
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
