package runner

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rivo/uniseg"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Display draws a run's progress on a terminal as a block of lines: the
// input, one line per stage, the output. The block is correct by
// construction rather than by luck:
//
//   - every line is cut to the terminal's width, read again at each
//     redraw (and at once on SIGWINCH), so no line ever wraps and the
//     cursor arithmetic that redraws the block in place stays true;
//   - the block never has more lines than the terminal has rows;
//   - a number shown is a number counted: a total the runner does not
//     know (stdin, a pipe) is shown as a spinner and a count, and rates
//     and the ETA come from what was actually done, never from a guess;
//   - whatever else goes to the terminal while the block is live (the
//     writers of Messages and Above: messages, plugins' logs, records when
//     stdout is the same terminal) is written above it, and the block is
//     drawn again below, so nothing is drawn over.
//
// Use a *Display, and only one Run at a time.
type Display struct {
	W     io.Writer     // the terminal: stderr
	Every time.Duration // between redraws; 150ms when zero

	// Size reports the terminal's columns and rows. Nil: W's size when W
	// is a terminal, else 80×24.
	Size func() (width, height int)

	mu    sync.Mutex
	live  bool     // Run is drawing the block
	lines []string // the block
	cut   int      // the width its lines were cut to
	shown bool     // the block is on the screen, the cursor below it
	// midLine says a line written before the block was live is not
	// finished: the block starts on the next.
	midLine bool
	tails   []*above // writers holding a line's start
}

// Messages returns a writer for lines that must stay on the screen, such
// as "stopping: draining…": while the block is live each line is printed
// above it, otherwise it goes straight to W.
func (d *Display) Messages() io.Writer { return d.Above(d.W) }

// Above returns a writer that writes to w, which shows on the same
// terminal as the block (records on stdout, messages on stderr), and
// keeps the block below what it writes. A line is written once it is
// whole: the block cannot be drawn after half a line.
func (d *Display) Above(w io.Writer) io.Writer {
	a := &above{d: d, w: w}
	d.mu.Lock()
	d.tails = append(d.tails, a)
	d.mu.Unlock()
	return a
}

type above struct {
	d    *Display
	w    io.Writer
	tail []byte // written after the last newline, held while the block is live
}

