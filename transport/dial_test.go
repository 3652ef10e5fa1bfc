package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
	"github.com/flowrun/flowrun/transport"
)

func TestMain(m *testing.M) { brokertest.Main(m, removeBin) }

// guard is what a test broker asks of its clients.
type guard struct {
	user, pass string
	token      string
	nkey       string // a public user key
	tls        *pki   // serve TLS with its server certificate
	verify     bool   // and ask clients for a certificate its CA signed
}

// kinds are the brokers every Dial test runs against: ours, and Debian's.
var kinds = []string{"embedded", "nats-server"}

// startBroker starts a broker of a kind that asks what g says, and
// returns its host:port.
func startBroker(t *testing.T, kind string, g guard) string {
	t.Helper()
	if kind == "embedded" {
		o := transport.EmbeddedOptions{User: g.user, Password: g.pass, Token: g.token}
		if g.nkey != "" {
			o.Nkeys = []string{g.nkey}
		}
		if g.tls != nil {
			o.TLSCert, o.TLSKey = g.tls.ServerCert, g.tls.ServerKey
			if g.verify {
				o.TLSCA = g.tls.CA
			}
		}
		s, err := transport.StartEmbedded(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Shutdown)
		u, _ := url.Parse(s.URL())
		return u.Host
	}
	var args []string
	switch {
	case g.user != "":
		args = append(args, "--user", g.user, "--pass", g.pass)
	case g.token != "":
		args = append(args, "--auth", g.token)
	case g.nkey != "":
		conf := filepath.Join(t.TempDir(), "nkey.conf")
		writeFile(t, conf, fmt.Sprintf("authorization { users = [ { nkey: %q } ] }\n", g.nkey))
		args = append(args, "-c", conf)
	}
	if g.tls != nil {
		args = append(args, "--tls", "--tlscert", g.tls.ServerCert, "--tlskey", g.tls.ServerKey)
		if g.verify {
			args = append(args, "--tlsverify", "--tlscacert", g.tls.CA)
		}
	}
	if len(args) == 0 {
		return strings.TrimPrefix(brokertest.NATS(t).URL, "nats://")
	}
	return strings.TrimPrefix(brokertest.OwnNATSWith(t, args...).URL, "nats://")
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// dialCase is one Dial: the broker URL ({} is the broker's host:port),
// the options, and the reason the error must give ("" = it connects).
type dialCase struct {
	name   string
	broker string
	opts   transport.DialOptions
	reason string
	secret string // must not appear in the error
}

func runDialCases(t *testing.T, hostport string, cases []dialCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			broker := strings.ReplaceAll(c.broker, "{}", hostport)
			nc, err := transport.Dial(context.Background(), broker, c.opts)
			if c.reason == "" {
				if err != nil {
					t.Fatalf("Dial(%s): %v", broker, err)
				}
				defer nc.Close()
				if _, err := nc.Request("$JS.API.INFO", nil, 5*time.Second); err != nil {
					t.Fatalf("JetStream over the connection: %v", err)
				}
				return
			}
			if err == nil {
				nc.Close()
				t.Fatalf("Dial(%s) connected; want %q", broker, c.reason)
			}
			t.Log(err)
			var ce *connect.Error
			if !errors.As(err, &ce) {
				t.Fatalf("Dial(%s): %T %v; want a *connect.Error", broker, err, err)
			}
			if !strings.Contains(ce.Reason, c.reason) {
				t.Errorf("reason %q; want it to say %q", ce.Reason, c.reason)
			}
			host := broker
			if u, err := url.Parse(strings.Split(broker, ",")[0]); err == nil && u.Host != "" {
				host = u.Hostname()
			}
			if !strings.HasPrefix(err.Error(), "broker ") || !strings.Contains(err.Error(), host) {
				t.Errorf("error %q does not name the broker", err)
			}
			if c.secret != "" && strings.Contains(err.Error(), c.secret) {
				t.Errorf("error %q shows the secret %q", err, c.secret)
			}
		})
	}
}

func TestDialOpenBroker(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			hp := startBroker(t, kind, guard{})
			runDialCases(t, hp, []dialCase{
				{name: "nats-url", broker: "nats://{}"},
				{name: "bare-host-port", broker: "{}"},
				{name: "cluster-list", broker: "nats://{},nats://{}"},
				{name: "tls-to-plain", broker: "tls://{}", reason: "the broker does not offer it"},
			})
		})
	}
}

