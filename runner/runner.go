package runner

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sync/semaphore"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/codec"
	"github.com/flowrun/flowrun/connect/file"
	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

// maxBatch is the most records a batch carries between stages that take
// batches. Measured in BenchmarkBatchSize.
const maxBatch = 1024

// maxFused is the most stages one segment of goroutines runs: longer
// chains are cut so that their parts run on different cores
// (BenchmarkPassThrough/stages=10).
const maxFused = 3

// Options are what a run needs besides its pipeline.
type Options struct {
	Stdin  io.Reader // when the input is stdin
	Stdout io.Writer // when the output is stdout
	Stderr io.Writer // progress and the summary; nil: none

	// Stop, when closed, stops the input as if it had ended: what is in
	// flight drains to the output (the first Ctrl-C). Cancelling Run's
	// context instead aborts at once (the second).
	Stop <-chan struct{}

	Progress Progress

	// Watch, when set, is called once before any record moves with the
	// function that reads the run's state, the one Progress reads. The
	// function may be called from any goroutine, as often as the caller
	// likes, also after Run returns (it then reads the final counts).
	// Watch must not block: the metrics and the web page use it.
	Watch func(snapshot func() Snapshot)

	// Journal, when set, is the file where the run records durably how
	// far its output is complete; with Resume, a run continues from it.
	// A journaled run needs input and output files (see journal.go).
	Journal string
	Resume  bool

	// RetryDeadLetters, when set, is a dead-letter file to run again
	// instead of the pipeline's input: each record enters at the stage it
	// failed in. The output is appended to, not replaced.
	RetryDeadLetters string

	// UntilIdle, when the input is a broker, ends the input after this
	// long without a message (draining a queue in a batch job); 0: a
	// broker input ends only on Stop.
	UntilIdle time.Duration

	// Remote, when set, runs the stages it may (IsRemote) through a
	// broker's queues, on workers anywhere; nil runs every stage here.
	Remote Remote
}

// run is the state of one Run.
type run struct {
	p      *spec.Pipeline
	opts   Options
	stages []*stageRun
	window *semaphore.Weighted // nil unless ordered
	dl     *deadLetters

	stopRead context.CancelFunc // stops the input
	stopped  atomic.Bool        // by Options.Stop
	consumed atomic.Int64       // input bytes whose records went to the first stage
	input    struct {
		records, errors, skipped, dead atomic.Int64
		decoded, resumed               atomic.Int64 // decoded by the reader; skipped as done before a resume
	}
	written atomic.Int64 // output records
	// dropped counts the records left in the run's queues when it was
	// aborted (Summary.Dropped).
	dropped atomic.Int64
	out     *file.Sink // the output's, for its bytes once the writer is done
	total   int64      // input bytes, -1 unknown

	files connect.FileSource // a file input (the file connector's); nil for a broker
	dlDec *deadLetterDecoder // a re-run of dead letters: the decoder of their file
	acks  *acks              // a broker input's messages until settled; nil for files
	snk   connect.Sink       // a broker output; nil for files

	ordered bool     // output in input order: the pipeline's, or a journal's
	jr      *journal // nil without Options.Journal
	skip    uint64   // input records done before a resume
	// resumedDead is how many of those were dead-lettered.
	resumedDead int64

	// failSeq is the input record that failed the run (on_error: fail),
	// 0 while none has. From then on the input is stopped, records after
	// it are dropped wherever they are, and those before it drain to the
	// output: the output is what the run would have written had its
	// input ended just before the failing record (see failAt).
	failSeq atomic.Uint64
	failMu  sync.Mutex
	failErr error
}

// fail records that input record seq failed the run with err, and stops
// the input. Of several failures the earliest record's is the run's: with
// ordered output, nothing after it was written.
func (r *run) failAt(seq uint64, err error) {
	r.failMu.Lock()
	if f := r.failSeq.Load(); f == 0 || seq < f {
		r.failSeq.Store(seq)
		r.failErr = err
	}
	r.failMu.Unlock()
	r.stopRead()
}

// failure is the error that failed the run, nil if none did.
func (r *run) failure() error {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	return r.failErr
}

