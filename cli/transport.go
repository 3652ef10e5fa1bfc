package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/transport"
)

// brokerOptions are the flags of run and worker about the broker.
type brokerOptions struct {
	broker         string // --broker: URL or "embedded"
	noLocalWorkers bool
	runID          string
	ackWait        time.Duration
	maxDeliver     int
}

// broker is a connection to the broker a run or a worker uses, and the
// server when it is embedded.
type broker struct {
	nc    *nats.Conn
	embed *server.Server
	dir   string
}

// dialBroker connects to the broker the --broker value names; "embedded"
// starts one in the process, on loopback, with its store in a temporary
// directory. A broker that cannot be reached is a usage mistake (exit 2)
// that names it and says why.
func dialBroker(ctx context.Context, url string) (*broker, error) {
	b := &broker{}
	if url == "embedded" {
		dir, err := os.MkdirTemp("", "flowrun-broker-")
		if err != nil {
			return nil, usagef("--broker embedded: %v", err)
		}
		b.dir = dir
		ns, err := server.NewServer(&server.Options{
			Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
			StoreDir: filepath.Join(dir, "store"), NoLog: true, NoSigs: true,
		})
		if err != nil {
			b.close()
			return nil, usagef("--broker embedded: %v", err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			ns.Shutdown()
			b.close()
			return nil, usagef("--broker embedded: the server did not start within 10s")
		}
		b.embed = ns
		url = ns.ClientURL()
	}
	nc, err := nats.Connect(url, nats.Name("flowrun "+transport.Host()), nats.Timeout(3*time.Second),
		nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond))
	if err != nil {
		b.close()
		return nil, usagef("--broker %s: %v", redactURL(url), err)
	}
	b.nc = nc
	return b, nil
}

func (b *broker) close() {
	if b.nc != nil {
		b.nc.Close()
	}
	if b.embed != nil {
		b.embed.Shutdown()
		b.embed.WaitForShutdown()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// redactURL masks a password in a broker URL for a message.
func redactURL(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	return u[:scheme+3] + "***" + u[at:]
}

// brokerRun prepares the run of p on the broker; the caller closes it
// after the run.
func brokerRun(ctx context.Context, p *spec.Pipeline, o brokerOptions, stderr io.Writer) (*broker, *transport.Run, error) {
	b, err := dialBroker(ctx, o.broker)
	if err != nil {
		return nil, nil, err
	}
	run, err := transport.NewRun(b.nc, p, transport.RunOptions{
		RunID: o.runID, Version: transportVersion(), AckWait: o.ackWait, MaxDeliver: o.maxDeliver,
		LocalWorkers: !o.noLocalWorkers, Log: stderr,
	})
	if err != nil {
		b.close()
		return nil, nil, usagef("--broker %s: %v", redactURL(o.broker), err)
	}
	return b, run, nil
}

// transportVersion is what workers and runs must agree on: flowrun's
// version and the revision it was built from.
func transportVersion() string {
	lines := strings.SplitN(versionText(), "\n", 3)
	return strings.TrimPrefix(lines[0], "flowrun ") + ", " + lines[1]
}

var _ runner.Remote = (*transport.Run)(nil)

func closeRun(run *transport.Run, b *broker, stderr io.Writer) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := run.Close(ctx); err != nil {
		fmt.Fprintf(stderr, "flowrun: %v\n", err)
	}
	b.close()
}
