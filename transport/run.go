package transport

import (
	"cmp"
	"context"
	"crypto/sha256"
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
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
)

// Defaults of a run on the broker.
const (
	// DefaultAckWait is how long a worker may hold a piece without a word
	// (an ack, or an InProgress while a record takes long) before the
	// broker gives it to another worker.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxDeliver says when flowrun gives up on a record that
	// kills (or stalls) every worker that takes it: once it ended N-1 of
	// them (at least 2), the last while it was worked alone (alone.go).
	// The record fails as the stage's on_error says.
	DefaultMaxDeliver = 5
	// inFlight bounds the pieces of one stage on the broker at once: the
	// queue on the broker is bounded too, as the runner's own queues are.
	inFlight = 512
	// pubAckWait is how long the run waits for the broker's ack of a
	// piece before it publishes it again (check).
	pubAckWait = 10 * time.Second
	// resultsAckWait is for the run's own consumer of results: it acks
	// once the next stage took them, which backpressure may delay.
	resultsAckWait = 5 * time.Minute
	// resultsPending bounds the results the run holds unacked: those of
	// the pieces in flight, and those that dead runs of a resumed run left
	// (kept until the resumed run sends the same piece, which it may
	// never do: it cuts its pieces anew), however many times it was
	// killed.
	resultsPending = 64 * inFlight
	// DefaultLease is how often a run touches its entry in the runs
	// bucket while it lives: one small put, cheap for any number of runs
	// at that rate, and short enough that a run killed without a word
	// costs the live ones of its pipeline little (below).
	DefaultLease = 2 * time.Second
	// leaseLost is the leases without a touch after which a worker stops
	// pulling the run (10 s by default): each idle pull of a dead run's
	// stream holds a slot of the stage for up to idleWait, which starved
	// the live runs of the pipeline (7 min 48 s for a run of 1.8 s). Five
	// lets a touch or two come late (a reconnect, a loaded machine)
	// without a live run's pieces waiting. The run's next touch (a
	// --resume) has it served again.
	leaseLost = 5
	// garbageAfter is the leases without a touch after which the next
	// run on the broker deletes the stream and entry of a run without a
	// journal (1 min by default): dead, it can never be resumed, and its
	// stream would hold what it queued for ever. A run cut off from the
	// broker (or stopped) that long is taken for dead; the broker away
	// that long is not (reapWatch).
	garbageAfter = 30
)

// RunOptions say how a run uses the broker.
type RunOptions struct {
	// RunID names the run's stream; "" makes a new one (NewRunID).
	RunID string
	// Version is flowrun's version: workers of another refuse the run.
	Version    string
	AckWait    time.Duration // 0: DefaultAckWait
	MaxDeliver int           // 0: DefaultMaxDeliver
	// LocalWorkers runs the remote stages' worker loop in this process
	// too, through the broker (not --no-local-workers).
	LocalWorkers bool
	// Resume continues the run of RunID that a dead process left on the
	// broker: the pieces still queued are not sent again, those answered
	// are not worked again. Without it, a run id whose stream is there
	// is refused, unless Fresh says to replace it.
	Resume, Fresh bool
	// Journaled says the run keeps a journal (--journal): dead, its
	// stream is kept for --resume, not deleted by the runs that follow.
	Journaled bool
	// Lease is how often the run touches its entry (0: DefaultLease);
	// shorter in tests.
	Lease time.Duration
	// Log is where the run says what workers do (one refused the run);
	// nil: nowhere.
	Log io.Writer
}

// Run is one run of a pipeline on the broker: its stream, its entry in
// the runs bucket, and the queues of its remote stages. It is the
// runner.Remote of that run.
type Run struct {
	nc   *nats.Conn
	js   jetstream.JetStream
	p    *spec.Pipeline
	opts RunOptions
	info RunInfo
	kv   jetstream.KeyValue

	mu     sync.Mutex
	queues []*stageQueue
	local  *Worker
	// localID is local's id, known before the workers' reports are
	// heard (local is made later).
	localID string
	stop    context.CancelFunc
	// unlease stops the touches of the run's entry (lease).
	unlease context.CancelFunc
	watch   jetstream.KeyWatcher // the workers' presence
	keep    bool                 // Close leaves the stream
	opened  bool                 // Open was called
	done    sync.WaitGroup

	joined  atomic.Int64  // workers that joined the run
	table   workerTable   // what they report
	closing atomic.Bool   // workers leave because the run ends
	lost    atomic.Bool   // its stream is gone from the broker (lost.go)
	lostCh  chan struct{} // closed when lost is set
	// deleted says the stream went because another run deleted the run
	// as dead (lease.go), not with the broker's store.
	deleted atomic.Bool
	taken   atomic.Bool   // its entry written by another process: a --resume of the run
	rev     atomic.Uint64 // the revision of the run's entry it last wrote
	lostOne sync.Once
	unwatch context.CancelFunc
}

