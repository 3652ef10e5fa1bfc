package runner

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress shows a run's progress while it runs. Run calls snapshot as
// often as it likes (each call reads counters, nothing more) and returns
// when done is closed, after showing the final state. It writes to stderr
// only: stdout carries records.
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
}

// StageSnapshot is one stage's state at one moment.
type StageSnapshot struct {
	Name          string
	In, Out, Errs int64
	Queued, Cap   int // batches waiting in its input queue, and its capacity
	Busy, Workers int
}

func (r *run) snapshot() Snapshot {
	s := Snapshot{
		InRecords:  r.input.records.Load(),
		InBytes:    r.consumed.Load(),
		TotalBytes: r.total,
		OutRecords: r.written.Load(),
	}
	for _, st := range r.stages {
		s.Stages = append(s.Stages, StageSnapshot{
			Name: st.cfg.Name, In: st.c.in.Load(), Out: st.c.out.Load(), Errs: st.c.errors.Load(),
			Queued: len(st.in), Cap: cap(st.in),
			Busy: int(st.c.busy.Load()), Workers: st.cfg.Workers,
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

// Bars draws a live bar per stage on a terminal, redrawn in place every
// Every: the input (bytes against the file size when it is known), each
// stage (records, rate, queue fill, busy workers) and the output.
type Bars struct {
	W     io.Writer
	Every time.Duration
}

// Run draws until done is closed, then leaves the final state on screen.
func (p Bars) Run(done <-chan struct{}, snapshot func() Snapshot) {
	every := p.Every
	if every <= 0 {
		every = 150 * time.Millisecond
	}
	s := snapshot()
	newBar := func(max int64, desc string, opts ...progressbar.Option) *progressbar.ProgressBar {
		opts = append(opts,
			progressbar.OptionSetWriter(io.Discard), // drawn here, all bars at once
			progressbar.OptionSetDescription(desc),
			progressbar.OptionSetWidth(20),
			progressbar.OptionThrottle(0),
			progressbar.OptionSetSpinnerChangeInterval(0), // no goroutine of its own: Run redraws
			progressbar.OptionSetRenderBlankState(true),
		)
		return progressbar.NewOptions64(max, opts...)
	}
	width := len("output")
	for _, st := range s.Stages {
		width = max(width, len(st.Name))
	}
	pad := func(name string) string { return fmt.Sprintf("%-*s", width, name) }
	input := newBar(s.TotalBytes, pad("input"), progressbar.OptionShowBytes(true))
	// With the input's size known, each stage gets a bar against the
	// records to come, estimated from the bytes per record so far;
	// otherwise a counter. The mode is chosen once: progressbar counts
	// differently in each.
	known := s.TotalBytes > 0
	stageMax := int64(-1)
	if known {
		stageMax = 1 << 62 // set from the estimate at each draw
	}
	bars := make([]*progressbar.ProgressBar, len(s.Stages))
	for i, st := range s.Stages {
		bars[i] = newBar(stageMax, pad(st.Name), progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("rec"))
	}
	output := newBar(-1, pad("output"), progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("rec"))
	lines := 0
	draw := func(s Snapshot, final bool) {
		var b strings.Builder
		if lines > 0 {
			fmt.Fprintf(&b, "\x1b[%dA", lines) // back to the first bar
		}
		input.Set64(s.InBytes)
		fmt.Fprintf(&b, "\r\x1b[2K%s  %d rec\n", input.String(), s.InRecords)
		total := int64(1 << 62)
		if s.InBytes > 0 {
			total = s.InRecords * s.TotalBytes / s.InBytes
		}
		for i, st := range s.Stages {
			switch {
			case final && known:
				bars[i].ChangeMax64(max(st.In, 1))
			case known:
				// A bar that reaches its max is finished for good: keep it
				// ahead until the end (a fan-out outgrows the estimate).
				bars[i].ChangeMax64(max(total, st.In+1))
			}
			bars[i].Set64(st.In)
			fmt.Fprintf(&b, "\r\x1b[2K%s  q %d/%d  busy %d/%d", bars[i].String(), st.Queued, st.Cap, st.Busy, st.Workers)
			if st.Errs > 0 {
				fmt.Fprintf(&b, "  err %d", st.Errs)
			}
			b.WriteByte('\n')
		}
		output.Set64(s.OutRecords)
		fmt.Fprintf(&b, "\r\x1b[2K%s\n", output.String())
		lines = len(s.Stages) + 2
		io.WriteString(p.W, b.String())
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			draw(snapshot(), true)
			return
		case <-t.C:
			draw(snapshot(), false)
		}
	}
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
