package stages

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The protocols of exec stream mode.
const (
	execLines = "lines"
	execJSON  = "json"
)

// errExecNewline is the error of a record that the line protocol of
// stream mode cannot carry.
var errExecNewline = Permanent(errors.New("exec stream: the record contains a newline, which one line in, one line out cannot carry (use protocol: json, or mode: per-record)"))

// errExecMoreLines is the one desynchronisation of the line protocol that
// can be seen: an answer when every line sent has had its answer.
var errExecMoreLines = errors.New("answered more lines than it was sent (it must print exactly one line per line in)")

// errExecLong is the error of a line longer than max_output.
var errExecLong = errors.New("line too long")

// errExecStopped is the error of a read that the batch's context stopped.
var errExecStopped = errors.New("stopped")

// execStreamStage is exec in stream mode: one long-lived process, started
// at the first record and again after it dies. With protocol lines it
// answers the k-th line it reads with the k-th line it prints; with
// protocol json each request and answer carries an id (exec_json.go).
type execStreamStage struct {
	cmd       execCommand
	timeout   time.Duration
	inflight  int
	maxOutput int
	json      bool
	log       *execLog

	proc    *execProc
	out     [][]byte
	process [][]byte // Process's one-record batch
	slab    []byte   // where answers are copied to, in pieces never reused
	answer  execAnswer
	held    []execHeld // json: answers that came before their turn
}

// execHeld is a json answer waiting for the records before it.
type execHeld struct {
	done bool
	out  [][]byte
	err  error
}

func newExecStreamStage(cmd execCommand, c Config) *execStreamStage {
	return &execStreamStage{
		cmd: cmd, timeout: c.Timeout, inflight: c.Int("inflight"), maxOutput: c.Int("max_output"),
		json: c.String("protocol") == execJSON, log: newExecLog(c.Log, c.Stage),
		process: make([][]byte, 1),
	}
}

// execProc is one run of a stream plugin. Its stdout is read by the
// goroutine that emits the answers (no reader goroutine and channel in
// between: a hop per answer was a third of the cost of a fast plugin); the
// records are written from a goroutine of each batch; wait reaps it.
type execProc struct {
	cmd    *exec.Cmd
	group  execGroup
	stdin  *os.File
	w      *bufio.Writer
	stdout execStdout
	r      *bufio.Reader
	stderr execStderr
	long   []byte // a line longer than r's buffer

	// sent counts the requests handed to w; it is raised before one is
	// written, so that no answer can arrive before its request is counted.
	sent   atomic.Int64
	read   int64         // lines: the answers read
	credit chan struct{} // a slot per request written and not yet emitted
	fault  error         // a breach of the protocol seen between batches

	left   chan struct{} // closed when the plugin's own process has exited
	exited chan struct{}
	status string // how the process ended; set before exited closes
}

func (s *execStreamStage) start() (*execProc, error) {
	p := &execProc{
		cmd:    s.cmd.command(),
		credit: make(chan struct{}, s.inflight),
		left:   make(chan struct{}),
		exited: make(chan struct{}),
	}
	// Pipes of our own rather than cmd's: cmd.Wait would close stdout
	// under answers not read yet.
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("exec stream: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		inR.Close()
		inW.Close()
		return nil, fmt.Errorf("exec stream: %w", err)
	}
	p.stderr.log = s.log
	p.cmd.Stdin, p.cmd.Stdout, p.cmd.Stderr = inR, outW, &p.stderr
	err = p.group.start(p.cmd)
	inR.Close()
	outW.Close()
	if err != nil {
		inW.Close()
		outR.Close()
		return nil, fmt.Errorf("exec stream: start %s: %w", s.cmd.label, err)
	}
	p.stdin = inW
	p.w = bufio.NewWriterSize(inW, 64<<10)
	p.stdout = execStdout{f: outR, timeout: s.timeout}
	p.r = bufio.NewReaderSize(&p.stdout, 64<<10)
	go p.wait()
	return p, nil
}

// wait reaps the plugin once it exits. cmd.Wait waits for the stderr
// copier too, so the stderr tail is whole once exited is closed.
func (p *execProc) wait() {
	defer close(p.exited)
	p.group.awaitExit()
	// The plugin is gone and its group killed, so its answers are all in
	// the pipe and read at once. A read that still blocks after execGrace
	// waits for a process that left the group (setsid) and holds stdout
	// open: that is the plugin's death, not a stall.
	p.stdout.cap(time.Now().Add(execGrace))
	close(p.left)
	err := p.cmd.Wait()
	p.status = execStatus(p.cmd, err)
}