func (r *Run) logf(format string, v ...any) {
	if r.opts.Log != nil {
		fmt.Fprintf(r.opts.Log, format, v...)
	}
}

// NewRun prepares a run of p on the broker nc is connected to. Nothing is
// created on the broker until the runner opens the run's queues.
func NewRun(nc *nats.Conn, p *spec.Pipeline, o RunOptions) (*Run, error) {
	// An ack that never comes (its message lost with a broker that
	// restarted) times out, and the piece is published again: without a
	// timeout the run waited for it for ever when it closed.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*inFlight), jetstream.WithPublishAsyncTimeout(pubAckWait))
	if err != nil {
		return nil, err
	}
	if o.RunID == "" {
		o.RunID = NewRunID()
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxDeliver <= 0 {
		o.MaxDeliver = DefaultMaxDeliver
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	return &Run{nc: nc, js: js, p: p, opts: o, lostCh: make(chan struct{})}, nil
}

// ID is the run's id.
func (r *Run) ID() string { return r.opts.RunID }

// Stream is the name of the run's stream.
func (r *Run) Stream() string { return r.info.Stream }

// Open creates the run's stream with a work-queue subject and one shared
// durable consumer per remote stage, and a consumer of each stage's
// results for the run; says in the runs bucket that the run is active,
// for workers to join; and starts the local workers.
func (r *Run) Open(ctx context.Context, remote []spec.Stage) (map[string]runner.StageQueue, error) {
	r.opened = true
	host, _ := os.Hostname()
	r.info = newRunInfo(r.p, r.opts.RunID, r.opts.Version, remote)
	r.info.Host = host + ":" + strconv.Itoa(os.Getpid())
	r.info.Started = time.Now().UTC()
	r.info.AckWait, r.info.MaxDeliver = r.opts.AckWait, r.opts.MaxDeliver
	r.info.Lease, r.info.Journaled = r.opts.Lease, r.opts.Journaled
	fail := func(what string, err error) error {
		return fmt.Errorf("broker %s: %s: %w", r.nc.ConnectedUrlRedacted(), what, plain(err))
	}
	// A reconnect from here on may have been to a broker without the
	// stream: the watch of it looks again from this count.
	since := r.nc.Stats().Reconnects
	var err error
	if r.kv, err = runsKV(ctx, r.js); err != nil {
		return nil, fail("runs bucket", err)
	}
	if !r.opts.Resume && !r.opts.Fresh {
		if err := r.claim(ctx); err != nil {
			r.kv = nil // not this run's to end
			return nil, err
		}
	}
	left, err := r.leftover(ctx)
	if err != nil {
		r.unclaim(ctx)
		return nil, fail("stream "+r.info.Stream, err)
	}
	subjects := make([]string, 0, 2*len(r.info.Stages))
	for _, s := range r.info.Stages {
		subjects = append(subjects, s.In, s.Out, s.Tried+".*")
	}
	stream, err := r.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        r.info.Stream,
		Description: fmt.Sprintf("flowrun pipeline %q run %s", r.p.Name, r.opts.RunID),
		Subjects:    subjects,
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Duplicates:  2 * time.Minute,
		Metadata:    map[string]string{"flowrun_version": r.opts.Version, "flowrun_pipeline_hash": r.info.Hash},
	})
	if err != nil {
		return nil, fail("create stream "+r.info.Stream, err)
	}
	queues := map[string]runner.StageQueue{}
	max := r.nc.MaxPayload()
	for _, s := range r.info.Stages {
		_, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: s.Consumer, FilterSubject: s.In, AckPolicy: jetstream.AckExplicitPolicy,
			// No MaxDeliver: the broker's count of deliveries is not what
			// flowrun gives up on (worker.go, alone), and a piece it no
			// longer delivered would never be answered.
			AckWait: r.opts.AckWait, MaxAckPending: 4 * inFlight,
			Description: fmt.Sprintf("stage %q: shared by every worker", s.Name),
		})
		if err != nil {
			return nil, fail("create consumer "+s.Consumer, err)
		}
		if left != nil {
			// The dead run's results that it had not acked come again now,
			// not after their ack wait.
			if err := stream.DeleteConsumer(ctx, s.Results); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				return nil, fail("delete consumer "+s.Results, err)
			}
		}
		rc, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: s.Results, FilterSubject: s.Out, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: resultsAckWait, MaxAckPending: resultsPending,
			Description: fmt.Sprintf("stage %q: its results, for the run", s.Name),
		})
		if err != nil {
			return nil, fail("create consumer "+s.Results, err)
		}
		q := newStageQueue(r, s, recordLimit(max))
		for key := range left[s.Name] {
			q.left[key] = true
		}
		q.cuts = cutsOf(q.left)
		if q.results, err = rc.Messages(jetstream.PullMaxMessages(inFlight)); err != nil {
			q.close()
			return nil, fail("consume "+s.Results, err)
		}
		r.mu.Lock()
		r.queues = append(r.queues, q)
		r.mu.Unlock()
		queues[s.Name] = q
	}
	if r.opts.LocalWorkers {
		r.localID = newWorkerID()
	}
	if err := r.listen(); err != nil {
		return nil, fail("subscribe to "+r.info.Workers, err)
	}
	watch, err := r.kv.Watch(ctx, r.info.key()+".w.*")
	if err != nil {
		return nil, fail("runs bucket", err)
	}
	r.watch = watch
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		r.workers(watch)
	}()
	if err := r.touch(ctx); err != nil { // active: workers join
		return nil, fail("runs bucket", err)
	}
	lctx, unwatch := context.WithCancel(context.WithoutCancel(ctx))
	r.unwatch = unwatch
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		r.watchLost(lctx, since)
	}()
	tctx, unlease := context.WithCancel(context.WithoutCancel(ctx))
	r.unlease = unlease
	r.done.Add(1)
	go func() {
		defer r.done.Done()
		r.lease(tctx)
	}()
	if r.opts.LocalWorkers {
		w, err := NewWorker(r.nc, r.p, WorkerOptions{Version: r.opts.Version, Log: r.opts.Log, quiet: true, id: r.localID})
		if err != nil {
			return nil, err
		}
		lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		r.local, r.stop = w, stop
		r.done.Add(1)
		go func() {
			defer r.done.Done()
			w.serveRun(lctx, lctx, r.info)
		}()
	}
	return queues, nil
}

