package runner_test

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/charmbracelet/x/vt"
	"github.com/rivo/uniseg"
	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/runner"
)

// escapes are the control sequences Display writes.
var escapes = regexp.MustCompile(`\x1b\[[0-9;]*[A-Za-z]|\r`)

// screen is a terminal emulator that a Display draws on.
type screen struct {
	mu   sync.Mutex
	vt   *vt.Emulator
	w, h int
	edge bool // a row reached the last column, after some write
}

func newScreen(w, h int) *screen { return &screen{vt: vt.NewEmulator(w, h), w: w, h: h} }

// Write writes p as a terminal device does (onlcr): a newline also
// returns the carriage.
func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.vt.Write(bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n")))
	for _, l := range strings.Split(escapes.ReplaceAllString(string(p), ""), "\n") {
		if uniseg.StringWidth(l) >= s.w {
			s.edge = true // it wraps, wherever its last cell falls
		}
	}
	for y := range s.h {
		if c := s.vt.CellAt(s.w-1, y); c != nil && strings.TrimSpace(c.Content) != "" {
			s.edge = true
		}
	}
	return len(p), nil
}

func (s *screen) size() (int, int) { return s.w, s.h }

// rows returns the screen's rows, trailing blanks cut, and whether a row
// reached the last column after any write.
func (s *screen) rows() (rows []string, edge bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for y := range s.h {
		var b strings.Builder
		for x := range s.w {
			c := s.vt.CellAt(x, y)
			if c == nil || c.Content == "" {
				if c == nil || c.Width != 0 {
					b.WriteByte(' ')
				}
				continue
			}
			b.WriteString(c.Content)
		}
		rows = append(rows, strings.TrimRight(b.String(), " "))
	}
	return rows, s.edge
}

// show runs d until snapshot has been called n times.
func show(d *runner.Display, n int, snapshot func(i int) runner.Snapshot) {
	done := make(chan struct{})
	var once sync.Once
	i := 0
	d.Run(done, func() runner.Snapshot {
		i++
		if i >= n {
			once.Do(func() { close(done) })
		}
		return snapshot(i)
	})
}

func manyStages(n int, name func(i int) string) []runner.StageSnapshot {
	var st []runner.StageSnapshot
	for i := range n {
		st = append(st, runner.StageSnapshot{Name: name(i), In: int64(i * 1000), Out: int64(i * 1000), Errs: int64(i), Queued: 16, Cap: 16, Busy: 3, Workers: 64})
	}
	return st
}

// TestDisplayFits: whatever the terminal's size and the stages' names,
// each line fits in the width and the block in the height.
func TestDisplayFits(t *testing.T) {
	defer goleak.VerifyNone(t)
	names := map[string]func(int) string{
		"short": func(i int) string { return fmt.Sprintf("s%d", i) },
		"long":  func(i int) string { return fmt.Sprintf("a-stage-with-a-very-long-name-%d", i) },
		"wide":  func(i int) string { return fmt.Sprintf("縮小する画像%d", i) },
	}
	for _, size := range [][2]int{{8, 2}, {20, 3}, {40, 6}, {60, 30}, {100, 30}, {250, 50}} {
		for kind, name := range names {
			for _, total := range []int64{-1, 1 << 40} {
				t.Run(fmt.Sprintf("%dx%d %s total=%d", size[0], size[1], kind, total), func(t *testing.T) {
					s := newScreen(size[0], size[1])
					d := &runner.Display{W: s, Every: time.Millisecond, Size: s.size}
					stages := manyStages(12, name)
					show(d, 5, func(i int) runner.Snapshot {
						return runner.Snapshot{InRecords: int64(i) * 1e9, InBytes: int64(i) << 30, TotalBytes: total, OutRecords: int64(i), Stages: stages}
					})
					rows, edge := s.rows()
					if edge {
						t.Errorf("a line reaches the edge:\n%s", strings.Join(rows, "\n"))
					}
					lines := 0
					for _, r := range rows {
						if r != "" {
							lines++
						}
					}
					if lines > size[1]-1 {
						t.Errorf("%d lines on %d rows:\n%s", lines, size[1], strings.Join(rows, "\n"))
					}
					if 12+2 > size[1]-1 && size[1] >= 6 && !strings.Contains(strings.Join(rows, "\n"), "more stages") {
						t.Errorf("the stages not shown are not said:\n%s", strings.Join(rows, "\n"))
					}
				})
			}
		}
	}
}