// hasLeft reports whether the plugin's own process has exited, reaped or not.
func (p *execProc) hasLeft() bool {
	select {
	case <-p.left:
		return true
	default:
		return false
	}
}

func (p *execProc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// abandon kills the plugin and waits until it is reaped.
func (p *execProc) abandon() {
	p.group.kill()
	<-p.exited
	p.stdin.Close()
	p.stdout.f.Close()
	p.stderr.flush()
}

// write writes requests for recs (with protocol lines, those it can
// carry), at most cap(p.credit) ahead of their answers. It flushes
// whenever it would wait, so that the plugin always has every request
// written so far. A write error kills the plugin: one that closed its
// stdin cannot answer, and its death is how the reader learns it.
func (p *execProc) write(recs [][]byte, json bool, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	var req []byte
	for _, rec := range recs {
		if !json && bytes.IndexByte(rec, '\n') >= 0 {
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
		id := p.sent.Add(1)
		var err error
		if json {
			req = appendExecRequest(req[:0], id, rec)
			_, err = p.w.Write(req)
		} else {
			_, _ = p.w.Write(rec)
			err = p.w.WriteByte('\n')
		}
		if err != nil {
			p.group.kill()
			return
		}
	}
	if p.w.Flush() != nil {
		p.group.kill()
	}
}

// next returns the next line of the plugin's stdout without its newline,
// valid until the next call.
func (p *execProc) next(maxLine int) ([]byte, error) {
	line, err := p.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		p.long = append(p.long[:0], line...)
		for errors.Is(err, bufio.ErrBufferFull) && len(p.long) <= maxLine {
			line, err = p.r.ReadSlice('\n')
			p.long = append(p.long, line...)
		}
		line = p.long
		if cap(p.long) > 1<<20 {
			p.long = nil // one huge answer does not pin its memory
		}
	}
	if n := len(line); n > maxLine+1 || n == maxLine+1 && line[n-1] != '\n' {
		return nil, errExecLong
	}
	if err != nil {
		return nil, err // EOF, a deadline, or the pipe closed under us; a last line without newline is part of a crash
	}
	return line[:len(line)-1], nil
}

// idle reads, without blocking, what the plugin printed while it had no
// request to answer: with protocol lines anything at all is a surplus, with
// json log lines are shown and an answer is a breach. It records a breach
// in p.fault.
func (s *execStreamStage) idle(p *execProc) {
	for p.fault == nil {
		if p.r.Buffered() == 0 {
			if !p.stdout.readable() {
				return
			}
			if _, err := p.r.Peek(1); err != nil {
				return // EOF: a plugin that exited
			}
		}
		if !s.json {
			p.fault = errExecMoreLines
			return
		}
		b, _ := p.r.Peek(p.r.Buffered())
		if bytes.IndexByte(b, '\n') < 0 {
			if len(b) == p.r.Size() || !p.stdout.readable() {
				return // a long or partial line: the next batch reads it
			}
			_, _ = p.r.Peek(len(b) + 1)
			continue
		}
		line, _ := p.r.ReadSlice('\n')
		s.stray(p, line[:len(line)-1])
	}
}

// stray handles a json line that no batch is waiting for: a log line, or
// an answer no request is owed.
func (s *execStreamStage) stray(p *execProc, line []byte) {
	switch err := parseExecAnswer(line, &s.answer); {
	case errors.Is(err, errExecNotAnswer):
		s.log.line(line)
	case err != nil:
		p.fault = err
	default:
		p.fault = s.unowed(p, s.answer.id)
	}
}

// unowed describes an answer to id when no request with that id waits.
func (s *execStreamStage) unowed(p *execProc, id int64) error {
	if id > p.sent.Load() {
		return fmt.Errorf("answered id %d, which it was never sent", id)
	}
	return fmt.Errorf("answered id %d twice", id)
}

// Process sends rec and waits for its answer: one record in lock-step.
// With protocol lines the answer line is the one output record (an empty
// line is an empty record, not a filter, because the protocol needs a
// line per record); with json the answer's records are the results.
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
// in order of i as soon as it and those before it are in. If the plugin
// dies, the record it was awaited for fails with its exit status and
// stderr, and those behind that have no answer yet fail with ErrLost.
func (s *execStreamStage) ProcessBatch(ctx context.Context, recs [][]byte, emit func(i int, out [][]byte, err error)) {
	s.batch(ctx, recs, emit)
}

func (s *execStreamStage) batch(ctx context.Context, recs [][]byte, emit func(i int, out [][]byte, err error)) {
	if len(recs) == 0 {
		return
	}
	i := 0
	if fault := s.ready(); fault != nil {
		// The plugin broke the protocol while no record was waiting: with
		// lines, the answers emitted last were likely misattributed.
		// Failing a record says so; a fresh plugin takes the rest.
		emit(0, nil, fmt.Errorf("exec stream: %s %w; restarted it", s.cmd.label, fault))
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
	base := p.sent.Load() + 1 // the id of recs[i] in protocol json
	stop, done := make(chan struct{}), make(chan struct{})
	go p.write(recs[i:], s.json, stop, done)
	unwatch := p.stdout.watch(ctx)
	var dead bool
	if s.json {
		dead = s.answerJSON(ctx, p, recs, i, base, emit)
	} else {
		dead = s.answerLines(ctx, p, recs, i, emit)
	}
	unwatch()
	close(stop)
	<-done
	if len(s.out) > 0 {
		s.out[0] = nil // the runner owns the answer now
	}
	switch {
	case dead:
		p.abandon()
		s.proc = nil
	case !s.json && p.r.Buffered() > 0:
		p.fault = errExecMoreLines // seen at the next batch
	}
}

// ready makes s.proc fit for a new batch: a plugin that died while idle is
// forgotten, and one that broke the protocol is killed. It returns the
// breach, which becomes the error of the batch's first record.
func (s *execStreamStage) ready() error {
	p := s.proc
	if p == nil {
		return nil
	}
	s.idle(p)
	if p.fault == nil && !p.hasExited() {
		return nil
	}
	p.abandon()
	s.proc = nil
	return p.fault
}

// answerLines reads the k-th line out as the answer to the k-th line in.
// It reports whether the plugin is dead.
func (s *execStreamStage) answerLines(ctx context.Context, p *execProc, recs [][]byte, i int, emit func(i int, out [][]byte, err error)) bool {
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
		line, err := p.next(s.maxOutput)
		if err == nil {
			if p.read++; p.read > p.sent.Load() {
				err = errExecMoreLines
			}
		}
		if err != nil {
			emit(i, nil, s.failed(ctx, p, err))
			dead = s.lost(ctx)
			continue
		}
		p.stdout.answered()
		<-p.credit
		s.out = append(s.out[:0], s.keep(line))
		emit(i, s.out, nil)
	}
	return dead != nil
}

// answerJSON reads answers in any order and emits them in order of i;
// recs[i] has the id base. It reports whether the plugin is dead.
func (s *execStreamStage) answerJSON(ctx context.Context, p *execProc, recs [][]byte, i int, base int64, emit func(i int, out [][]byte, err error)) bool {
	first := i
	if cap(s.held) < len(recs) {
		s.held = make([]execHeld, len(recs))
	}
	held := s.held[:len(recs)]
	defer clear(held)
	var dead error
	for i < len(recs) {
		if h := &held[i]; h.done {
			emit(i, h.out, h.err)
			*h = execHeld{}
			if dead == nil {
				<-p.credit
			}
			i++
			continue
		}
		if dead != nil {
			emit(i, nil, dead)
			i++
			continue
		}
		line, err := p.next(s.maxOutput)
		if err != nil {
			emit(i, nil, s.failed(ctx, p, err))
			dead = s.lost(ctx)
			i++
			continue
		}
		a := &s.answer
		err = parseExecAnswer(line, a)
		if errors.Is(err, errExecNotAnswer) {
			s.log.line(line)
			continue
		}
		j := first + int(a.id-base)
		if err == nil && (a.id < base || a.id > p.sent.Load() || j >= len(recs) || j < i || held[j].done) {
			err = s.unowed(p, a.id)
		}
		if err != nil {
			emit(i, nil, s.failed(ctx, p, err))
			dead = s.lost(ctx)
			i++
			continue
		}
		p.stdout.answered()
		var rerr error
		switch {
		case a.bad != nil:
			rerr = fmt.Errorf("exec stream: %s answered this record with a malformed answer: %w", s.cmd.label, a.bad)
		case a.err != nil:
			rerr = fmt.Errorf("exec stream: %s failed this record: %w", s.cmd.label, a.err)
		}
		if j == i {
			// In its turn, as most answers are: no need to hold it.
			s.out = s.out[:0]
			for _, r := range a.records {
				s.out = append(s.out, s.keep(r))
			}
			<-p.credit
			emit(i, s.out, rerr)
			i++
			continue
		}
		out := make([][]byte, len(a.records))
		for k, r := range a.records {
			out[k] = s.keep(r)
		}
		held[j] = execHeld{done: true, out: out, err: rerr}
	}
	return dead != nil
}

// keep copies an answer out of the read buffer into a slab. Slabs are
// never reused, so that answers may travel on after the batch; a slab is
// small (4 KiB) because one record kept downstream keeps its whole slab
// alive.
func (s *execStreamStage) keep(b []byte) []byte {
	if cap(s.slab)-len(s.slab) < len(b) {
		s.slab = make([]byte, 0, max(4<<10, len(b)))
	}
	at := len(s.slab)
	s.slab = append(s.slab, b...)
	return s.slab[at:len(s.slab):len(s.slab)]
}

// failed turns err, why no answer came for a record, into that record's
// error. The plugin is killed: it died, stalled or broke the protocol.
func (s *execStreamStage) failed(ctx context.Context, p *execProc, err error) error {
	switch {
	case errors.Is(err, errExecLong):
		p.abandon()
		return fmt.Errorf("exec stream: %s printed a line longer than max_output (%d bytes); killed it", s.cmd.label, s.maxOutput)
	case errors.Is(err, errExecStopped) || errors.Is(err, os.ErrDeadlineExceeded) && p.stdout.wasStopped():
		p.abandon()
		// The runner's deadline has a cause of its own; ctx.Err tells
		// a deadline from a cancel.
		if s.timeout == 0 || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("exec stream: %w", context.Cause(ctx))
		}
		return s.stalled()
	case errors.Is(err, os.ErrDeadlineExceeded) && p.hasLeft():
		return s.died(ctx, p)
	case errors.Is(err, os.ErrDeadlineExceeded):
		p.abandon()
		return s.stalled()
	case errors.Is(err, errExecMoreLines):
		p.abandon()
		return fmt.Errorf("exec stream: %s %w; killed it", s.cmd.label, err)
	case errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed):
		return s.died(ctx, p)
	default: // a breach of the json protocol
		p.abandon()
		return fmt.Errorf("exec stream: %s %w; killed it", s.cmd.label, err)
	}
}

