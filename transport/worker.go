package transport

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
)

// WorkerOptions say which stages a worker works and for which flowrun.
type WorkerOptions struct {
	// Stages are the names of the stages to work; empty: every stage of
	// the pipeline that runs on workers.
	Stages []string
	// Version is flowrun's version: a run of another is refused.
	Version string
	// Log receives a line when the worker joins, leaves or refuses a
	// run; nil: nowhere.
	Log io.Writer
	// Name is what the runs call the worker (their display, summary and
	// page, its metrics' worker label); "": Host, host:pid. Two workers
	// must not share one.
	Name string

	quiet bool   // a run's local workers: the run says what they do
	id    string // the worker's id; "": a new one
}

// Worker works the remote stages of a pipeline for every run of it on the
// broker: the way a Celery worker takes tasks, it pulls pieces of a
// stage's input from the stage's shared consumer, at most as many as it
// has idle slots (a slot is one of the stage's workers, with its own
// Stage), and acks a piece only once the broker has acked its results.
type Worker struct {
	nc    *nats.Conn
	js    jetstream.JetStream
	p     *spec.Pipeline
	opts  WorkerOptions
	hash  string
	slots map[string]chan *slot // per stage, the idle slots
	all   []*slot
	// meters count what each stage's slots did, over every run, for
	// the worker's metrics (Snapshot).
	meters map[string]*runner.Meter
	host   string // its name (Name or Host), for the run to know who made results
	// acks is whether the broker acks results: said when that changes.
	acks ackState
	// id is this process's worker, new each time it starts: two workers
	// of one --name (or a worker started again with it) are two to a
	// run, each said gone when it goes.
	id string
	// gate keeps a suspect piece (delivered again after its workers
	// ended, alone.go) alone in the process: it is worked under Lock,
	// every other piece's records under RLock, over every stage and run
	// the worker serves. A suspect that kills the process thus ends no
	// record but its own, and is the only one charged.
	gate sync.RWMutex
}

// slot is one worker of a stage: a Processor, used by one piece at a time.
type slot struct {
	stage spec.Stage
	proc  *runner.Processor
}

// NewWorker makes the Stages of the stages it works for p (each stage's
// workers of them) before it joins any run, so that a missing plugin is
// said at once.
func NewWorker(nc *nats.Conn, p *spec.Pipeline, o WorkerOptions) (*Worker, error) {
	// Results whose acks never come (a broker paused, a JetStream that
	// does not answer while the server does) time out as the run's
	// pieces do, and their piece goes back to the queue: without a
	// timeout the worker held it for ever, its InProgress keeping it
	// from everyone else, and the run waited for it.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*inFlight), jetstream.WithPublishAsyncTimeout(pubAckWait))
	if err != nil {
		return nil, err
	}
	w := &Worker{nc: nc, js: js, p: p, opts: o, hash: pipelineHash(p), slots: map[string]chan *slot{}, meters: map[string]*runner.Meter{}, host: o.Name, id: o.id}
	if w.host == "" {
		w.host = Host()
	}
	if w.id == "" {
		w.id = newWorkerID()
	}
	remote := remoteStages(p)
	var names []string
	for _, s := range remote {
		names = append(names, s.Name)
	}
	for _, name := range o.Stages {
		if !slices.Contains(names, name) {
			w.Close()
			for _, s := range p.Stages {
				if s.Name == name {
					return nil, fmt.Errorf("--stages: stage %q (%s) runs in the run process (it holds records across calls or must see every record), not on workers; the stages workers run: %s", name, s.Use, strings.Join(names, ", "))
				}
			}
			return nil, fmt.Errorf("--stages: the pipeline has no stage %q; the stages workers run: %s", name, strings.Join(names, ", "))
		}
	}
	for _, s := range remote {
		if len(o.Stages) > 0 && !slices.Contains(o.Stages, s.Name) {
			continue
		}
		free := make(chan *slot, s.Workers)
		for range s.Workers {
			proc, err := runner.NewProcessor(s, o.Log)
			if err != nil {
				w.Close()
				return nil, err
			}
			sl := &slot{stage: s, proc: proc}
			w.all = append(w.all, sl)
			free <- sl
		}
		w.slots[s.Name] = free
		w.meters[s.Name] = &runner.Meter{}
	}
	if len(w.slots) == 0 {
		w.Close()
		return nil, fmt.Errorf("pipeline %q has no stage that runs on workers: each holds records across calls or must see every record, and runs in the run process", p.Name)
	}
	return w, nil
}

