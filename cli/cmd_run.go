package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	urfave "github.com/urfave/cli/v2"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/transport"
)

// runOptions are the flags of `flowrun run`.
type runOptions struct {
	input, output, deadLetter string
	set                       []string
	progress                  string
	every                     time.Duration
	stats                     string
	quiet                     bool
	cpuprofile                string
	journal                   string
	resume                    bool
	resumeFailed              bool
	untilIdle                 time.Duration
	metrics                   string
	metricsLinger             time.Duration
	brokerOptions
}

func runCommand(stdin io.Reader, stdout, stderr io.Writer) *urfave.Command {
	return withExitStatus(&urfave.Command{
		Name:      "run",
		Usage:     "run a pipeline",
		ArgsUsage: "FILE (- for stdin, with -i)",
		Description: `Runs the pipeline in FILE: records from its input (or -i) pass through its
stages to its output (or -o). The first SIGINT, SIGTERM or SIGHUP stops
reading and drains what the queues and workers hold to the output (records
read ahead are left unprocessed), then exits 130; a second aborts within
about two seconds, whatever a stage is stuck in, killing every plugin's
process group.

` + brokerURLHelp,
		Flags: append([]urfave.Flag{
			&urfave.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "read records from `PATH` (a file, a glob, or - for stdin) instead of the pipeline's input"},
			&urfave.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write records to `PATH` (- for stdout) instead of the pipeline's output"},
			&urfave.StringSliceFlag{Name: "set", Usage: "override `KEY=VALUE` of the pipeline, e.g. stages.NAME.workers=4 or stages.NAME.with.pattern=x (repeatable)"},
			&urfave.StringFlag{Name: "progress", Value: "auto", Usage: "`MODE`: auto | bar | plain | none; auto is a live display on a terminal (records typed there: none), a status line every few seconds otherwise or when CI is set"},
			&urfave.DurationFlag{Name: "progress-every", Usage: "how often progress is shown, a `DURATION` (150ms for bars and 5s for plain when unset)"},
			&urfave.StringFlag{Name: "stats", Usage: "write the run's summary as JSON to `FILE` (- for stdout, when the records go to a file)"},
			&urfave.StringFlag{Name: "dead-letter", Usage: "write dead letters to `FILE` instead of the pipeline's dead_letter"},
			&urfave.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no summary table at the end"},
			&urfave.StringFlag{Name: "journal", Usage: "record durably in `FILE` how far the output is complete, so that --resume can continue after a crash"},
			&urfave.BoolFlag{Name: "resume", Usage: "continue the run recorded in --journal (a missing journal starts afresh)"},
			&urfave.BoolFlag{Name: "resume-failed", Usage: "run again only the records of the dead-letter file, each from the stage it failed in; output is appended"},
			&urfave.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics at http://`ADDR`/metrics and a live page of the run at http://ADDR/ (e.g. 127.0.0.1:9100, :0 for any free port)"},
			&urfave.DurationFlag{Name: "metrics-linger", Usage: "with --metrics, keep serving the final numbers for this `DURATION` after the run ends, for a last scrape"},
			&urfave.StringFlag{Name: "cpuprofile", Usage: "write a CPU profile of the run to `FILE` (for go tool pprof)"},
			&urfave.StringFlag{Name: "broker", Usage: "put the queue of each stage that can run elsewhere in NATS JetStream at `URL` (nats://host:4222), for `flowrun worker` processes on any machine; embedded: a NATS server in this process"},
			&urfave.BoolFlag{Name: "no-local-workers", Usage: "with --broker: work no stage here, only through workers that joined"},
			&urfave.StringFlag{Name: "run-id", Usage: "with --broker: the run's `ID` on the broker (its stream's name); default: a new one"},
			&urfave.DurationFlag{Name: "ack-wait", Value: transport.DefaultAckWait, Usage: "with --broker: the `DURATION` a worker may hold a piece of a stage's input without a word before the broker gives it to another"},
			&urfave.IntFlag{Name: "max-deliver", Value: transport.DefaultMaxDeliver, Usage: "with --broker: a record fails as its stage's on_error says once it ended `N`-1 workers (at least 2), the last of them working it alone"},
			// How often the run touches its entry on the broker: the tests'
			// dead runs expire in seconds, not minutes.
			&urfave.DurationFlag{Name: "broker-lease", Value: transport.DefaultLease, Hidden: true},
			&urfave.DurationFlag{Name: "until-idle", Usage: "with a broker input: end after a `DURATION` without a message (drain a queue); without it, a broker input ends on a signal"},
		}, brokerDialFlags()...),
		Action: func(c *urfave.Context) error {
			if c.NArg() != 1 {
				return usagef("run takes one pipeline FILE, got %d arguments", c.NArg())
			}
			opts := runOptions{
				input: c.String("input"), output: c.String("output"), deadLetter: c.String("dead-letter"),
				set: c.StringSlice("set"), progress: c.String("progress"), every: c.Duration("progress-every"),
				stats: c.String("stats"), quiet: c.Bool("quiet"), cpuprofile: c.String("cpuprofile"),
				journal: c.String("journal"), resume: c.Bool("resume"), resumeFailed: c.Bool("resume-failed"),
				untilIdle: c.Duration("until-idle"),
				metrics:   c.String("metrics"), metricsLinger: c.Duration("metrics-linger"),
				brokerOptions: brokerOptions{
					broker: c.String("broker"), noLocalWorkers: c.Bool("no-local-workers"), runID: c.String("run-id"),
					ackWait: c.Duration("ack-wait"), maxDeliver: c.Int("max-deliver"), lease: c.Duration("broker-lease"), dial: brokerDialOptions(c),
				},
			}
			if err := checkBrokerDialFlags(c, opts.broker); err != nil {
				return err
			}
			if opts.broker == "" && (opts.noLocalWorkers || opts.runID != "" || c.IsSet("ack-wait") || c.IsSet("max-deliver")) {
				return usagef("--no-local-workers, --run-id, --ack-wait and --max-deliver need --broker")
			}
			if opts.ackWait <= 0 || opts.maxDeliver <= 0 {
				return usagef("--ack-wait and --max-deliver must be more than 0")
			}
			if opts.untilIdle < 0 {
				return usagef("--until-idle %v: must not be negative", opts.untilIdle)
			}
			if opts.metricsLinger != 0 && opts.metrics == "" {
				return usagef("--metrics-linger needs --metrics ADDR")
			}
			if opts.every < 0 {
				return usagef("--progress-every %v: must not be negative", opts.every)
			}
			if opts.every > 0 && opts.every < minEvery {
				// 1ns wrote a million status lines a second.
				return usagef("--progress-every %v: at least %v", opts.every, minEvery)
			}
			if opts.resumeFailed && opts.journal != "" {
				return usagef("--resume-failed and --journal do not go together")
			}
			if opts.resume && opts.journal == "" {
				return usagef("--resume needs --journal FILE")
			}
			return runPipeline(c.Context, c.Args().First(), opts, stdin, stdout, stderr)
		},
	}, `   0    every record done
   1    the run failed (a record failed a stage with on_error: fail, or I/O failed)
   2    usage mistake, invalid pipeline, or a run that could not start (nothing ran)
   3    finished, but records were skipped or dead-lettered
   130  stopped by SIGINT/SIGTERM after draining what was in flight
`)
}

