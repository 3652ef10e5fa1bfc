package cli_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/charmbracelet/x/vt"
	"github.com/creack/pty"
	"github.com/rivo/uniseg"
)

// These tests look at the progress display the way a person meets it:
// flowrun runs under a pseudo-terminal, and a terminal emulator reads what
// it writes. The assertions are on the emulator's screen, checked after
// every read from the terminal, not only at the end.

// terminal is a pseudo-terminal with an emulator behind it.
type terminal struct {
	pty   *os.File
	names []string // the block's lines start with these

	mu         sync.Mutex
	vt         *vt.Emulator
	raw        bytes.Buffer // all flowrun wrote
	faults     []string     // what was wrong, with the screen it was wrong on
	live       int          // screens that showed the block with a spinner
	cols, rows int
	seen       chan struct{} // closed when the live block is first seen
	done       chan struct{} // closed when all flowrun wrote is read
}

// escapes are the control sequences flowrun writes.
var escapes = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]|\r`)

// spinning is a spinner frame of the live display.
var spinning = regexp.MustCompile(`[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]`)

// startOnTerminal starts flowrun with stderr on a cols×rows terminal, and
// stdout too unless cmd.Stdout is set; stdin is the terminal unless
// cmd.Stdin is set. The environment is the test's without CI, plus
// cmd.Env.
func startOnTerminal(t *testing.T, cmd *exec.Cmd, cols, rows int, names []string) *terminal {
	t.Helper()
	if p, tty, err := pty.Open(); err != nil {
		if os.Getenv("FLOWRUN_REQUIRE_SERVERS") == "1" {
			t.Fatalf("no pseudo-terminal: %v", err)
		}
		t.Skipf("no pseudo-terminal: %v", err)
	} else {
		p.Close()
		tty.Close()
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CI=") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(append(env, "TERM=xterm"), cmd.Env...)
	f, err := pty.StartWithAttrs(cmd, &pty.Winsize{Cols: uint16(cols), Rows: uint16(rows)},
		&syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 2}) // stderr is always the terminal
	if err != nil {
		t.Fatal(err)
	}
	term := &terminal{pty: f, names: names, vt: vt.NewEmulator(cols, rows), cols: cols, rows: rows, seen: make(chan struct{}), done: make(chan struct{})}
	go term.read()
	t.Cleanup(func() {
		cmd.Process.Kill()
		f.Close()
		<-term.done
	})
	return term
}

// read feeds the emulator until the terminal closes, checking each screen.
func (term *terminal) read() {
	defer close(term.done)
	buf := make([]byte, 4096)
	var line []byte // written since the last newline
	for {
		n, err := term.pty.Read(buf)
		if n > 0 {
			term.mu.Lock()
			term.vt.Write(buf[:n])
			term.raw.Write(buf[:n])
			term.check()
			// A line as wide as the terminal wraps, even where its last
			// cell is blank: look at what was written too.
			line = append(line, buf[:n]...)
			for {
				i := bytes.IndexByte(line, '\n')
				if i < 0 {
					break
				}
				text := escapes.ReplaceAllString(string(line[:i]), "")
				if w := uniseg.StringWidth(text); w >= term.cols && term.blockLine(text) != "" && len(term.faults) < 5 {
					term.faults = append(term.faults, fmt.Sprintf("a line %d wide written to a terminal %d wide: %q", w, term.cols, line[:i]))
				}
				line = line[i+1:]
			}
			term.mu.Unlock()
		}
		if err != nil { // EIO once flowrun has exited and all is read
			return
		}
	}
}

// wait waits for flowrun to exit and for everything it wrote to be read.
func (term *terminal) wait(t *testing.T, cmd *exec.Cmd) int {
	t.Helper()
	err := cmd.Wait()
	<-term.done
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode()
}

// screen returns the screen's rows, trailing blanks cut.
func (term *terminal) screen() []string {
	var rows []string
	for y := range term.rows {
		var b strings.Builder
		for x := range term.cols {
			c := term.vt.CellAt(x, y)
			switch {
			case c == nil || c.Width == 0 && c.Content == "":
			case c.Content == "":
				b.WriteByte(' ')
			default:
				b.WriteString(c.Content)
			}
		}
		rows = append(rows, strings.TrimRight(b.String(), " "))
	}
	return rows
}

// blockLine says which of the block's lines row is, or "".
func (term *terminal) blockLine(row string) string {
	for _, n := range term.names {
		if strings.HasPrefix(row, n+" ") && strings.Contains(row, " rec") {
			return n
		}
	}
	return ""
}

var (
	// A number, but not a port or a pid after a colon (host:pid names
	// a worker), nor digits in a word (a run id).
	number    = regexp.MustCompile(`(?:^|[^:\w])(\d+)\b`)
	hoursLeft = regexp.MustCompile(`ETA >?\d+h`)
)

// check looks for what a person must never see: a stage shown twice
// (stale lines), a line of the display that reached the terminal's edge
// (and so wrapped), an absurd number. The summary table, written once
// after the display, may wrap on a narrow terminal like any long line.
func (term *terminal) check() {
	rows := term.screen()
	fault := func(format string, args ...any) {
		if len(term.faults) < 5 {
			term.faults = append(term.faults, fmt.Sprintf(format, args...)+"\n"+strings.Join(rows, "\n"))
		}
	}
	seen := map[string]int{}
	spins := false
	for y, row := range rows {
		if n := term.blockLine(row); n != "" {
			seen[n]++
			spins = spins || spinning.MatchString(row)
			if c := term.vt.CellAt(term.cols-1, y); c != nil && strings.TrimSpace(c.Content) != "" {
				fault("row %d reaches the last column of %d", y, term.cols)
			}
		}
		for _, m := range number.FindAllStringSubmatch(row, -1) {
			if n, err := strconv.ParseInt(m[1], 10, 64); err != nil || n > 100000 {
				fault("row %d shows the number %s", y, m[1])
			}
		}
		if hoursLeft.MatchString(row) {
			fault("row %d shows an ETA in hours", y)
		}
	}
	for n, k := range seen {
		if k > 1 {
			fault("%q shown %d times", n, k)
		}
	}
	if spins {
		if term.live == 0 {
			close(term.seen)
		}
		term.live++
	}
}

// report fails t with what check found, and returns the final screen.
func (term *terminal) report(t *testing.T) []string {
	t.Helper()
	term.mu.Lock()
	defer term.mu.Unlock()
	for _, f := range term.faults {
		t.Errorf("%s\n----", f)
	}
	if term.live == 0 {
		t.Errorf("the live display was never seen")
	}
	return term.screen()
}

// scrolled returns the rows that went up into the scrollback, then the
// screen's.
func (term *terminal) scrolled() []string {
	term.mu.Lock()
	defer term.mu.Unlock()
	var rows []string
	for _, l := range term.vt.Scrollback().Lines() {
		rows = append(rows, strings.TrimRight(l.String(), " "))
	}
	return append(rows, term.screen()...)
}

const terminalPipeline = `name: three
input:  {from: stdin, format: lines}
output: {to: stdout, format: lines}
ordered: true
stages:
  - {name: download, use: sleep, with: {duration: 3ms}, workers: 3, buffer: 16}
  - {name: resize, use: sleep, with: {duration: 3ms}, workers: 4, buffer: 16}
  - {name: upload, use: sleep, with: {duration: 3ms}, workers: 5, buffer: 16}
