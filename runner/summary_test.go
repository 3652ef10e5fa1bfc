package runner_test

import (
	"strings"
	"testing"
	"time"

	"github.com/rivo/uniseg"

	"github.com/flowrun/flowrun/runner"
)

// TestSummaryTableWidth checks that the summary never wraps on a narrow
// terminal: it leaves out columns in a fixed order and says so, and that
// with no width it keeps every column.
func TestSummaryTableWidth(t *testing.T) {
	sum := func(errors int64) *runner.Summary {
		return &runner.Summary{
			Elapsed: runner.Duration(3 * time.Second),
			Input:   runner.InputStats{Records: 1200000},
			Output:  runner.OutputStats{Records: 1199990},
			Stages: []runner.StageStats{
				{Name: "download-the-images", Workers: 16, In: 1200000, Out: 1200000, Errors: errors, Busy: runner.Duration(93 * time.Second), P50: runner.Duration(1234 * time.Microsecond), P99: runner.Duration(98 * time.Millisecond)},
				{Name: "größe", Workers: 2, In: 1200000, Out: 1199990, Busy: runner.Duration(time.Second), P50: runner.Duration(800 * time.Nanosecond), P99: runner.Duration(2 * time.Microsecond)},
			},
		}
	}
	tests := []struct {
		name    string
		errors  int64
		width   int
		columns []string // the header
		note    string
	}{
		{"unbounded", 0, 0, []string{"stage", "workers", "in", "out", "errors", "retries", "skipped", "dead", "busy", "p50", "p99"}, ""},
		{"wide enough", 0, 200, []string{"stage", "workers", "in", "out", "errors", "retries", "skipped", "dead", "busy", "p50", "p99"}, ""},
		{"no errors, 80 columns", 0, 80, []string{"stage", "workers", "in", "out", "busy", "p50", "p99"}, "no errors, retries, skips or dead letters"},
		{"errors, 80 columns", 3, 80, []string{"stage", "workers", "in", "out", "errors", "retries", "skipped", "dead"}, "busy, p50, p99 left out to fit"},
		{"no errors, 40 columns", 0, 40, []string{"stage", "in", "out"}, "workers, busy, p50, p99 left out to fit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := sum(tt.errors).WriteTableWidth(&b, tt.width); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
			if got := strings.Fields(lines[0]); strings.Join(got, " ") != strings.Join(tt.columns, " ") {
				t.Errorf("columns %q, want %q\n%s", got, tt.columns, b.String())
			}
			for _, l := range lines {
				if w := uniseg.StringWidth(l); tt.width > 0 && w >= tt.width {
					t.Errorf("a line %d wide for %d columns: %q", w, tt.width, l)
				}
			}
			if tt.note != "" && !strings.Contains(strings.ReplaceAll(b.String(), "\n", " "), tt.note) {
				t.Errorf("no %q in\n%s", tt.note, b.String())
			}
			if last := lines[len(lines)-1]; last != "1200000 records in 3s" {
				t.Errorf("last line %q", last)
			}
			// Columns line up: every row's "out" starts where the header's does.
			col := strings.Index(lines[0], " out") + 1
			for _, l := range lines[1:4] {
				if i := strings.Index(l, "1200000"); i < 0 {
					t.Errorf("row %q has no count", l)
				} else if strings.HasPrefix(l, "(input)") && uniseg.StringWidth(l[:i]) != col {
					t.Errorf("input's count at %d, header's out at %d:\n%s", uniseg.StringWidth(l[:i]), col, b.String())
				}
			}
		})
	}
}