// workers says in the log which workers joined the run or refused it,
// and, when the run works no stage itself, that it waits for one while
// none has joined.
func (r *Run) workers(watch jetstream.KeyWatcher) {
	logf := r.logf
	check := time.NewTicker(reportEvery)
	defer check.Stop()
	var waiting <-chan time.Time
	if !r.opts.LocalWorkers {
		t := time.NewTimer(waitingShown)
		defer t.Stop()
		waiting = t.C
	}
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-waiting:
			if r.joined.Load() == 0 {
				logf("flowrun: run %s is waiting for a worker of pipeline %q: it works no stage itself (flowrun worker FILE --broker URL)\n", r.opts.RunID, r.p.Name)
			}
			continue
		case now := <-check.C:
			r.checkGone(now)
			continue
		case u, ok := <-watch.Updates():
			if !ok {
				return
			}
			e = u
		}
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			continue
		}
		var p Presence
		if json.Unmarshal(e.Value(), &p) != nil {
			continue
		}
		name := r.table.joining(printable(p.ID), printable(p.Host))
		if p.Refused != "" {
			logf("flowrun: worker %s refused run %s: %s\n", name, r.opts.RunID, p.Refused)
		} else {
			r.joined.Add(1)
			logf("flowrun: worker %s joined run %s: stages %s\n", name, r.opts.RunID, strings.Join(p.Stages, ", "))
		}
	}
}

// waitingShown is how long a run that works no stage itself waits for a
// worker before it says so.
const waitingShown = 2 * time.Second

// Unworked says why no one works the run's stages now, "" when someone
// does: it works none itself (--no-local-workers), and no worker has
// joined, or every one that did is gone (no word from it for goneAfter)
// or left. Stopped then, the run cannot drain the pieces it sent: it
// must end at once rather than wait for ever.
func (r *Run) Unworked() string {
	if r.opts.LocalWorkers {
		return ""
	}
	if r.joined.Load() == 0 {
		return fmt.Sprintf("no worker joined run %s", r.opts.RunID)
	}
	t := &r.table
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var gone, left int
	for _, w := range t.byKey {
		switch {
		case w.report.Left:
			left++
		case now.Sub(w.seen) > goneAfter:
			gone++
		default:
			return ""
		}
	}
	var why string
	switch n := gone + left; {
	case n == 0:
		return "" // joined, its first report on the way
	case left == 0 && n == 1:
		why = fmt.Sprintf("the worker that joined is gone (no word from it for %v)", goneAfter)
	case left == 0:
		why = fmt.Sprintf("the %d workers that joined are gone (no word from them for %v)", n, goneAfter)
	case gone == 0 && n == 1:
		why = "the worker that joined left"
	case gone == 0:
		why = fmt.Sprintf("the %d workers that joined left", n)
	default:
		why = fmt.Sprintf("of the %d workers that joined, %d are gone (no word for %v) and %d left", n, gone, goneAfter, left)
	}
	return fmt.Sprintf("no worker works run %s now: %s", r.opts.RunID, why)
}

