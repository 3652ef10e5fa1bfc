package stages

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// errExecNewline is the error of a record that the line protocol of
// stream mode cannot carry.
var errExecNewline = Permanent(errors.New("exec stream: the record contains a newline, which one line in, one line out cannot carry (use mode: per-record)"))

// errExecMoreLines is the one desynchronisation of the protocol that can be
// seen: an answer when every line sent has had its answer.
var errExecMoreLines = errors.New("plugin answered more lines than it was sent (it must print exactly one line per line in)")

// execStreamStage is exec in stream mode: one long-lived process, started
// at the first record and again after it dies, that answers the k-th line
// it reads with the k-th line it prints.
type execStreamStage struct {
	cmd       execCommand
	timeout   time.Duration
	inflight  int
	maxOutput int

	proc    *execProc
	timer   *time.Timer
	out     [][]byte
	process [][]byte // Process's one-record batch
}

func newExecStreamStage(cmd execCommand, c Config) *execStreamStage {
	return &execStreamStage{cmd: cmd, timeout: c.Timeout, inflight: c.Int("inflight"), maxOutput: c.Int("max_output"), process: make([][]byte, 1)}
}

// execProc is one run of a stream plugin and the two goroutines that
// watch it: read turns its stdout into lines, wait reaps it. Both end on
// their own once the process is dead.
type execProc struct {
	cmd    *exec.Cmd
	group  execGroup
	stdin  io.WriteCloser
	w      *bufio.Writer
	stderr execTail

	// sent counts the lines handed to w; it is raised before a line is
	// written, so that no answer can arrive before its line is counted.
	sent   atomic.Int64
	credit chan struct{} // a slot per line written and not yet answered
	lines  chan []byte   // answers; closed when stdout ends

	quit     chan struct{} // closed by abandon: read stops delivering
	quitOnce sync.Once

	readDone chan struct{}
	fault    error // why read stopped early; set before readDone closes

	exited chan struct{}
	status string // how the process ended; set before exited closes
}

func (s *execStreamStage) start() (*execProc, error) {
	p := &execProc{
		cmd:      s.cmd.command(),
		credit:   make(chan struct{}, s.inflight),
		lines:    make(chan []byte, s.inflight),
		quit:     make(chan struct{}),
		readDone: make(chan struct{}),
		exited:   make(chan struct{}),
	}
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p.cmd.Stderr = &p.stderr
	if err := p.group.start(p.cmd); err != nil {
		return nil, fmt.Errorf("exec stream: start %s: %w", s.cmd.name, err)
	}
	p.stdin = stdin
	p.w = bufio.NewWriterSize(stdin, 64<<10)
	go p.read(stdout, s.maxOutput)
	go p.wait()
	return p, nil
}

// read delivers each line of the plugin's stdout, without its newline, to
// p.lines. The lines are cut from shared slabs and never reused, so that
// they may travel on after Process returns; a slab is small (4 KiB) because
// one record kept downstream keeps its whole slab alive.
func (p *execProc) read(stdout io.Reader, maxLine int) {
	defer close(p.readDone)
	defer close(p.lines)
	r := bufio.NewReaderSize(stdout, 64<<10)
	var slab []byte
	var n int64
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long := append([]byte(nil), line...)
			for errors.Is(err, bufio.ErrBufferFull) && len(long) <= maxLine {
				line, err = r.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if len(line)-1 > maxLine {
			p.fault = fmt.Errorf("plugin printed a line longer than max_output (%d bytes)", maxLine)
			p.group.kill()
			return
		}
		if err != nil {
			return // EOF, or the pipe closed under us; a last line without newline is part of a crash
		}
		line = line[:len(line)-1]
		if n++; n > p.sent.Load() {
			p.fault = errExecMoreLines
			p.group.kill()
			return
		}
		if cap(slab)-len(slab) < len(line) {
			slab = make([]byte, 0, max(4<<10, len(line)))
		}
		at := len(slab)
		slab = append(slab, line...)
		rec := slab[at:len(slab):len(slab)]
		// Deliver even when quit is closed too: a select between the two
		// would drop answers at random.
		select {
		case p.lines <- rec:
		default:
			select {
			case p.lines <- rec:
			case <-p.quit:
				return
			}
		}
	}
}

