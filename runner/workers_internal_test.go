package runner

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rivo/uniseg"
)

// TestDisplayWorkers: the block of a run on a broker says which workers
// work it — one line each while they are few, with host:pid, busy
// slots and stages; a line for them all when they are many or the
// terminal is short — and every line fits 60 and 120 columns, also with
// a long host name.
func TestDisplayWorkers(t *testing.T) {
	stages := []StageSnapshot{
		{Name: "download", In: 900, Workers: 7, Busy: 5, Cap: 16, Remote: true},
		{Name: "resize", In: 800, Workers: 3, Busy: 1, Cap: 16, Remote: true},
		{Name: "count", In: 800, Workers: 1, Cap: 16},
	}
	worker := func(name string, busy int) WorkerSnapshot {
		return WorkerSnapshot{Name: name, Records: 850, Stages: []WorkerStage{{Name: "download", Slots: 4, Busy: busy}, {Name: "resize", Slots: 2}}}
	}
	few := []WorkerSnapshot{
		{Name: "vm:812", Local: true, Records: 400, Stages: []WorkerStage{{Name: "download", Slots: 3, Busy: 2}, {Name: "resize", Slots: 1}}},
		worker("gpu-box-7.example.internal.long-domain-name.org:4242", 3),
		{Name: "laptop:77", Records: 12, Gone: true, Since: 7 * time.Second, Stages: []WorkerStage{{Name: "download", Slots: 1}}},
	}
	var many []WorkerSnapshot
	for i := range 9 {
		many = append(many, worker(fmt.Sprintf("node-%d:100", i), i%4))
	}
	tests := []struct {
		name    string
		workers []WorkerSnapshot
		rows    int
		want    []string // substrings of lines, in order, at 120 columns
		perLine bool
	}{
		{"few", few, 24, []string{"workers  2 working  1 gone  busy 5/10", " vm:812 (this run)", "busy 2/4  download×3 resize×1  400 rec", " gpu-box-7", "busy 3/6  download×4 resize×2", " laptop:77", "gone, no word for 7s"}, true},
		{"many", many, 24, []string{"workers  9 working  busy 12/54"}, false},
		{"short terminal", few, 7, []string{"workers  2 working"}, false},
		{"none yet", nil, 24, []string{"workers  none joined yet"}, false},
	}
	for _, tt := range tests {
		for _, width := range []int{60, 120} {
			t.Run(fmt.Sprintf("%s, %d columns", tt.name, width), func(t *testing.T) {
				s := Snapshot{Elapsed: 3 * time.Second, InRecords: 900, TotalBytes: -1, OutRecords: 1, Stages: stages, Workers: tt.workers}
				v := newView(s)
				lines := v.render(s, width-1, tt.rows-1, false)
				block := strings.Join(lines, "\n")
				t.Logf("\n%s", block)
				if len(lines) > tt.rows-1 {
					t.Errorf("%d lines on %d rows:\n%s", len(lines), tt.rows, block)
				}
				for _, l := range lines {
					if w := uniseg.StringWidth(l); w >= width {
						t.Errorf("a line %d wide at %d columns: %q", w, width, l)
					}
				}
				var ws []string
				for _, l := range lines {
					if strings.HasPrefix(l, "workers") || strings.HasPrefix(l, " ") {
						ws = append(ws, l)
					}
				}
				if tt.perLine && len(ws) != 1+len(tt.workers) || !tt.perLine && len(ws) != 1 {
					t.Errorf("workers' lines:\n%s", strings.Join(ws, "\n"))
				}
				if width < 120 {
					if !strings.HasPrefix(ws[0], tt.want[0][:16]) {
						t.Errorf("no line about the workers:\n%s", block)
					}
					return
				}
				rest := strings.Join(ws, "\n")
				for _, w := range tt.want {
					i := strings.Index(rest, w)
					if i < 0 {
						t.Fatalf("want %q (in order) in:\n%s", w, strings.Join(ws, "\n"))
					}
					rest = rest[i+len(w):]
				}
			})
		}
	}
}

// TestPlainWorkers: the status line for logs names the workers and
// their busy slots, at most three, then how many more.
func TestPlainWorkers(t *testing.T) {
	s := Snapshot{Stages: []StageSnapshot{{Name: "a", Remote: true}}}
	if got := plainLine(s); !strings.HasSuffix(got, " | workers: none joined yet") {
		t.Errorf("no worker: %q", got)
	}
	for i := range 5 {
		s.Workers = append(s.Workers, WorkerSnapshot{Name: fmt.Sprintf("h%d:1", i), Gone: i == 1, Stages: []WorkerStage{{Name: "a", Slots: 2, Busy: 1}}})
	}
	if got, want := plainLine(s), " | workers: h0:1 busy 1/2, h1:1 gone, h2:1 busy 1/2 and 2 more"; !strings.HasSuffix(got, want) {
		t.Errorf("plain line %q, want it to end %q", got, want)
	}
	s.Stages[0].Remote = false
	if got := plainLine(s); strings.Contains(got, "workers") {
		t.Errorf("a run with no stage on a broker: %q", got)
	}
}

// TestSummaryWorkers: after the table, the workers that took part, with
// their stages, slots and records, wrapped at the width; a run without
// workers says nothing.
func TestSummaryWorkers(t *testing.T) {
	sum := &Summary{Workers: []WorkerStats{
		{Name: "vm:1", Local: true, State: "working", Stages: []WorkerStageStats{{Name: "download", Slots: 3, Records: 1448}}},
		{Name: "gpu:2", State: "gone", Stages: []WorkerStageStats{{Name: "download", Slots: 4, Records: 1552}, {Name: "resize", Slots: 2, Records: 3000}}},
	}}
	var b strings.Builder
	sum.WriteWorkers(&b, 60)
	got := b.String()
	for _, l := range strings.Split(strings.TrimSpace(got), "\n") {
		if uniseg.StringWidth(l) >= 60 {
			t.Errorf("a line %d wide at 60 columns: %q", uniseg.StringWidth(l), l)
		}
	}
	want := "2 workers: vm:1 (this run) download×3 1448 records; gpu:2 download×4 1552 records, resize×2 3000 records, gone"
	if strings.Join(strings.Fields(got), " ") != want {
		t.Errorf("got %q, want %q", got, want)
	}
	b.Reset()
	(&Summary{}).WriteWorkers(&b, 60)
	if b.Len() > 0 {
		t.Errorf("a run without workers: %q", b.String())
	}
}
