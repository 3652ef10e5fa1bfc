package runner

import (
	"strings"
	"testing"
	"time"
)

// TestDisplayRatesAndETA: rates are records done per second, the ETA the
// time the bytes consumed so far took, scaled to the bytes left; between
// two updates of the bytes it counts down.
func TestDisplayRatesAndETA(t *testing.T) {
	stages := func(done int64) []StageSnapshot {
		return []StageSnapshot{{Name: "fetch", In: done, Out: done, Cap: 4, Workers: 2}}
	}
	v := newView(Snapshot{Stages: stages(0)})
	steps := []struct {
		at            time.Duration
		done, bytes   int64
		rate, eta     string
		final, hasETA bool
	}{
		{0, 0, 0, "", "", false, false},
		{time.Second, 100, 250, "100/s", "ETA 3s", false, true},
		{2 * time.Second, 200, 250, "100/s", "ETA 2s", false, true}, // no new bytes: counts down
		{4 * time.Second, 600, 500, "150/s", "ETA 4s", false, true}, // 500 bytes in 4s, 500 to go
		{8 * time.Second, 1000, 1000, "133/s", "", false, false},    // since 2s, the last sample 5s back or more; all read: no ETA
		{10 * time.Second, 1000, 1000, "100/s", "", true, false},    // final: over the whole run
	}
	for _, st := range steps {
		s := Snapshot{Elapsed: st.at, InRecords: st.done, InBytes: st.bytes, TotalBytes: 1000, OutRecords: st.done, Stages: stages(st.done)}
		lines := v.render(s, 100, 10, st.final)
		block := strings.Join(lines, "\n")
		if st.rate != "" && !strings.Contains(lines[1], st.rate) {
			t.Errorf("at %v: want %s on the stage's line:\n%s", st.at, st.rate, block)
		}
		if st.rate == "" && strings.Contains(lines[1], "/s") {
			t.Errorf("at %v: a rate before there is one:\n%s", st.at, block)
		}
		if got := strings.Contains(lines[0], "ETA"); got != st.hasETA || st.hasETA && !strings.Contains(lines[0], st.eta) {
			t.Errorf("at %v: want %q on the input's line:\n%s", st.at, st.eta, block)
		}
	}
}