// leftover looks at the stream a run of this id left on the broker: with
// Resume it returns, per stage, the keys of the pieces still queued or
// answered there; with Fresh it deletes the stream; otherwise a stream
// there is an error. It returns nil when there is none.
func (r *Run) leftover(ctx context.Context) (map[string]map[string]bool, error) {
	stream, err := r.js.Stream(ctx, r.info.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	switch {
	case r.opts.Fresh:
		return nil, r.js.DeleteStream(ctx, r.info.Stream)
	case !r.opts.Resume:
		return nil, fmt.Errorf("run %s is on the broker already: --resume continues it, or give another --run-id", r.opts.RunID)
	}
	bySubject, outs := map[string]string{}, map[string]bool{}
	for _, s := range r.info.Stages {
		bySubject[s.In], bySubject[s.Out] = s.Name, s.Name
		outs[s.Out] = true
	}
	left := map[string]map[string]bool{}
	mark := func(name, key string) {
		if left[name] == nil {
			left[name] = map[string]bool{}
		}
		left[name][key] = true
	}
	// A piece is answered once every part of one delivery's results is
	// there: the dead run may have acked (removed) some parts of results
	// it took before it died, and the rest would never make them whole.
	parts := map[attempt]map[int]bool{}
	defer func() {
		n := 0
		for _, keys := range left {
			n += len(keys)
		}
		if r.opts.Log != nil {
			fmt.Fprintf(r.opts.Log, "flowrun: resuming run %s: %d pieces left on the broker (queued or answered) are not sent again\n", r.opts.RunID, n)
		}
	}()
	// Workers may go on while the stream is read: a piece acked (gone)
	// before its place was read had its results stored before, so one
	// more pass over what came meanwhile finds them.
	//
	// Each look asks for the next message there is from a sequence on,
	// not for the message at it: the stream of a run killed and resumed
	// again and again spans every message published since the oldest one
	// still there (results no run will take, of records before the
	// journal's mark), nearly all done and gone, and a round trip for
	// each took seconds on a loaded machine (workers stop serving a run
	// silent for 10 s, giving back what they hold).
	subjects := strings.TrimSuffix(r.info.Workers, ".workers") + ".>"
	from := uint64(0)
	for pass := 0; pass < 2; pass++ {
		info, err := stream.Info(ctx)
		if err != nil {
			return nil, err
		}
		if from == 0 {
			from = info.State.FirstSeq
		}
		for seq := from; seq <= info.State.LastSeq && from > 0; seq++ {
			m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subjects))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break // none left from seq on
			}
			if err != nil {
				return nil, err
			}
			if m.Sequence > info.State.LastSeq {
				break // for the next pass
			}
			seq = m.Sequence
			name, ok := bySubject[m.Subject]
			key := m.Header.Get(hdrPiece)
			if !ok || key == "" || m.Header.Get(hdrNotice) != "" {
				continue
			}
			if !outs[m.Subject] {
				mark(name, key) // queued, or in a worker's hands
				continue
			}
			k, n, err := part(m.Header)
			if err != nil {
				continue
			}
			delivered, _ := strconv.ParseInt(m.Header.Get(hdrAttempt), 10, 64)
			at := attempt{name + "\x00" + key, m.Header.Get(hdrMsg), delivered}
			if parts[at] == nil {
				parts[at] = map[int]bool{}
			}
			if parts[at][k] = true; len(parts[at]) == n {
				mark(name, key)
			}
		}
		from = info.State.LastSeq + 1
	}
	return left, nil
}

// KeepStream makes Close leave the run's stream on the broker, for a
// run that did not finish and may be resumed (--journal, --resume).
func (r *Run) KeepStream() { r.keep = true }

// runsKV opens the runs bucket, creating it if it is missing.
func runsKV(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, runsBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: runsBucket, Description: "flowrun runs on this broker, for workers to join", Storage: jetstream.FileStorage,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, runsBucket)
		}
	}
	return kv, err
}

