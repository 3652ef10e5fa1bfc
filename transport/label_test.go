package transport

import "testing"

// TestWorkerLabel: a worker's name alone while no other worker the run
// heard of has it; with a short id after it once another has, longer
// when their short ids are alike too.
func TestWorkerLabel(t *testing.T) {
	tab := workerTable{byKey: map[string]*seenWorker{}, ids: map[string][]string{}}
	tab.worker("3fa2c1d0", "twin")
	tab.worker("77aa0001", "solo")
	if got := tab.label("3fa2c1d0", "twin"); got != "twin" {
		t.Errorf("one twin: %q, want its name alone", got)
	}
	tab.worker("9b01e2f3", "twin")
	tab.worker("3fa2ffff", "twin")
	for _, c := range []struct{ id, want string }{
		{"3fa2c1d0", "twin#3fa2c"},
		{"3fa2ffff", "twin#3fa2f"},
		{"9b01e2f3", "twin#9b01"},
		{"77aa0001", "solo"},
	} {
		name := "twin"
		if c.want == "solo" {
			name = "solo"
		}
		if got := tab.label(c.id, name); got != c.want {
			t.Errorf("label(%s, %s) = %q, want %q", c.id, name, got, c.want)
		}
	}
	if len(tab.order) != 4 {
		t.Errorf("%d workers in the table, want 4 (by id, not by name)", len(tab.order))
	}
}