// Run runs p until its input ends and every record has gone to the output,
// the dead-letter file or a counted skip; until a record fails a stage
// whose on_error is fail; until Options.Stop is closed and what was in
// flight has drained; or until ctx is cancelled. The Summary is valid
// whatever the error.
func Run(ctx context.Context, p *spec.Pipeline, opts Options) (*Summary, error) {
	began := time.Now()
	r := &run{p: p, opts: opts}
	sum := &Summary{Pipeline: p.Name}
	err := r.run(ctx)
	r.summarize(sum, time.Since(began))
	switch {
	case errors.Is(err, errOutputClosed):
		sum.Closed, err = true, nil
	case err != nil && ctx.Err() != nil:
		sum.Stopped = true
	case r.stopped.Load():
		sum.Stopped = true
	}
	if err != nil {
		sum.Failed = err.Error()
	}
	return sum, err
}

func (r *run) run(ctx context.Context) (err error) {
	p := r.p
	from := p.Input.From
	if r.opts.RetryDeadLetters != "" {
		if r.opts.Journal != "" {
			return &SetupError{errors.New("a re-run of dead letters cannot be journaled")}
		}
		from = r.opts.RetryDeadLetters
	}
	brokerIn := IsBroker(from) && r.opts.RetryDeadLetters == ""
	var files []inputFile
	total := int64(-1)
	if !brokerIn {
		if r.files, err = r.openFiles(from); err != nil {
			return &SetupError{err}
		}
		files, total = r.files.Files(), r.files.Size()
	}
	if (brokerIn || IsBroker(p.Output.To)) && r.opts.Journal != "" {
		return &SetupError{errors.New("a run with a broker input or output cannot be journaled: the broker's acks are its journal")}
	}
	r.total = total

	// A re-run of dead letters appends to the output; the records enter
	// at different stages, so "input order" means nothing there.
	r.ordered = p.Ordered && r.opts.RetryDeadLetters == ""
	var resumed *JournalEntry
	if r.opts.Journal != "" {
		if resumed, err = r.openJournal(files); err != nil {
			return &SetupError{err}
		}
		if resumed != nil {
			r.resumedDead = resumed.DeadLettered
			if resumed.Done {
				return nil // the journaled run finished: its output is whole
			}
		}
	}

	// Nothing is created or truncated until everything that can refuse
	// the run has had its say: the stages are built (a missing plugin),
	// the files checked (the output is not an input, the dead-letter
	// file can be written). Only then are the output and the dead-letter
	// file opened for good.
	if err := r.build(); err != nil {
		return err
	}
	defer r.closeUnstarted()
	// The output file is probed (and locked) before the broker's run is
	// opened: a --resume refused for the output another run writes must
	// not take that run over on the broker first.
	outFile, err := r.checkFiles(files)
	if err != nil {
		return &SetupError{err}
	}
	outOpened := false
	defer func() {
		if !outOpened {
			outFile.Close()
		}
	}()
	if err := r.openRemote(ctx); err != nil {
		return err
	}
	// Brokers are connected before any file is touched: a bad URL, a
	// refused password or a broker that is not there is exit 2.
	if brokerIn {
		if err := r.openSource(ctx, from); err != nil {
			return err
		}
		defer func() {
			if ferr := r.acks.finish(); err == nil && ferr != nil {
				err = ferr
			}
		}()
	}
	if IsBroker(p.Output.To) {
		snk, _, err := connect.OpenSink(ctx, p.Output.To, p.Output.With)
		if err != nil {
			return &SetupError{fmt.Errorf("output: %w", err)}
		}
		r.snk = snk
		defer snk.Close()
	}
	var header []string
	if (p.Output.Format == "csv" || p.Output.Format == "tsv") && (resumed != nil || r.opts.RetryDeadLetters != "" || r.acks != nil) && !isStd(p.Output.To) && r.snk == nil {
		// The file has its header already: the columns continue it.
		if header, err = file.ReadHeader(p.Output.To, p.Output.Format, codec.Table(p.Output.CSV), r.outputKept(resumed)); err != nil {
			outFile.Close()
			return &SetupError{err}
		}
	}
	var dlFile file.Writable
	if p.DeadLetter != "" {
		if dlFile, err = file.Probe(p.DeadLetter); err != nil {
			outFile.Close()
			return &SetupError{fmt.Errorf("dead letter: %w", err)}
		}
	}

	out, outF, outName, closeOut, err := r.openOutput(resumed, outFile)
	if err != nil {
		dlFile.Close()
		return &SetupError{err}
	}
	outOpened = true
	defer func() {
		if cerr := closeOut(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	if p.DeadLetter != "" {
		mode := file.Truncate
		if resumed != nil {
			if err := keepDeadLetters(p.DeadLetter, resumed.Seq, r.jr.dls); err != nil {
				dlFile.Close()
				return &SetupError{err}
			}
			dlFile.Close() // replaced: open the new one
			if dlFile, err = file.Probe(p.DeadLetter); err != nil {
				return &SetupError{fmt.Errorf("dead letter: %w", err)}
			}
			mode = file.Append
		}
		if r.acks != nil {
			// What earlier runs dead-lettered was settled: for Redis
			// this file is all there is of it.
			mode = file.Append
		}
		f, err := dlFile.Open(mode)
		if err == nil && r.acks != nil {
			if err = file.CutTorn(f); err != nil {
				f.Close()
			}
		}
		if err != nil {
			return &SetupError{fmt.Errorf("dead letter: %w", err)}
		}
		if r.jr != nil {
			r.jr.dl = f
		}
		r.dl = newDeadLetters(f, p.DeadLetter)
		if r.acks != nil {
			r.dl.acks, r.dl.file = r.acks, regularFile(f)
		}
		if r.jr != nil {
			r.dl.sum = r.jr.dls
		}
		defer func() {
			if ferr := r.dl.flush(); err == nil && ferr != nil {
				err = ferr
			}
			if cerr := f.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("dead letter: %w", cerr)
			}
		}()
	}

	if r.acks != nil && r.snk == nil {
		r.acks.out = regularFile(out)
	}
	if r.opts.Watch != nil {
		r.opts.Watch(r.snapshot)
	}

	g, groupCtx := errgroup.WithContext(ctx)
	// A failing worker cancels gctx itself, before its segment's queue
	// can close: the writer must never take a queue closed by a failure
	// for the end of the input (and journal it as done).
	gctx, fail := context.WithCancelCause(groupCtx)
	defer fail(nil)
	readCtx, stopRead := context.WithCancel(gctx)
	defer stopRead()
	r.stopRead = stopRead
	if r.opts.Stop != nil {
		stop := r.opts.Stop
		go func() {
			select {
			case <-stop:
				r.stopped.Store(true)
				stopRead()
			case <-readCtx.Done():
			}
		}()
	}

	q0 := r.stages[0].in
	g.Go(func() error {
		defer close(q0)
		var err error
		if r.acks != nil {
			err = r.readSource(readCtx, gctx, q0)
		} else {
			err = r.readInput(readCtx, gctx, r.files, q0)
		}
		if err != nil {
			fail(err) // before q0 closes: the end of input it is not
		}
		return err
	})
	for i := 0; i < len(r.stages); {
		// A segment is a stage and the stages fused after it: one set of
		// goroutines runs them all, and the last one's queue is next.
		seg := r.stages[i : i+1]
		for i++; i < len(r.stages) && r.stages[i].fused; i++ {
			seg = r.stages[seg[0].index : i+1]
		}
		if st := seg[0]; st.queue != nil {
			g.Go(func() error {
				err := r.remote(gctx, st)
				if err != nil {
					fail(err) // before its queue closes, as a worker's
				} else {
					close(st.out)
				}
				return err
			})
			continue
		}
		var wg sync.WaitGroup
		for k := range seg[0].made {
			chain := make([]stages.Stage, len(seg))
			for j, st := range seg {
				chain[j] = st.made[k]
			}
			wg.Add(1)
			g.Go(func() (err error) {
				defer wg.Done() // last: after fail
				defer func() {
					for j, s := range chain {
						if cerr := closeStage(s); cerr != nil && err == nil {
							err = fmt.Errorf("stage %q: %w", seg[j].cfg.Name, cerr)
						}
					}
					if err != nil {
						fail(err)
					}
				}()
				return r.work(gctx, seg, chain, k)
			})
		}
		for _, st := range seg {
			st.made = nil // the workers own them now
		}
		tail := seg[len(seg)-1]
		g.Go(func() error {
			wg.Wait()
			close(tail.out)
			return nil
		})
	}
	sink := file.NewSink(file.SinkConfig{W: out, File: outF, Name: outName, Format: p.Output.Format, Table: codec.Table(p.Output.CSV), Header: header})
	r.out = sink
	last := r.stages[len(r.stages)-1].out
	g.Go(func() error {
		if r.snk != nil {
			return r.writeBroker(gctx, last, r.snk)
		}
		return r.write(gctx, last, sink)
	})

	var progress sync.WaitGroup
	progressDone := make(chan struct{})
	if r.opts.Progress != nil {
		progress.Add(1)
		go func() {
			defer progress.Done()
			r.opts.Progress.Run(progressDone, r.snapshot)
		}()
	}
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		r.watch(gctx, fail)
	}()
	// An abort (ctx, or a failure that cancels gctx) ends the run within
	// abortGrace even if a stage is stuck in a call that ignores its
	// context (a read of a FIFO, a module spinning): its goroutines are
	// left behind, and the caller is to end the process (the CLI does,
	// after killing every plugin process group).
	waited := make(chan error, 1)
	go func() { waited <- g.Wait() }()
	select {
	case err = <-waited:
	case <-gctx.Done():
		t := time.NewTimer(abortGrace)
		select {
		case err = <-waited:
		case <-t.C:
			err = r.abandon(gctx)
		}
		t.Stop()
	}
	fail(nil)
	if err != nil && ctx.Err() != nil {
		r.drop(last)
	}
	<-watched
	close(progressDone)
	progress.Wait()
	if ferr := r.failure(); ferr != nil && err == nil {
		err = ferr
	}
	if rerr := r.acks.rejectDead(); rerr != nil && err == nil {
		err = rerr
	}
	if err == nil && ctx.Err() != nil {
		err = context.Cause(ctx)
	}
	return err
}