// Name is the worker's name in the runs it works.
func (w *Worker) Name() string { return w.host }

// ID is the worker's id, random for each worker made: the runs tell
// two workers of one name apart by it.
func (w *Worker) ID() string { return w.id }

// newWorkerID returns 8 random hex digits.
func newWorkerID() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Close releases the Stages (plugin processes).
func (w *Worker) Close() error {
	var err error
	for _, s := range w.all {
		if cerr := s.proc.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}
	w.all = nil
	return err
}

func (w *Worker) logf(format string, args ...any) {
	if w.opts.Log != nil && !w.opts.quiet {
		fmt.Fprintf(w.opts.Log, "flowrun worker: "+format+"\n", args...)
	}
}

// Serve works every run of the pipeline on the broker, the ones active
// now and the ones that start later, until ctx is done. A run of another
// flowrun or of a different pipeline is refused, with a line in the log
// and a note in the run's entry for the run to show.
func (w *Worker) Serve(ctx context.Context) error {
	kv, watch, err := w.watchRuns(ctx, false)
	if watch == nil {
		return err // nil: ctx is done
	}
	// After a reconnect the runs bucket may be another (the broker
	// restarted on an empty store, and a worker or a run made it again):
	// a watch that outlived the old one goes on from the old sequence and
	// misses what the new one holds, so it is watched anew.
	up := w.nc.StatusChanged(nats.CONNECTED)
	defer w.nc.RemoveStatusListener(up)
	born := w.bucketBorn(ctx)
	defer func() {
		if watch != nil {
			watch.Stop()
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	// joined are the runs served; draining, per run, the work of those
	// left for their silence: no more pulls, but the pieces in hand are
	// worked until the run is over.
	joined := map[string]servedRun{}
	draining := map[string][]context.CancelFunc{}
	// stopRun ends all work of a run; it says whether there was any.
	stopRun := func(key string) bool {
		j, ok := joined[key]
		if ok {
			j.stopPull()
			j.stopWork()
		}
		d := draining[key]
		for _, stop := range d {
			stop()
		}
		delete(joined, key)
		delete(draining, key)
		return ok || len(d) > 0
	}
	// served closes when the worker stops serving a run by itself: its
	// stream went, and a run of the same id (resumed after the broker
	// lost it) is joined again.
	served := map[string]chan struct{}{}
	defer func() {
		for key := range joined {
			stopRun(key)
		}
		for key := range draining {
			stopRun(key)
		}
	}()
	refused := map[string]bool{}
	// When each run last touched its entry and its lease, by the
	// broker's clock; the broker's time is the latest revision seen, plus
	// what this process's clock says passed since.
	touched, leases := map[string]time.Time{}, map[string]time.Duration{}
	var latest, seen time.Time
	// The broker's time now, from a write of this worker's own: with only
	// dead runs' entries to go by, each looked alive for its last 10 s
	// of life at every start of a worker, and was served.
	if now, ok := brokerNow(ctx, kv); ok {
		latest, seen = now, time.Now()
	}
	silent := func(key string, at time.Time) bool {
		l := leases[key]
		return l > 0 && latest.Add(time.Since(seen)).Sub(at) > leaseLost*l
	}
	check := time.NewTicker(leaseCheck)
	defer check.Stop()
	for {
		var e jetstream.KeyValueEntry
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case <-check.C:
			for key, j := range joined {
				if silent(key, touched[key]) {
					// Its process died, or lost the broker: its idle
					// pulls would hold slots the live runs need. The
					// pieces in hand are worked: their results wait in
					// the stream, their deliveries are not spent.
					j.stopPull()
					draining[key] = append(draining[key], j.stopWork)
					delete(joined, key)
					delete(served, key)
					w.logf("run %s has said nothing for %v: not served until it does (a --resume)", strings.TrimPrefix(key, token(w.p.Name)+"."), leaseLost*leases[key])
				}
			}
			continue
		case e, ok = <-watch.Updates():
		case <-up:
			b := w.bucketBorn(ctx)
			if b.IsZero() || b.Equal(born) {
				continue // the same bucket, or the broker cannot tell
			}
			ok = false
		}
		if !ok {
			// The broker lost the runs bucket (an empty store): the runs
			// joined are gone with it; watch it anew for the next ones.
			watch.Stop()
			for key := range joined {
				stopRun(key)
			}
			for key := range draining {
				stopRun(key)
			}
			clear(served)
			clear(refused)
			clear(touched)
			clear(leases)
			if kv, watch, err = w.rewatch(ctx); watch == nil {
				return err // nil: ctx is done
			}
			born = w.bucketBorn(ctx)
			if now, ok := brokerNow(ctx, kv); ok {
				latest, seen = now, time.Now()
			}
			continue
		}
		if e == nil {
			continue // the end of the runs there were
		}
		key := e.Key()
		if e.Created().After(latest) {
			latest, seen = e.Created(), time.Now()
		}
		var info RunInfo
		put := e.Operation() == jetstream.KeyValuePut && json.Unmarshal(e.Value(), &info) == nil
		if put && info.Pipeline != w.p.Name {
			continue // another pipeline whose name makes the same token (x.y and x_y): not refused, not ours
		}
		if !put || info.State != stateActive {
			delete(touched, key)
			delete(leases, key)
			if stopRun(key) {
				delete(served, key)
				w.logf("run %s is over", strings.TrimPrefix(key, token(w.p.Name)+"."))
			}
			continue
		}
		touched[key], leases[key] = e.Created(), info.Lease
		if _, ok := joined[key]; ok && !ended(served[key]) || refused[key] || silent(key, e.Created()) {
			continue
		}
		if why := compatible(info, w.opts.Version, w.hash); why != "" {
			refused[key] = true
			w.logf("refusing run %s of pipeline %q (from %s): %s", info.Run, info.Pipeline, info.Host, why)
			w.announce(ctx, kv, info, Presence{Refused: why})
			continue
		}
		if j, ok := joined[key]; ok { // it ended by itself
			j.stopPull()
			j.stopWork()
		}
		wctx, stopWork := context.WithCancel(ctx)
		pctx, stopPull := context.WithCancel(wctx)
		joined[key] = servedRun{stopPull: stopPull, stopWork: stopWork}
		names := w.stageNames(info)
		w.logf("joined run %s of pipeline %q (from %s): stages %s", info.Run, info.Pipeline, info.Host, strings.Join(names, ", "))
		w.announce(ctx, kv, info, Presence{Stages: names})
		end := make(chan struct{})
		served[key] = end
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(end)
			w.serveRun(wctx, pctx, info)
		}()
	}
}