// lost is the error of the records behind one that failed.
func (s *execStreamStage) lost(ctx context.Context) error {
	if ctx.Err() != nil {
		return fmt.Errorf("exec stream: %w", context.Cause(ctx))
	}
	return fmt.Errorf("exec stream: %w behind a record that %s failed", ErrLost, s.cmd.label)
}

func (s *execStreamStage) stalled() error {
	return fmt.Errorf("exec stream: no answer within %s for this record (is the plugin buffering its output? use sed -u, python3 -u, mawk -W interactive)", s.timeout)
}

// died explains why p's stdout ended before the answer a record waits for.
// A plugin that closed stdout but lives on gets execGrace to exit.
func (s *execStreamStage) died(ctx context.Context, p *execProc) error {
	t := time.NewTimer(execGrace)
	defer t.Stop()
	closed := ""
	select {
	case <-p.exited:
	case <-t.C:
		closed = " closed its stdout and"
	case <-ctx.Done():
	}
	if p.stdout.held() {
		closed = " left a process outside its group holding its stdout open, and"
	}
	p.abandon()
	return fmt.Errorf("exec stream: %s%s %s before answering this record%s", s.cmd.label, closed, p.status, p.stderr.suffix())
}

// Close closes the plugin's stdin, which asks it to finish, reads what it
// prints until it closes stdout, gives it execGrace in all to exit and
// then kills its process group. It returns an error if the plugin failed,
// broke the protocol or did not exit by itself.
func (s *execStreamStage) Close() error {
	defer s.log.close()
	p := s.proc
	if p == nil {
		return nil
	}
	s.proc = nil
	_ = p.stdin.Close()
	deadline := time.Now().Add(execGrace)
	p.stdout.until(deadline)
	for {
		// Read on after a breach too, so that the plugin is not stuck
		// writing into a full pipe while it should exit.
		line, err := p.next(s.maxOutput)
		if errors.Is(err, errExecLong) {
			continue
		}
		if err != nil {
			break
		}
		switch {
		case p.fault != nil:
		case !s.json:
			p.fault = errExecMoreLines
		default:
			s.stray(p, line)
		}
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		if !p.hasLeft() {
			p.abandon()
			return fmt.Errorf("exec stream: %s did not exit within %s of its input closing: killed it", s.cmd.label, execGrace)
		}
		<-p.exited // at most execGrace more: cmd.WaitDelay
	}
	p.abandon()
	if p.fault != nil {
		return fmt.Errorf("exec stream: %s %w", s.cmd.label, p.fault)
	}
	// A plugin killed after it answered every record lost nothing; one
	// that crashes or exits with a failure status says something went
	// wrong, so the run should not pass for a success.
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() &&
		(ws.Signal() == syscall.SIGKILL || ws.Signal() == syscall.SIGTERM) {
		return nil // killed from outside; a crash (SIGSEGV, SIGABRT) is not this
	}
	if !p.cmd.ProcessState.Success() {
		return fmt.Errorf("exec stream: %s %s at the end of its input%s", s.cmd.label, p.status, p.stderr.suffix())
	}
	if p.stdout.held() {
		return fmt.Errorf("exec stream: %s exited at the end of its input, but left a process outside its group holding its stdout open", s.cmd.label)
	}
	return nil
}

