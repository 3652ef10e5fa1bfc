package nats

import "testing"

// Close hands messages back with a Nak only on servers that take it
// well: not on 2.9, whose Nak at a close delivered an acked message
// again.
func TestOlderThan(t *testing.T) {
	for _, c := range []struct {
		version string
		older   bool
	}{
		{"2.9.10", true}, {"2.9.25", true}, {"1.4.0", true},
		{"2.10.0", false}, {"2.15.2", false}, {"3.0.0", false},
		{"", false}, {"v2", false},
	} {
		if got := olderThan(c.version, 2, 10); got != c.older {
			t.Errorf("olderThan(%q, 2, 10) = %v, want %v", c.version, got, c.older)
		}
	}
}