// TestDisplayUnknownTotal: without the input's size there is no
// percentage and no ETA, only counts.
func TestDisplayUnknownTotal(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := newScreen(100, 10)
	d := &runner.Display{W: s, Every: time.Millisecond, Size: s.size}
	show(d, 3, func(i int) runner.Snapshot {
		return runner.Snapshot{InRecords: 42, InBytes: 1000, TotalBytes: -1, OutRecords: 40, InErrors: 2,
			Stages: []runner.StageSnapshot{
				{Name: "fetch", In: 41, Out: 41, Cap: 8, Workers: 2},
				{Name: "trim", In: 41, Out: 41, Cap: 8, Workers: 2, Fused: true},
			}}
	})
	rows, _ := s.rows()
	got := strings.Join(rows, "\n")
	for _, bad := range []string{"%", "ETA", "/-"} {
		if strings.Contains(got, bad) {
			t.Errorf("shows %q:\n%s", bad, got)
		}
	}
	for _, want := range []string{"input    42 rec  err 2", "fetch    41 rec", "output   40 rec", "queue 0/8", "busy 0/2", "trim     41 rec", "fused  busy 0/2"} {
		if !strings.Contains(got, want) {
			t.Errorf("lacks %q:\n%s", want, got)
		}
	}
}

// TestDisplayKnownTotal: with the size known, the input's percentage is
// of the bytes consumed, and no ETA is shown before any were.
func TestDisplayKnownTotal(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, tt := range []struct {
		consumed int64
		want     string
	}{{0, " 0%"}, {250, " 25%"}, {1000, " 100%"}} {
		s := newScreen(100, 10)
		d := &runner.Display{W: s, Every: time.Millisecond, Size: s.size}
		show(d, 3, func(i int) runner.Snapshot {
			return runner.Snapshot{InRecords: 3, InBytes: tt.consumed, TotalBytes: 1000,
				Stages: []runner.StageSnapshot{{Name: "a", Cap: 1, Workers: 1}}}
		})
		rows, _ := s.rows()
		if !strings.HasPrefix(strings.Join(strings.Fields(rows[0]), " "), "input"+tt.want+" |") || strings.Contains(rows[0], "ETA") {
			t.Errorf("consumed %d of 1000: %q", tt.consumed, rows[0])
		}
	}
}

// TestDisplayWritesAbove: what is written through Above while the block is
// live goes above it, whole lines only, in order, and nothing is drawn
// over it.
func TestDisplayWritesAbove(t *testing.T) {
	defer goleak.VerifyNone(t)
	s := newScreen(60, 40)
	d := &runner.Display{W: s, Every: time.Millisecond, Size: s.size}
	records := d.Above(s)
	messages := d.Messages()
	started := make(chan struct{})
	done := make(chan struct{})
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		calls := 0
		d.Run(done, func() runner.Snapshot {
			if calls++; calls == 2 { // the first draw: the block is live
				close(started)
			}
			return runner.Snapshot{TotalBytes: -1, Stages: []runner.StageSnapshot{{Name: "a", Cap: 1, Workers: 1}}}
		})
	}()
	<-started
	for i := range 20 {
		fmt.Fprintf(records, "record %d\n", i)
		if i == 10 {
			fmt.Fprintln(messages, "flowrun: a message")
		}
	}
	records.Write([]byte("half a "))
	records.Write([]byte("record\nand the last, without a newline"))
	close(done)
	<-ran
	rows, _ := s.rows()
	var want []string
	for i := range 20 {
		want = append(want, fmt.Sprintf("record %d", i))
		if i == 10 {
			want = append(want, "flowrun: a message")
		}
	}
	want = append(want, "half a record", "and the last, without a newline")
	got := rows[:len(want)]
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("above the block:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
	for i, prefix := range []string{"input ", "a ", "output "} {
		if r := rows[len(want)+i]; !strings.HasPrefix(r, prefix) {
			t.Errorf("row %d is %q, want the block's %q line", len(want)+i, r, prefix)
		}
	}
}