// servedRun stops a run a worker serves: its pulls, or all its work.
type servedRun struct {
	stopPull, stopWork context.CancelFunc
}

// leaseCheck is how often a worker looks for runs that said nothing
// for leaseLost of their leases.
const leaseCheck = 500 * time.Millisecond

// announce tells the run that this worker joined it or refused it.
func (w *Worker) announce(ctx context.Context, kv jetstream.KeyValue, info RunInfo, p Presence) {
	p.Host, p.ID, p.Version = w.host, w.id, w.opts.Version
	b, _ := json.Marshal(p)
	kv.Put(ctx, presenceKey(info, w.host+"."+w.id), b)
}

// stageNames are the stages of info this worker works.
func (w *Worker) stageNames(info RunInfo) []string {
	var names []string
	for _, s := range info.Stages {
		if w.slots[s.Name] != nil {
			names = append(names, s.Name)
		}
	}
	return names
}

// serveRun works the stages of one run until ctx is done or the run's
// stream is gone. Once pull is done it takes no more pieces, and ends
// when those in hand are worked and settled: a run silent for a while
// (stopped, cut off from the broker) finds their results in its stream
// when it is back, and their deliveries are not spent.
func (w *Worker) serveRun(ctx, pull context.Context, info RunInfo) {
	t := w.newTally(info)
	rctx, stopReports := context.WithCancel(ctx)
	var reports sync.WaitGroup
	reports.Add(1)
	go func() {
		defer reports.Done()
		w.report(rctx, info, t)
	}()
	var wg sync.WaitGroup
	for _, s := range info.Stages {
		free := w.slots[s.Name]
		if free == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.serveStage(ctx, pull, info, s, free, t.stages[s.Name])
		}()
	}
	wg.Wait()
	stopReports()
	reports.Wait()
}