`

var terminalNames = []string{"input", "download", "resize", "upload", "output"}

func TestTerminalDisplay(t *testing.T) {
	tests := []struct {
		name        string
		cols        int
		stdin       bool // records on stdin rather than -i FILE
		records     int
		stdoutOnTTY bool
	}{
		{"file input, 120 columns", 120, false, 900, false},
		{"stdin, 60 columns", 60, true, 900, false},
		{"file input, records on the terminal, 60 columns", 60, false, 300, true},
		{"stdin, records on the terminal, 120 columns", 120, true, 300, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			p := writeFile(t, dir, "p.yaml", terminalPipeline)
			var want strings.Builder
			for i := 1; i <= tt.records; i++ {
				fmt.Fprintf(&want, "%d\n", i)
			}
			in := writeFile(t, dir, "in.txt", want.String())
			out := filepath.Join(dir, "out.txt")
			args := []string{"run", "--progress-every", "20ms", p}
			if !tt.stdoutOnTTY {
				args = append(args, "-o", out)
			}
			cmd := exec.Command(flowrunBin, args...)
			if tt.stdin {
				f, err := os.Open(in)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				cmd.Stdin = f
			} else {
				cmd.Args = append(cmd.Args, "-i", in)
			}
			term := startOnTerminal(t, cmd, tt.cols, 30, terminalNames)
			if code := term.wait(t, cmd); code != 0 {
				t.Errorf("exit %d", code)
			}
			screen := term.report(t)
			final := strings.Join(screen, "\n")
			for _, want := range []string{"stage ", "(output)", fmt.Sprintf("%d records in", tt.records)} {
				if !strings.Contains(final, want) {
					t.Errorf("the final screen lacks %q:\n%s", want, final)
				}
			}
			// The final block: every line once, above the summary.
			for _, n := range terminalNames {
				if !regexp.MustCompile(`(?m)^` + n + ` .*\b` + strconv.Itoa(tt.records) + ` rec`).MatchString(final) {
					t.Errorf("the final block has no %s line with %d rec:\n%s", n, tt.records, final)
				}
			}
			// The summary fits the terminal: a wrapped row cannot be read.
			raw := escapes.ReplaceAllString(term.raw.String(), "")
			if i := strings.LastIndex(raw, "\nstage "); i >= 0 {
				for _, line := range strings.Split(strings.TrimRight(raw[i+1:], "\r\n"), "\n") {
					if w := uniseg.StringWidth(strings.TrimRight(line, "\r")); w >= tt.cols {
						t.Errorf("a summary line %d wide on a terminal %d wide: %q", w, tt.cols, line)
					}
				}
			}
			display := final // the bars, above the summary and the bottleneck advice
			if i := strings.Index(final, "\nstage "); i >= 0 {
				display = final[:i]
			}
			if tt.stdin && strings.Contains(display, "%") {
				t.Errorf("stdin has no size, yet a percentage is shown:\n%s", final)
			}
			if !tt.stdin && !strings.Contains(final, "100%") {
				t.Errorf("a file input ends at 100%%:\n%s", final)
			}
			if !tt.stdoutOnTTY {
				if got, err := os.ReadFile(out); err != nil || string(got) != want.String() {
					t.Errorf("output file: %v, %d bytes", err, len(got))
				}
				return
			}
			// Every record on the terminal, in order, none drawn over.
			var recs []string
			for _, row := range term.scrolled() {
				if _, err := strconv.Atoi(row); err == nil {
					recs = append(recs, row)
				}
			}
			if got := strings.Join(recs, "\n") + "\n"; got != want.String() {
				t.Errorf("records on the terminal: %d of %d, first %q", len(recs), tt.records, recs[:min(len(recs), 3)])
			}
		})
	}
}

// TestTerminalResize narrows the terminal while the block is live: the
// block is drawn again to the new width (SIGWINCH), and what was drawn to
// the old one leaves no stale rows.
func TestTerminalResize(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", terminalPipeline)
	in := writeFile(t, dir, "in.txt", strings.Repeat("x\n", 1500))
	cmd := exec.Command(flowrunBin, "run", "-q", "--progress-every", "20ms", "-i", in, "-o", filepath.Join(dir, "out"), p)
	term := startOnTerminal(t, cmd, 120, 30, terminalNames)
	waitLive(t, term)
	term.mu.Lock()
	term.vt.Resize(60, 30)
	term.cols = 60
	if err := pty.Setsize(term.pty, &pty.Winsize{Cols: 60, Rows: 30}); err != nil {
		t.Fatal(err)
	}
	term.mu.Unlock()
	if code := term.wait(t, cmd); code != 0 {
		t.Errorf("exit %d", code)
	}
	// A frame drawn to the old width may arrive after the resize, as on a
	// real terminal: what counts is that the screen is right once flowrun
	// has drawn to the new one.
	term.mu.Lock()
	term.faults = nil
	term.check()
	term.mu.Unlock()
	screen := term.report(t)
	lines := 0
	for _, row := range screen {
		if term.blockLine(row) != "" {
			lines++
		}
	}
	if lines != len(terminalNames) {
		t.Errorf("%d block lines after the resize, want %d:\n%s", lines, len(terminalNames), strings.Join(screen, "\n"))
	}
}

// TestTerminalMessageAboveBlock: the first Ctrl-C's message is printed
// above the live block and stays on the screen.
func TestTerminalMessageAboveBlock(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", terminalPipeline)
	in := writeFile(t, dir, "in.txt", strings.Repeat("x\n", 100000))
	cmd := exec.Command(flowrunBin, "run", "-q", "--progress-every", "20ms", "-i", in, "-o", filepath.Join(dir, "out"), p)
	term := startOnTerminal(t, cmd, 100, 30, terminalNames)
	waitLive(t, term)
	cmd.Process.Signal(os.Interrupt)
	if code := term.wait(t, cmd); code != 130 {
		t.Errorf("exit %d, want 130", code)
	}
	screen := term.report(t)
	msg, first := -1, -1
	for y, row := range screen {
		if strings.Contains(row, "stopping") {
			if msg >= 0 {
				t.Errorf("the message is shown twice")
			}
			msg = y
		}
		if term.blockLine(row) != "" && first < 0 {
			first = y
		}
	}
	if msg < 0 || first < 0 || msg > first {
		t.Errorf("want the message (row %d) above the block (row %d):\n%s", msg, first, strings.Join(screen, "\n"))
	}
}

// waitLive waits until the live block has been on the screen.
func waitLive(t *testing.T, term *terminal) {
	t.Helper()
	select {
	case <-term.seen:
	case <-term.done:
		t.Fatal("flowrun ended before the display was seen")
	}
}

// TestTerminalTypedRecords: records typed on the terminal get no live
// display (their echo under the block would break it), only the summary.
func TestTerminalTypedRecords(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", terminalPipeline)
	out := filepath.Join(dir, "out")
	cmd := exec.Command(flowrunBin, "run", "--progress-every", "20ms", "-o", out, p)
	term := startOnTerminal(t, cmd, 100, 30, terminalNames)
	io.WriteString(term.pty, "hello\nworld\n\x04") // ^D: the end of the input
	if code := term.wait(t, cmd); code != 0 {
		t.Errorf("exit %d", code)
	}
	term.mu.Lock()
	defer term.mu.Unlock()
	for _, f := range term.faults {
		t.Error(f)
	}
	screen := strings.Join(term.screen(), "\n")
	if term.live > 0 || strings.Contains(term.raw.String(), "\x1b[") {
		t.Errorf("a live display under typed records:\n%s", screen)
	}
	if !strings.Contains(screen, "2 records in") {
		t.Errorf("no summary:\n%s", screen)
	}
	if got, _ := os.ReadFile(out); string(got) != "hello\nworld\n" {
		t.Errorf("output %q", got)
	}
}

// TestTerminalPlain: with CI set, or on a dumb terminal, a terminal gets
// the plain status lines.
func TestTerminalPlain(t *testing.T) {
	for _, env := range []string{"CI=true", "TERM=dumb"} {
		t.Run(env, func(t *testing.T) {
			dir := t.TempDir()
			p := writeFile(t, dir, "p.yaml", terminalPipeline)
			in := writeFile(t, dir, "in.txt", strings.Repeat("x\n", 300))
			cmd := exec.Command(flowrunBin, "run", "-q", "--progress-every", "20ms", "-i", in, "-o", filepath.Join(dir, "out"), p)
			cmd.Env = []string{env}
			term := startOnTerminal(t, cmd, 100, 30, terminalNames)
			if code := term.wait(t, cmd); code != 0 {
				t.Errorf("exit %d", code)
			}
			term.mu.Lock()
			defer term.mu.Unlock()
			raw := term.raw.String()
			if strings.Contains(raw, "\x1b") || !strings.Contains(raw, "flowrun: ") || !strings.Contains(raw, "| download ") {
				t.Errorf("want plain status lines, got %q", raw)
			}
		})
	}
}

// TestTerminalLongStageName: a stage name wider than the terminal is cut,
// with an ellipsis, and every line still shows its numbers (the names'
// column was as wide as the longest, and pushed them off every line).
func TestTerminalLongStageName(t *testing.T) {
	long := strings.Repeat("very_long_stage_name_", 5)
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", `name: long
input:  {from: stdin, format: lines}
output: {to: stdout, format: lines}
stages:
  - {name: `+long+`, use: sleep, with: {duration: 1ms}}
  - {name: upload, use: sleep, with: {duration: 1ms}}
