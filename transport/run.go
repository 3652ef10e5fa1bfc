package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
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
	// DefaultMaxDeliver is how many times a piece is delivered before
	// flowrun gives up on it: its records fail as the stage's on_error
	// says (a record that kills every worker that takes it).
	DefaultMaxDeliver = 5
	// inFlight bounds the pieces of one stage on the broker at once: the
	// queue on the broker is bounded too, as the runner's own queues are.
	inFlight = 512
	// resultsAckWait is for the run's own consumer of results: it acks
	// once the next stage took them, which backpressure may delay.
	resultsAckWait = 5 * time.Minute
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
	stop   context.CancelFunc
	watch  jetstream.KeyWatcher // the workers' presence
	done   sync.WaitGroup
}

// NewRun prepares a run of p on the broker nc is connected to. Nothing is
// created on the broker until the runner opens the run's queues.
func NewRun(nc *nats.Conn, p *spec.Pipeline, o RunOptions) (*Run, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*inFlight))
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
	return &Run{nc: nc, js: js, p: p, opts: o}, nil
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
	host, _ := os.Hostname()
	r.info = newRunInfo(r.p, r.opts.RunID, r.opts.Version, remote)
	r.info.Host = host + ":" + strconv.Itoa(os.Getpid())
	r.info.Started = time.Now().UTC()
	r.info.AckWait, r.info.MaxDeliver = r.opts.AckWait, r.opts.MaxDeliver
	fail := func(what string, err error) error {
		return fmt.Errorf("broker %s: %s: %w", r.nc.ConnectedUrlRedacted(), what, err)
	}
	subjects := make([]string, 0, 2*len(r.info.Stages))
	for _, s := range r.info.Stages {
		subjects = append(subjects, s.In, s.Out)
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
			AckWait: r.opts.AckWait, MaxDeliver: r.opts.MaxDeliver, MaxAckPending: 4 * inFlight,
			Description: fmt.Sprintf("stage %q: shared by every worker", s.Name),
		})
		if err != nil {
			return nil, fail("create consumer "+s.Consumer, err)
		}
		rc, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
			Durable: s.Results, FilterSubject: s.Out, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: resultsAckWait, MaxAckPending: 8 * inFlight,
			Description: fmt.Sprintf("stage %q: its results, for the run", s.Name),
		})
		if err != nil {
			return nil, fail("create consumer "+s.Results, err)
		}
		it, err := rc.Messages(jetstream.PullMaxMessages(inFlight))
		if err != nil {
			return nil, fail("consume "+s.Results, err)
		}
		q := &stageQueue{run: r, info: s, results: it, sem: make(chan struct{}, inFlight),
			maxBytes: int(max) * 3 / 4, outstanding: map[uint64]bool{}, partial: map[attempt]*assembly{},
			futures: make(chan sent, 4*inFlight), checked: make(chan struct{})}
		go q.check()
		r.mu.Lock()
		r.queues = append(r.queues, q)
		r.mu.Unlock()
		queues[s.Name] = q
	}
	if r.kv, err = runsKV(ctx, r.js); err != nil {
		return nil, fail("runs bucket", err)
	}
	if r.opts.Log != nil {
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
	}
	if err := r.put(ctx); err != nil {
		return nil, fail("runs bucket", err)
	}
	if r.opts.LocalWorkers {
		w, err := NewWorker(r.nc, r.p, WorkerOptions{Version: r.opts.Version, Log: r.opts.Log, quiet: true})
		if err != nil {
			return nil, err
		}
		lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		r.local, r.stop = w, stop
		r.done.Add(1)
		go func() {
			defer r.done.Done()
			w.serveRun(lctx, r.info)
		}()
	}
	return queues, nil
}

// workers says in the log which workers joined the run or refused it.
func (r *Run) workers(watch jetstream.KeyWatcher) {
	for e := range watch.Updates() {
		if e == nil || e.Operation() != jetstream.KeyValuePut {
			continue
		}
		var p Presence
		if json.Unmarshal(e.Value(), &p) != nil {
			continue
		}
		if p.Refused != "" {
			fmt.Fprintf(r.opts.Log, "flowrun: worker %s refused run %s: %s\n", p.Host, r.opts.RunID, p.Refused)
		} else {
			fmt.Fprintf(r.opts.Log, "flowrun: worker %s joined run %s: stages %s\n", p.Host, r.opts.RunID, strings.Join(p.Stages, ", "))
		}
	}
}

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

func (r *Run) put(ctx context.Context) error {
	b, err := json.Marshal(r.info)
	if err != nil {
		return err
	}
	_, err = r.kv.Put(ctx, r.info.key(), b)
	return err
}

// Close ends the run on the broker: workers are told it is over, the
// local workers stop and the stream is deleted. It is safe to call on a
// run never opened.
func (r *Run) Close(ctx context.Context) error {
	if r.stop != nil {
		r.stop()
	}
	if r.watch != nil {
		r.watch.Stop()
	}
	r.done.Wait()
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
	if r.kv == nil {
		return nil
	}
	r.info.State = stateDone
	err := r.put(ctx)
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
		return fmt.Errorf("broker %s: end run %s: %w", r.nc.ConnectedUrlRedacted(), r.opts.RunID, err)
	}
	return nil
}

