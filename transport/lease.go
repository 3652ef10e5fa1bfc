package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// reapWatch is the leases (of the dead run's) that a run must itself
// have been connected to the broker, watching a run that looks dead,
// before it deletes that run, when the broker's clock alone cannot
// tell: the run was last heard of through another server, or this one
// restarted since. A broker away for a minute made every live run look
// dead by its entry's age, and the first run to start after the restart
// deleted a live one before it could reconnect and touch its entry. At
// least reapWatchMin: a live run's reconnect waits up to reconnectMax.
const (
	reapWatch    = 15
	reapWatchMin = 3 * reconnectMax
)

// errEntryTaken is a touch of the run's entry refused: since the run
// last wrote it, it was purged (another run deleted the run as dead) or
// written by another process (a --resume of the same run).
var errEntryTaken = errors.New("the run's entry was changed by another process")

// errEntryGone is a touch of the run's entry refused because the entry
// is not there: purged (another run deleted the run as dead) or lost
// with the broker's store.
var errEntryGone = errors.New("the run's entry is gone from the broker")

// lease touches the run's entry every Lease until ctx is done, and at
// once after a reconnect, so that workers and runs know it lives (the
// entry's revision time is the broker's clock, not this machine's).
// First it deletes what dead runs left (collect); a run that looks dead
// but may not be is deleted once this run has watched it long enough.
func (r *Run) lease(ctx context.Context) {
	up := r.nc.StatusChanged(nats.CONNECTED)
	defer r.nc.RemoveStatusListener(up)
	// A run shorter than that still does it whole: Close waits.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	suspects := r.collect(cctx)
	cancel()
	t := time.NewTicker(r.info.Lease)
	defer t.Stop()
	// steady is since when the connection has lived: a run that did not
	// touch its entry since then was not kept from it by the broker away.
	reconnects, steady := r.nc.Stats().Reconnects, time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.lostCh:
			// Its stream is gone (lost.go): a touch would put back, in a
			// bucket made anew, an active run with nothing to serve.
			return
		case <-up:
		case <-t.C:
		}
		if n := r.nc.Stats().Reconnects; n != reconnects || !r.nc.IsConnected() {
			reconnects, steady = n, time.Now()
		}
		pctx, cancel := context.WithTimeout(ctx, max(r.info.Lease, jetStreamCheck))
		err := r.touch(pctx)
		cancel()
		switch {
		case errors.Is(err, errEntryTaken):
			r.taken.Store(true)
			r.lose()
			return
		case errors.Is(err, errEntryGone):
			if r.purged(ctx) {
				r.deleted.Store(true)
				r.lose()
				return
			}
			// Lost with the broker's store: the stream says whether the
			// run is (the watch of reconnects looks too).
			if gone, serr := r.streamGone(ctx); gone {
				r.lose()
				return
			} else if serr == nil {
				r.rev.Store(0) // its stream is there: the entry is put back
			}
		}
		if err == nil && len(suspects) > 0 { // a touch lost (the broker away) is followed by the next
			suspects = r.reapWatched(ctx, suspects, time.Since(steady))
		}
	}
}

// suspect is a run that looks dead by its entry's age, but was last
// heard of through another server than this run's, or before the
// server restarted: it may be alive, and not yet reconnected.
type suspect struct {
	key  string
	rev  uint64
	info RunInfo
	age  time.Duration
}

