package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flowrun/flowrun/connect"
)

// DialOptions are a broker's credentials and TLS settings beyond what its
// URL says. Each may also be given in the URL's query (?creds=FILE,
// ?nkey=FILE, ?tls_ca=FILE, ?tls_cert=FILE, ?tls_key=FILE, ?token=T);
// a field set here wins over the query.
type DialOptions struct {
	// Creds is a NATS credentials file: a user JWT and its nkey seed, as
	// `nsc` writes them (operator mode, NGS, Synadia Cloud).
	Creds string
	// Nkey is a file holding a user's nkey seed ("SU…").
	Nkey string
	// Token authenticates with a token; nats://TOKEN@host says the same.
	Token string
	// TLSCA is a PEM file of the CAs that sign the broker's certificate
	// (instead of the system's); giving it, or a tls:// URL, requires
	// TLS.
	TLSCA string
	// TLSCert and TLSKey are the client's certificate and key (PEM), for
	// a broker that asks for one.
	TLSCert, TLSKey string

	// Name is the connection's name in the broker's monitoring
	// ("flowrun worker host:pid"). Empty: "flowrun".
	Name string
	// Log, when set, receives a line when the connection is lost, comes
	// back or is closed for good, and for errors the broker sends
	// between requests (a permission refused, a slow consumer).
	Log io.Writer
}

// The bounds of connecting: a broker that does not answer, or answers
// but not as a JetStream broker, is an error within seconds.
const (
	dialTimeout    = 3 * time.Second
	jetStreamCheck = 3 * time.Second
)

// The wait between reconnection attempts doubles from reconnectMin to
// reconnectMax, with jitter, for ever: a worker outlives a broker's
// restart, however long it takes.
const (
	reconnectMin = 100 * time.Millisecond
	reconnectMax = 5 * time.Second
)

// Dial connects to the NATS broker at broker (nats://[user:pass@]host:4222,
// nats://TOKEN@host:4222, tls://host:4222, host:4222, or several of them
// separated by commas: one cluster) and checks that it runs JetStream.
//
// Once connected, the connection reconnects by itself for ever, with
// backoff, and buffers what is published meanwhile (nats.go's 8 MB); it
// gives up only when the broker refuses its credentials again after a
// reconnect. A broker that cannot be reached, refuses the credentials,
// fails TLS or has no JetStream is an error within a few seconds: a
// *connect.Error naming the broker (its password masked) and the reason
// in words.
func Dial(ctx context.Context, broker string, o DialOptions) (*nats.Conn, error) {
	d, err := parseBroker(broker, o)
	if err != nil {
		return nil, err
	}
	opts, err := d.options()
	if err != nil {
		return nil, d.fail("", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(strings.Join(d.servers, ","), opts...)
	if err != nil {
		return nil, d.fail(d.reason(err), err)
	}
	d.connected.Store(true)
	if err := ctx.Err(); err != nil {
		nc.Close()
		return nil, err
	}
	if err := checkJetStream(ctx, nc); err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, d.fail(d.reason(err), err)
	}
	return nc, nil
}

func checkJetStream(ctx context.Context, nc *nats.Conn) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, jetStreamCheck)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// dialing is one Dial: the broker as parsed, and what is needed to say
// why it failed.
type dialing struct {
	shown   string   // the broker for messages, secrets masked
	servers []string // URLs without credentials
	user    string
	pass    string
	o       DialOptions
	// connected turns true once the first connection is up, from when
	// the handlers log instead of Dial returning.
	connected atomic.Bool
}

// queryOptions are the options a broker URL's query may carry.
var queryOptions = []string{"creds", "nkey", "tls_ca", "tls_cert", "tls_key", "token"}

