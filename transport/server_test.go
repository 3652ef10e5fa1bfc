package transport_test

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/transport"
)

// syncBuffer is a bytes.Buffer that nats.go's handler goroutine may
// write to while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestEmbeddedKeepsItsStore publishes to a stream, shuts the server down
// and starts another on the same store: the message is still there.
func TestEmbeddedKeepsItsStore(t *testing.T) {
	store := t.TempDir()
	ctx := context.Background()
	publish := func(s *transport.Server) jetstream.Stream {
		t.Helper()
		nc, err := transport.Dial(ctx, s.URL(), transport.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "KEEP", Subjects: []string{"keep.>"}, Storage: jetstream.FileStorage})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "keep.a", []byte("x")); err != nil {
			t.Fatal(err)
		}
		return st
	}
	s, err := transport.StartEmbedded(ctx, transport.EmbeddedOptions{StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.URL(), "nats://127.0.0.1:") || strings.HasSuffix(s.URL(), ":0") {
		t.Errorf("URL %q; want nats://127.0.0.1:PORT with the port it took", s.URL())
	}
	publish(s)
	s.Shutdown()
	s.Shutdown() // a second time does nothing
	if _, err := os.Stat(filepath.Join(store, "jetstream")); err != nil {
		t.Fatalf("store after Shutdown: %v", err)
	}
	s, err = transport.StartEmbedded(ctx, transport.EmbeddedOptions{StoreDir: store})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	info, err := publish(s).Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("%d messages after the restart; want the one kept and the new one", info.State.Msgs)
	}
}

// TestEmbeddedTempStore: without StoreDir the store is a temporary
// directory, gone after Shutdown.
func TestEmbeddedTempStore(t *testing.T) {
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "flowrun-broker-*"))
	s, err := transport.StartEmbedded(context.Background(), transport.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	during, _ := filepath.Glob(filepath.Join(os.TempDir(), "flowrun-broker-*"))
	s.Shutdown()
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "flowrun-broker-*"))
	if len(during) <= len(before) {
		t.Errorf("no temporary store while running: %v", during)
	}
	if len(after) >= len(during) {
		t.Errorf("temporary store left after Shutdown: %v (before: %v)", after, before)
	}
}

func TestEmbeddedAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = transport.StartEmbedded(context.Background(), transport.EmbeddedOptions{Listen: l.Addr().String()})
	if err == nil || !strings.Contains(err.Error(), "the address is in use") || !strings.Contains(err.Error(), l.Addr().String()) {
		t.Errorf("StartEmbedded on a port in use: %v; want it to say the address is in use", err)
	}
}

func TestEmbeddedStoreNotWritable(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	writeFile(t, file, "")
	_, err := transport.StartEmbedded(context.Background(), transport.EmbeddedOptions{StoreDir: filepath.Join(file, "store")})
	if err == nil || !strings.Contains(err.Error(), "store") {
		t.Errorf("StartEmbedded with a store under a file: %v; want it to name the store", err)
	}
}

func TestEmbeddedOptionsRefused(t *testing.T) {
	pub, _ := newNkey(t)
	for _, c := range []struct {
		name string
		o    transport.EmbeddedOptions
		want string
	}{
		{"token-and-user", transport.EmbeddedOptions{Token: "t", User: "u", Password: "p"}, "a token cannot go with a user"},
		{"password-alone", transport.EmbeddedOptions{Password: "p"}, "a password needs a user"},
		{"user-alone", transport.EmbeddedOptions{User: "u"}, `user "u" needs a password`},
		{"cert-alone", transport.EmbeddedOptions{TLSCert: "c.pem"}, "needs both a certificate and its key"},
		{"ca-alone", transport.EmbeddedOptions{TLSCA: "ca.pem"}, "needs the server's own certificate"},
		{"seed-for-nkey", transport.EmbeddedOptions{Nkeys: []string{"SU" + pub[2:]}}, "is not a public user nkey"},
		{"bad-listen", transport.EmbeddedOptions{Listen: "4222"}, "want host:port"},
		{"bad-port", transport.EmbeddedOptions{Listen: "127.0.0.1:99999"}, "port \"99999\" is not a number from 0 to 65535"},
		{"missing-cert", transport.EmbeddedOptions{TLSCert: "/nonexistent/c.pem", TLSKey: "/nonexistent/k.pem"}, "TLS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := transport.StartEmbedded(context.Background(), c.o)
			if err == nil {
				s.Shutdown()
				t.Fatalf("started; want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q; want %q", err, c.want)
			}
		})
	}
}

func TestIsLoopback(t *testing.T) {
	for listen, want := range map[string]bool{
		"127.0.0.1:4222": true, "127.1.2.3:0": true, "[::1]:4222": true, "localhost:4222": true, "": true,
		"0.0.0.0:4222": false, ":4222": false, "[::]:4222": false, "192.168.1.5:4222": false, "example.com:4222": false,
	} {
		if got := transport.IsLoopback(listen); got != want {
			t.Errorf("IsLoopback(%q) = %v; want %v", listen, got, want)
		}
	}
}

// TestEmbeddedServesJetStream is the smallest use: a stock nats.go
// connection with a JetStream publish and its ack.
func TestEmbeddedServesJetStream(t *testing.T) {
	s, err := transport.StartEmbedded(context.Background(), transport.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	nc, err := nats.Connect(s.URL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "s", []byte("one"))
	if err != nil || ack.Sequence != 1 {
		t.Fatalf("publish: %v %v", ack, err)
	}
}