// drop counts the records left in the queues of an aborted run: of the
// local stages and of the writer (last). A remote stage's queue is
// counted by the stage (unsent). Records a stage was working on are not
// in a queue, nor counted.
func (r *run) drop(last <-chan batch) {
	count := func(q <-chan batch) {
		for {
			select {
			case b, ok := <-q:
				if !ok {
					return
				}
				r.dropped.Add(int64(len(b.recs)))
			default:
				return
			}
		}
	}
	for _, st := range r.stages {
		if st.queue == nil && !st.fused {
			count(st.in)
		}
	}
	count(last)
}

// abortGrace is how long an aborted run waits for its stages to return
// before it leaves them behind; watchEvery is how often the watchdog looks
// for a call past its stage's timeout.
const (
	abortGrace = time.Second
	watchEvery = 100 * time.Millisecond
)

// watch fails the run when a call has outlived its stage's timeout by
// abortGrace: the stage ignores its context, and nothing but leaving it
// behind ends the run.
func (r *run) watch(ctx context.Context, fail context.CancelCauseFunc) {
	var watched []*stageRun
	for _, st := range r.stages {
		if st.calls != nil {
			watched = append(watched, st)
		}
	}
	if len(watched) == 0 {
		return
	}
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, st := range watched {
				for i := range st.calls {
					c := &st.calls[i]
					if d := c.deadline.Load(); d != 0 && now.UnixNano() > d+int64(abortGrace) {
						fail(&StuckError{Stage: st.cfg.Name, Seq: c.seq.Load(), Timeout: st.cfg.Timeout})
						return
					}
				}
			}
		}
	}
}