func runPipeline(ctx context.Context, file string, opts runOptions, stdin io.Reader, stdout, stderr io.Writer) error {
	// Signals are flowrun's from the start: one that comes while the
	// pipeline is read and its stages made waits here, and stops the run
	// as soon as it starts (exit 130), rather than kill flowrun by the
	// signal's default action (143, which a resume loop takes for a kill).
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	p, release, err := prepare(file, paths{
		input: opts.input, output: opts.output, deadLetter: opts.deadLetter, stats: opts.stats, set: opts.set, noInput: opts.resumeFailed,
	}, stdin)
	defer release()
	if err != nil {
		return err
	}
	if opts.journal != "" {
		if isStd(p.Input.From) || isStd(p.Output.To) {
			return usagef("--journal needs an input file (-i) to read again and an output file (-o) to truncate on resume")
		}
	}
	var retry string
	if opts.resumeFailed {
		if retry, err = setAsideDeadLetters(p.DeadLetter); err != nil {
			return err
		}
	}
	shown, err := chooseProgress(opts.progress, opts.every, isStd(p.Input.From) && retry == "", stdin, stdout, stderr)
	if err != nil {
		return err
	}
	progress := shown.progress
	summaryTerm := stderr                       // the summary's terminal, before stderr is wrapped
	stdout, stderr = shown.stdout, shown.stderr // records and messages above a live display

	// The first signal stops the input and lets the run drain; the second
	// cancels it. SIGHUP (a closed terminal, a dropped ssh session) is a
	// SIGTERM: the run drains rather than die with its plugins running.
	abortCtx, abort := context.WithCancel(ctx)
	defer abort()
	stop := make(chan struct{})
	// A closed stdout must surface as EPIPE from Write, which the runner
	// turns into a quiet end, rather than kill the process mid-drain.
	// Notify (unlike Ignore) is not inherited by plugin processes.
	pipes := make(chan os.Signal, 1)
	signal.Notify(pipes, syscall.SIGPIPE)
	defer signal.Stop(pipes)
	sigDone := make(chan struct{})
	defer close(sigDone)
	// A run on a broker that works no stage itself and that no worker
	// works (none joined, or all that did are gone) has no one to drain
	// what it sent: its first signal aborts, and so does a drain once its
	// last worker is gone. What was sent and not answered is counted in
	// the summary (unanswered).
	var brokered atomic.Pointer[transport.Run]
	unworked := func() string {
		if r := brokered.Load(); r != nil {
			return r.Unworked()
		}
		return ""
	}
	go func() {
		select {
		case <-sigs:
			if why := unworked(); why != "" {
				fmt.Fprintf(stderr, "flowrun: stopping without draining: %s\n", why)
				close(stop)
				abort()
				break
			}
			fmt.Fprintln(stderr, "flowrun: stopping: draining records in flight (signal again to abort)")
			close(stop)
			check := time.NewTicker(drainCheck)
			defer check.Stop()
		drain:
			for {
				select {
				case <-sigs:
					fmt.Fprintln(stderr, "flowrun: aborting")
					abort()
					break drain
				case <-check.C:
					if why := unworked(); why != "" {
						fmt.Fprintf(stderr, "flowrun: aborting the drain: %s\n", why)
						abort()
						break drain
					}
				case <-sigDone:
					return
				}
			}
		case <-sigDone:
			return
		}
		if !ownProcess {
			return
		}
		// The runner returns within a second of the abort whatever its
		// stages are stuck in; this is for what is not a stage (opening a
		// FIFO that no one reads).
		select {
		case <-time.After(hardAbort):
			killChildren()
			os.Exit(ExitSignaled)
		case <-sigDone:
		}
	}()
	if ownProcess {
		// Orphans of plugins come to flowrun (see children_linux.go): it
		// reaps those that exit while it runs, and kills what is left of
		// every plugin's group when the run ends, however it ends.
		becomeSubreaper()
		defer killChildren()
		go func() {
			t := time.NewTicker(time.Second)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					reapOrphans()
				case <-sigDone:
					return
				}
			}
		}()
	}

	if os.Getenv("GOGC") == "" {
		// The live heap of a run is small and bounded by its buffers, so
		// collecting at twice its size instead of at once more halves the
		// collector's work for a few MB: W1 in bench/ runs 8% faster, peak
		// memory goes from 19 to 22 MiB. GOGC still overrides it.
		debug.SetGCPercent(200)
	}
	if opts.cpuprofile != "" {
		f, err := os.Create(opts.cpuprofile)
		if err != nil {
			return usagef("--cpuprofile: %v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return usagef("--cpuprofile: %v", err)
		}
		defer pprof.StopCPUProfile()
	}
	watch, err := startObserver(p, opts, stderr)
	if err != nil {
		return err
	}
	defer watch.close(abortCtx, stop, stderr)
	ropts := runner.Options{
		Stdin: stdin, Stdout: stdout, Stderr: stderr, Stop: stop, Progress: progress,
		Journal: opts.journal, Resume: opts.resume, RetryDeadLetters: retry,
		UntilIdle: opts.untilIdle,
		Watch:     watch.o.Watch,
	}
	var sum *runner.Summary
	var runErr error
	if opts.broker != "" {
		b, run, err := brokerRun(abortCtx, p, opts.brokerOptions, opts.journal, opts.resume, stderr)
		if err != nil {
			return err
		}
		// A journaled run that did not finish leaves its stream for
		// --resume to continue from.
		var finished bool
		defer func() { closeRun(run, b, opts.journal != "" && !finished, stderr) }()
		defer func() { finished = runErr == nil && sum != nil && !sum.Stopped }()
		ropts.Remote = run
		brokered.Store(run)
	}
	sum, runErr = runner.Run(abortCtx, p, ropts)
	if errors.Is(runErr, transport.ErrRunLost) && opts.journal != "" {
		runErr = fmt.Errorf("%w; the journal %s says how far the output is complete: the same command with --resume continues the run from there", runErr, opts.journal)
	}
	watch.o.Finish()
	if retry != "" {
		if runErr == nil && !sum.Stopped {
			os.Remove(retry) // its records are in the output or the new dead letters
			os.Remove(runner.RetryMarker(retry))
		} else {
			fmt.Fprintf(stderr, "flowrun: the dead letters being re-run are kept in %s\n", retry)
		}
	}
	var setup *runner.SetupError
	if !opts.quiet && !errors.As(runErr, &setup) { // a run that never started has nothing to sum up
		// The terminal's width now, not at the start: it may have been
		// resized during the run, and a wrapped table cannot be read.
		width := terminalWidth(summaryTerm)
		sum.WriteTableWidth(stderr, width)
		sum.WriteWorkers(stderr, width)
		if n := redelivered(sum); n > 0 {
			fmt.Fprintln(stderr, runner.WrapWords(fmt.Sprintf("the broker delivered %d pieces of the stages' input again (a worker died or outlived --ack-wait)", n), width))
		}
		if sum.Input.Unread > 0 {
			fmt.Fprintf(stderr, "%d records read from the input were left unprocessed\n", sum.Input.Unread)
		}
		if line := unansweredLine(sum, brokered.Load(), opts.journal != ""); line != "" {
			fmt.Fprintln(stderr, runner.WrapWords(line, width))
		}
		if a := watch.o.Advice(); a.Conclusive {
			fmt.Fprintln(stderr, runner.WrapWords(a.Line, width))
		}
	}
	if opts.stats != "" {
		if err := writeStats(opts.stats, sum, stdout); err != nil && runErr == nil {
			runErr = err
		}
	}
	o := &outcome{sum: sum, err: runErr}
	if !opts.quiet && exitCode(o) == ExitPartial {
		fmt.Fprintln(stderr, partialMessage(sum, p.DeadLetter))
	}
	return o
}