// wait reaps the plugin once it exits, after read has taken what it
// printed: cmd.Wait closes the stdout pipe.
func (p *execProc) wait() {
	defer close(p.exited)
	p.group.awaitExit()
	t := time.NewTimer(execGrace)
	select {
	case <-p.readDone:
	case <-t.C: // a child that left the group holds stdout open
	}
	t.Stop()
	err := p.cmd.Wait()
	p.status = execStatus(p.cmd, err)
}

// abandon kills the plugin and waits until it and its goroutines are gone.
func (p *execProc) abandon() {
	p.quitOnce.Do(func() { close(p.quit) })
	p.group.kill()
	<-p.exited
	<-p.readDone
}

// write writes the records that the protocol can carry, one line each,
// at most cap(p.credit) ahead of their answers. It flushes whenever it
// would wait, so that the plugin always has every line written so far.
// A write error kills the plugin: a plugin that closed its stdin cannot
// answer, and its death is how the reader learns it.
func (p *execProc) write(recs [][]byte, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for _, rec := range recs {
		if bytes.IndexByte(rec, '\n') >= 0 {
			continue
		}
		select {
		case p.credit <- struct{}{}:
		default:
			if p.w.Flush() != nil {
				p.group.kill()
				return
			}
			select {
			case p.credit <- struct{}{}:
			case <-stop:
				return
			}
		}
		p.sent.Add(1)
		_, _ = p.w.Write(rec)
		if p.w.WriteByte('\n') != nil {
			p.group.kill()
			return
		}
	}
	if p.w.Flush() != nil {
		p.group.kill()
	}
}

// Process sends rec and waits for its answer: one record in lock-step.
// The answer line is the one output record; an empty line is an empty
// record, not a filter, because the protocol needs a line per record.
func (s *execStreamStage) Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	var err error
	s.process[0] = rec
	s.batch(ctx, s.process, func(_ int, res [][]byte, e error) {
		out, err = append(out, res...), e
	})
	s.process[0] = nil
	return out, err
}

// ProcessBatch writes recs ahead, up to inflight unanswered, from one
// goroutine while it reads the answers behind them, and emits each answer
// as it arrives. If the plugin dies, the record it was answering fails with
// its exit status and stderr, and those written behind it fail with ErrLost.
func (s *execStreamStage) ProcessBatch(ctx context.Context, recs [][]byte, emit func(i int, out [][]byte, err error)) {
	s.batch(ctx, recs, emit)
}

func (s *execStreamStage) batch(ctx context.Context, recs [][]byte, emit func(i int, out [][]byte, err error)) {
	if len(recs) == 0 {
		return
	}
	i := 0
	if fault := s.reap(); fault != nil {
		// The plugin printed more than it was asked while no record was
		// waiting: the answers emitted last were likely misattributed.
		// Failing a record says so; a fresh plugin takes the rest.
		emit(0, nil, fmt.Errorf("exec stream: %s %w; restarted it", s.cmd.name, fault))
		i = 1
		if len(recs) == 1 {
			return
		}
	}
	if s.proc == nil {
		p, err := s.start()
		if err != nil {
			for ; i < len(recs); i++ {
				emit(i, nil, err)
			}
			return
		}
		s.proc = p
	}
	p := s.proc
	stop, done := make(chan struct{}), make(chan struct{})
	go p.write(recs[i:], stop, done)
	var dead error // once the plugin has failed a record, the error of the rest
	for ; i < len(recs); i++ {
		if bytes.IndexByte(recs[i], '\n') >= 0 {
			emit(i, nil, errExecNewline)
			continue
		}
		if dead != nil {
			emit(i, nil, dead)
			continue
		}
		line, err := s.answer(ctx, p)
		if err != nil {
			emit(i, nil, err)
			dead = fmt.Errorf("exec stream: %w behind a record that %s failed", ErrLost, s.cmd.name)
			if ctx.Err() != nil {
				dead = fmt.Errorf("exec stream: %w", context.Cause(ctx))
			}
			continue
		}
		<-p.credit
		s.out = append(s.out[:0], line)
		emit(i, s.out, nil)
	}
	if len(s.out) > 0 {
		s.out[0] = nil // the runner owns the answer now
	}
	close(stop)
	<-done
	if dead != nil {
		s.proc = nil
	}
}