// abandon is the error of a run whose stages did not all return within
// abortGrace of its end.
func (r *run) abandon(gctx context.Context) error {
	var stuck *StuckError
	if cause := context.Cause(gctx); errors.As(cause, &stuck) {
		return cause
	}
	var names []string
	for _, st := range r.stages {
		if st.c.busy.Load() > 0 {
			names = append(names, fmt.Sprintf("%q", st.cfg.Name))
		}
	}
	return &AbandonedError{Stages: names}
}

// StuckError is a call of a stage that outlived the stage's timeout by
// abortGrace: the stage does not honour its context, so the run ends
// without it.
type StuckError struct {
	Stage   string
	Seq     uint64
	Timeout time.Duration
}

func (e *StuckError) Error() string {
	return fmt.Sprintf("stage %q record %d: no result within the stage's timeout of %v, and the stage ignored being cancelled for %v more (a call that cannot be interrupted, such as a read of a FIFO): the run is abandoned", e.Stage, e.Seq, e.Timeout, abortGrace)
}

// AbandonedError says an aborted run returned without the goroutines of
// stages stuck in calls that ignore cancellation.
type AbandonedError struct {
	Stages []string // stages with a worker inside a call; may be empty
}

func (e *AbandonedError) Error() string {
	if len(e.Stages) == 0 {
		return fmt.Sprintf("aborted: the run's goroutines did not stop within %v, and were left behind", abortGrace)
	}
	return fmt.Sprintf("aborted: stage %s did not stop within %v (a call that ignores cancellation), and was left behind", strings.Join(e.Stages, ", "), abortGrace)
}