// idleWait is how long one pull waits for a piece when the queue was
// empty; a pull of a queue with pieces in it returns at once.
const idleWait = time.Second

// serveStage pulls pieces of one stage's input while it has idle slots,
// and deals their records out to the slots one by one (for a stage that
// takes one at a time; a cheap stage's piece goes to one slot whole), as
// the runner's own workers take them from a queue: a piece of many
// records keeps every idle slot busy without a round trip to the broker
// per record. It pulls only when every record it holds is started, and
// no more pieces than it has idle slots (fewer when pieces have been of
// several records): a busy worker's pre-buffered pieces would wait while
// other workers idle, or pass their ack wait and be worked again
// elsewhere (the known nats.go pitfall). Every piece held, started or
// not, has InProgress sent for it.
func (w *Worker) serveStage(ctx, pull context.Context, info RunInfo, s StageInfo, free chan *slot, t *stageTally) {
	var cons jetstream.Consumer
	for cons == nil {
		if pull.Err() != nil {
			return
		}
		c, err := w.js.Consumer(ctx, info.Stream, s.Consumer)
		if err == nil {
			cons = c
			break
		}
		if ctx.Err() != nil || errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			return
		}
		if !sleepCtx(pull, idleWait) {
			return
		}
	}
	var busy sync.WaitGroup
	defer busy.Wait()
	var queue []chunk // records held, not started
	defer func() {
		for _, c := range queue {
			if c.p.end(c.i, runner.Done{}, context.Canceled) {
				w.settle(ctx, info, s, c.p, t)
			}
		}
	}()
	idle := true
	perPiece := 1 // records in a piece, lately
	for ctx.Err() == nil {
		pulling := pull.Done()
		if pull.Err() != nil {
			if len(queue) == 0 {
				return // what is started finishes (busy)
			}
			pulling = nil // deal out what is held
		}
		var slots []*slot
		select {
		case sl := <-free:
			slots = append(slots, sl)
		case <-ctx.Done():
			return
		case <-pulling:
			continue
		}
		if len(queue) > 0 {
			c := queue[0]
			queue = queue[1:]
			busy.Add(1)
			go func() {
				defer busy.Done()
				w.work(ctx, info, s, slots[0], c, free, t)
			}()
			continue
		}
		var batch jetstream.MessageBatch
		var err error
		cancel := func() {}
		if idle {
			// One piece, waiting for it: the next pull takes as many as
			// there are idle slots then.
			var fctx context.Context
			fctx, cancel = context.WithTimeout(pull, idleWait)
			batch, err = cons.Fetch(1, jetstream.FetchContext(fctx))
		} else {
		more:
			for {
				select {
				case sl := <-free:
					slots = append(slots, sl)
				default:
					break more
				}
			}
			batch, err = cons.FetchNoWait((len(slots) + perPiece - 1) / perPiece)
		}
		got, recs := 0, 0
		var rest []chunk
		if err == nil {
			for m := range batch.Messages() {
				p := w.hold(info, s, m)
				if p == nil {
					continue
				}
				got++
				recs += len(p.recs)
				cs := p.chunks(slots[0].proc.Take() == 1)
				queue = append(queue, cs[0]) // each piece starts at once
				rest = append(rest, cs[1:]...)
			}
			err = batch.Error()
		}
		cancel()
		queue = append(queue, rest...)
		if got > 0 {
			perPiece = max(1, recs/got)
		}
		for _, sl := range slots {
			free <- sl
		}
		idle = got == 0
		switch {
		case err == nil, errors.Is(err, nats.ErrTimeout), errors.Is(err, context.DeadlineExceeded), errors.Is(err, jetstream.ErrNoMessages):
		case ctx.Err() != nil:
			return
		case pull.Err() != nil: // no more pulls: deal out what is held
		case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrConsumerDeleted):
			return // the run is over
		default:
			if !sleepCtx(ctx, idleWait/4) { // the broker is away: pull again
				return
			}
		}
	}
}