// Close ends the run on the broker: workers are told it is over, the
// local workers stop and the stream is deleted. It is safe to call on a
// run never opened.
func (r *Run) Close(ctx context.Context) error {
	r.closing.Store(true)
	if r.stop != nil {
		r.stop()
	}
	if r.unwatch != nil {
		r.unwatch()
	}
	if r.unlease != nil {
		r.unlease() // before the entry says done: a touch must not put it back
	}
	if r.watch != nil {
		r.watch.Stop()
	}
	r.done.Wait()
	if r.table.sub != nil {
		r.table.sub.Unsubscribe()
	}
	if r.local != nil {
		r.local.Close()
	}
	r.mu.Lock()
	queues := r.queues
	r.queues = nil
	r.mu.Unlock()
	for _, q := range queues {
		q.close()
	}
	if !r.opened && r.opts.Resume && !r.keep {
		// A resume that found the run finished (its journal said so: the
		// process died after its output was whole) opens nothing, but
		// what the dead process left on the broker must go, or workers
		// would serve it for ever.
		return r.forget(ctx)
	}
	if r.kv == nil || r.keep || r.Lost() {
		return nil // a kept run stays active: workers work what is queued
	}
	r.info.State = stateDone
	err := r.touch(ctx)
	if errors.Is(err, errEntryTaken) || errors.Is(err, errEntryGone) {
		return nil // deleted as dead meanwhile, or taken by a --resume: not ours to end
	}
	if err == nil {
		// The entry goes, and the workers' under it: a worker that starts
		// later has nothing to look at.
		if keys, kerr := r.kv.ListKeysFiltered(ctx, r.info.key()+".w.*"); kerr == nil {
			for k := range keys.Keys() {
				r.kv.Purge(ctx, k)
			}
		}
		err = r.kv.Purge(ctx, r.info.key())
	}
	if derr := r.js.DeleteStream(ctx, r.info.Stream); err == nil && derr != nil && !errors.Is(derr, jetstream.ErrStreamNotFound) {
		err = derr
	}
	if err != nil {
		return fmt.Errorf("broker %s: end run %s: %w", r.nc.ConnectedUrlRedacted(), r.opts.RunID, plain(err))
	}
	return nil
}

// forget deletes what a run of this id left on the broker: its stream,
// its entry in the runs bucket and its workers' under it.
func (r *Run) forget(ctx context.Context) error {
	name := "FLOWRUN_" + token(r.p.Name) + "_" + token(r.opts.RunID)
	err := r.js.DeleteStream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		err = nil
	}
	kv, kerr := r.js.KeyValue(ctx, runsBucket)
	if kerr == nil {
		key := runKey(r.p.Name, r.opts.RunID)
		if keys, lerr := kv.ListKeysFiltered(ctx, key+".w.*"); lerr == nil {
			for k := range keys.Keys() {
				kv.Purge(ctx, k)
			}
		}
		if perr := kv.Purge(ctx, key); err == nil {
			err = perr
		}
	} else if !errors.Is(kerr, jetstream.ErrBucketNotFound) && err == nil {
		err = kerr
	}
	if err != nil {
		return fmt.Errorf("broker %s: end run %s: %w", r.nc.ConnectedUrlRedacted(), r.opts.RunID, err)
	}
	return nil
}

// stageQueue is a remote stage's queue on the broker: pieces go out on
// its In subject, results come back on its Out subject.
//
// A piece is known by the input records it holds (pieceKey), not by the
// runner's count of pieces, so that a run resumed after its process died
// can tell the pieces of the stream it left behind: one still queued is
// not sent again, one answered is not worked again, and their results
// wait here (stash) until the resumed run comes to those records.
type stageQueue struct {
	run      *Run
	info     StageInfo
	results  jetstream.MessagesContext
	sem      chan struct{} // a slot per piece on the broker
	maxBytes int
	// incarnation is this process's part of a piece's Nats-Msg-Id: a
	// resumed run must queue a piece again whose results the dead one
	// had taken, whatever the broker's duplicate window remembers.
	incarnation string

	mu          sync.Mutex
	outstanding map[string]uint64      // pieces sent (or adopted) and not yet answered, by key: the runner's number
	left        map[string]bool        // pieces a dead run left in the stream, queued or answered, by key
	stash       map[string]runner.Done // their results, until the runner sends the piece
	ready       []runner.Done          // stashed results of pieces now sent
	wake        chan struct{}          // Next has ready results, or pieces adopted to look after
	partial     map[attempt]*assembly  // results in several parts, as they come
	cuts        []cut                  // the ranges of the pieces in left, by first record (set before the run starts)
	adopted     map[string]adoption    // pieces in left the runner sent, not published, waiting for the dead run's results
	err         error                  // a publish that failed for good

	// received counts the messages of results Next has had (Next's
	// own): rescue compares it with what the broker delivered.
	received uint64

	futures   chan sent
	checked   chan struct{}
	closeOnce sync.Once
}

// adoption is a piece the runner sent that a dead run left on the broker:
// it is not published, its results are waited for; its records are kept
// (encoded) until they come, to send it after all if they cannot.
type adoption struct {
	n    uint64
	data []byte
}

// sent is a piece published and not yet acked by the broker.
type sent struct {
	msg *nats.Msg
	id  string
	f   jetstream.PubAckFuture
}

// attempt is one delivery of a piece: the parts of its results belong
// together (another delivery's may differ, for a stage that draws at
// random).
type attempt struct {
	key       string
	msg       string // the piece's message (hdrMsg)
	delivered int64
}

// assembly gathers the parts of one piece's results.
type assembly struct {
	n     int
	parts map[int][]runner.Record
	dead  map[int][]runner.Dead
	d     runner.Done // from the last part
	msgs  []jetstream.Msg
}

