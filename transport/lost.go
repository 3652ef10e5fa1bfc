package transport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A broker restarted on an empty store (its data lost, or another server
// answering at its address) has none of a run's stream, consumers or
// entry in the runs bucket: the pieces queued there are gone. The client
// reconnects as if nothing happened, and without a look at the broker a
// run would wait for results that never come until the library gave up
// in its own words. So after each reconnect the run looks for its stream,
// and a run whose stream is gone fails at once, saying so; workers watch
// the runs bucket anew (creating it again) and go on serving new runs.

// ErrRunLost is the error of a run whose stream is gone from the broker
// (errors.Is): what was queued on the broker is lost.
var ErrRunLost = errors.New("the run's stream is gone from the broker")

// lostError says which run's stream went from which broker.
type lostError struct {
	broker, run, stream string
	// deleted: by another run, which took this one for dead (lease.go).
	deleted bool
	silent  time.Duration // the silence that made it look dead
	// taken: its entry written by another process, a --resume of it.
	taken bool
}

func (e *lostError) Error() string {
	if e.taken {
		return fmt.Sprintf("broker %s: run %s: another process took the run over (its entry in the runs bucket was written by another flowrun: a --resume of this run while it ran?); this one stops, leaving the stream %s to it",
			e.broker, e.run, e.stream)
	}
	if e.deleted {
		return fmt.Sprintf("broker %s: run %s: another run deleted it from the broker, with its stream %s, taking it for dead: it had not touched its entry for over %v (was this process stopped, or cut off from the broker?), and it has no journal to resume from: the records queued on the broker are lost",
			e.broker, e.run, e.stream, e.silent)
	}
	return fmt.Sprintf("broker %s: run %s: its stream %s is gone from the broker (it restarted on an empty store, or another server answers at its address): the records queued on the broker are lost",
		e.broker, e.run, e.stream)
}

func (e *lostError) Is(target error) bool { return target == ErrRunLost }

// lostCheck is how often the run looks whether the connection came back
// since it last looked, beside the connection's word that it did; a look
// at the broker happens only then.
const lostCheck = 250 * time.Millisecond

// watchLost looks for the run's stream after each reconnect until ctx is
// done; when it is gone it fails every queue of the run. since is the
// count of reconnects before the stream was made: one after it, even
// before the watch began, is looked into. A look that cannot tell (the
// broker slow to answer, its JetStream not up yet) is tried again until
// it can.
func (r *Run) watchLost(ctx context.Context, since uint64) {
	up := r.nc.StatusChanged(nats.CONNECTED)
	defer r.nc.RemoveStatusListener(up)
	t := time.NewTicker(lostCheck)
	defer t.Stop()
	seen := since
	for {
		if n := r.nc.Stats().Reconnects; n != seen && r.nc.IsConnected() {
			gone, err := r.streamGone(ctx)
			switch {
			case gone:
				r.lose()
				return
			case err == nil:
				seen = n // there: until the next reconnect
			}
		}
		select {
		case <-up:
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// streamGone asks the broker whether the run's stream is gone; an error
// is that it could not tell.
func (r *Run) streamGone(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, jetStreamCheck)
	defer cancel()
	_, err := r.js.Stream(ctx, r.info.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if r.purged(ctx) {
			r.deleted.Store(true)
		}
		return true, nil
	}
	return false, err
}

// lookGone says, after taking results failed with err, whether the run
// is lost (then every queue says so): at once when it was already, or
// when the broker says the stream is gone. A look that cannot tell is
// tried again a few times while the connection lives, so that a broker
// slow to answer after a restart is not taken for one that kept the
// stream.
func (r *Run) lookGone(ctx context.Context, err error) bool {
	if r.Lost() {
		return true
	}
	tries := 1
	if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) ||
		errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrNoHeartbeat) || away(err) {
		tries = 5 // what a broker without the stream makes the results say
	}
	for i := 0; i < tries && !r.nc.IsClosed(); i++ {
		if i > 0 && !sleepCtx(ctx, lostCheck) {
			return false
		}
		gone, lerr := r.streamGone(ctx)
		if gone {
			r.lose()
			return true
		}
		if lerr == nil {
			return false
		}
	}
	return r.Lost()
}

// lostErr is the error of the run whose stream is gone.
func (r *Run) lostErr() error {
	return &lostError{broker: r.nc.ConnectedUrlRedacted(), run: r.opts.RunID, stream: r.info.Stream,
		deleted: r.deleted.Load(), silent: garbageAfter * r.info.Lease, taken: r.taken.Load()}
}

// lose fails every queue of the run with the lost stream's error (it is
// why anything else failed), and wakes the ones waiting for results.
func (r *Run) lose() {
	err := r.lostErr()
	r.lost.Store(true)
	r.lostOne.Do(func() { close(r.lostCh) })
	r.mu.Lock()
	queues := r.queues
	r.mu.Unlock()
	for _, q := range queues {
		q.mu.Lock()
		q.err = err
		q.mu.Unlock()
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// Lost says whether the run's stream went from the broker: nothing of
// the run is left there to resume from or to clean up.
func (r *Run) Lost() bool { return r.lost.Load() }

// bucketBorn is when the runs bucket was made: an instant long past when
// it is gone (so that it differs from any bucket's), zero when the broker
// did not tell after a few tries.
func (w *Worker) bucketBorn(ctx context.Context) time.Time {
	for i := 0; i < 5; i++ {
		if i > 0 && !sleepCtx(ctx, lostCheck) {
			break
		}
		cctx, cancel := context.WithTimeout(ctx, jetStreamCheck)
		st, err := w.js.Stream(cctx, "KV_"+runsBucket)
		cancel()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return time.Unix(1, 0)
		}
		if err == nil {
			return st.CachedInfo().Created
		}
	}
	return time.Time{}
}

// rewatch watches the runs bucket again after a watch ended, creating it
// if it is gone; see watchRuns.
func (w *Worker) rewatch(ctx context.Context) (jetstream.KeyValue, jetstream.KeyWatcher, error) {
	cctx, cancel := context.WithTimeout(ctx, jetStreamCheck)
	_, err := w.js.KeyValue(cctx, runsBucket)
	cancel()
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		w.logf("broker %s: the runs on it are gone (it restarted on an empty store, or another server answers at its address), with what they had queued there; waiting for new runs of pipeline %q",
			w.nc.ConnectedUrlRedacted(), w.p.Name)
	} else {
		w.logf("broker %s: the watch of runs ended; watching them again", w.nc.ConnectedUrlRedacted())
	}
	return w.watchRuns(ctx, true)
}

// watchRuns watches the runs bucket, creating it if it is missing. While
// the broker is away or does not answer it tries again, with backoff,
// for ever (every error, when always); it returns a nil watcher when ctx
// is done, and an error when the connection is closed for good or the
// broker refuses.
func (w *Worker) watchRuns(ctx context.Context, always bool) (jetstream.KeyValue, jetstream.KeyWatcher, error) {
	for wait := reconnectMin; ; wait = min(2*wait, reconnectMax) {
		if w.nc.IsClosed() {
			why := "closed"
			if err := w.nc.LastError(); err != nil {
				why = words(err)
			}
			return nil, nil, fmt.Errorf("broker %s: the connection is closed for good (%s)", strings.Join(w.nc.Opts.Servers, ","), why)
		}
		kv, err := runsKV(ctx, w.js)
		what := "runs bucket"
		if err == nil {
			what = "watch runs"
			var watch jetstream.KeyWatcher
			if watch, err = kv.Watch(ctx, token(w.p.Name)+".*"); err == nil {
				return kv, watch, nil
			}
		}
		if ctx.Err() != nil {
			return nil, nil, nil
		}
		// The bucket gone between its making and the watch: a broker
		// restarted on an empty store; it is made again.
		gone := errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound)
		if !always && !away(err) && !gone {
			return nil, nil, fmt.Errorf("broker %s: %s: %w", w.nc.ConnectedUrlRedacted(), what, plain(err))
		}
		if !sleepCtx(ctx, wait) {
			return nil, nil, nil
		}
	}
}

// away says whether err is of a broker away or restarting, which the
// connection outlives.
func away(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled) // a restarting server, before its JetStream is up
}

// ended says whether c is closed.
func ended(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