func TestDialUserPassword(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			hp := startBroker(t, kind, guard{user: "alice", pass: "s3cret"})
			runDialCases(t, hp, []dialCase{
				{name: "right", broker: "nats://alice:s3cret@{}"},
				{name: "wrong-password", broker: "nats://alice:wrong-pw@{}", reason: `user "alice" or its password refused`, secret: "wrong-pw"},
				{name: "none", broker: "nats://{}", reason: "the broker wants credentials"},
				{name: "token-instead", broker: "nats://{}?token=tok-123", reason: "token refused", secret: "tok-123"},
			})
		})
	}
}

func TestDialToken(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			hp := startBroker(t, kind, guard{token: "tok-right"})
			runDialCases(t, hp, []dialCase{
				{name: "in-userinfo", broker: "nats://tok-right@{}"},
				{name: "in-query", broker: "nats://{}?token=tok-right"},
				{name: "option", broker: "nats://{}", opts: transport.DialOptions{Token: "tok-right"}},
				{name: "wrong-userinfo", broker: "nats://tok-wrong@{}", reason: "token refused", secret: "tok-wrong"},
				{name: "wrong-query", broker: "nats://{}?token=tok-wrong", reason: "token refused", secret: "tok-wrong"},
			})
		})
	}
}

func TestDialNkey(t *testing.T) {
	pub, seed := newNkey(t)
	_, other := newNkey(t)
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			hp := startBroker(t, kind, guard{nkey: pub})
			runDialCases(t, hp, []dialCase{
				{name: "option", broker: "nats://{}", opts: transport.DialOptions{Nkey: seed}},
				{name: "query", broker: "nats://{}?nkey=" + url.QueryEscape(seed)},
				{name: "other-key", broker: "nats://{}", opts: transport.DialOptions{Nkey: other}, reason: "nkey in " + other + " refused"},
				{name: "none", broker: "nats://{}", reason: "the broker wants credentials"},
			})
		})
	}
}

func TestDialTLS(t *testing.T) {
	ca, stranger := newPKI(t, "ours"), newPKI(t, "stranger")
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			hp := startBroker(t, kind, guard{tls: &ca})
			runDialCases(t, hp, []dialCase{
				{name: "tls-url-with-ca", broker: "tls://{}", opts: transport.DialOptions{TLSCA: ca.CA}},
				{name: "ca-in-query", broker: "tls://{}?tls_ca=" + url.QueryEscape(ca.CA)},
				{name: "nats-url-with-ca", broker: "nats://{}", opts: transport.DialOptions{TLSCA: ca.CA}},
				{name: "localhost", broker: "tls://localhost:" + strings.Split(hp, ":")[1], opts: transport.DialOptions{TLSCA: ca.CA}},
				{name: "system-cas", broker: "tls://{}", reason: "not signed by a CA this machine trusts"},
				{name: "other-ca", broker: "tls://{}", opts: transport.DialOptions{TLSCA: stranger.CA}, reason: "not signed by the CA in " + stranger.CA},
				{name: "ca-file-missing", broker: "tls://{}", opts: transport.DialOptions{TLSCA: "/nonexistent/ca.pem"}, reason: "TLS CA file /nonexistent/ca.pem: no such file"},
				{name: "ca-file-not-pem", broker: "tls://{}", opts: transport.DialOptions{TLSCA: ca.ServerKey}, reason: "no PEM certificate in it"},
			})
		})
	}
}

func TestDialMutualTLS(t *testing.T) {
	ca, stranger := newPKI(t, "ours"), newPKI(t, "stranger")
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			hp := startBroker(t, kind, guard{tls: &ca, verify: true})
			runDialCases(t, hp, []dialCase{
				{name: "client-cert", broker: "tls://{}", opts: transport.DialOptions{TLSCA: ca.CA, TLSCert: ca.ClientCert, TLSKey: ca.ClientKey}},
				{name: "no-client-cert", broker: "tls://{}", opts: transport.DialOptions{TLSCA: ca.CA}, reason: "asks for a client certificate"},
				{name: "stranger-cert", broker: "tls://{}", opts: transport.DialOptions{TLSCA: ca.CA, TLSCert: stranger.ClientCert, TLSKey: stranger.ClientKey},
					reason: "refused the client certificate"},
				{name: "cert-without-key", broker: "tls://{}", opts: transport.DialOptions{TLSCA: ca.CA, TLSCert: ca.ClientCert},
					reason: "needs both the certificate and its key"},
			})
		})
	}
}