// unansweredLine says how many records an aborted run left unfinished,
// in no other count of its summary: sent to the broker without results
// yet (per stage), on their way to it, or in the run's queues; and where
// they are: a journaled run's on the broker and in its input for
// --resume, else lost to this run. "" when there are none.
func unansweredLine(sum *runner.Summary, r *transport.Run, journaled bool) string {
	var sent, unsent int64
	var per []string
	for _, st := range sum.Stages {
		sent += st.Unanswered
		unsent += st.Unsent
		if st.Unanswered > 0 {
			per = append(per, fmt.Sprintf("%s %d", st.Name, st.Unanswered))
		}
	}
	all := sent + unsent + sum.Dropped
	if all == 0 {
		return ""
	}
	var parts []string
	if sent > 0 {
		parts = append(parts, fmt.Sprintf("%d sent to the broker without results yet (%s)", sent, strings.Join(per, ", ")))
	}
	if unsent > 0 {
		parts = append(parts, fmt.Sprintf("%d not yet sent to it", unsent))
	}
	if sum.Dropped > 0 {
		parts = append(parts, fmt.Sprintf("%d in the run's queues", sum.Dropped))
	}
	line := fmt.Sprintf("flowrun: the run was aborted with %s unfinished: %s", records(all), strings.Join(parts, ", "))
	switch {
	case r != nil && r.Lost():
		return line + "; the broker lost the run's stream"
	case journaled && r != nil && sent > 0:
		return fmt.Sprintf("%s; the %d on the broker stay in stream %s, and the same command with --resume finishes them all", line, sent, r.Stream())
	case journaled:
		return line + "; the same command with --resume finishes them"
	}
	return line + "; they are not in the output, and a run without --journal cannot be resumed"
}