func newStageQueue(r *Run, s StageInfo, maxBytes int) *stageQueue {
	q := &stageQueue{run: r, info: s, sem: make(chan struct{}, inFlight), maxBytes: maxBytes,
		incarnation: NewRunID(), outstanding: map[string]uint64{}, left: map[string]bool{}, stash: map[string]runner.Done{}, adopted: map[string]adoption{},
		wake: make(chan struct{}, 1), partial: map[attempt]*assembly{},
		futures: make(chan sent, 4*inFlight), checked: make(chan struct{})}
	go q.check()
	return q
}

// pieceKey names a piece by what it holds: its first and last input
// record, and a hash of its encoded records (their numbers and bytes).
// Only a piece of the very same records may take the results a dead run
// left: the batches a cheap stage gathers are cut by what is at hand, so
// that a resumed run's piece of the same range may hold other records
// (it lost them when it took the dead run's results for its own).
func pieceKey(recs []runner.Record, data []byte) string {
	sum := sha256.Sum256(data)
	return seqRange(recs) + "~" + hex.EncodeToString(sum[:12])
}

func (q *stageQueue) MaxBytes() int { return q.maxBytes }

// cut is the first and last input record of a piece.
type cut struct{ lo, hi uint64 }

// cutsOf reads the ranges of the pieces keys name, sorted by first record.
func cutsOf(keys map[string]bool) []cut {
	var cuts []cut
	for key := range keys {
		key, _, _ = strings.Cut(key, "~")
		key, _, _ = strings.Cut(key, "#")
		los, his, ok := strings.Cut(key, "-")
		lo, err1 := strconv.ParseUint(los, 10, 64)
		hi, err2 := strconv.ParseUint(his, 10, 64)
		if ok && err1 == nil && err2 == nil && lo > 0 && lo <= hi {
			cuts = append(cuts, cut{lo, hi})
		}
	}
	slices.SortFunc(cuts, func(a, b cut) int { return cmp.Compare(a.lo, b.lo) })
	return cuts
}

// Cut makes a resumed run cut its pieces as the dead run did where that
// one left pieces on the broker (runner.Cutter): a piece cut otherwise is
// not known as one of them, and its records would be worked twice.
func (q *stageQueue) Cut(seq uint64) (hi uint64, whole bool) {
	i, _ := slices.BinarySearchFunc(q.cuts, seq, func(c cut, seq uint64) int { return cmp.Compare(c.lo, seq) })
	switch {
	case i == len(q.cuts):
		return 0, false
	case q.cuts[i].lo == seq:
		return q.cuts[i].hi, true
	}
	return q.cuts[i].lo - 1, false
}

