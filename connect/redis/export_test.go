package redis

import (
	"context"
	"time"

	"github.com/flowrun/flowrun/connect"
)

// StopHeartbeat makes src look like a process that died long enough ago
// for its heartbeat to expire: the heartbeat stops and is gone, and
// nothing is moved back.
func StopHeartbeat(src connect.Source) {
	s := src.(*listSource)
	close(s.stop)
	s.wg.Wait()
	s.c.Del(context.Background(), s.beat)
	s.c.Close()
}

// SetReadTimeout replaces go-redis's read timeout for the clients dialled
// until it is called again with 0.
func SetReadTimeout(d time.Duration) { readTimeout = d }
