package cli_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/cli"
	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/transport"
)

// brokerProcess is `flowrun broker` run in this process: the URL it
// printed, and a stop that cancels it as a signal would and returns its
// exit code and stderr.
type brokerProcess struct {
	url  string
	stop func() (int, string)
}

func startBrokerCLI(t *testing.T, args ...string) brokerProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	outR, outW := io.Pipe()
	var errb lockedBuffer
	done := make(chan int, 1)
	go func() {
		code := cli.Run(ctx, append([]string{"flowrun", "broker"}, args...), strings.NewReader(""), outW, &errb)
		outW.Close()
		done <- code
	}()
	urls := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(outR).ReadString('\n')
		urls <- strings.TrimSpace(line)
		io.Copy(io.Discard, outR)
	}()
	var once sync.Once
	var code int
	stop := func() (int, string) {
		once.Do(func() { cancel(); code = <-done })
		return code, errb.String()
	}
	t.Cleanup(func() { stop() })
	url := <-urls
	if url == "" {
		code, stderr := stop()
		t.Fatalf("flowrun broker %s printed no URL; exit %d, stderr:\n%s", strings.Join(args, " "), code, stderr)
	}
	return brokerProcess{url: url, stop: stop}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestBrokerCommandKeepsQueues: `flowrun broker --store DIR` serves
// JetStream at the URL it prints, stops with exit 0 on a signal, and a
// second one on the same store has the first one's messages.
func TestBrokerCommandKeepsQueues(t *testing.T) {
	// A cleanup, not a defer: it runs after the brokers' own cleanups.
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
	store := t.TempDir()
	ctx := context.Background()
	count := func(url string) uint64 {
		t.Helper()
		nc, err := transport.Dial(ctx, url, transport.DialOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "Q", Subjects: []string{"q"}, Storage: jetstream.FileStorage})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, "q", []byte("x")); err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	b := startBrokerCLI(t, "--listen", "127.0.0.1:0", "--store", store)
	if !strings.HasPrefix(b.url, "nats://127.0.0.1:") {
		t.Errorf("printed %q; want nats://127.0.0.1:PORT", b.url)
	}
	if n := count(b.url); n != 1 {
		t.Errorf("%d messages; want 1", n)
	}
	code, stderr := b.stop()
	if code != 0 {
		t.Errorf("exit %d after the signal; want 0. stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "store "+store) {
		t.Errorf("stderr %q does not say where the store is", stderr)
	}
	b = startBrokerCLI(t, "--listen", "127.0.0.1:0", "--store", store)
	if n := count(b.url); n != 2 {
		t.Errorf("%d messages on the restarted broker; want the first one's and a new one", n)
	}
}

// TestBrokerCommandCredentials: with --user/--password a client without
// them is refused and one with them is let in.
func TestBrokerCommandCredentials(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t, goleak.IgnoreCurrent()) })
	t.Setenv("FLOWRUN_BROKER_PASSWORD", "pw-from-env")
	b := startBrokerCLI(t, "--listen", "127.0.0.1:0", "--user", "w")
	ctx := context.Background()
	_, err := transport.Dial(ctx, b.url, transport.DialOptions{})
	var ce *connect.Error
	if !errors.As(err, &ce) || !strings.Contains(ce.Reason, "wants credentials") {
		t.Errorf("Dial without credentials: %v; want them asked for", err)
	}
	withCreds := strings.Replace(b.url, "nats://", "nats://w:pw-from-env@", 1)
	nc, err := transport.Dial(ctx, withCreds, transport.DialOptions{})
	if err != nil {
		t.Fatalf("Dial with the password from $FLOWRUN_BROKER_PASSWORD: %v", err)
	}
	nc.Close()
}

func TestBrokerCommandRefuses(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []struct {
		name   string
		args   []string
		stderr string
	}{
		// Refused before anything listens: no 0.0.0.0 port is opened here.
		{"open beyond loopback", []string{"--listen", "0.0.0.0:0"}, "broker --listen 0.0.0.0:0: nothing is open without credentials except loopback"},
		{"every address, no host", []string{"--listen", ":4222"}, "nothing is open without credentials except loopback"},
		{"address in use", []string{"--listen", busy.Addr().String()}, "the address is in use"},
		{"password without user", []string{"--listen", "127.0.0.1:0", "--password", "p"}, "a password needs a user"},
		{"token and user", []string{"--listen", "127.0.0.1:0", "--token", "t", "--user", "u", "--password", "p"}, "a token cannot go with a user"},
		{"a cert without its key", []string{"--listen", "127.0.0.1:0", "--tls-cert", "c.pem"}, "TLS needs both a certificate and its key"},
		{"missing cert files", []string{"--listen", "127.0.0.1:0", "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"}, "TLS"},
		{"an argument", []string{"extra"}, `broker takes no arguments, got "extra"`},
		{"bad listen", []string{"--listen", "4222"}, `broker --listen "4222": want host:port`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, stderr, code := runCLI(t, "", append([]string{"broker"}, c.args...)...)
			if code != 2 {
				t.Errorf("exit %d; want 2. stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, c.stderr) || !strings.HasPrefix(stderr, "flowrun: ") {
				t.Errorf("stderr %q; want flowrun: …%q", stderr, c.stderr)
			}
		})
	}
}

func TestBrokerCommandHelp(t *testing.T) {
	out, _, code := runCLI(t, "", "help", "broker")
	for _, want := range []string{"--listen ADDR", "--store DIR", "--tls-cert FILE", "\nEXIT STATUS:\n   0    stopped by SIGINT", "\n   2    usage mistake"} {
		if !strings.Contains(out, want) {
			t.Errorf("flowrun help broker lacks %q:\n%s", want, out)
		}
	}
	if code != 0 {
		t.Errorf("exit %d", code)
	}
}

// TestBrokerDialFlagsNeedABroker: the credential flags of run say so when
// there is no broker URL to give them to; their environment variables
// are left alone for runs without a broker.
func TestBrokerDialFlagsNeedABroker(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "p.yaml", "stages: [{use: upper}]\n")
	in := writeFile(t, dir, "in.txt", "a\n")
	for _, c := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"run", "--broker-tls-ca", "ca.pem", "-i", in, p}, "flowrun: --broker-tls-ca needs --broker URL\n"},
		{[]string{"run", "--broker", "embedded", "--broker-token", "t", "-i", in, p}, "flowrun: --broker-token is for a broker URL; --broker embedded needs no credentials"},
		{[]string{"worker", "--broker", "nats://127.0.0.1:1", "--broker-creds", dir, p}, "creds file " + dir + " is a directory, not a file"},
	} {
		_, stderr, code := runCLI(t, "", c.args...)
		if code != 2 || !strings.Contains(stderr, c.stderr) {
			t.Errorf("flowrun %s: exit %d, stderr %q; want 2 and %q", strings.Join(c.args, " "), code, stderr, c.stderr)
		}
	}
	t.Setenv("FLOWRUN_BROKER_TOKEN", "from-the-environment")
	out, stderr, code := runCLI(t, "", "run", "-q", "-i", in, p)
	if code != 0 || out != "A\n" {
		t.Errorf("a run without a broker, $FLOWRUN_BROKER_TOKEN set: exit %d, out %q, stderr %q", code, out, stderr)
	}
}