// collect deletes the stream and entry of every run on the broker, of
// any pipeline, that has no journal and has not touched its entry for
// garbageAfter of its leases: it died without a word, and can never be
// resumed. Ages are by the broker's clock: this run's own entry, just
// put, says what time it is there. That holds only while the broker
// served: a run last heard of through another server id (the broker
// restarted since, or another server of a cluster) is a suspect,
// returned for lease to watch. Two runs that start at once may both find
// a dead run: the entry's purge at the revision found is the claim, so
// only one deletes it and says so; a run that touched its entry
// meanwhile (alive after all) is left alone.
func (r *Run) collect(ctx context.Context) []suspect {
	own, err := r.kv.Get(ctx, r.info.key())
	if err != nil {
		return nil
	}
	lister, err := r.kv.ListKeys(ctx)
	if err != nil {
		return nil
	}
	var keys []string
	for k := range lister.Keys() { // to its end, which ends its goroutine
		if strings.Count(k, ".") == 1 && k != r.info.key() {
			keys = append(keys, k)
		}
	}
	server := r.nc.ConnectedServerId()
	var suspects []suspect
	named := map[string]bool{r.info.Stream: true} // the streams entries name
	for _, k := range keys {
		e, err := r.kv.Get(ctx, k)
		if err != nil {
			continue
		}
		var info RunInfo
		if json.Unmarshal(e.Value(), &info) != nil {
			continue
		}
		named[info.Stream] = true
		if info.State != stateActive && info.State != stateOpening || info.Journaled || info.Lease <= 0 {
			continue
		}
		age := own.Created().Sub(e.Created())
		if age < garbageAfter*info.Lease {
			continue
		}
		s := suspect{key: k, rev: e.Revision(), info: info, age: age}
		if info.Server == "" || info.Server != server {
			suspects = append(suspects, s)
			continue
		}
		r.reap(ctx, s)
	}
	r.collectOrphans(ctx, named, own.Created())
	return suspects
}

// collectOrphans deletes the run streams that no entry names and that
// are older than garbageAfter default leases (now, by the broker's
// clock): a run killed between making its stream and its entry, or
// whose stream outlived its entry's purge at its end. A run's entry
// follows its stream within moments; a resume of a journaled run whose
// stream is gone reads its input again from where its journal says.
func (r *Run) collectOrphans(ctx context.Context, named map[string]bool, now time.Time) {
	var orphans []string
	for name := range r.js.StreamNames(ctx, jetstream.WithStreamListSubject("flowrun.>")).Name() { // to its end
		if strings.HasPrefix(name, "FLOWRUN_") && !named[name] {
			orphans = append(orphans, name)
		}
	}
	for _, name := range orphans {
		st, err := r.js.Stream(ctx, name)
		if err != nil {
			continue
		}
		age := now.Sub(st.CachedInfo().Created)
		if age < garbageAfter*DefaultLease {
			continue
		}
		if err := r.js.DeleteStream(ctx, name); err == nil {
			r.logf("flowrun: deleted stream %s from the broker: no run names it, and it is %v old\n", name, age.Round(time.Second))
		}
	}
}

// reapWatched deletes the suspects that did not touch their entries
// while this run touched its own for steady, long enough for a live one
// to have reconnected and touched it; it returns those still watched.
func (r *Run) reapWatched(ctx context.Context, suspects []suspect, steady time.Duration) []suspect {
	var left []suspect
	for _, s := range suspects {
		if steady < max(reapWatch*s.info.Lease, reapWatchMin) {
			left = append(left, s)
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, jetStreamCheck)
		e, err := r.kv.Get(gctx, s.key)
		switch {
		case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
			left = append(left, s) // cannot tell now
		case err == nil && e.Revision() == s.rev:
			s.age += steady
			r.reap(gctx, s)
		}
		cancel() // gone or touched: alive, or deleted by another
	}
	return left
}

// reap deletes a dead run's stream and entry, the entry's purge at the
// revision it was judged by first: its claim.
func (r *Run) reap(ctx context.Context, s suspect) {
	if r.kv.Purge(ctx, s.key, jetstream.LastRevision(s.rev)) != nil {
		return // touched, or another run took it first
	}
	if err := r.js.DeleteStream(ctx, s.info.Stream); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		r.logf("flowrun: broker %s: delete stream %s of dead run %s: %v\n", r.nc.ConnectedUrlRedacted(), s.info.Stream, s.info.Run, err)
	}
	if keys, err := r.kv.ListKeysFiltered(ctx, s.key+".w.*"); err == nil {
		for w := range keys.Keys() {
			r.kv.Purge(ctx, w)
		}
	}
	r.logf("flowrun: deleted run %s of pipeline %q (from %s) from the broker: no word from it for %v, and no journal to resume it\n", s.info.Run, s.info.Pipeline, s.info.Host, s.age.Round(time.Second))
}