// execStdout is the read end of a plugin's stdout, read with a deadline:
// the stage's timeout from the last answer (or the start of a batch), and
// at once when the batch's context is done.
type execStdout struct {
	f       *os.File
	timeout time.Duration
	arm     bool // set the deadline afresh before the next read

	mu       sync.Mutex // orders watch's stop and cap with arming
	batch    uint64     // the batch whose context may stop reads
	stopped  bool
	deadline time.Time // the deadline set; zero for none
	limit    time.Time // no deadline later than this, once the plugin exited
	late     bool      // a read ran into a deadline after the plugin exited
}

func (o *execStdout) Read(b []byte) (int, error) {
	if o.arm {
		o.mu.Lock()
		if o.stopped {
			o.mu.Unlock()
			return 0, errExecStopped
		}
		o.arm = false
		var d time.Time
		if o.timeout > 0 {
			d = time.Now().Add(o.timeout)
		}
		o.set(d)
		o.mu.Unlock()
	}
	n, err := o.f.Read(b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		o.mu.Lock()
		// Once the plugin has exited, its answers are all in the pipe:
		// a read that blocks waits for a process that left its group.
		o.late = !o.limit.IsZero() && !o.stopped
		o.mu.Unlock()
	}
	return n, err
}

// set sets the read deadline d, or limit if that is sooner. o.mu must be
// held.
func (o *execStdout) set(d time.Time) {
	if !o.limit.IsZero() && (d.IsZero() || d.After(o.limit)) {
		d = o.limit
	}
	o.deadline = d
	_ = o.f.SetReadDeadline(d)
}