`)
	in := writeFile(t, dir, "in.txt", strings.Repeat("x\n", 300))
	cmd := exec.Command(flowrunBin, "run", "-q", "--progress-every", "20ms", "-i", in, "-o", filepath.Join(dir, "out"), p)
	term := startOnTerminal(t, cmd, 100, 30, []string{"input", "upload", "output"})
	if code := term.wait(t, cmd); code != 0 {
		t.Errorf("exit %d", code)
	}
	screen := strings.Join(term.report(t), "\n")
	for _, want := range []string{`(?m)^input .* 300 rec`, `(?m)^very_long_stage_name_\S*… +300 rec`, `(?m)^upload +300 rec`, `(?m)^output +300 rec`} {
		if !regexp.MustCompile(want).MatchString(screen) {
			t.Errorf("no line matches %s:\n%s", want, screen)
		}
	}
}

// TestTerminalResizeSummary narrows the terminal during the run: the
// summary at the end is fitted to the width the terminal has then, not to
// the one it had when the run started (a table wrapped by the terminal
// cannot be read).
func TestTerminalResizeSummary(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", terminalPipeline)
	in := writeFile(t, dir, "in.txt", strings.Repeat("x\n", 1500))
	cmd := exec.Command(flowrunBin, "run", "--progress-every", "20ms", "-i", in, "-o", filepath.Join(dir, "out"), p)
	term := startOnTerminal(t, cmd, 120, 30, terminalNames)
	waitLive(t, term)
	term.mu.Lock()
	term.vt.Resize(60, 30)
	term.cols = 60
	if err := pty.Setsize(term.pty, &pty.Winsize{Cols: 60, Rows: 30}); err != nil {
		t.Fatal(err)
	}
	term.mu.Unlock()
	if code := term.wait(t, cmd); code != 0 {
		t.Errorf("exit %d", code)
	}
	term.mu.Lock()
	raw := term.raw.String()
	term.mu.Unlock()
	i := strings.LastIndex(raw, "stage ")
	if i < 0 {
		t.Fatalf("no summary:\n%s", raw)
	}
	for _, line := range strings.Split(strings.TrimRight(raw[i:], "\r\n"), "\n") {
		text := escapes.ReplaceAllString(line, "")
		if w := uniseg.StringWidth(text); w >= 60 {
			t.Errorf("a summary line %d wide after the terminal was narrowed to 60: %q", w, text)
		}
	}
}
