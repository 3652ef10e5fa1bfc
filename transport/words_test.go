package transport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestBrokerWords: what the connection's handlers log, and the errors the
// run and the worker return, name the broker and say the reason in words:
// not "nats: ...", an _INBOX subject, "API error: code=...", nor a TCP
// read's addresses.
func TestBrokerWords(t *testing.T) {
	var log bytes.Buffer
	d := &dialing{shown: "broker nats://127.0.0.1:4222", o: DialOptions{Log: &log}}
	d.connected.Store(true)
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	inbox := &nats.Subscription{Subject: nats.InboxPrefix + "lmt201AM13qQ22koqOqXFC"}
	for _, tt := range []struct {
		name string
		log  func()
		want string // "": nothing logged
	}{
		{"connection reset", func() { d.disconnected(nil, reset) }, "connection lost (the broker closed the connection); reconnecting"},
		{"EOF", func() { d.disconnected(nil, io.EOF) }, "connection lost (the broker closed the connection); reconnecting"},
		{"stale", func() { d.disconnected(nil, nats.ErrStaleConnection) }, "did not answer pings"},
		{"watch's stream gone", func() {
			d.asyncError(nil, inbox, fmt.Errorf("%w: recreating ordered consumer", nats.ErrStreamNotFound))
		}, ""},
		{"watch ended otherwise", func() {
			d.asyncError(nil, inbox, fmt.Errorf("%w: recreating ordered consumer", nats.ErrTimeout))
		}, "a watch of the broker ended: no answer from the broker in time"},
		{"slow consumer on an inbox", func() { d.asyncError(nil, inbox, nats.ErrSlowConsumer) }, "messages dropped"},
		{"permission", func() {
			d.asyncError(nil, &nats.Subscription{Subject: "flowrun.x.in"}, errors.New(`nats: permissions violation for subscription to "flowrun.x.in"`))
		}, `on flowrun.x.in: permission refused by the broker: for subscription to "flowrun.x.in"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			log.Reset()
			tt.log()
			got := log.String()
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("logged %q, want %q", got, tt.want)
			}
			if got != "" && !strings.HasPrefix(got, "flowrun: broker nats://127.0.0.1:4222: ") {
				t.Errorf("logged %q: the broker is not named first", got)
			}
			for _, leak := range []string{"nats: ", "_INBOX", "127.0.0.1:54234", "recreating ordered consumer"} {
				if strings.Contains(got, leak) {
					t.Errorf("logged %q: the library's words (%q)", got, leak)
				}
			}
		})
	}
	for _, err := range []error{
		jetstream.ErrNoHeartbeat, nats.ErrNoResponders, jetstream.ErrStreamNotFound, nats.ErrConnectionClosed,
		&jetstream.APIError{Code: 500, ErrorCode: 10077, Description: "insufficient resources"},
		fmt.Errorf("wrapped: %w", nats.ErrMaxPayload),
	} {
		p := plain(err)
		if msg := p.Error(); strings.Contains(msg, "nats: ") || strings.Contains(msg, "err_code") || strings.Contains(msg, "jetstream: ") {
			t.Errorf("plain(%v) = %q: the library's words", err, msg)
		}
		if !errors.Is(p, err) {
			t.Errorf("plain(%v) is no longer the library's error underneath", err)
		}
	}
}
