package transport

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/nats-io/nats.go"

	"github.com/flowrun/flowrun/runner"
)

// A worker tells each run it works what it does, every reportEvery, on
// the run's Workers subject (RunInfo.Workers): its stages with their
// slots, the busy ones, the records done. Core NATS, not the stream: a
// report lost is followed by the next, and nothing is left behind when
// the run ends. The run keeps a table of the reports; a worker not heard
// of for goneAfter is shown gone (it died, stalls or lost the broker).
const (
	reportEvery = time.Second
	goneAfter   = 5 * reportEvery
)

// Report is what a worker says of itself to a run.
type Report struct {
	Name    string        `json:"name"` // host:pid, as Host says, or --name
	ID      string        `json:"id"`   // the worker's, new each start (Worker.ID): two of one name are two
	Version string        `json:"version"`
	Stages  []StageReport `json:"stages"`
	// Left says the worker stops working the run: its last report.
	Left bool `json:"left,omitempty"`
}

// StageReport is a stage of a worker's Report.
type StageReport struct {
	Name  string `json:"name"`
	Slots int    `json:"slots"`
	Busy  int    `json:"busy"` // slots holding a piece of the run now
}

// tally is a worker's counts for one run, per stage.
type tally struct {
	stages map[string]*stageTally
	order  []string
}

type stageTally struct {
	slots int
	busy  atomic.Int32
	meter *runner.Meter // the worker's over every run
}

func (t *stageTally) begin() {
	t.busy.Add(1)
	t.meter.Begin()
}

func (t *stageTally) end(n runner.Counts) {
	t.busy.Add(-1)
	t.meter.End(n)
}

func (w *Worker) newTally(info RunInfo) *tally {
	t := &tally{stages: map[string]*stageTally{}}
	for _, s := range info.Stages {
		if free := w.slots[s.Name]; free != nil {
			t.stages[s.Name] = &stageTally{slots: cap(free), meter: w.meters[s.Name]}
			t.order = append(t.order, s.Name)
		}
	}
	return t
}

// report tells the run what this worker does for it, at once and then
// every reportEvery, until ctx ends; then that it left.
func (w *Worker) report(ctx context.Context, info RunInfo, t *tally) {
	if info.Workers == "" {
		return // a run that does not listen
	}
	send := func(left bool) {
		r := Report{Name: w.host, ID: w.id, Version: w.opts.Version, Left: left}
		for _, name := range t.order {
			st := t.stages[name]
			r.Stages = append(r.Stages, StageReport{Name: name, Slots: st.slots, Busy: int(st.busy.Load())})
		}
		b, _ := json.Marshal(r)
		w.nc.Publish(info.Workers, b)
	}
	send(false)
	tick := time.NewTicker(reportEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			send(true)
			w.nc.FlushTimeout(time.Second)
			return
		case <-tick.C:
			send(false)
		}
	}
}

// Snapshot is what this worker's slots did, over every run it worked,
// per stage (their workers are its slots): its metrics.
func (w *Worker) Snapshot() runner.Snapshot {
	s := runner.Snapshot{TotalBytes: -1}
	for _, st := range remoteStages(w.p) {
		if free := w.slots[st.Name]; free != nil {
			s.Stages = append(s.Stages, w.meters[st.Name].Snapshot(st.Name, st.Use, cap(free)))
		}
	}
	return s
}

// seenWorker is a worker in a run's table: its last report, and the
// records of the results the run took from it, per stage (counted at
// the run, as every record is: a report is a second or so behind).
type seenWorker struct {
	report  Report
	seen    time.Time // its last report or results
	gone    bool      // said so in the log
	records map[string]int64
}

// workerTable is a run's table of the workers that reported to it, by
// their ids: two workers of one name (--name, or a host:pid seen again)
// are two entries, and one that dies is said gone while the other
// reports. What the run shows of them says their names, with a short id
// after a name that two of them share (label).
type workerTable struct {
	mu    sync.Mutex
	byKey map[string]*seenWorker
	order []string
	sub   *nats.Subscription
	// ids are, per name, the ids of the workers of that name the run
	// heard of (in its table, or joining).
	ids map[string][]string
}

// listen subscribes to the run's workers' reports.
func (r *Run) listen() error {
	r.table.byKey, r.table.ids = map[string]*seenWorker{}, map[string][]string{}
	sub, err := r.nc.Subscribe(r.info.Workers, r.heard)
	if err != nil {
		return err
	}
	r.table.sub = sub
	return nil
}