// piece is one message of a stage's input that this worker holds, from
// its fetch until it is acked (or given back): its records are worked in
// chunks, by whichever slots are idle, and its results go out whole once
// the last chunk is done.
type piece struct {
	m         jetstream.Msg
	key       string // Flowrun-Piece
	seq       uint64 // its stream sequence (Flowrun-Msg)
	sent      string // its Nats-Msg-Id: its results' ids (resultsID)
	delivered int64
	recs      []runner.Record
	// alone: the piece is worked alone in the process, a record at a
	// time (a suspect: its workers ended before, alone.go). termed: one
	// of its records was failed for ending its workers (--max-deliver),
	// and the piece is Termed.
	alone, termed bool

	stop    chan struct{} // ends the InProgress ticker
	ticking sync.WaitGroup

	mu   sync.Mutex
	done []runner.Done // per chunk
	left int           // chunks not done
	err  error         // a chunk not worked: the worker is stopping
}

// chunk is records lo..hi of a piece, the i-th of its chunks.
type chunk struct {
	p         *piece
	i, lo, hi int
}

// hold takes a piece just fetched: it says when this is not its first
// delivery, whether it is worked alone, and starts its InProgress ticker. A message that
// is not flowrun's is Termed (nil).
func (w *Worker) hold(info RunInfo, s StageInfo, m jetstream.Msg) *piece {
	meta, err := m.Metadata()
	key := m.Headers().Get(hdrPiece)
	recs, derr := decodeWork(m.Data())
	if err != nil || key == "" || derr != nil {
		m.Term() // not flowrun's: no one can work it
		return nil
	}
	p := &piece{m: m, key: key, seq: meta.Sequence.Stream, sent: m.Headers().Get(jetstream.MsgIDHeader), delivered: int64(meta.NumDelivered), recs: recs, stop: make(chan struct{})}
	if p.delivered > 1 {
		w.noticeRedelivery(info, s, key, p.seq, p.sent, p.delivered)
	}
	p.alone = p.delivered >= aloneFrom(cmp0(info.MaxDeliver, DefaultMaxDeliver))
	p.ticking.Add(1)
	go func() {
		defer p.ticking.Done()
		progress(m, info.AckWait, p.stop)
	}()
	return p
}

// chunks cuts the piece into the chunks slots take: a record each when
// spread, else (and for a piece worked alone) the whole piece.
func (p *piece) chunks(spread bool) []chunk {
	if !spread || p.alone || len(p.recs) <= 1 {
		p.done, p.left = make([]runner.Done, 1), 1
		return []chunk{{p: p, hi: len(p.recs)}}
	}
	cs := make([]chunk, len(p.recs))
	for i := range cs {
		cs[i] = chunk{p: p, i: i, lo: i, hi: i + 1}
	}
	p.done, p.left = make([]runner.Done, len(cs)), len(cs)
	return cs
}