// redelivered is how many pieces the broker delivered again, over the
// stages.
func redelivered(sum *runner.Summary) int64 {
	var n int64
	for _, st := range sum.Stages {
		n += st.Redelivered
	}
	return n
}

// partialMessage says in one line why a run exits 3: "flowrun: 12
// records dead-lettered to failed.jsonl, 3 skipped".
func partialMessage(sum *runner.Summary, deadLetter string) string {
	var parts []string
	if n := sum.DeadLettered(); n > 0 {
		parts = append(parts, fmt.Sprintf("%s dead-lettered to %s", records(n), deadLetter))
	}
	if n := sum.Skipped(); n > 0 {
		if len(parts) == 0 {
			parts = append(parts, records(n)+" skipped")
		} else {
			parts = append(parts, fmt.Sprintf("%d skipped", n))
		}
	}
	return "flowrun: " + strings.Join(parts, ", ")
}

func records(n int64) string {
	if n == 1 {
		return "1 record"
	}
	return fmt.Sprintf("%d records", n)
}

// ownProcess says the CLI runs as its own process (Main), not inside a Go
// program's: only then may it become a subreaper, kill its children and
// exit on a second signal when a run does not return.
var ownProcess bool

// minEvery is the shortest --progress-every: no one reads faster.
const minEvery = 10 * time.Millisecond