// reap forgets the plugin if it died while idle, and returns the protocol
// fault that killed it, if any.
func (s *execStreamStage) reap() error {
	p := s.proc
	if p == nil {
		return nil
	}
	select {
	case <-p.readDone:
	default:
		return nil
	}
	p.abandon()
	s.proc = nil
	return p.fault
}

// answer returns the next answer of p. On any error p is dead and gone.
func (s *execStreamStage) answer(ctx context.Context, p *execProc) ([]byte, error) {
	select {
	case line, ok := <-p.lines:
		if ok {
			return line, nil
		}
		return nil, s.died(ctx, p)
	default:
	}
	var expired <-chan time.Time
	if s.timeout > 0 {
		if s.timer == nil {
			s.timer = time.NewTimer(s.timeout)
		} else {
			s.timer.Reset(s.timeout)
		}
		defer s.timer.Stop()
		expired = s.timer.C
	}
	select {
	case line, ok := <-p.lines:
		if ok {
			return line, nil
		}
		return nil, s.died(ctx, p)
	case <-expired:
		p.abandon()
		return nil, s.stalled()
	case <-ctx.Done():
		p.abandon()
		// The runner's deadline has a cause of its own; ctx.Err tells
		// a deadline from a cancel.
		if s.timeout == 0 || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("exec stream: %w", context.Cause(ctx))
		}
		return nil, s.stalled()
	}
}

func (s *execStreamStage) stalled() error {
	return fmt.Errorf("exec stream: no answer within %s for this record (is the plugin buffering its output? use sed -u, python3 -u, mawk -W interactive)", s.timeout)
}

// died explains why p's stdout ended before the answer a record waits for.
// A plugin that closed stdout but lives on gets execGrace to exit.
func (s *execStreamStage) died(ctx context.Context, p *execProc) error {
	if p.fault != nil {
		p.abandon()
		return fmt.Errorf("exec stream: %s %w; killed it", s.cmd.name, p.fault)
	}
	t := time.NewTimer(execGrace)
	defer t.Stop()
	closed := ""
	select {
	case <-p.exited:
	case <-t.C:
		closed = " closed its stdout and"
	case <-ctx.Done():
	}
	p.abandon()
	return fmt.Errorf("exec stream: %s%s %s before answering this record%s", s.cmd.name, closed, p.status, p.stderr.suffix())
}

// Close closes the plugin's stdin, which asks it to finish, gives it
// execGrace to exit and then kills its process group. It returns an error
// if the plugin failed or did not exit by itself.
func (s *execStreamStage) Close() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	_ = p.stdin.Close()
	t := time.NewTimer(execGrace)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		p.abandon()
		return fmt.Errorf("exec stream: %s did not exit within %s of its input closing: killed it", s.cmd.name, execGrace)
	}
	p.abandon()
	if p.fault != nil {
		return fmt.Errorf("exec stream: %s %w", s.cmd.name, p.fault)
	}
	// A plugin killed after it answered every record lost nothing; one
	// that crashes or exits with a failure status says something went
	// wrong, so the run should not pass for a success.
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
		(ws.Signal() == syscall.SIGKILL || ws.Signal() == syscall.SIGTERM) {
		return nil // killed from outside; a crash (SIGSEGV, SIGABRT) is not this
	}
	if !p.cmd.ProcessState.Success() {
		return fmt.Errorf("exec stream: %s %s at the end of its input%s", s.cmd.name, p.status, p.stderr.suffix())
	}
	return nil
}