func (a *above) Write(p []byte) (int, error) {
	d := a.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.live {
		if len(p) > 0 {
			d.midLine = p[len(p)-1] != '\n'
		}
		return a.w.Write(p)
	}
	end := bytes.LastIndexByte(p, '\n') + 1
	if end == 0 {
		a.tail = append(a.tail, p...)
		return len(p), nil
	}
	d.erase()
	var err error
	if len(a.tail) > 0 {
		_, err = a.w.Write(a.tail)
		a.tail = a.tail[:0]
	}
	if err == nil {
		_, err = a.w.Write(p[:end])
	}
	a.tail = append(a.tail, p[end:]...)
	d.redraw()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// erase takes the block off the screen: it moves the cursor to the
// block's first line and clears from there down (the cursor is at the
// start of the line below the block).
func (d *Display) erase() {
	if d.shown {
		io.WriteString(d.W, d.up())
		d.shown = false
	}
}

// up is what moves the cursor from below the block to its first line and
// clears from there down. A terminal narrowed since the block was drawn
// has rewrapped its lines (tmux, VTE, iTerm2 and most others do), so they
// take more rows now.
func (d *Display) up() string {
	width, _ := d.size()
	rows := 0
	for _, l := range d.lines {
		rows++
		if width < d.cut {
			rows += max(uniseg.StringWidth(l)-1, 0) / width
		}
	}
	return fmt.Sprintf("\r\x1b[%dA\x1b[J", rows)
}

// redraw puts the block back on the screen as it was, after a write
// above it.
func (d *Display) redraw() {
	if !d.shown && len(d.lines) > 0 {
		io.WriteString(d.W, strings.Join(d.lines, "\n")+"\n")
		d.shown = true
	}
}

// draw replaces the block with lines, in one write.
func (d *Display) draw(lines []string, cut int) {
	var b strings.Builder
	if d.shown {
		b.WriteString(d.up())
	} else if d.midLine {
		b.WriteByte('\n')
		d.midLine = false
	}
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	io.WriteString(d.W, b.String())
	d.lines, d.cut, d.shown = lines, cut, true
}

func (d *Display) size() (width, height int) {
	if d.Size != nil {
		width, height = d.Size()
	} else if f, ok := d.W.(*os.File); ok {
		width, height, _ = term.GetSize(int(f.Fd()))
	}
	if width <= 0 {
		width = 80
	}
	if height <= 0 {
		height = 24
	}
	return width, height
}

// Run draws until done is closed, then leaves the final state on screen.
func (d *Display) Run(done <-chan struct{}, snapshot func() Snapshot) {
	every := d.Every
	if every <= 0 {
		every = 150 * time.Millisecond
	}
	began := time.Now()
	v := newView(snapshot())
	resized := make(chan os.Signal, 1)
	stopResize := notifyResize(resized)
	defer stopResize()
	t := time.NewTicker(every)
	defer t.Stop()

	d.mu.Lock()
	d.live = true
	d.mu.Unlock()
	show := func(final bool) {
		s := snapshot()
		s.Elapsed = time.Since(began)
		d.mu.Lock()
		defer d.mu.Unlock()
		width, height := d.size()
		lines := v.render(s, width-1, height-1, final) // the last column and row stay free
		if final {
			// Half lines held back are written now, the block below them.
			for _, a := range d.tails {
				if len(a.tail) > 0 {
					d.erase()
					a.w.Write(append(a.tail, '\n'))
					a.tail = a.tail[:0]
				}
			}
			d.live = false
		}
		d.draw(lines, width-1)
	}
	show(false)
	for {
		select {
		case <-done:
			show(true)
			return
		case <-resized:
			show(false)
		case <-t.C:
			show(false)
		}
	}
}

// spinner turns one step each time a line's count moves, so a stage that
// stands still is seen to stand still.
var spinner = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// rateWindow is how far back the rates shown look.
const rateWindow = 5 * time.Second

// view is what the block remembers between two draws: past counts, for
// the rates, and where each spinner is.
type view struct {
	names   []string // input, the stages, output
	widest  int      // the widest of names, in cells
	samples []sample // the last rateWindow of them, oldest first
	spin    []int
	last    []int64
	bytes   int64         // the input's bytes consumed, as last seen
	bytesAt time.Duration // when they were first seen
}

// sample is the counts of one moment: the input's records, each stage's
// records done, the output's records.
type sample struct {
	at     time.Duration
	counts []int64
}

func newView(s Snapshot) *view {
	v := &view{}
	v.names = append(v.names, "input")
	for _, st := range s.Stages {
		v.names = append(v.names, st.Name)
	}
	v.names = append(v.names, "output")
	for _, n := range v.names {
		v.widest = max(v.widest, uniseg.StringWidth(n))
	}
	for _, st := range s.Stages {
		if st.Remote { // a line says which workers work them
			v.widest = max(v.widest, len(workersLabel))
		}
	}
	v.spin = make([]int, len(v.names))
	v.last = make([]int64, len(v.names))
	return v
}

// labels returns the names padded to one width, which takes at most a
// third of a line width cells wide: a long stage name is cut, with an
// ellipsis, rather than push the numbers off the line.
func (v *view) labels(width int) []string {
	col := min(v.widest, max(len("output"), width/3))
	labels := make([]string, len(v.names))
	for i, n := range v.names {
		if uniseg.StringWidth(n) > col {
			n = cut(n, col-1) + "…"
		}
		labels[i] = n + strings.Repeat(" ", col-uniseg.StringWidth(n))
	}
	return labels
}

func counts(s Snapshot) []int64 {
	c := make([]int64, 0, len(s.Stages)+2)
	c = append(c, s.InRecords)
	for _, st := range s.Stages {
		c = append(c, st.In)
	}
	return append(c, s.OutRecords)
}

// render makes the block's lines for s, each at most width cells, at most
// height lines. The final block shows rates over the whole run, as the
// summary does.
func (v *view) render(s Snapshot, width, height int, final bool) []string {
	now := counts(s)
	v.samples = append(v.samples, sample{at: s.Elapsed, counts: now})
	for len(v.samples) > 2 && v.samples[1].at <= s.Elapsed-rateWindow {
		v.samples = v.samples[1:]
	}
	first := v.samples[0]
	if final {
		first = sample{counts: make([]int64, len(now))}
	}
	rate := func(i int) (float64, bool) {
		dt := (s.Elapsed - first.at).Seconds()
		if dt < 0.5 && !final {
			return 0, false // too soon to tell
		}
		return float64(now[i]-first.counts[i]) / dt, dt > 0
	}
	for i, n := range now {
		if n != v.last[i] {
			v.spin[i] = (v.spin[i] + 1) % len(spinner)
			v.last[i] = n
		}
	}
	mark := func(i int) string {
		if final {
			return " "
		}
		return spinner[v.spin[i]]
	}
	digits := 1
	for _, n := range now {
		digits = max(digits, len(fmt.Sprint(n)))
	}
	count := func(n int64) string { return fmt.Sprintf("%*d rec", digits, n) }
	perSecond := func(i int) string {
		r, ok := rate(i)
		if !ok {
			return ""
		}
		return fmt.Sprintf("%8s", human(r)+"/s")
	}

	names := v.labels(width)
	var lines []string
	// The input: a bar of the bytes consumed when the size is known.
	var in line
	in.add(names[0])
	if s.TotalBytes > 0 {
		bar := clamp((width-uniseg.StringWidth(names[0]))/3, 10, 30)
		in.add(inputBar(s.InBytes, s.TotalBytes, bar))
		in.opt(count(s.InRecords))
		if s.InErrors > 0 {
			in.opt(fmt.Sprintf("err %d", s.InErrors))
		}
		in.opt(humanBytes(s.InBytes) + "/" + humanBytes(s.TotalBytes))
		if eta, ok := v.remaining(s, final); ok {
			in.opt("ETA " + eta)
		}
	} else {
		in.add(mark(0))
		in.add(count(s.InRecords))
		if s.InErrors > 0 {
			in.opt(fmt.Sprintf("err %d", s.InErrors))
		}
		in.opt(perSecond(0))
		if s.InBytes > 0 {
			in.opt(humanBytes(s.InBytes))
		}
	}
	lines = append(lines, in.cut(width))

	// The stages: records done, their rate, the queue, the busy workers.
	stageRows := len(s.Stages)
	if stageRows+2 > height {
		stageRows = max(height-3, 0) // one row says how many are not shown
	}
	for i, st := range s.Stages[:stageRows] {
		var l line
		l.add(names[i+1])
		l.add(mark(i + 1))
		l.add(count(st.In))
		if st.Errs > 0 {
			l.opt(fmt.Sprintf("err %d", st.Errs))
		}
		l.opt(perSecond(i + 1))
		if st.Fused {
			l.opt("fused") // in the goroutines of the stage before: no queue of its own
		} else {
			l.opt(fmt.Sprintf("queue %*d/%d", len(fmt.Sprint(st.Cap)), st.Queued, st.Cap))
		}
		busy := st.Busy
		if final && st.Remote {
			busy = 0 // every piece is answered; the workers' last reports may be older
		}
		l.opt(fmt.Sprintf("busy %*d/%d", len(fmt.Sprint(st.Workers)), busy, st.Workers))
		lines = append(lines, l.cut(width))
	}
	if hidden := len(s.Stages) - stageRows; hidden > 0 {
		lines = append(lines, cut(fmt.Sprintf("… %d more stages (make the terminal taller to see them)", hidden), width))
	}

	var out line
	out.add(names[len(names)-1])
	out.add(mark(len(now) - 1))
	out.add(count(s.OutRecords))
	out.opt(perSecond(len(now) - 1))
	out.opt(short(s.Elapsed.Round(100 * time.Millisecond)))
	lines = append(lines, out.cut(width))
	if remote(s) && len(lines) < height {
		col := uniseg.StringWidth(names[0])
		lines = append(lines, workerLines(s.Workers, col, width, height-len(lines), final)...)
	}
	if len(lines) > height { // a terminal of one or two rows
		lines = lines[len(lines)-max(height, 1):]
	}
	return lines
}

// inputBar renders the bar of bytes consumed out of total.
func inputBar(consumed, total int64, width int) string {
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(io.Discard), // the block is drawn by Display
		progressbar.OptionSetWidth(width),
		progressbar.OptionThrottle(0),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionSetElapsedTime(false), // the output line has it
		progressbar.OptionSetPredictTime(false), // remaining has the ETA
	)
	bar.Set64(min(consumed, total))
	return strings.TrimRight(strings.ReplaceAll(bar.String(), "\r", ""), " ")
}