func (q *stageQueue) Send(ctx context.Context, w runner.Work) error {
	select {
	case q.sem <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	data := appendRecords(make([]byte, 0, 64+len(w.Recs)*8), w.Recs)
	key := pieceKey(w.Recs, data)
	q.mu.Lock()
	err := q.err
	if _, dup := q.outstanding[key]; dup {
		key += "#" + strconv.FormatUint(w.N, 10) // the same records twice at once: not one a dead run could have left
	}
	q.outstanding[key] = w.N
	left := q.left[key]
	delete(q.left, key)
	if d, ok := q.stash[key]; ok {
		delete(q.stash, key)
		d.N = w.N
		q.ready = append(q.ready, d)
	} else if left {
		// Queued on the broker, or answered there and not taken yet: its
		// results are waited for, and the piece is sent after all if the
		// broker turns out to hold nothing that can answer it (rescue,
		// which a Next already waiting must now look for).
		q.adopted[key] = adoption{n: w.N, data: data}
	}
	if left {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	q.mu.Unlock()
	if err != nil {
		return err
	}
	if left {
		return nil // queued or answered already: its results come
	}
	return q.publish(ctx, key, w.N, "", data)
}

// publish sends a piece to the stage's workers; again is "" the first
// time, and tells a piece sent again (rescue) from the first sending of
// the same number, for the broker's duplicate window.
func (q *stageQueue) publish(ctx context.Context, key string, n uint64, again string, data []byte) error {
	r := q.run
	msg := nats.NewMsg(q.info.In)
	msg.Header.Set(hdrRun, r.opts.RunID)
	msg.Header.Set(hdrStage, q.info.Name)
	msg.Header.Set(hdrPiece, key)
	seqs, _, _ := strings.Cut(key, "~") // pieceKey's first part: seqRange
	msg.Header.Set(hdrSeq, seqs)
	msg.Data = data
	id := r.opts.RunID + "." + q.info.Consumer + "." + q.incarnation + "." + strconv.FormatUint(n, 10) + again
	f, err := r.js.PublishMsgAsync(msg, jetstream.WithMsgID(id))
	if err != nil {
		if f, err = q.retry(ctx, msg, id); err != nil {
			return err
		}
	}
	select {
	case q.futures <- sent{msg, id, f}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	return nil
}

// retry publishes msg again, with its id so that the broker keeps one,
// for a few seconds before it gives up.
func (q *stageQueue) retry(ctx context.Context, msg *nats.Msg, id string) (jetstream.PubAckFuture, error) {
	var last error
	for wait := 50 * time.Millisecond; wait < 5*time.Second; wait *= 2 {
		f, err := q.run.js.PublishMsgAsync(msg, jetstream.WithMsgID(id))
		if err == nil {
			return f, nil
		}
		last = err
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-q.run.lostCh:
			return nil, q.run.lostErr()
		}
	}
	return nil, fmt.Errorf("broker %s: publish to %s: %w", q.run.nc.ConnectedUrlRedacted(), msg.Subject, plain(last))
}

// check waits for the broker's ack of each piece published, publishing
// it again (the same id: the broker keeps one) when none came.
func (q *stageQueue) check() {
	defer close(q.checked)
	for s := range q.futures {
		for tries := 0; ; tries++ {
			var err error
			select {
			case <-s.f.Ok():
			case err = <-s.f.Err():
			case <-q.run.lostCh:
				// Nothing of the run is left on the broker to publish
				// to: q.err says so.
			}
			if err == nil || q.run.Lost() {
				break
			}
			if tries >= 5 || errors.Is(err, nats.ErrConnectionClosed) {
				q.fail(fmt.Errorf("broker %s: publish to %s: %w", q.run.nc.ConnectedUrlRedacted(), s.msg.Subject, plain(err)))
				break
			}
			f, err := q.retry(context.Background(), s.msg, s.id)
			if err != nil {
				q.fail(err)
				break
			}
			s.f = f
		}
	}
}

func (q *stageQueue) fail(err error) {
	q.mu.Lock()
	if q.err == nil {
		q.err = err
	}
	q.mu.Unlock()
}

// fetched is a message from the results consumer, or the error of taking
// one.
type fetched struct {
	m   jetstream.Msg
	err error
}

func (q *stageQueue) Next(ctx context.Context) (runner.Done, error) {
	for {
		q.mu.Lock()
		err := q.err
		if err == nil && len(q.ready) > 0 {
			d := q.ready[0]
			q.ready = q.ready[1:]
			q.mu.Unlock()
			return d, nil
		}
		adopted := len(q.adopted) > 0
		q.mu.Unlock()
		if err != nil {
			return runner.Done{}, err
		}
		// A result from the broker, or a stashed one made ready by Send;
		// while pieces a dead run left are waited for, a look now and
		// then at whether the broker can still answer them.
		mctx, stop := context.WithCancel(ctx)
		got := make(chan fetched, 1)
		go func() {
			m, err := q.results.Next(jetstream.NextContext(mctx))
			got <- fetched{m, err}
		}()
		var idle <-chan time.Time
		var timer *time.Timer
		if adopted {
			timer = time.NewTimer(rescueIdle)
			idle = timer.C
		}
		var f fetched
		select {
		case f = <-got:
			stop()
		case <-q.wake:
			stop()
			f = <-got
			if f.err != nil && ctx.Err() == nil {
				continue // Next was stopped for the ready ones
			}
		case <-idle:
			stop()
			f = <-got
			if f.err != nil && ctx.Err() == nil {
				if err := q.rescue(ctx); err != nil {
					return runner.Done{}, err
				}
				continue
			}
		}
		if timer != nil {
			timer.Stop()
		}
		if f.err != nil {
			if ctx.Err() != nil {
				return runner.Done{}, context.Cause(ctx)
			}
			if q.run.lookGone(ctx, f.err) {
				continue // lost: q.err says so
			}
			return runner.Done{}, fmt.Errorf("broker %s: results of stage %q: %w", q.run.nc.ConnectedUrlRedacted(), q.info.Name, plain(f.err))
		}
		q.received++
		if d, ok, err := q.take(f.m); err != nil || ok {
			return d, err
		}
	}
}

// rescueIdle is how long the results of pieces a dead run left may keep
// a stage waiting, with no other results coming, before the run looks
// whether the broker can still answer them (rescue).
const rescueIdle = 2 * time.Second

// rescue sends after all the adopted pieces, whose results the run waits
// for from what a dead run left, when nothing on the broker can answer
// them: the stage's consumer has no piece left to deliver nor any in a
// worker's hands, and every result on the broker has been delivered to
// this run and taken. A piece left
// queued may be past its deliveries (given back by workers that stopped
// serving the dead run, each a delivery, the last too: JetStream never
// delivers it again, and it stays in the stream), and results a dead run
// took may be acked after the resumed run read the stream (acks it sent
// before it died, which the broker reads late); either way its results
// cannot come, and the run waited for them for ever. Sent again, it
// keeps its number: whichever results come first are taken, any others
// are only counted, so that no record is doubled in the output.
func (q *stageQueue) rescue(ctx context.Context) error {
	r := q.run
	if r.Lost() {
		return nil // q.err says so
	}
	cctx, cancel := context.WithTimeout(ctx, rescueIdle)
	defer cancel()
	info := func(name string) *jetstream.ConsumerInfo {
		c, err := r.js.Consumer(cctx, r.info.Stream, name)
		if err != nil {
			return nil // the broker cannot tell now: look again later
		}
		ci, err := c.Info(cctx)
		if err != nil {
			return nil
		}
		return ci
	}
	// The stage's first: results are stored before their piece is
	// acked, so once no piece is left there, what answers one is on the
	// results consumer, not yet delivered, or delivered and not yet had
	// by Next (on its way, or in the client's buffer).
	if ci := info(q.info.Consumer); ci == nil || ci.NumPending > 0 || ci.NumAckPending > 0 {
		return nil
	}
	if ci := info(q.info.Results); ci == nil || ci.NumPending > 0 || ci.Delivered.Consumer != q.received {
		return nil
	}
	q.mu.Lock()
	again := q.adopted
	q.adopted = map[string]adoption{}
	q.mu.Unlock()
	if len(again) == 0 {
		return nil
	}
	r.logf("flowrun: resuming run %s: %d pieces of stage %q that a dead run left on the broker can no longer be answered there (their deliveries spent, or their results gone): sent again\n", r.opts.RunID, len(again), q.info.Name)
	for key, a := range again {
		if err := q.publish(ctx, key, a.n, ".again", a.data); err != nil {
			return err
		}
	}
	return nil
}

// take reads one message of results. It returns a Done when the message
// completes a piece's results that the runner is to have (ok), holds back
// the results of a piece a dead run left until the runner sends it, and
// gives the runner a piece's second results only to count them.
func (q *stageQueue) take(m jetstream.Msg) (d runner.Done, ok bool, err error) {
	key := m.Headers().Get(hdrPiece)
	if m.Headers().Get(hdrNotice) == "redelivered" {
		m.Ack()
		return runner.Done{Counts: runner.Counts{Redelivered: 1}}, true, nil // N 0: only counted
	}
	k, parts, err := part(m.Headers())
	if err != nil || key == "" {
		m.Term()
		return d, false, nil
	}
	delivered, _ := strconv.ParseInt(m.Headers().Get(hdrAttempt), 10, 64)
	at := attempt{key, m.Headers().Get(hdrMsg), delivered}
	a := q.partial[at]
	if a == nil {
		a = &assembly{n: parts, parts: map[int][]runner.Record{}, dead: map[int][]runner.Dead{}}
		q.partial[at] = a
	}
	if _, dup := a.parts[k]; dup {
		m.Ack()
		return d, false, nil
	}
	var got runner.Done
	if err := decodeDone(m.Data(), &got); err != nil {
		m.Term()
		return d, false, fmt.Errorf("broker %s: results of stage %q piece %s: %w", q.run.nc.ConnectedUrlRedacted(), q.info.Name, key, err)
	}
	a.parts[k] = got.Recs
	a.dead[k] = got.Dead
	if k == a.n {
		a.d = got
	}
	a.msgs = append(a.msgs, m)
	if len(a.parts) < a.n {
		return d, false, nil
	}
	delete(q.partial, at)
	d = a.d
	if a.n > 1 {
		d.Recs, d.Dead = nil, nil
		for k := 1; k <= a.n; k++ {
			d.Recs = append(d.Recs, a.parts[k]...)
			d.Dead = append(d.Dead, a.dead[k]...)
		}
	}
	d.Counts.Redelivered = 0 // counted by the worker's notice
	msgs := a.msgs
	worker := m.Headers().Get(hdrWorker)
	q.mu.Lock()
	n := q.outstanding[key] // 0: not one the runner waits for, only counted
	delete(q.adopted, key)
	stashed := false
	if n == 0 && q.left[key] {
		if _, had := q.stash[key]; !had {
			q.stash[key] = d
			stashed = true
		}
	}
	q.mu.Unlock()
	d.N = n
	d.Ack = func() {
		for _, m := range msgs {
			m.Ack()
		}
		q.mu.Lock()
		_, was := q.outstanding[key]
		delete(q.outstanding, key)
		q.mu.Unlock()
		if was {
			<-q.sem
		}
	}
	if stashed {
		// Its ack waits for the runner to take it.
		return d, false, nil
	}
	if n != 0 {
		q.run.credit(worker, q.info.Name, d.Counts.In)
	}
	return d, true, nil
}

func (q *stageQueue) close() {
	q.closeOnce.Do(func() {
		if q.results != nil {
			q.results.Stop()
		}
		close(q.futures)
		<-q.checked
	})
}