// stageQueue is a remote stage's queue on the broker: pieces go out on
// its In subject, results come back on its Out subject.
type stageQueue struct {
	run      *Run
	info     StageInfo
	results  jetstream.MessagesContext
	sem      chan struct{} // a slot per piece on the broker
	maxBytes int

	mu          sync.Mutex
	outstanding map[uint64]bool       // pieces sent and not yet answered
	partial     map[attempt]*assembly // results in several parts, as they come
	err         error                 // a publish that failed for good

	futures   chan sent
	checked   chan struct{}
	closeOnce sync.Once
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
	n         uint64
	delivered int64
}

// assembly gathers the parts of one piece's results.
type assembly struct {
	n     int
	parts map[int][]runner.Record
	d     runner.Done // from the last part
	msgs  []jetstream.Msg
}

func (q *stageQueue) MaxBytes() int { return q.maxBytes }

func (q *stageQueue) Send(ctx context.Context, w runner.Work) error {
	select {
	case q.sem <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	q.mu.Lock()
	err := q.err
	q.outstanding[w.N] = true
	q.mu.Unlock()
	if err != nil {
		return err
	}
	r := q.run
	msg := nats.NewMsg(q.info.In)
	msg.Header.Set(hdrRun, r.opts.RunID)
	msg.Header.Set(hdrStage, q.info.Name)
	msg.Header.Set(hdrPiece, strconv.FormatUint(w.N, 10))
	msg.Header.Set(hdrSeq, seqRange(w.Recs))
	msg.Data = appendRecords(make([]byte, 0, 64+len(w.Recs)*8), w.Recs)
	id := r.opts.RunID + "." + q.info.Consumer + "." + strconv.FormatUint(w.N, 10)
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
		}
	}
	return nil, fmt.Errorf("broker %s: publish to %s: %w", q.run.nc.ConnectedUrlRedacted(), msg.Subject, last)
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
			}
			if err == nil {
				break
			}
			if tries >= 5 || errors.Is(err, nats.ErrConnectionClosed) {
				q.mu.Lock()
				if q.err == nil {
					q.err = fmt.Errorf("broker %s: publish to %s: %w", q.run.nc.ConnectedUrlRedacted(), s.msg.Subject, err)
				}
				q.mu.Unlock()
				break
			}
			f, err := q.retry(context.Background(), s.msg, s.id)
			if err != nil {
				q.mu.Lock()
				if q.err == nil {
					q.err = err
				}
				q.mu.Unlock()
				break
			}
			s.f = f
		}
	}
}

func (q *stageQueue) Next(ctx context.Context) (runner.Done, error) {
	for {
		q.mu.Lock()
		err := q.err
		q.mu.Unlock()
		if err != nil {
			return runner.Done{}, err
		}
		m, err := q.results.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return runner.Done{}, context.Cause(ctx)
			}
			return runner.Done{}, fmt.Errorf("broker %s: results of stage %q: %w", q.run.nc.ConnectedUrlRedacted(), q.info.Name, err)
		}
		n, err := piece(m.Headers())
		var k, parts int
		if err == nil {
			k, parts, err = part(m.Headers())
		}
		if err != nil {
			m.Term()
			continue
		}
		delivered, _ := strconv.ParseInt(m.Headers().Get(hdrAttempt), 10, 64)
		at := attempt{n, delivered}
		q.mu.Lock()
		a := q.partial[at]
		if a == nil {
			a = &assembly{n: parts, parts: map[int][]runner.Record{}}
			q.partial[at] = a
		}
		_, dup := a.parts[k]
		q.mu.Unlock()
		if dup {
			m.Ack()
			continue
		}
		var got runner.Done
		if err := decodeDone(m.Data(), &got); err != nil {
			m.Term()
			return runner.Done{}, fmt.Errorf("broker %s: results of stage %q piece %d: %w", q.run.nc.ConnectedUrlRedacted(), q.info.Name, n, err)
		}
		a.parts[k] = got.Recs
		if k == a.n {
			a.d = got
		}
		a.msgs = append(a.msgs, m)
		if len(a.parts) < a.n {
			continue
		}
		q.mu.Lock()
		delete(q.partial, at)
		q.mu.Unlock()
		d := a.d
		d.N = n
		// One delivery after the first, whether its results are taken or
		// come second; a worker that died on a piece counts when the
		// next one answers it.
		d.Counts.Redelivered = 0
		if delivered > 1 {
			d.Counts.Redelivered = 1
		}
		if a.n > 1 {
			d.Recs = nil
			for k := 1; k <= a.n; k++ {
				d.Recs = append(d.Recs, a.parts[k]...)
			}
		}
		msgs := a.msgs
		d.Ack = func() {
			for _, m := range msgs {
				m.Ack()
			}
			q.mu.Lock()
			was := q.outstanding[n]
			delete(q.outstanding, n)
			q.mu.Unlock()
			if was {
				<-q.sem
			}
		}
		return d, nil
	}
}

func (q *stageQueue) close() {
	q.closeOnce.Do(func() {
		q.results.Stop()
		close(q.futures)
		<-q.checked
	})
}