// heard takes a worker's report.
func (r *Run) heard(m *nats.Msg) {
	var rep Report
	if json.Unmarshal(m.Data, &rep) != nil || rep.Name == "" {
		return
	}
	rep.Name, rep.ID, rep.Version = printable(rep.Name), printable(rep.ID), printable(rep.Version)
	for i := range rep.Stages {
		rep.Stages[i].Name = printable(rep.Stages[i].Name)
	}
	t := &r.table
	t.mu.Lock()
	w := t.worker(rep.ID, rep.Name)
	back := w.gone && !rep.Left
	left := rep.Left && !w.report.Left
	w.report, w.seen, w.gone = rep, time.Now(), false
	name := t.label(rep.ID, rep.Name)
	t.mu.Unlock()
	if r.own(rep.ID, rep.Name) {
		return // the run's own: it says what it does
	}
	switch {
	case back:
		r.logf("flowrun: worker %s reports again\n", name)
	case left && !r.closing.Load():
		r.logf("flowrun: worker %s left run %s\n", name, r.opts.RunID)
	}
}

// own says whether the worker of id and name is the run's local one.
func (r *Run) own(id, name string) bool {
	if id != "" {
		return id == r.localID
	}
	return name == r.info.Host
}

// worker is the table's entry of the worker id (of that name), made if
// it is new; t.mu is held. A worker without an id is known by its name.
func (t *workerTable) worker(id, name string) *seenWorker {
	key := id
	if key == "" {
		key = "name " + name
	}
	w := t.byKey[key]
	if w == nil {
		w = &seenWorker{report: Report{Name: name, ID: id}, records: map[string]int64{}}
		t.byKey[key] = w
		t.order = append(t.order, key)
	}
	t.heardOf(id, name)
	return w
}

// joining notes that the worker of id and name joined or refused the
// run, and returns its label.
func (t *workerTable) joining(id, name string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.heardOf(id, name)
	return t.label(id, name)
}

// heardOf notes that a worker of id goes by name; t.mu is held.
func (t *workerTable) heardOf(id, name string) {
	if !slices.Contains(t.ids[name], id) {
		t.ids[name] = append(t.ids[name], id)
	}
}

// label is what the run calls the worker of id and name: its name, and
// when another worker the run heard of has that name too, a short id
// after it, "steady#3fa2" (longer when two of those share the short
// one); t.mu is held.
func (t *workerTable) label(id, name string) string {
	ids := t.ids[name]
	if len(ids) < 2 || id == "" {
		return name
	}
	for n := shortID; n < len(id); n++ {
		clash := false
		for _, other := range ids {
			if other != id && strings.HasPrefix(other, id[:n]) {
				clash = true
				break
			}
		}
		if !clash {
			return name + "#" + id[:n]
		}
	}
	return name + "#" + id
}

// shortID is how many digits of a worker's id its label shows.
const shortID = 4

// credit counts n input records of stage whose results the run took
// from worker (its Flowrun-Worker header, "ID NAME"): proof that it
// lives, too.
func (r *Run) credit(worker, stage string, n int64) {
	if worker == "" {
		return // a worker of before Flowrun-Worker
	}
	id, name, ok := strings.Cut(worker, " ")
	if !ok {
		id, name = "", worker // a worker of before its id
	}
	id, name = printable(id), printable(name)
	t := &r.table
	t.mu.Lock()
	w := t.worker(id, name)
	w.records[stage] += n
	w.seen = time.Now()
	t.mu.Unlock()
}

// checkGone says in the log which workers have not reported for
// goneAfter, once each time they go quiet.
func (r *Run) checkGone(now time.Time) {
	t := &r.table
	var gone []string
	t.mu.Lock()
	for _, key := range t.order {
		w := t.byKey[key]
		if !w.gone && !w.report.Left && now.Sub(w.seen) > goneAfter {
			w.gone = true
			gone = append(gone, t.label(w.report.ID, w.report.Name))
		}
	}
	t.mu.Unlock()
	for _, name := range gone {
		r.logf("flowrun: worker %s is gone: no word from it for %v; the pieces it held go to others after --ack-wait %v\n",
			name, goneAfter, r.opts.AckWait)
	}
}

// Workers returns the workers that reported to the run, in the order
// they first did, as they last did: the runner's Workers.
func (r *Run) Workers() []runner.WorkerSnapshot {
	t := &r.table
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	ws := make([]runner.WorkerSnapshot, 0, len(t.order))
	for _, key := range t.order {
		w := t.byKey[key]
		s := runner.WorkerSnapshot{
			Name: t.label(w.report.ID, w.report.Name), ID: w.report.ID, Version: w.report.Version, Local: r.own(w.report.ID, w.report.Name),
			Seen: w.seen, Since: now.Sub(w.seen), Left: w.report.Left,
		}
		s.Gone = !s.Left && s.Since > goneAfter
		for _, st := range w.report.Stages {
			s.Stages = append(s.Stages, runner.WorkerStage{Name: st.Name, Slots: st.Slots, Busy: st.Busy, Records: w.records[st.Name]})
			s.Records += w.records[st.Name]
		}
		ws = append(ws, s)
	}
	return ws
}

// printable makes what a worker says of itself fit for a terminal and a
// log: no control characters (an escape would redraw the run's screen),
// at most maxName characters.
func printable(s string) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
	if r := []rune(s); len(r) > maxName {
		s = string(r[:maxName-1]) + "…"
	}
	return s
}

// maxName is the longest worker name or version a run shows.
const maxName = 80
