package runner

import (
	"fmt"
	"testing"
	"time"

	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

// TestRetryWaitHonoursRetryAfter: a 429 or 503 with Retry-After is retried
// no sooner than the server asked, capped by max_backoff; other errors wait
// the backoff alone.
func TestRetryWaitHonoursRetryAfter(t *testing.T) {
	p := spec.Retry{Attempts: 3, Backoff: time.Millisecond, MaxBackoff: 10 * time.Second}
	busy := func(after time.Duration) error {
		return fmt.Errorf("stage x: %w", &stages.HTTPError{Status: 503, Reason: "503 Service Unavailable", After: after})
	}
	for _, tc := range []struct {
		name     string
		err      error
		min, max time.Duration
	}{
		{"Retry-After 3s", busy(3 * time.Second), 3 * time.Second, 3 * time.Second},
		{"Retry-After past max_backoff", busy(time.Hour), 10 * time.Second, 10 * time.Second},
		{"no Retry-After", busy(0), 0, time.Millisecond},
		{"not an HTTP error", fmt.Errorf("boom"), 0, time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d := retryWait(p, 1, tc.err); d < tc.min || d > tc.max {
				t.Errorf("wait %v, want %v to %v", d, tc.min, tc.max)
			}
		})
	}
	// A backoff already longer than Retry-After is kept.
	long := spec.Retry{Attempts: 3, Backoff: 20 * time.Second, MaxBackoff: time.Minute}
	if d := retryWait(long, 2, busy(time.Second)); d < 20*time.Second {
		t.Errorf("wait %v, want the backoff of at least 20s", d)
	}
}