// operator is a NATS operator with one account that may use JetStream,
// a user of it in a creds file, and a stranger's creds file signed by an
// account the operator never heard of.
type operator struct {
	claims                 *jwt.OperatorClaims
	jwt, account, accJWT   string
	system, sysJWT         string
	creds, strangerCreds   string
	operatorFile, confFile string
}

func newOperator(t *testing.T) operator {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opub, err := okp.PublicKey()
	must(err)
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	must(err)
	akp, err := nkeys.CreateAccount()
	must(err)
	apub, err := akp.PublicKey()
	must(err)
	ac := jwt.NewAccountClaims(apub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	must(err)
	creds := func(account nkeys.KeyPair, name string) string {
		ukp, err := nkeys.CreateUser()
		must(err)
		upub, err := ukp.PublicKey()
		must(err)
		ujwt, err := jwt.NewUserClaims(upub).Encode(account)
		must(err)
		seed, err := ukp.Seed()
		must(err)
		text, err := jwt.FormatUserConfig(ujwt, seed)
		must(err)
		path := filepath.Join(t.TempDir(), name+".creds")
		writeFile(t, path, string(text))
		return path
	}
	strangerAcc, err := nkeys.CreateAccount()
	must(err)
	// JetStream in operator mode needs a system account.
	skp, err := nkeys.CreateAccount()
	must(err)
	spub, err := skp.PublicKey()
	must(err)
	sjwt, err := jwt.NewAccountClaims(spub).Encode(okp)
	must(err)
	dir := t.TempDir()
	o := operator{claims: oc, jwt: ojwt, account: apub, accJWT: ajwt, system: spub, sysJWT: sjwt,
		creds: creds(akp, "user"), strangerCreds: creds(strangerAcc, "stranger"),
		operatorFile: filepath.Join(dir, "operator.jwt"), confFile: filepath.Join(dir, "operator.conf")}
	writeFile(t, o.operatorFile, ojwt)
	writeFile(t, o.confFile, fmt.Sprintf("operator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: { %s: %q, %s: %q }\n",
		o.operatorFile, spub, apub, ajwt, spub, sjwt))
	return o
}

func TestDialCreds(t *testing.T) {
	op := newOperator(t)
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			var hp string
			if kind == "embedded" {
				resolver := &server.MemAccResolver{}
				for acc, j := range map[string]string{op.account: op.accJWT, op.system: op.sysJWT} {
					if err := resolver.Store(acc, j); err != nil {
						t.Fatal(err)
					}
				}
				hp = startRaw(t, &server.Options{JetStream: true, TrustedOperators: []*jwt.OperatorClaims{op.claims},
					AccountResolver: resolver, SystemAccount: op.system})
			} else {
				hp = strings.TrimPrefix(brokertest.OwnNATSWith(t, "-c", op.confFile).URL, "nats://")
			}
			runDialCases(t, hp, []dialCase{
				{name: "creds", broker: "nats://{}", opts: transport.DialOptions{Creds: op.creds}},
				{name: "creds-in-query", broker: "nats://{}?creds=" + url.QueryEscape(op.creds)},
				{name: "stranger", broker: "nats://{}", opts: transport.DialOptions{Creds: op.strangerCreds}, reason: "credentials in " + op.strangerCreds + " refused"},
				{name: "missing-file", broker: "nats://{}", opts: transport.DialOptions{Creds: "/nonexistent/user.creds"}, reason: "creds file /nonexistent/user.creds: no such file"},
			})
		})
	}
}

