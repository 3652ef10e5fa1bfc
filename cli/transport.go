package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

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
	embed *transport.Server
}

// dialBroker connects to the broker the --broker value names; "embedded"
// starts one in the process, on loopback, with its store in a temporary
// directory. A broker that cannot be reached is a usage mistake (exit 2)
// that names it and says why.
func dialBroker(ctx context.Context, url string, log io.Writer) (*broker, error) {
	b := &broker{}
	if url == "embedded" {
		s, err := transport.StartEmbedded(ctx, transport.EmbeddedOptions{Log: log})
		if err != nil {
			return nil, usagef("--broker embedded: %v", err)
		}
		b.embed = s
		url = s.URL()
	}
	nc, err := transport.Dial(ctx, url, transport.DialOptions{Name: "flowrun " + transport.Host(), Log: log})
	if err != nil {
		b.close()
		return nil, usagef("%v", err)
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
	}
}

// brokerRun prepares the run of p on the broker; the caller closes it
// after the run.
func brokerRun(ctx context.Context, p *spec.Pipeline, o brokerOptions, stderr io.Writer) (*broker, *transport.Run, error) {
	b, err := dialBroker(ctx, o.broker, stderr)
	if err != nil {
		return nil, nil, err
	}
	run, err := transport.NewRun(b.nc, p, transport.RunOptions{
		RunID: o.runID, Version: transportVersion(), AckWait: o.ackWait, MaxDeliver: o.maxDeliver,
		LocalWorkers: !o.noLocalWorkers, Log: stderr,
	})
	if err != nil {
		b.close()
		return nil, nil, usagef("--broker: %v", err)
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