// build makes every worker's Stage before any record moves, so that a
// missing plugin fails the run before it reads anything.
func (r *run) build() error {
	p := r.p
	var window int64
	for i, s := range p.Stages {
		st := &stageRun{cfg: s, index: i, take: batchFor(s.Spec.Batched(s.Config), s.Workers)}
		r.stages = append(r.stages, st)
		if r.opts.Remote != nil && IsRemote(s) {
			// Its workers are elsewhere: here it is a queue to the
			// broker and one back.
			st.remote = true
			st.in = make(chan batch, max(1, s.Buffer/st.take))
			if i > 0 {
				r.stages[i-1].out = st.in
			}
			window += int64(s.Buffer + s.Workers*st.take)
			continue
		}
		cfg := s.Config
		if cfg.Log == nil && r.opts.Stderr != nil {
			cfg.Log = r.opts.Stderr // a plugin's log goes where messages go: above a live display
		}
		for range s.Workers {
			stage, err := s.Spec.New(cfg)
			if err != nil {
				var oe *stages.OptionError
				if errors.As(err, &oe) {
					if pos, ok := s.OptionPos[oe.Option]; ok {
						return &SetupError{fmt.Errorf("%s: stage %q: %w", pos, s.Name, err)}
					}
				}
				return &SetupError{fmt.Errorf("%s: stage %q: %w", s.Pos, s.Name, err)}
			}
			st.made = append(st.made, stage)
			if _, ok := stage.(stages.BatchStage); ok {
				st.take = batchFor(true, s.Workers)
			}
			_, st.holds = stage.(stages.Flusher)
		}
		if s.Timeout > 0 {
			st.calls = make([]callSlot, s.Workers)
		}
		// The queue holds buffer records, in batches of the stage's size,
		// and at least one batch.
		st.in = make(chan batch, max(1, s.Buffer/st.take))
		if i > 0 {
			r.stages[i-1].out = st.in
		}
		if st.holds && r.ordered {
			st.windowSize = max(int64(s.Buffer+maxBatch), 4096)
			st.window = semaphore.NewWeighted(st.windowSize)
			if s.Workers > 1 {
				return &SetupError{fmt.Errorf("stage %q (%s): an ordered or journaled run needs workers: 1 for %s, which holds records across calls", s.Name, s.Pos, s.Use)}
			}
			st.sequence = true
		}
		// A stage that sees every record (take, dedupe, sample, count)
		// answers for the input's order in an ordered run: the first n,
		// the first of duplicates.
		if r.ordered && s.Spec.MaxWorkers == 1 {
			st.sequence = true
		}
		window += int64(s.Buffer + s.Workers*st.take)
	}
	last := r.stages[len(r.stages)-1]
	last.out = make(chan batch, 16) // the writer's
	last.nextTake = maxBatch
	// A stage that became a batch taker needs its upstream to cut batches
	// to its size.
	for i := 1; i < len(r.stages); i++ {
		r.stages[i-1].nextTake = r.stages[i].take
		r.stages[i].fused = fusable(r.stages[i-1], r.stages[i])
		if r.stages[i].fused {
			r.stages[i].fusedRun = r.stages[i-1].fusedRun + 1
			if r.stages[i].fusedRun >= maxFused {
				r.stages[i].fused, r.stages[i].fusedRun = false, 0
			}
		}
	}
	if r.ordered {
		if p.ReorderWindow > 0 {
			window = int64(max(p.ReorderWindow, maxBatch))
		} else {
			window = max(2*window, 4096)
		}
		r.window = semaphore.NewWeighted(window)
	}
	return nil
}

// SetupError is a problem found before any record moved: an input that
// does not exist, an output that cannot be created, a plugin that cannot
// start. The CLI reports it as a mistake in the pipeline or the command.
type SetupError struct{ Err error }

func (e *SetupError) Error() string { return e.Err.Error() }
func (e *SetupError) Unwrap() error { return e.Err }

// batchFor is how many records a batch for a stage may carry: one for a
// stage that waits, so that every idle worker takes the next record; many
// for a cheap one, but cut so that each of several workers gets a few
// batches of a chunk rather than one worker the whole of it
// (BenchmarkPassThrough, and W6 in bench/).
func batchFor(batched bool, workers int) int {
	switch {
	case !batched:
		return 1
	case workers <= 1:
		return maxBatch
	}
	return max(32, maxBatch/(4*workers))
}