func parseBroker(broker string, o DialOptions) (*dialing, error) {
	d := &dialing{o: o}
	if strings.TrimSpace(broker) == "" {
		return nil, errors.New("no broker given: want nats://host:4222")
	}
	var shown []string
	for _, raw := range strings.Split(broker, ",") {
		raw = strings.TrimSpace(raw)
		given := raw
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		// A NATS URL has no path: one here is a mistyped scheme
		// (nats//host:4222 read as the host "nats") or a stray suffix.
		u, err := url.Parse(raw)
		if err != nil || u.Host == "" || strings.Trim(u.Path, "/") != "" {
			return nil, fmt.Errorf("broker %q: not a URL like nats://host:4222", redactRaw(given))
		}
		switch u.Scheme {
		case "nats", "tls":
		default:
			return nil, fmt.Errorf("broker %s: scheme %q is not nats:// or tls://", redact(u), u.Scheme)
		}
		if u.Port() == "" {
			u.Host = net.JoinHostPort(u.Hostname(), "4222")
		} else if n, err := strconv.Atoi(u.Port()); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("broker %s: port %s is not a port (1 to 65535)", redact(u), u.Port())
		}
		for k, v := range u.Query() {
			if err := d.setQuery(u, k, v[len(v)-1]); err != nil {
				return nil, err
			}
		}
		if u.User != nil {
			if pass, ok := u.User.Password(); ok {
				d.user, d.pass = u.User.Username(), pass
			} else if d.o.Token == "" {
				d.o.Token = u.User.Username()
			}
		}
		shown = append(shown, redact(u))
		u.User, u.RawQuery = nil, ""
		d.servers = append(d.servers, u.String())
	}
	d.shown = "broker " + strings.Join(shown, ",")
	if d.o.Token != "" && d.user != "" {
		return nil, fmt.Errorf("%s: give a user and password or a token, not both", d.shown)
	}
	return d, nil
}

// setQuery takes an option from a broker URL's query, unless the
// caller's DialOptions set it already.
func (d *dialing) setQuery(u *url.URL, k, v string) error {
	field := map[string]*string{
		"creds": &d.o.Creds, "nkey": &d.o.Nkey, "token": &d.o.Token,
		"tls_ca": &d.o.TLSCA, "tls_cert": &d.o.TLSCert, "tls_key": &d.o.TLSKey,
	}[k]
	if field == nil {
		return fmt.Errorf("broker %s: no option %q%s (options: %s)", redact(u), k,
			connect.Hint(k, queryOptions), strings.Join(queryOptions, ", "))
	}
	if *field == "" {
		*field = v
	}
	return nil
}

// redact is u as text with a password or a token masked and no query
// (which may hold a token).
func redact(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	if c.User != nil {
		if _, ok := c.User.Password(); ok {
			c.User = url.UserPassword(c.User.Username(), "xxxxx")
		} else {
			c.User = url.User("xxxxx") // a user without a password is a token
		}
	}
	return c.String()
}

// redactRaw masks what looks like credentials in a broker that is not a
// URL at all.
func redactRaw(raw string) string {
	prefix, rest := "", raw
	if scheme, after, ok := strings.Cut(raw, "://"); ok {
		prefix, rest = scheme+"://", after
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		from := strings.LastIndex(rest[:at], "/") + 1 // nats//user:pass@host keeps its nats//
		rest = rest[:from] + "xxxxx" + rest[at:]
	}
	return prefix + rest
}

func (d *dialing) fail(reason string, err error) error {
	if reason == "" {
		reason = err.Error()
	}
	return &connect.Error{Broker: d.shown, Reason: reason, Err: err}
}

// options are the nats.go options for d, with the files it names read
// now, so that a missing file is said as such rather than as a failed
// handshake.
func (d *dialing) options() ([]nats.Option, error) {
	o := d.o
	name := o.Name
	if name == "" {
		name = "flowrun"
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.Timeout(dialTimeout),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		// A broker gone without closing the connection (a machine off,
		// a network cut) is noticed in about 15s, not nats.go's 4 minutes.
		nats.PingInterval(5 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DisconnectErrHandler(d.disconnected),
		nats.ReconnectHandler(d.reconnected),
		nats.ClosedHandler(d.closed),
		nats.ErrorHandler(d.asyncError),
	}
	secrets := 0
	if d.user != "" {
		opts = append(opts, nats.UserInfo(d.user, d.pass))
		secrets++
	}
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
		secrets++
	}
	if o.Creds != "" {
		if err := readable(o.Creds, "creds file"); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(o.Creds))
		secrets++
	}
	if o.Nkey != "" {
		if err := readable(o.Nkey, "nkey seed file"); err != nil {
			return nil, err
		}
		nk, err := nats.NkeyOptionFromSeed(o.Nkey)
		if err != nil {
			return nil, fmt.Errorf("nkey seed file %s: not a user's nkey seed (one line starting with SU)", o.Nkey)
		}
		opts = append(opts, nk)
		secrets++
	}
	if secrets > 1 {
		return nil, errors.New("give one way to authenticate: a user and password, a token, a creds file or an nkey seed")
	}
	tc, err := d.tlsConfig()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// tlsConfig is the client's TLS configuration, or nil when neither the