// cap bounds the read deadline by d from now on: the plugin has exited.
func (o *execStdout) cap(d time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.limit = d
	if !o.stopped && (o.deadline.IsZero() || o.deadline.After(d)) {
		o.set(d)
	}
}

// held reports whether a read ran into a deadline after the plugin
// exited: a process it left holds its stdout open.
func (o *execStdout) held() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.late
}

// answered restarts the timeout: an answer came.
func (o *execStdout) answered() {
	if o.timeout > 0 {
		o.arm = true
	}
}

// watch arms the deadline for a batch and stops its reads when ctx is
// done, until the returned function is called.
func (o *execStdout) watch(ctx context.Context) func() bool {
	o.mu.Lock()
	o.batch++
	b := o.batch
	o.stopped = false
	o.mu.Unlock()
	o.arm = true
	return context.AfterFunc(ctx, func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		if o.batch == b {
			o.stopped = true
			o.deadline = time.Unix(1, 0)
			_ = o.f.SetReadDeadline(o.deadline)
		}
	})
}

func (o *execStdout) wasStopped() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.stopped
}

// until sets a fixed deadline for the reads from now on.
func (o *execStdout) until(d time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.batch++
	o.stopped = false
	o.arm = false
	o.set(d)
}

// readable reports, without blocking, whether a read would not block:
// there is data, or the plugin closed its stdout.
func (o *execStdout) readable() bool {
	rc, err := o.f.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		ok = err == nil && n > 0 && fds[0].Revents != 0
	})
	return ok
}