// fusable says whether stage b can run in the goroutines of the stage a
// before it: both cheap in-memory transforms (Batch) with as many workers,
// neither holding records. A fused stage's queue goes unused, which saves
// a channel hand-off and a goroutine switch per batch: ten pass-through
// stages then cost ten function calls per record, not ten hops
// (BenchmarkPassThrough).
func fusable(a, b *stageRun) bool {
	return !a.remote && !b.remote &&
		a.cfg.Spec.Batched(a.cfg.Config) && b.cfg.Spec.Batched(b.cfg.Config) && a.take == b.take &&
		a.cfg.Workers == b.cfg.Workers && !a.holds && !b.holds &&
		a.cfg.Timeout == 0 && b.cfg.Timeout == 0 &&
		!b.sequence // it puts its input back in order, in a loop of its own
}

// closeUnstarted closes the Stages of a run that failed before its
// workers started.
func (r *run) closeUnstarted() {
	for _, st := range r.stages {
		for _, s := range st.made {
			closeStage(s)
		}
		st.made = nil
	}
}

// stopInput ends the input early: a stage has all it wants (take).
func (r *run) stopInput() { r.stopRead() }

func isStd(name string) bool { return name == "" || name == "stdin" || name == "stdout" || name == "-" }

// openJournal checks that the run can be journaled and, with Resume,
// reads where the last run got to and checks that this is the run it
// journaled (see journal.go). It returns nil for a fresh start. It only
// reads files.
func (r *run) openJournal(files []inputFile) (*JournalEntry, error) {
	p := r.p
	if isStd(p.Input.From) {
		return nil, errors.New("--journal needs an input file to read again on resume, not stdin")
	}
	if isStd(p.Output.To) {
		return nil, errors.New("--journal needs an output file (-o) to truncate on resume, not stdout")
	}
	r.ordered = true
	want, err := identify(p, files)
	if err != nil {
		return nil, err
	}
	r.jr = &journal{path: r.opts.Journal, entry: want, in: newInputHash(), outHash: sha256.New(), dls: &dlSum{}}
	if !r.opts.Resume {
		return nil, nil
	}
	e, err := readJournal(r.opts.Journal)
	if err != nil || e == nil {
		return nil, err
	}
	if err := e.check(want, files, r.jr.outHash); err != nil {
		return nil, fmt.Errorf("--resume: %w; to start afresh, run without --resume (the output is written anew) or delete %s", err, r.opts.Journal)
	}
	r.skip = e.Seq
	r.jr.base = e.OutputBytes
	return e, nil
}

// inputRead is how many bytes of input files were read.
func (r *run) inputRead() int64 {
	if r.files == nil {
		return 0
	}
	return r.files.Read()
}

// summarize fills sum from the counters.
func (r *run) summarize(sum *Summary, elapsed time.Duration) {
	sum.Elapsed = Duration(elapsed)
	sum.Input = InputStats{
		Records:      r.input.records.Load(),
		Bytes:        r.inputRead(),
		Errors:       r.input.errors.Load(),
		Skipped:      r.input.skipped.Load(),
		DeadLettered: r.input.dead.Load(),
		Unread:       max(0, r.input.decoded.Load()-r.input.records.Load()-r.input.resumed.Load()),
		Resumed:      ResumedStats{Records: int64(r.skip), DeadLettered: r.resumedDead},
	}
	sum.Output = OutputStats{Records: r.written.Load()}
	sum.Dropped = r.dropped.Load()
	if r.out != nil { // run has waited for its writer
		sum.Output.Bytes = r.out.Written()
	}
	ws := r.workers()
	joined, _ := slots(ws, true)
	for _, w := range ws {
		sum.Workers = append(sum.Workers, w.stats())
	}
	sortWorkers(sum.Workers)
	_, brokered := r.opts.Remote.(Workers)
	for _, st := range r.stages {
		c := &st.c
		p50, p99 := c.hist.quantile(0.5), c.hist.quantile(0.99)
		workers := st.cfg.Workers
		if st.remote && brokered {
			workers = joined[st.cfg.Name] // the slots that took part, anywhere
		}
		sum.Stages = append(sum.Stages, StageStats{
			Name: st.cfg.Name, Use: st.cfg.Use, Workers: workers,
			In: c.in.Load(), Out: c.out.Load(), Errors: c.errors.Load(), Retries: c.retries.Load(),
			Skipped: c.skipped.Load(), DeadLettered: c.dead.Load(),
			Remote: st.queue != nil, Redelivered: c.redelivered.Load(), Unanswered: c.unanswered.Load(), Unsent: c.unsent.Load(),
			Busy: Duration(c.busyNanos.Load()), P50: Duration(p50), P99: Duration(p99),
		})
	}
}