// URL nor the options ask for TLS (the broker may still require it: then
// nats.go speaks TLS with the system's CAs).
func (d *dialing) tlsConfig() (*tls.Config, error) {
	o := d.o
	wanted := o.TLSCA != "" || o.TLSCert != ""
	for _, s := range d.servers {
		wanted = wanted || strings.HasPrefix(s, "tls://")
	}
	if !wanted && o.TLSKey == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.TLSCA != "" {
		if err := readable(o.TLSCA, "TLS CA file"); err != nil {
			return nil, err
		}
		pem, err := os.ReadFile(o.TLSCA)
		if err != nil {
			return nil, fileProblem(err, o.TLSCA, "TLS CA file")
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("TLS CA file %s: no PEM certificate in it", o.TLSCA)
		}
	}
	switch {
	case (o.TLSCert == "") != (o.TLSKey == ""):
		return nil, errors.New("a TLS client certificate needs both the certificate and its key")
	case o.TLSCert != "":
		for _, f := range [][2]string{{o.TLSCert, "TLS certificate file"}, {o.TLSKey, "TLS key file"}} {
			if err := readable(f[0], f[1]); err != nil {
				return nil, err
			}
		}
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("TLS certificate %s with key %s: %v", o.TLSCert, o.TLSKey, err)
		}
		// Always offered: Go's client sends a certificate only when its
		// CA is one the server names, and a broker that does not trust it
		// would then be told nothing and say "certificate required".
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return tc, nil
}

func readable(path, what string) error {
	f, err := os.Open(path)
	if err != nil {
		return fileProblem(err, path, what)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return fmt.Errorf("%s %s is a directory, not a file", what, path)
	}
	return nil
}

func fileProblem(err error, path, what string) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s %s: no such file", what, path)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s %s cannot be read: permission denied", what, path)
	}
	return fmt.Errorf("%s %s: %v", what, path, err)
}

// reason says in words why connecting failed.
func (d *dialing) reason(err error) string {
	var unknownCA x509.UnknownAuthorityError
	var badHost x509.HostnameError
	var invalid x509.CertificateInvalidError
	var netErr net.Error
	var dnsErr *net.DNSError
	msg := err.Error()
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired):
		return d.refused()
	case errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return "JetStream is not enabled for this account on the broker"
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled):
		return "the broker does not run JetStream (start nats-server with -js)"
	case errors.Is(err, nats.ErrSecureConnWanted):
		return "TLS was asked for (tls:// or a TLS option), but the broker does not offer it"
	case errors.As(err, &unknownCA):
		if d.o.TLSCA == "" {
			return "TLS: the broker's certificate is not signed by a CA this machine trusts (give its CA with --broker-tls-ca)"
		}
		return "TLS: the broker's certificate is not signed by the CA in " + d.o.TLSCA
	case errors.As(err, &badHost):
		return fmt.Sprintf("TLS: the broker's certificate is not for %s (it is for %s)", badHost.Host, certNames(badHost.Certificate))
	case errors.As(err, &invalid):
		return "TLS: the broker's certificate is not valid: " + invalid.Error()
	case d.o.TLSCert == "" && clientCertAlert(msg):
		return "TLS: the broker asks for a client certificate (give --broker-tls-cert and --broker-tls-key)"
	case d.o.TLSCert == "" && closedAfterHandshake(msg):
		// With TLS 1.3 the client's handshake is over before the server
		// looked at its certificate: the alert may come after, or not.
		return "TLS: the broker closed the connection after the handshake: it likely asks for a client certificate " +
			"(give --broker-tls-cert and --broker-tls-key)"
	case d.o.TLSCert != "" && (clientCertAlert(msg) || closedAfterHandshake(msg)):
		return "TLS: the broker refused the client certificate " + d.o.TLSCert
	case errors.Is(err, nats.ErrTLS):
		return "TLS failed: " + strings.TrimPrefix(msg, "nats: ")
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot connect: no host named %s", dnsErr.Name)
	case errors.Is(err, nats.ErrNoServers):
		return "cannot connect: nothing answers at " + strings.Join(hosts(d.servers), ", ")
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, nats.ErrTimeout):
		return fmt.Sprintf("cannot connect: no answer from %s within %s", strings.Join(hosts(d.servers), ", "), dialTimeout)
	case errors.Is(err, io.EOF):
		return "the broker closed the connection while connecting (does it speak NATS? does it want TLS?)"
	}
	return strings.TrimPrefix(msg, "nats: ")
}