// remaining estimates the time left from the bytes consumed so far and
// the time they took: what was done, not a guess of what is to come. The
// input counts bytes consumed a batch of records at a time, so the rate is
// taken at the moment the count last moved and the time since is taken
// off: between two batches the ETA counts down rather than climbs.
func (v *view) remaining(s Snapshot, final bool) (string, bool) {
	if s.InBytes != v.bytes {
		v.bytes, v.bytesAt = s.InBytes, s.Elapsed
	}
	if final || s.InBytes <= 0 || s.InBytes >= s.TotalBytes || v.bytesAt < time.Second/2 {
		return "", false
	}
	left := time.Duration(float64(v.bytesAt)*float64(s.TotalBytes-s.InBytes)/float64(s.InBytes)) - (s.Elapsed - v.bytesAt)
	switch {
	case left < time.Second:
		return "<1s", true
	case left > 100*time.Hour:
		return ">99h", true
	case left >= time.Hour:
		return fmt.Sprintf("%dh%02dm", int(left.Hours()), int(left.Minutes())%60), true
	case left >= time.Minute:
		return fmt.Sprintf("%dm%02ds", int(left.Minutes()), int(left.Seconds())%60), true
	}
	return fmt.Sprintf("%ds", int(left.Seconds()+0.5)), true
}