// end records chunk i's results (or that it was not worked: err) and
// says whether it was the piece's last.
func (p *piece) end(i int, d runner.Done, err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done[i] = d
	if err != nil && p.err == nil {
		p.err = err
	}
	p.left--
	return p.left == 0
}

// result joins the chunks' results in input order: up to and with the
// first chunk whose record failed the stage, as one slot working the
// piece would have stopped there.
func (p *piece) result() runner.Done {
	if len(p.done) == 1 {
		return p.done[0]
	}
	return join(p.done)
}

// join joins the results of a piece's records (or chunks), in order.
func join(done []runner.Done) runner.Done {
	var d runner.Done
	for _, c := range done {
		d.Recs = append(d.Recs, c.Recs...)
		d.Dead = append(d.Dead, c.Dead...)
		n := &d.Counts
		n.In += c.Counts.In
		n.Out += c.Counts.Out
		n.Errors += c.Counts.Errors
		n.Retries += c.Counts.Retries
		n.Skipped += c.Counts.Skipped
		n.Dead += c.Counts.Dead
		n.Busy += c.Counts.Busy
		if c.Fail != nil {
			d.Fail = c.Fail
			break
		}
	}
	return d
}

// work runs one chunk on a slot, gives the slot back, and settles the
// piece when the chunk was its last: the slot is not held while the
// results go to the broker.
func (w *Worker) work(ctx context.Context, info RunInfo, s StageInfo, sl *slot, c chunk, free chan<- *slot, t *stageTally) {
	p := c.p
	recs := p.recs[c.lo:c.hi]
	var d runner.Done
	var err error
	t.begin()
	if p.alone {
		d, err = w.alone(ctx, info, s, sl, p)
	} else {
		w.gate.RLock()
		d, err = sl.proc.Process(ctx, recs)
		if err == nil {
			err = w.fitResults(ctx, sl, recs, &d, oneRecordLimit(w.nc.MaxPayload()))
		}
		w.gate.RUnlock()
	}
	t.end(runner.Counts{}) // counted once the piece is acked
	free <- sl
	if p.end(c.i, d, err) {
		w.settle(ctx, info, s, p, t)
	}
}

// settle publishes a piece's results (in parts under the broker's message
// size) and acks the piece once the broker acked every part; a piece not
// worked whole (the worker is stopping) goes to another worker. A piece
// with a record that ended its workers too often (alone) is Termed.
func (w *Worker) settle(ctx context.Context, info RunInfo, s StageInfo, p *piece, t *stageTally) {
	defer func() {
		close(p.stop)
		p.ticking.Wait()
	}()
	if p.err != nil {
		p.m.Nak()
		return
	}
	d := p.result()
	sent := time.Now()
	if err := w.publish(ctx, info, s, p.key, p.seq, p.sent, p.delivered, &d); err != nil {
		if errors.Is(err, jetstream.ErrAsyncPublishTimeout) && w.acks.change(sent, false) {
			w.logf("the broker acked no results of stage %q within %v (it stalls, or its JetStream does not answer): the pieces they answer go back to the queue, to be worked again", s.Name, pubAckWait)
		}
		p.m.Nak()
		return
	}
	if w.acks.change(sent, true) {
		w.logf("the broker acks results again")
	}
	// What it did counts now: none for a piece given back.
	t.begin()
	t.end(d.Counts)
	if p.termed {
		p.m.Term()
		return
	}
	p.m.Ack()
}

// ackState is whether the broker acks a worker's results, as their
// publishes last told: one line when it stops, one when it acks again,
// however many pieces were out then. A publish sent before the last
// change tells nothing new (the acks of pieces sent during a stall time
// out one by one after it ended).
type ackState struct {
	mu      sync.Mutex
	stalled bool
	since   time.Time
}

// change takes the word of a publish sent at sent, acked or not, and
// says whether the state changed.
func (a *ackState) change(sent time.Time, acked bool) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stalled == !acked || sent.Before(a.since) {
		return false
	}
	a.stalled, a.since = !acked, time.Now()
	return true
}

