package runner

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
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
}

func (r *run) snapshot() Snapshot {
	s := Snapshot{
		InRecords:  r.input.records.Load(),
		InBytes:    r.consumed.Load(),
		TotalBytes: r.total,
		OutRecords: r.written.Load(),
		InErrors:   r.input.errors.Load(),
		InSkipped:  r.input.skipped.Load(),
		InDead:     r.input.dead.Load(),
	}
	if n := len(r.stages); n > 0 {
		s.OutQueued, s.OutCap = len(r.stages[n-1].out), cap(r.stages[n-1].out)
	}
	for _, st := range r.stages {
		s.Stages = append(s.Stages, StageSnapshot{
			Name: st.cfg.Name, In: st.c.in.Load(), Out: st.c.out.Load(), Errs: st.c.errors.Load(),
			Queued: len(st.in), Cap: cap(st.in),
			Busy: int(st.c.busy.Load()), Workers: st.cfg.Workers,
			Use: st.cfg.Use, Retries: st.c.retries.Load(), Skipped: st.c.skipped.Load(), Dead: st.c.dead.Load(),
			BusyTime: time.Duration(st.c.busyNanos.Load()),
			P50:      st.c.hist.quantile(0.5), P99: st.c.hist.quantile(0.99),
			Latency: Latencies{&st.c.hist}, Fused: st.fused,
		})
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
	return b.String()
}

// WriteTable writes the summary as a table, one row per stage, between
// a row for the input and one for the output.
func (s *Summary) WriteTable(w io.Writer) error {
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "stage\tworkers\tin\tout\terrors\tretries\tskipped\tdead\tbusy\tp50\tp99\n")
	fmt.Fprintf(tw, "(input)\t\t\t%d\t%d\t\t%d\t%d\t\t\t\n", s.Input.Records, s.Input.Errors, s.Input.Skipped, s.Input.DeadLettered)
	for _, st := range s.Stages {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", st.Name, st.Workers, st.In, st.Out,
			st.Errors, st.Retries, st.Skipped, st.DeadLettered,
			short(time.Duration(st.Busy)), short(time.Duration(st.P50)), short(time.Duration(st.P99)))
	}
	fmt.Fprintf(tw, "(output)\t\t%d\t\t\t\t\t\t\t\t\n", s.Output.Records)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, line := range strings.SplitAfter(table.String(), "\n") {
		if line != "" {
			io.WriteString(w, strings.TrimRight(line, " \n")+"\n") // empty cells pad the row's end
		}
	}
	_, err := fmt.Fprintf(w, "%d records in %s\n", s.Input.Records, short(time.Duration(s.Elapsed)))
	return err
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