// claim makes a new run's entry, opening, before anything else of the
// run is on the broker: of two runs given one --run-id at once, only one
// makes it. They both found no stream and went on, sharing its
// consumers, and both waited for ever.
func (r *Run) claim(ctx context.Context) error {
	info := r.info
	info.State = stateOpening
	info.Server = r.nc.ConnectedServerId()
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	rev, err := r.kv.Create(ctx, r.info.key(), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("run %s is on the broker already: --resume continues it, or give another --run-id", r.opts.RunID)
	}
	if err != nil {
		return fmt.Errorf("broker %s: runs bucket: %w", r.nc.ConnectedUrlRedacted(), plain(err))
	}
	r.rev.Store(rev)
	return nil
}

// unclaim takes back a claim of a run that does not open, and has the
// run's Close leave the broker as it is.
func (r *Run) unclaim(ctx context.Context) {
	if rev := r.rev.Load(); r.kv != nil && rev != 0 {
		r.kv.Purge(ctx, r.info.key(), jetstream.LastRevision(rev))
	}
	r.kv = nil
}

// put writes the run's entry, whatever it held: a new run's, or a
// resumed run's over the dead process's.
func (r *Run) put(ctx context.Context) error {
	b, err := r.entry()
	if err != nil {
		return err
	}
	rev, err := r.kv.Put(ctx, r.info.key(), b)
	if err == nil {
		r.rev.Store(rev)
	}
	return err
}

// touch writes the run's entry over the revision it last wrote, and
// only over it (errEntryTaken): a run deleted as dead while it was
// stopped must not put back an entry without a stream, nor a process
// overwrite the entry of a --resume that took the run over.
func (r *Run) touch(ctx context.Context) error {
	last := r.rev.Load()
	if last == 0 {
		return r.put(ctx) // the first put never went through
	}
	b, err := r.entry()
	if err != nil {
		return err
	}
	rev, err := r.kv.Update(ctx, r.info.key(), b, last)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		// A touch whose reply was lost went through: the entry is still
		// this process's own, a revision on.
		e, gerr := r.kv.Get(ctx, r.info.key())
		if errors.Is(gerr, jetstream.ErrKeyNotFound) || errors.Is(gerr, jetstream.ErrBucketNotFound) {
			return errEntryGone
		}
		if gerr != nil {
			return gerr // cannot tell now
		}
		if !sameEntry(e.Value(), b) {
			return errEntryTaken
		}
		rev, err = r.kv.Update(ctx, r.info.key(), b, e.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return errEntryTaken
		}
	}
	if err == nil {
		r.rev.Store(rev)
	}
	return err
}

// entry is the run's entry as it stands, with the server it goes
// through.
func (r *Run) entry() ([]byte, error) {
	info := r.info
	info.Server = r.nc.ConnectedServerId()
	return json.Marshal(info)
}

// sameEntry says whether two entries are one run process's: alike but
// for the server they went through.
func sameEntry(a, b []byte) bool {
	var x, y RunInfo
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	x.Server, y.Server = "", ""
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}

// purged says whether the run's entry was deleted (a purge or a delete
// is its last revision) rather than lost with the broker's store.
func (r *Run) purged(ctx context.Context) bool {
	if r.kv == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, jetStreamCheck)
	defer cancel()
	h, err := r.kv.History(ctx, r.info.key())
	if err != nil || len(h) == 0 {
		return false
	}
	op := h[len(h)-1].Operation()
	return op == jetstream.KeyValuePurge || op == jetstream.KeyValueDelete
}

// clockKey is the runs bucket's key that brokerNow writes: no run's key
// (those have a dot), watched by no worker.
const clockKey = "clock"

// brokerNow asks the broker what time it is there: the time of a write
// to the runs bucket, the clock every entry's age is by.
func brokerNow(ctx context.Context, kv jetstream.KeyValue) (time.Time, bool) {
	ctx, cancel := context.WithTimeout(ctx, jetStreamCheck)
	defer cancel()
	rev, err := kv.Put(ctx, clockKey, nil)
	if err != nil {
		return time.Time{}, false
	}
	e, err := kv.GetRevision(ctx, clockKey, rev)
	if err != nil {
		return time.Time{}, false
	}
	return e.Created(), true
}
