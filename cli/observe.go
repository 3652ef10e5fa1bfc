package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/flowrun/flowrun/observe"
	"github.com/flowrun/flowrun/spec"
)

// watching is a run's observer, its server when --metrics asked for
// one, and the SIGUSR1 handler that prints the advice so far.
type watching struct {
	o      *observe.Observer
	srv    *observe.Server
	linger time.Duration
	usr1   chan os.Signal
	done   chan struct{}
}

// startObserver makes the observer of a run of p: it always samples (for
// the advice at the end and on SIGUSR1), and serves metrics and the page
// with --metrics.
func startObserver(p *spec.Pipeline, opts runOptions, stderr io.Writer) (*watching, error) {
	w := &watching{o: observe.New(p, buildInfo()), linger: opts.metricsLinger, done: make(chan struct{})}
	w.usr1 = make(chan os.Signal, 1)
	signal.Notify(w.usr1, syscall.SIGUSR1) // before anyone can know the run is there
	if opts.metrics != "" {
		srv, err := w.o.Listen(opts.metrics)
		if err != nil {
			signal.Stop(w.usr1)
			return nil, usageError{err}
		}
		w.srv = srv
		fmt.Fprintf(stderr, "flowrun: metrics at %smetrics, live page at %s\n", srv.URL(), srv.URL())
	}
	go func() {
		for {
			select {
			case <-w.usr1:
				fmt.Fprintln(stderr, "flowrun: "+w.o.Advice().Line)
			case <-w.done:
				return
			}
		}
	}()
	return w, nil
}

// close stops the SIGUSR1 handler and, after --metrics-linger (cut
// short by a signal), the server.
func (w *watching) close(ctx context.Context, stop <-chan struct{}, stderr io.Writer) {
	signal.Stop(w.usr1)
	close(w.done)
	w.o.Finish()
	if w.srv == nil {
		return
	}
	if w.linger > 0 {
		fmt.Fprintf(stderr, "flowrun: serving the final metrics at %s for %v (--metrics-linger)\n", w.srv.URL(), w.linger)
		t := time.NewTimer(w.linger)
		select {
		case <-t.C:
		case <-stop:
			t.Stop()
		case <-ctx.Done():
			t.Stop()
		}
	}
	w.srv.Close()
}

// buildInfo is what flowrun_build_info reports, from what the Go
// toolchain wrote into the binary.
func buildInfo() observe.BuildInfo {
	b := observe.BuildInfo{Version: "(devel)"}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.GoVersion = info.GoVersion
	if info.Main.Version != "" {
		b.Version = info.Main.Version
	}
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" {
			b.Revision = s.Value
		}
	}
	return b
}
