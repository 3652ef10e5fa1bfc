package connect

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is the wait between reconnection attempts: it doubles from Min
// to Max, with jitter so that many consumers of one broker that went down
// do not all knock at once when it comes back.
type Backoff struct {
	Min, Max time.Duration
	n        int
}

// Wait sleeps before the next attempt; false when ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	d := b.Min << min(b.n, 16)
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	b.n++
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Reset starts over from Min, after a success.
func (b *Backoff) Reset() { b.n = 0 }

// DefaultBackoff is what the connectors use: from 100ms to 5s.
func DefaultBackoff() Backoff { return Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second} }

// DialTimeout bounds connecting at start, so that an unreachable broker
// is an error within seconds, not a hang.
const DialTimeout = 5 * time.Second
