package runner

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/rivo/uniseg"
)

// Progress shows a run's progress while it runs. Run calls snapshot as
// often as it likes (each call reads counters, nothing more) and returns
// when done is closed, after showing the final state. It writes to stderr
// only: stdout carries records. Plain writes status lines for logs;
// Display draws a live block on a terminal.
type Progress interface {
	Run(done <-chan struct{}, snapshot func() Snapshot)
}

// Snapshot is a run's state at one moment.
type Snapshot struct {
	Elapsed    time.Duration
	InRecords  int64
	InBytes    int64
	TotalBytes int64 // -1: unknown (stdin)
	OutRecords int64
	Stages     []StageSnapshot

	// Added for the metrics, the web page and the bottleneck advice.
	InErrors, InSkipped, InDead int64 // records the input could not decode, by on_error
	OutQueued, OutCap           int   // batches waiting for the output writer, and its queue's capacity

	// Workers are the worker processes that joined a run on a broker
	// (Options.Remote), in the order they joined.
	Workers []WorkerSnapshot
}

// StageSnapshot is one stage's state at one moment.
type StageSnapshot struct {
	Name          string
	In, Out, Errs int64
	Queued, Cap   int // batches waiting in its input queue, and its capacity
	Busy, Workers int

	// Added for the metrics, the web page and the bottleneck advice.
	Use                    string
	Retries, Skipped, Dead int64
	BusyTime               time.Duration // in Process, summed over workers
	P50, P99               time.Duration // per record, so far
	Latency                Latencies     // the histogram P50 and P99 come from
	Fused                  bool          // runs in the goroutines of the stage before it: its queue is unused
	// Remote says the stage runs on workers through a broker: Workers
	// and Busy are then the slots of the workers working it now.
	Remote bool
}

func (r *run) snapshot() Snapshot {
	// The bytes before the records: the input counts a batch's records,
	// then the bytes they span, and read the other way round a batch
	// handed on in between showed more bytes consumed than the records
	// counted span (TestInputBytesFollowRecords, under load).
	consumed := r.consumed.Load()
	s := Snapshot{
		InRecords:  r.input.records.Load(),
		InBytes:    consumed,
		TotalBytes: r.total,
		OutRecords: r.written.Load(),
		InErrors:   r.input.errors.Load(),
		InSkipped:  r.input.skipped.Load(),
		InDead:     r.input.dead.Load(),
	}
	if n := len(r.stages); n > 0 {
		s.OutQueued, s.OutCap = len(r.stages[n-1].out), cap(r.stages[n-1].out)
	}
	s.Workers = r.workers()
	var live, busy map[string]int
	if _, ok := r.opts.Remote.(Workers); ok {
		live, busy = slots(s.Workers, false)
	}
	for _, st := range r.stages {
		s.Stages = append(s.Stages, StageSnapshot{
			Name: st.cfg.Name, In: st.c.in.Load(), Out: st.c.out.Load(), Errs: st.c.errors.Load(),
			Queued: len(st.in), Cap: cap(st.in),
			Busy: int(st.c.busy.Load()), Workers: st.cfg.Workers,
			Use: st.cfg.Use, Retries: st.c.retries.Load(), Skipped: st.c.skipped.Load(), Dead: st.c.dead.Load(),
			BusyTime: time.Duration(st.c.busyNanos.Load()),
			P50:      st.c.hist.quantile(0.5), P99: st.c.hist.quantile(0.99),
			Latency: Latencies{&st.c.hist}, Fused: st.fused, Remote: st.remote,
		})
		if st.remote && live != nil {
			ss := &s.Stages[len(s.Stages)-1]
			ss.Workers, ss.Busy = live[st.cfg.Name], busy[st.cfg.Name]
		}
	}
	return s
}

// Plain writes a status line every Every, with no carriage returns or
// escape codes: for logs and CI.
type Plain struct {
	W     io.Writer
	Every time.Duration
}

// Run prints until done is closed.
func (p Plain) Run(done <-chan struct{}, snapshot func() Snapshot) {
	every := p.Every
	if every <= 0 {
		every = 5 * time.Second
	}
	began := time.Now()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s := snapshot()
			s.Elapsed = time.Since(began)
			fmt.Fprintln(p.W, plainLine(s))
		}
	}
}

func plainLine(s Snapshot) string {
	var b strings.Builder
	fmt.Fprintf(&b, "flowrun: %s in %d", s.Elapsed.Round(time.Second), s.InRecords)
	if s.TotalBytes > 0 {
		fmt.Fprintf(&b, " (%d%%)", 100*s.InBytes/s.TotalBytes)
	}
	for _, st := range s.Stages {
		fmt.Fprintf(&b, " | %s %d", st.Name, st.Out)
		if st.Errs > 0 {
			fmt.Fprintf(&b, " err %d", st.Errs)
		}
		fmt.Fprintf(&b, " q %d/%d busy %d/%d", st.Queued, st.Cap, st.Busy, st.Workers)
	}
	fmt.Fprintf(&b, " | out %d", s.OutRecords)
	if remote(s) {
		b.WriteString(plainWorkers(s.Workers))
	}
	return b.String()
}