// noticeRedelivery tells the run that this is a delivery of piece n
// after its first, as it starts: its results may never reach the run
// (the first delivery's came first, or it dies too), the notice does.
func (w *Worker) noticeRedelivery(info RunInfo, s StageInfo, n string, seq uint64, sent string, delivered int64) {
	msg := nats.NewMsg(s.Out)
	msg.Header.Set(hdrRun, info.Run)
	msg.Header.Set(hdrStage, s.Name)
	msg.Header.Set(hdrPiece, n)
	msg.Header.Set(hdrMsg, strconv.FormatUint(seq, 10))
	msg.Header.Set(hdrAttempt, strconv.FormatInt(delivered, 10))
	msg.Header.Set(hdrNotice, "redelivered")
	w.js.PublishMsgAsync(msg, jetstream.WithMsgID(resultsID(info, s, seq, sent)+".redelivered."+strconv.FormatInt(delivered, 10)))
}

// progress tells the broker that a piece is still being worked, a few
// times per ack wait, until stop closes.
func progress(m jetstream.Msg, ackWait time.Duration, stop <-chan struct{}) {
	every := max(ackWait/3, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			m.InProgress()
		case <-stop:
			return
		}
	}
}

// publish sends a piece's results and waits for the broker's acks. Their
// ids are those of the piece's message (its stream sequence), the part
// and the delivery: a publish retried is kept once, while the results of
// another delivery, or of the same records sent again in another message
// (a resumed run's), are not taken for copies and dropped by the broker.
func (w *Worker) publish(ctx context.Context, info RunInfo, s StageInfo, n string, seq uint64, sent string, delivered int64, d *runner.Done) error {
	parts := splitResults(d, recordLimit(w.nc.MaxPayload()))
	futures := make([]jetstream.PubAckFuture, 0, len(parts))
	for k, p := range parts {
		recs := p.recs
		msg := nats.NewMsg(s.Out)
		msg.Header.Set(hdrRun, info.Run)
		msg.Header.Set(hdrStage, s.Name)
		msg.Header.Set(hdrPiece, n)
		msg.Header.Set(hdrPart, strconv.Itoa(k+1)+"/"+strconv.Itoa(len(parts)))
		msg.Header.Set(hdrMsg, strconv.FormatUint(seq, 10))
		msg.Header.Set(hdrAttempt, strconv.FormatInt(delivered, 10))
		msg.Header.Set(hdrSeq, seqRange(recs))
		msg.Header.Set(hdrWorker, w.id+" "+w.host)
		var whole *runner.Done
		if k == len(parts)-1 {
			whole = d
		}
		msg.Data = appendDone(make([]byte, 0, 64+len(recs)*8), p, whole)
		// The id is the delivery's too: the results of a piece worked
		// again reach the run, which takes the first and counts the
		// redelivery of the other.
		id := resultsID(info, s, seq, sent) + "." + strconv.Itoa(k+1) + "." + strconv.FormatInt(delivered, 10)
		f, err := w.js.PublishMsgAsync(msg, jetstream.WithMsgID(id))
		if err != nil {
			return err
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
	return nil
}

// resultsID is the start of the Nats-Msg-Id of a piece's results: made
// of the piece's own id (the run process that sent it and its number
// there), else of its stream sequence. Not of the sequence alone: after a
// broker restarted on an empty store the resumed run's stream counts
// from 1 again, and results a worker made of a piece of the lost stream
// and published into the new one took the id of the new piece of that
// sequence, whose results the broker then dropped as a copy (the resumed
// run waited for them for ever).
func resultsID(info RunInfo, s StageInfo, seq uint64, sent string) string {
	if sent != "" {
		return sent + ".out"
	}
	return info.Run + "." + s.Results + "." + strconv.FormatUint(seq, 10)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Host names this process for a run's log: host:pid.
func Host() string {
	h, _ := os.Hostname()
	return h + ":" + strconv.Itoa(os.Getpid())
}
