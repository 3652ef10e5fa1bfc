package stages

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	cases := []struct {
		header string
		want   time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{"-5", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"999999999", 24 * time.Hour},
		{"99999999999999999999", 24 * time.Hour}, // past int64: still a long wait, not none
		{"+5", 0},
	}
	for _, tc := range cases {
		if got := retryAfter(tc.header, now); got != tc.want {
			t.Errorf("Retry-After %q: %v, want %v", tc.header, got, tc.want)
		}
	}
}

func TestBodyExcerpt(t *testing.T) {
	cases := []struct{ body, contentType, want string }{
		{"no such\nthing\n", "text/plain", "no such thing"},
		{"<html><head><script>var x=1</script></head><body><p>Gone &amp; away</p></body></html>", "text/html", "Gone & away"},
		{"\x00\x01binary", "application/octet-stream", ""},
		{"é" + strings.Repeat("a", 300), "text/plain", "é" + strings.Repeat("a", httpExcerpt-2) + "…"}, // cut at a character
	}
	for _, tc := range cases {
		if got := bodyExcerpt([]byte(tc.body), tc.contentType); got != tc.want {
			t.Errorf("bodyExcerpt(%q): %q, want %q", tc.body, got, tc.want)
		}
	}
}