// startRaw runs a NATS server in this process with opts on a free
// loopback port, for what StartEmbedded does not offer (no JetStream,
// operator mode), and returns its host:port.
func startRaw(t *testing.T, opts *server.Options) string {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", server.RANDOM_PORT, true, true
	if opts.JetStream {
		opts.StoreDir = t.TempDir()
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		ns.Shutdown()
		t.Fatal("nats server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns.Addr().String()
}

func TestDialNoJetStream(t *testing.T) {
	hp := startRaw(t, &server.Options{})
	runDialCases(t, hp, []dialCase{
		{name: "plain-nats", broker: "nats://{}", reason: "the broker does not run JetStream (start nats-server with -js)"},
	})
}

func TestDialUnreachable(t *testing.T) {
	port, err := brokertest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	hp := fmt.Sprintf("127.0.0.1:%d", port)
	runDialCases(t, hp, []dialCase{
		{name: "refused", broker: "nats://bob:pw-123@{}", reason: "cannot connect: nothing answers at " + hp, secret: "pw-123"},
		{name: "no-such-host", broker: "nats://no-such-host.invalid:4222", reason: "cannot connect"},
	})
}

func TestDialBadBroker(t *testing.T) {
	for _, c := range []struct{ broker, want string }{
		{"", "no broker given"},
		{"amqp://h:5672", `scheme "amqp" is not nats:// or tls://`},
		{"nats://h:4222?tokn=x", `no option "tokn" (did you mean "token"?)`},
		{"nats://u:p@h:4222?token=t", "a user and password or a token, not both"},
		{"nats//127.0.0.1:4222", `broker "nats//127.0.0.1:4222": not a URL like nats://host:4222`},
		{"nats//u:secret@127.0.0.1:4222", `broker "nats//xxxxx@127.0.0.1:4222": not a URL like nats://host:4222`},
		{"nats://127.0.0.1:4222/js", `broker "nats://127.0.0.1:4222/js": not a URL like nats://host:4222`},
		{"nats://127.0.0.1:99999", `broker nats://127.0.0.1:99999: port 99999 is not a port (1 to 65535)`},
		{"nats://127.0.0.1:0", `broker nats://127.0.0.1:0: port 0 is not a port (1 to 65535)`},
	} {
		_, err := transport.Dial(context.Background(), c.broker, transport.DialOptions{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Dial(%q): %v; want %q", c.broker, err, c.want)
		}
	}
}

// TestDialReconnects kills the broker under a connection and starts it
// again on the same port and store: the connection comes back by itself
// and JetStream answers on it, the stream and its messages still there.
func TestDialReconnects(t *testing.T) {
	for _, kind := range kinds {
		t.Run(kind, func(t *testing.T) {
			var url string
			var restart func()
			if kind == "embedded" {
				store := t.TempDir()
				s, err := transport.StartEmbedded(context.Background(), transport.EmbeddedOptions{StoreDir: store})
				if err != nil {
					t.Fatal(err)
				}
				url = s.URL()
				listen := strings.TrimPrefix(url, "nats://")
				restart = func() {
					s.Shutdown()
					if s, err = transport.StartEmbedded(context.Background(), transport.EmbeddedOptions{Listen: listen, StoreDir: store}); err != nil {
						t.Fatal(err)
					}
				}
				t.Cleanup(func() { s.Shutdown() })
			} else {
				b := brokertest.Own(t, "nats")
				url = b.URL
				restart = func() {
					if err := b.Restart(); err != nil {
						t.Fatal(err)
					}
				}
			}
			var log syncBuffer
			nc, err := transport.Dial(context.Background(), url, transport.DialOptions{Log: &log})
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			if _, err := nc.Request("$JS.API.STREAM.CREATE.R", []byte(`{"name":"R","subjects":["r.>"],"storage":"file"}`), 5*time.Second); err != nil {
				t.Fatal(err)
			}
			if _, err := nc.Request("r.one", []byte("kept"), 5*time.Second); err != nil {
				t.Fatal(err)
			}
			restart()
			// Bounded by count, not by a clock: each request waits at most
			// 500ms, and the reconnect's backoff is at most 5s.
			var info *nats.Msg
			for i := 0; i < 60; i++ {
				if info, err = nc.Request("$JS.API.STREAM.INFO.R", nil, 500*time.Millisecond); err == nil {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("no JetStream after the restart: %v (log: %s)", err, log.String())
			}
			if !strings.Contains(string(info.Data), `"messages":1`) {
				t.Errorf("stream after the restart: %s; want its one message", info.Data)
			}
			// The handler that says it runs after the connection is back,
			// maybe after the request went through.
			for i := 0; i < 50 && !strings.Contains(log.String(), "reconnected to"); i++ {
				time.Sleep(100 * time.Millisecond)
			}
			for _, want := range []string{"connection lost", "reconnecting", "reconnected to"} {
				if !strings.Contains(log.String(), want) {
					t.Errorf("log %q does not say %q", log.String(), want)
				}
			}
		})
	}
}
