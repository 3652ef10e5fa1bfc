package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"unicode"

	urfave "github.com/urfave/cli/v2"

	"github.com/flowrun/flowrun/observe"
	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/transport"
)

func workerCommand(stdin io.Reader, stderr io.Writer) *urfave.Command {
	return withExitStatus(&urfave.Command{
		Name:      "worker",
		Usage:     "work a pipeline's stages for its runs on a broker (flowrun run --broker)",
		ArgsUsage: "FILE",
		Description: `Joins every run of the pipeline in FILE on the broker, the ones active now
and the ones that start later, and works its stages that can run elsewhere
(all but those that hold records across calls: batch, count, dedupe, take,
sample with a seed, aggregate, sort, rate_limit), as many records at once as
each stage has workers. It refuses a run of another flowrun version or of a
different pipeline (the file and the --set options must be the run's; only
stages.NAME.workers may differ). SIGINT or SIGTERM stops it: the records it
holds go back to the queue for other workers.

` + brokerURLHelp,
		Flags: append([]urfave.Flag{
			&urfave.StringFlag{Name: "broker", Usage: "the NATS JetStream broker at `URL` (nats://host:4222) that runs use"},
			&urfave.StringFlag{Name: "stages", Usage: "work only these stages, `a,b` (default: every stage that runs on workers)"},
			&urfave.StringSliceFlag{Name: "set", Usage: "override `KEY=VALUE` of the pipeline, e.g. stages.NAME.workers=8 (repeatable)"},
			&urfave.StringFlag{Name: "name", Usage: "the worker's `NAME` in the runs it works (their progress, summary and page) and in its metrics (default: host:pid)"},
			&urfave.StringFlag{Name: "metrics", Usage: "serve this worker's Prometheus metrics at http://`ADDR`/metrics (labels pipeline, stage, worker, worker_id) and a page of its stages at http://ADDR/"},
		}, brokerDialFlags()...),
		Action: func(c *urfave.Context) error {
			if c.NArg() != 1 {
				return usagef("worker takes one pipeline FILE, got %d arguments", c.NArg())
			}
			if c.String("broker") == "" {
				return usagef("worker needs --broker URL (the broker of the runs it works for)")
			}
			if c.String("broker") == "embedded" {
				return usagef("worker --broker embedded: a worker joins the broker of a run; give its URL (flowrun broker, or a NATS server)")
			}
			if n := c.String("name"); c.IsSet("name") && (strings.TrimSpace(n) == "" || strings.IndexFunc(n, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0) {
				return usagef("worker --name %q: give a name of printable characters", n)
			}
			var names []string
			for _, n := range strings.Split(c.String("stages"), ",") {
				if n = strings.TrimSpace(n); n != "" {
					names = append(names, n)
				}
			}
			return runWorker(c.Context, c.Args().First(), c.String("broker"), brokerDialOptions(c), names, c.StringSlice("set"), c.String("name"), c.String("metrics"), stdin, stderr)
		},
	}, `   0    stopped by SIGINT or SIGTERM (records in hand went back to the queue)
   1    the broker went away for good
   2    usage mistake, invalid pipeline, a broker that cannot be reached
`)
}

func runWorker(ctx context.Context, file, url string, dial transport.DialOptions, names, set []string, name, metrics string, stdin io.Reader, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	p, err := load(file, spec.Options{Set: set, Worked: true}, stdin)
	if err != nil {
		return err
	}
	b, err := dialBroker(ctx, url, "", dial, stderr)
	if err != nil {
		return err
	}
	defer b.close()
	w, err := transport.NewWorker(b.nc, p, transport.WorkerOptions{Stages: names, Version: transportVersion(), Log: stderr, Name: name})
	if err != nil {
		return usagef("%v", err)
	}
	defer w.Close()
	if metrics != "" {
		o := observe.New(p, buildInfo())
		o.Worker, o.WorkerID = w.Name(), w.ID()
		srv, err := o.Listen(metrics)
		if err != nil {
			return usageError{err}
		}
		o.Watch(w.Snapshot)
		defer func() {
			o.Finish()
			srv.Close()
		}()
		fmt.Fprintf(stderr, "flowrun worker: metrics at %smetrics\n", srv.URL())
	}
	fmt.Fprintf(stderr, "flowrun worker: %s (id %s), waiting for runs of pipeline %q\n", w.Name(), w.ID(), p.Name)
	if err := w.Serve(ctx); err != nil {
		return fmt.Errorf("%w", err)
	}
	return nil
}
