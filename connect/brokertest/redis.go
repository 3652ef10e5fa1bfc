package brokertest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// StartRedis starts redis-server on a free loopback port, persisting
// every write to an append-only file in a temporary directory, so that a
// restart keeps what was acknowledged.
func StartRedis() (*Server, error) {
	path, err := find("redis-server")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "flowrun-redis-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Kind: "redis", Dir: dir, Port: port, log: filepath.Join(dir, "server.log"),
		URL: fmt.Sprintf("redis://127.0.0.1:%d/0", port)}
	s.start = func(s *Server) error {
		args := []string{"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1", "--dir", s.Dir,
			"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no",
			"--daemonize", "no"}
		if err := s.run(path, args, []string{"PATH=/usr/bin:/bin"}, nil); err != nil {
			return err
		}
		err := s.waitFor(20*time.Second, func() error { return ping(s.Port) })
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

// ping speaks just enough RESP to know the server answers and has loaded
// its data.
func ping(port int) error {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "+PONG") {
		return fmt.Errorf("%w: %q", errNotReady, buf[:n])
	}
	return nil
}