// refused says which credentials the broker refused.
func (d *dialing) refused() string {
	switch o := d.o; {
	case d.user != "":
		return fmt.Sprintf("user %q or its password refused", d.user)
	case o.Token != "":
		return "token refused"
	case o.Creds != "":
		return "credentials in " + o.Creds + " refused (or expired)"
	case o.Nkey != "":
		return "nkey in " + o.Nkey + " refused"
	}
	return "the broker wants credentials: give user:password@ in the URL, a token, --broker-creds or --broker-nkey"
}

// clientCertAlert reports whether msg is a TLS alert a server sends about
// the client's certificate: Go's crypto/tls sends "certificate required"
// or "bad certificate" for a missing one (by version), "bad certificate"
// or "unknown certificate authority" for one it does not trust.
func clientCertAlert(msg string) bool {
	for _, a := range []string{"tls: certificate required", "tls: bad certificate", "tls: unknown certificate authority"} {
		if strings.Contains(msg, "remote error: "+a) {
			return true
		}
	}
	return false
}

func closedAfterHandshake(msg string) bool {
	return strings.Contains(msg, "closed by remote after TLS handshake")
}

func certNames(c *x509.Certificate) string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		names = append(names, c.Subject.CommonName)
	}
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func hosts(servers []string) []string {
	var h []string
	for _, s := range servers {
		if u, err := url.Parse(s); err == nil {
			h = append(h, u.Host)
		}
	}
	return h
}

// reconnectDelay is the wait before reconnection attempt n (from 1).
func reconnectDelay(n int) time.Duration {
	d := reconnectMin << min(n-1, 16)
	if d > reconnectMax || d <= 0 {
		d = reconnectMax
	}
	return d/2 + rand.N(d/2+1)
}

func (d *dialing) logf(format string, v ...any) {
	if d.o.Log == nil || !d.connected.Load() {
		return
	}
	fmt.Fprintf(d.o.Log, "flowrun: "+d.shown+": "+format+"\n", v...)
}

func (d *dialing) disconnected(_ *nats.Conn, err error) {
	if err == nil {
		return // a Close of ours
	}
	d.logf("connection lost (%s); reconnecting", words(err))
}

func (d *dialing) reconnected(nc *nats.Conn) {
	d.logf("reconnected to %s", nc.ConnectedUrlRedacted())
}

func (d *dialing) closed(nc *nats.Conn) {
	if err := nc.LastError(); err != nil {
		d.logf("connection closed for good: %s", d.reason(err))
	}
}

// asyncError says an error the broker sent between requests, in words
// and without the client's inbox subjects.
func (d *dialing) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if strings.Contains(err.Error(), "recreating ordered consumer") {
		if errors.Is(err, nats.ErrStreamNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			// A watch whose stream is gone (a broker restarted without
			// its store): the run or the worker watching says what that
			// means for it.
			return
		}
		cause := errors.Unwrap(err)
		if cause == nil {
			cause = err
		}
		d.logf("a watch of the broker ended: %s", words(cause))
		return
	}
	if sub != nil && sub.Subject != "" && !strings.HasPrefix(sub.Subject, nats.InboxPrefix) {
		d.logf("on %s: %s", sub.Subject, words(err))
		return
	}
	d.logf("%s", words(err))
}
