package runner

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/rivo/uniseg"
)

// Workers is what a Remote knows of the worker processes that joined its
// run (the transport's table of their reports): the display, the page,
// the metrics and the summary show them. A Remote without it has no
// workers to show.
type Workers interface {
	// Workers returns each worker that joined the run, in the order they
	// joined, as it last reported. It is called as often as a snapshot.
	Workers() []WorkerSnapshot
}

// WorkerSnapshot is a worker process of a run on a broker, as it last
// said.
type WorkerSnapshot struct {
	// Name is what the run calls it: its host:pid or --name, and a short
	// id after a name two workers share ("steady#3fa2").
	Name    string
	ID      string // new each time a worker process starts
	Version string
	Local   bool // the run's own process (not --no-local-workers)
	Stages  []WorkerStage
	Records int64     // input records its slots finished for the run
	Seen    time.Time // its last report
	// Since is how long ago Seen was, when the snapshot was taken.
	Since time.Duration
	// Gone says it has not reported for a few periods: it died, stalls
	// or is cut off from the broker (its pieces go to other workers after
	// the ack wait); Left, that it said it stopped working the run.
	Gone, Left bool
}

// WorkerStage is one stage a worker works: its slots and how many of
// them hold a piece now.
type WorkerStage struct {
	Name        string
	Slots, Busy int
	Records     int64
}

// Working says the worker works the run now: it reports, and has not left.
func (w WorkerSnapshot) Working() bool { return !w.Gone && !w.Left }

// WorkerStats is a worker in the summary (--stats "workers").
type WorkerStats struct {
	Name     string             `json:"name"` // with "#" and a short id when two workers share it
	ID       string             `json:"id"`
	Version  string             `json:"version"`
	Local    bool               `json:"local,omitempty"`
	Stages   []WorkerStageStats `json:"stages"`
	Records  int64              `json:"records"`
	State    string             `json:"state"` // working, left or gone, at the end of the run
	LastSeen time.Time          `json:"last_seen"`
}

// WorkerStageStats is a stage a worker worked, with its slots.
type WorkerStageStats struct {
	Name    string `json:"name"`
	Slots   int    `json:"slots"`
	Records int64  `json:"records"`
}

func (w WorkerSnapshot) state() string {
	switch {
	case w.Left:
		return "left"
	case w.Gone:
		return "gone"
	}
	return "working"
}

func (w WorkerSnapshot) stats() WorkerStats {
	s := WorkerStats{Name: w.Name, ID: w.ID, Version: w.Version, Local: w.Local, Records: w.Records, State: w.state(), LastSeen: w.Seen.UTC()}
	for _, st := range w.Stages {
		s.Stages = append(s.Stages, WorkerStageStats{Name: st.Name, Slots: st.Slots, Records: st.Records})
	}
	return s
}

// workers reads the Remote's workers, nil when it has none to show.
func (r *run) workers() []WorkerSnapshot {
	if ws, ok := r.opts.Remote.(Workers); ok {
		return ws.Workers()
	}
	return nil
}

// slots sums, per stage, the slots of the workers that count: the ones
// working now (live), or every one that joined (the summary's "workers":
// what took part); and the busy ones among them.
func slots(ws []WorkerSnapshot, all bool) (slots, busy map[string]int) {
	slots, busy = map[string]int{}, map[string]int{}
	for _, w := range ws {
		if !all && !w.Working() {
			continue
		}
		for _, st := range w.Stages {
			slots[st.Name] += st.Slots
			if w.Working() {
				busy[st.Name] += st.Busy
			}
		}
	}
	return slots, busy
}

// sortWorkers orders a summary's workers: the run's own first, then by
// name.
func sortWorkers(ws []WorkerStats) {
	sort.SliceStable(ws, func(i, j int) bool {
		if ws[i].Local != ws[j].Local {
			return ws[i].Local
		}
		return ws[i].Name < ws[j].Name
	})
}

// workersLabel begins the display's line about the workers.
const workersLabel = "workers"

// maxWorkerLines is how many workers the display shows a line each; more
// are summed up in the line about them all.
const maxWorkerLines = 6

// remote says whether a stage of s runs on workers through a broker.
func remote(s Snapshot) bool {
	for _, st := range s.Stages {
		if st.Remote {
			return true
		}
	}
	return false
}