// line gathers a line's fields: the ones added always, then the optional
// ones in order as long as they fit.
type line struct {
	b     strings.Builder
	width int
	opts  []string
}

func (l *line) add(f string) {
	if l.b.Len() > 0 {
		l.b.WriteByte(' ')
		l.width++
	}
	l.b.WriteString(f)
	l.width += uniseg.StringWidth(f)
}

func (l *line) opt(f string) {
	if f != "" {
		l.opts = append(l.opts, f)
	}
}

// cut returns the line at most width cells wide: the optional fields up
// to the first that does not fit, then anything still too wide cut off.
func (l *line) cut(width int) string {
	for _, f := range l.opts {
		w := uniseg.StringWidth(f)
		if l.width+2+w > width {
			break
		}
		l.b.WriteString("  ")
		l.b.WriteString(f)
		l.width += 2 + w
	}
	return cut(l.b.String(), width)
}

// cut returns the longest start of s that is at most width cells wide.
func cut(s string, width int) string {
	if uniseg.StringWidth(s) <= width {
		return s
	}
	var b strings.Builder
	w := 0
	state := -1
	for len(s) > 0 {
		var cluster string
		var cw int
		cluster, s, cw, state = uniseg.FirstGraphemeClusterInString(s, state)
		if w+cw > width {
			break
		}
		b.WriteString(cluster)
		w += cw
	}
	return b.String()
}

func clamp(x, lo, hi int) int { return max(lo, min(x, hi)) }

// human writes a rate with three significant digits at most.
func human(x float64) string {
	if x < 999.5 {
		return fmt.Sprintf("%.0f", x)
	}
	return scaled(x, []string{"k", "M", "G", "T", "P", "E"})
}

func humanBytes(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%d B", n)
	}
	return scaled(float64(n), []string{" kB", " MB", " GB", " TB", " PB", " EB"})
}

// scaled writes x ≥ 999.5 in thousands, millions… with three digits.
func scaled(x float64, units []string) string {
	for _, u := range units[:len(units)-1] {
		x /= 1000
		if x < 999.5 {
			return fmt.Sprintf("%.3g%s", x, u)
		}
	}
	return fmt.Sprintf("%.0f%s", x/1000, units[len(units)-1])
}