// WriteTable writes the summary as a table, one row per stage, between
// a row for the input and one for the output.
func (s *Summary) WriteTable(w io.Writer) error { return s.WriteTableWidth(w, 0) }

// summaryColumns are the table's columns; drop is the order in which a
// table too wide for its terminal leaves them out (0: always kept).
var summaryColumns = []struct {
	name string
	drop int
}{
	{"stage", 0}, {"workers", 6}, {"in", 0}, {"out", 0},
	{"errors", 0}, {"retries", 0}, {"skipped", 0}, {"dead", 0},
	{"busy", 5}, {"p50", 4}, {"p99", 3},
}

// counters are the columns of things that went wrong: left out first
// when the terminal is narrow and all of them are 0 (a line says so).
var summaryCounters = []int{4, 5, 6, 7}

// WriteTableWidth is WriteTable for a terminal width columns wide (0:
// unbounded). A table wider than that leaves out, in turn, the error
// counters that are all 0 (saying so), then p99, p50, busy and workers
// (saying where to find them), so that a row is never wrapped across two
// lines: a wrapped table cannot be read.
func (s *Summary) WriteTableWidth(w io.Writer, width int) error {
	rows := [][]string{make([]string, len(summaryColumns))}
	for i, c := range summaryColumns {
		rows[0][i] = c.name
	}
	n := func(v int64) string { return strconv.FormatInt(v, 10) }
	rows = append(rows, []string{"(input)", "", "", n(s.Input.Records), n(s.Input.Errors), "", n(s.Input.Skipped), n(s.Input.DeadLettered), "", "", ""})
	for _, st := range s.Stages {
		rows = append(rows, []string{st.Name, strconv.Itoa(st.Workers), n(st.In), n(st.Out),
			n(st.Errors), n(st.Retries), n(st.Skipped), n(st.DeadLettered),
			short(time.Duration(st.Busy)), short(time.Duration(st.P50)), short(time.Duration(st.P99))})
	}
	rows = append(rows, []string{"(output)", "", n(s.Output.Records), "", "", "", "", "", "", "", ""})

	keep := make([]bool, len(summaryColumns))
	for i := range keep {
		keep[i] = true
	}
	var notes []string
	if width > 0 && tableWidth(rows, keep) > width {
		zero := true
		for _, c := range summaryCounters {
			for _, r := range rows[1:] {
				zero = zero && (r[c] == "" || r[c] == "0")
			}
		}
		if zero {
			for _, c := range summaryCounters {
				keep[c] = false
			}
			notes = append(notes, "no errors, retries, skips or dead letters")
		}
		var left []string
		for d := 3; d <= 6 && tableWidth(rows, keep) > width; d++ {
			for i, c := range summaryColumns {
				if c.drop == d {
					keep[i] = false
					left = append([]string{c.name}, left...)
				}
			}
		}
		if len(left) > 0 {
			notes = append(notes, strings.Join(left, ", ")+" left out to fit; --stats FILE has them")
		}
	}
	widths := columnWidths(rows, keep)
	var b strings.Builder
	for _, r := range rows {
		b.Reset()
		for i, cell := range r {
			if !keep[i] {
				continue
			}
			b.WriteString(cell)
			b.WriteString(strings.Repeat(" ", widths[i]-uniseg.StringWidth(cell)+2))
		}
		io.WriteString(w, strings.TrimRight(b.String(), " ")+"\n") // empty cells pad the row's end
	}
	for _, note := range notes {
		fmt.Fprintln(w, WrapWords(note, width))
	}
	_, err := fmt.Fprintf(w, "%d records in %s\n", s.Input.Records, short(time.Duration(s.Elapsed)))
	return err
}

// WrapWords breaks prose into lines narrower than width (0: as it is) at
// spaces, so that the terminal does not break it inside a word.
func WrapWords(s string, width int) string {
	if width <= 1 || uniseg.StringWidth(s) < width {
		return s
	}
	var b strings.Builder
	line := 0
	for i, word := range strings.Fields(s) {
		w := uniseg.StringWidth(word)
		switch {
		case i == 0:
		case line+1+w < width:
			b.WriteByte(' ')
			line++
		default:
			b.WriteByte('\n')
			line = 0
		}
		b.WriteString(word)
		line += w
	}
	return b.String()
}

// columnWidths is the widest cell of each kept column, in terminal cells.
func columnWidths(rows [][]string, keep []bool) []int {
	widths := make([]int, len(keep))
	for _, r := range rows {
		for i, cell := range r {
			if keep[i] {
				widths[i] = max(widths[i], uniseg.StringWidth(cell))
			}
		}
	}
	return widths
}

// tableWidth is the width of the widest row with only the kept columns.
func tableWidth(rows [][]string, keep []bool) int {
	widths := columnWidths(rows, keep)
	most := 0
	for _, r := range rows {
		wide, last := 0, 0
		for i := range r {
			if keep[i] {
				wide += widths[i] + 2
				if r[i] != "" {
					last = wide - widths[i] - 2 + uniseg.StringWidth(r[i])
				}
			}
		}
		most = max(most, last)
	}
	return most
}

// short rounds d to three significant digits.
func short(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Microsecond:
		return d.String()
	case d < time.Millisecond:
		return d.Round(10 * time.Nanosecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}