// workerLines are the display's lines about the workers of a run on a
// broker, at most rows of them, each at most width cells: one about
// them all (label is the names' column, col cells wide), then one per
// worker while they are few and fit.
func workerLines(ws []WorkerSnapshot, col, width, rows int, final bool) []string {
	var working, gone, left, slots, busy int
	for _, w := range ws {
		switch {
		case w.Left:
			left++
		case w.Gone:
			gone++
		default:
			working++
			for _, st := range w.Stages {
				slots += st.Slots
				busy += st.Busy
			}
		}
	}
	var head line
	head.add(workersLabel + strings.Repeat(" ", max(col-len(workersLabel), 0)))
	if len(ws) == 0 {
		head.add("none joined yet")
		return []string{head.cut(width)}
	}
	head.add(fmt.Sprintf("%d working", working))
	if gone > 0 {
		head.opt(fmt.Sprintf("%d gone", gone))
	}
	if left > 0 {
		head.opt(fmt.Sprintf("%d left", left))
	}
	if final {
		head.opt(fmt.Sprintf("%d slots", slots))
	} else {
		head.opt(fmt.Sprintf("busy %d/%d", busy, slots))
	}
	lines := []string{head.cut(width)}
	if len(ws) > maxWorkerLines || len(ws) >= rows {
		return lines // a line each would not fit: the summary, --stats and the page list them
	}
	// The names' column: a third of the line at most, like the stages'.
	nameCol := 0
	for _, w := range ws {
		nameCol = max(nameCol, uniseg.StringWidth(workerName(w)))
	}
	nameCol = min(nameCol, max(width/3, 8))
	digits := 1
	for _, w := range ws {
		digits = max(digits, len(fmt.Sprint(w.Records)))
	}
	for _, w := range ws {
		var l line
		name := workerName(w)
		if uniseg.StringWidth(name) > nameCol {
			name = cut(name, nameCol-1) + "…"
		}
		l.add(" " + name + strings.Repeat(" ", nameCol-uniseg.StringWidth(name)+1))
		switch {
		case w.Left:
			l.add("left")
		case w.Gone:
			l.add("gone, no word for " + short(w.Since.Round(time.Second)))
		case final:
			l.add("done")
		default:
			b, n := 0, 0
			for _, st := range w.Stages {
				b += st.Busy
				n += st.Slots
			}
			l.add(fmt.Sprintf("busy %*d/%d", len(fmt.Sprint(n)), b, n))
		}
		l.opt(workerStages(w))
		l.opt(fmt.Sprintf("%*d rec", digits, w.Records))
		lines = append(lines, l.cut(width))
	}
	return lines
}

// workerName is a worker as the display names it.
func workerName(w WorkerSnapshot) string {
	if w.Local {
		return w.Name + " (this run)"
	}
	return w.Name
}

// workerStages lists a worker's stages with their slots: "upper×4 slow×2".
func workerStages(w WorkerSnapshot) string {
	var parts []string
	for _, st := range w.Stages {
		parts = append(parts, fmt.Sprintf("%s×%d", st.Name, st.Slots))
	}
	return strings.Join(parts, " ")
}

// plainWorkers is the plain status line's part about the workers.
func plainWorkers(ws []WorkerSnapshot) string {
	if len(ws) == 0 {
		return " | workers: none joined yet"
	}
	var b strings.Builder
	b.WriteString(" | workers:")
	for i, w := range ws {
		if i == 3 {
			fmt.Fprintf(&b, " and %d more", len(ws)-i)
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, " %s", workerName(w))
		switch {
		case w.Left:
			b.WriteString(" left")
		case w.Gone:
			b.WriteString(" gone")
		default:
			bz, n := 0, 0
			for _, st := range w.Stages {
				bz += st.Busy
				n += st.Slots
			}
			fmt.Fprintf(&b, " busy %d/%d", bz, n)
		}
	}
	return b.String()
}

// WriteWorkers says, after the summary table, which workers took part in
// a run on a broker: each with its stages and slots and the records it
// finished, at most width cells a line (0: unbounded). Nothing for a run
// without workers.
func (s *Summary) WriteWorkers(w io.Writer, width int) error {
	if len(s.Workers) == 0 {
		return nil
	}
	var parts []string
	for _, wk := range s.Workers {
		name := wk.Name
		if wk.Local {
			name += " (this run)"
		}
		var st []string
		for _, x := range wk.Stages {
			st = append(st, fmt.Sprintf("%s×%d %d records", x.Name, x.Slots, x.Records))
		}
		part := name + " " + strings.Join(st, ", ")
		if wk.State != "working" {
			part += ", " + wk.State
		}
		parts = append(parts, part)
	}
	n := fmt.Sprintf("%d workers", len(s.Workers))
	if len(s.Workers) == 1 {
		n = "1 worker"
	}
	_, err := fmt.Fprintln(w, WrapWords(n+": "+strings.Join(parts, "; "), width))
	return err
}

// Meter counts what a worker's slots of one stage did, for the worker's
// own metrics (flowrun worker --metrics): the counts of each piece, added
// once per piece, as the run's counters are.
type Meter struct{ c counters }

// Begin says a slot took a piece.
func (m *Meter) Begin() { m.c.busy.Add(1) }

// End says the slot is done with it, having done n.
func (m *Meter) End(n Counts) {
	m.c.busy.Add(-1)
	m.c.in.Add(n.In)
	m.c.out.Add(n.Out)
	m.c.errors.Add(n.Errors)
	m.c.retries.Add(n.Retries)
	m.c.skipped.Add(n.Skipped)
	m.c.dead.Add(n.Dead)
	m.c.busyNanos.Add(int64(n.Busy))
	if n.In > 0 {
		m.c.hist.add(n.Busy/time.Duration(n.In), n.In)
	}
}

// Snapshot is the stage's state on the worker: slots are its workers.
func (m *Meter) Snapshot(name, use string, slots int) StageSnapshot {
	c := &m.c
	return StageSnapshot{
		Name: name, Use: use, In: c.in.Load(), Out: c.out.Load(), Errs: c.errors.Load(),
		Busy: int(c.busy.Load()), Workers: slots,
		Retries: c.retries.Load(), Skipped: c.skipped.Load(), Dead: c.dead.Load(),
		BusyTime: time.Duration(c.busyNanos.Load()),
		P50:      c.hist.quantile(0.5), P99: c.hist.quantile(0.99),
		Latency: Latencies{&c.hist}, Remote: true,
	}
}

// slotsOf is the slots that the working workers of a run on a broker have
// for a stage.
func (r *run) slotsOf(stage string) int {
	n := 0
	for _, w := range r.workers() {
		if !w.Working() {
			continue
		}
		for _, st := range w.Stages {
			if st.Name == stage {
				n += st.Slots
			}
		}
	}
	return n
}
