package brokertest

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// StartRabbitMQ starts a RabbitMQ node of its own: its node name, AMQP
// port and distribution port are free ones, so that it coexists with any
// other node on the machine, and its database and logs are in a
// temporary directory that belongs to the rabbitmq user.
func StartRabbitMQ() (*Server, error) {
	path, err := find("rabbitmq-server", "/usr/lib/rabbitmq/bin")
	if err != nil {
		return nil, err
	}
	// The script in /usr/sbin switches user through su, dropping the
	// environment; the one it wraps takes the environment as it is.
	if p := "/usr/lib/rabbitmq/bin/rabbitmq-server"; fileExists(p) {
		path = p
	}
	dir, err := os.MkdirTemp("", "flowrun-rabbitmq-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Kind: "rabbitmq", Dir: dir, Port: port, log: filepath.Join(dir, "server.log"),
		URL: fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port)}
	s.start = func(s *Server) error { return s.startRabbitMQ(path) }
	s.stop = (*Server).killProcess
	if err := s.start(s); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) startRabbitMQ(path string) error {
	dist, err := FreePort()
	if err != nil {
		return err
	}
	conf := filepath.Join(s.Dir, "rabbitmq.conf")
	err = os.WriteFile(conf, []byte(fmt.Sprintf(
		"listeners.tcp.default = 127.0.0.1:%d\nloopback_users = none\n", s.Port)), 0o644)
	if err == nil {
		err = os.WriteFile(filepath.Join(s.Dir, "enabled_plugins"), []byte("[].\n"), 0o644)
	}
	if err != nil {
		return err
	}
	cred, err := asUser("rabbitmq", s.Dir)
	if err != nil {
		return err
	}
	env := []string{
		"PATH=/usr/bin:/bin:/usr/sbin:/sbin",
		"HOME=" + s.Dir, // the Erlang cookie goes here
		fmt.Sprintf("RABBITMQ_NODENAME=flowrun-%d@localhost", s.Port),
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		fmt.Sprintf("RABBITMQ_NODE_PORT=%d", s.Port),
		fmt.Sprintf("RABBITMQ_DIST_PORT=%d", dist),
		"RABBITMQ_MNESIA_BASE=" + filepath.Join(s.Dir, "mnesia"),
		"RABBITMQ_LOG_BASE=" + filepath.Join(s.Dir, "log"),
		"RABBITMQ_CONFIG_FILE=" + conf,
		"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(s.Dir, "enabled_plugins"),
		"RABBITMQ_PID_FILE=" + filepath.Join(s.Dir, "pid"),
		"RABBITMQ_ADVANCED_CONFIG_FILE=" + filepath.Join(s.Dir, "advanced.config"),
		"LANG=C.UTF-8",
	}
	if err := s.run(path, nil, env, cred); err != nil {
		return err
	}
	err = s.waitFor(90*time.Second, func() error {
		c, err := amqp.DialConfig(s.URL, amqp.Config{Dial: amqp.DefaultDial(time.Second)})
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		s.killProcess()
	}
	return err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