// drainCheck is how often a run on a broker that drains after a signal
// looks whether any worker is left to drain it.
const drainCheck = time.Second

// hardAbort is how long after the second signal the process exits even if
// the run has not returned.
const hardAbort = 2500 * time.Millisecond

// writeStats writes sum as JSON to the file at path, or to stdout for
// "-" (preflight made sure the records are not there).
func writeStats(path string, sum *runner.Summary, stdout io.Writer) error {
	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = stdout.Write(b)
	} else {
		err = os.WriteFile(path, b, 0o644)
	}
	if err != nil {
		return fmt.Errorf("--stats: %w", err)
	}
	return nil
}

// setAsideDeadLetters moves the dead-letter file aside, so that the re-run
// can write new dead letters where the old ones were, and returns where
// they went. A file set aside by an earlier re-run that did not finish is
// taken up again: the runner then cuts the output back to where that
// re-run began (runner.RetryMarker), so that no record comes out twice.
func setAsideDeadLetters(path string) (string, error) {
	if path == "" {
		return "", usagef("--resume-failed needs a dead-letter file (dead_letter: or --dead-letter)")
	}
	aside := path + ".retrying"
	if _, err := os.Stat(aside); err == nil {
		return aside, nil
	}
	os.Remove(runner.RetryMarker(aside)) // left by a re-run that finished but for this
	if err := os.Rename(path, aside); err != nil {
		return "", usagef("--resume-failed: %v", err)
	}
	return aside, nil
}

func isStd(name string) bool { return name == "" || name == "-" || name == "stdin" || name == "stdout" }
