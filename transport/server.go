package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedOptions says how to run a NATS server in the process.
type EmbeddedOptions struct {
	// Listen is host:port for clients; port 0 picks a free one. Empty:
	// 127.0.0.1:0.
	Listen string
	// StoreDir holds JetStream's streams (in StoreDir/jetstream), kept
	// across restarts. Empty: a temporary directory that Shutdown
	// removes.
	StoreDir string

	// User and Password, or Token, or Nkeys (public user keys, "U…"):
	// what a client must present. None of them: anyone who can reach
	// Listen may connect, so the caller must only allow that on
	// loopback (see IsLoopback).
	User, Password string
	Token          string
	Nkeys          []string

	// TLSCert and TLSKey (PEM files) make the server speak TLS only;
	// TLSCA, with them, also asks every client for a certificate that
	// CA signed.
	TLSCert, TLSKey, TLSCA string

	// Log, when set, receives the server's warnings and errors, one line
	// each; its notices (startup banner, connections) are dropped.
	Log io.Writer
}

// Server is a NATS server with JetStream running in this process.
type Server struct {
	ns      *server.Server
	url     string
	tempDir string // removed at Shutdown; "" when the store is the caller's
	started chan struct{}
	once    sync.Once
}

// startTimeout bounds how long StartEmbedded waits for the server to
// listen: JetStream recovers its store before that, which takes a while
// for a large one, but not minutes.
const startTimeout = 30 * time.Second

// StartEmbedded starts a NATS server with JetStream in this process and
// returns once it accepts clients. Its errors say what went wrong in
// words (the address in use, a store that cannot be written, a bad
// certificate), never the server's log.
func StartEmbedded(ctx context.Context, o EmbeddedOptions) (*Server, error) {
	opts, err := serverOptions(o)
	if err != nil {
		return nil, err
	}
	s := &Server{started: make(chan struct{})}
	if opts.StoreDir == "" {
		if s.tempDir, err = os.MkdirTemp("", "flowrun-broker-"); err != nil {
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
		opts.StoreDir = s.tempDir
	}
	if err := os.MkdirAll(opts.StoreDir, 0o700); err != nil {
		s.removeTemp()
		return nil, fmt.Errorf("embedded broker: store %s: %w", opts.StoreDir, err)
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		s.removeTemp()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	s.ns = ns
	log := &serverLog{w: o.Log, fatal: make(chan string, 1)}
	ns.SetLoggerV2(log, false, false, false)
	go func() {
		defer close(s.started)
		ns.Start()
	}()
	if err := s.waitReady(ctx, log.fatal); err != nil {
		s.Shutdown()
		return nil, fmt.Errorf("embedded broker on %s: %w", listenOrDefault(o.Listen), err)
	}
	u := url.URL{Scheme: "nats", Host: dialable(ns.Addr().(*net.TCPAddr))}
	if opts.TLSConfig != nil {
		u.Scheme = "tls"
	}
	s.url = u.String()
	return s, nil
}

// waitReady waits until the server listens, it gave up (fatal), or ctx
// ended.
func (s *Server) waitReady(ctx context.Context, fatal <-chan string) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case msg := <-fatal:
			return errors.New(msg)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("not ready after %s", startTimeout)
			}
			return ctx.Err()
		case <-tick.C:
			if s.ns.Addr() != nil && s.ns.JetStreamEnabled() {
				return nil
			}
		}
	}
}

// URL is what a client on this machine dials: nats://host:port, or
// tls://host:port when the server speaks TLS, without credentials. A
// server listening on every address (0.0.0.0) is dialed on loopback.
func (s *Server) URL() string { return s.url }

// Shutdown stops the server, waits until all its goroutines are gone,
// and removes its store when it was a temporary one. It may be called
// more than once.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		<-s.started // a Shutdown racing Start leaves goroutines behind
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		s.removeTemp()
	})
}

func (s *Server) removeTemp() {
	if s.tempDir != "" {
		os.RemoveAll(s.tempDir)
	}
}

// serverOptions turns o into the server's options, refusing what does
// not make sense before anything listens.
func serverOptions(o EmbeddedOptions) (*server.Options, error) {
	host, port, err := splitListen(listenOrDefault(o.Listen))
	if err != nil {
		return nil, err
	}
	opts := &server.Options{
		Host: host, Port: port,
		JetStream: true, StoreDir: o.StoreDir,
		NoSigs: true, // signals are the CLI's
		// The client's dial timeout is shorter than the server's default
		// of 2s for the CONNECT after TLS: keep them in step.
		AuthTimeout: 2,
	}
	switch {
	case o.Token != "" && (o.User != "" || o.Password != "" || len(o.Nkeys) > 0):
		return nil, errors.New("embedded broker: a token cannot go with a user or nkeys; give one or the other")
	case o.Password != "" && o.User == "":
		return nil, errors.New("embedded broker: a password needs a user")
	case o.User != "" && o.Password == "":
		return nil, fmt.Errorf("embedded broker: user %q needs a password", o.User)
	case o.Token != "":
		opts.Authorization = o.Token
	}
	if o.User != "" {
		opts.Users = []*server.User{{Username: o.User, Password: o.Password}}
	}
	for _, k := range o.Nkeys {
		if !isUserNkey(k) {
			return nil, fmt.Errorf("embedded broker: %q is not a public user nkey (one starting with U)", k)
		}
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k})
	}
	switch {
	case (o.TLSCert == "") != (o.TLSKey == ""):
		return nil, errors.New("embedded broker: TLS needs both a certificate and its key")
	case o.TLSCA != "" && o.TLSCert == "":
		return nil, errors.New("embedded broker: a CA for client certificates needs the server's own certificate and key")
	case o.TLSCert != "":
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: o.TLSCert, KeyFile: o.TLSKey, CaFile: o.TLSCA, Verify: o.TLSCA != "",
		})
		if err != nil {
			return nil, fmt.Errorf("embedded broker: TLS: %w", err)
		}
		opts.TLS, opts.TLSConfig, opts.TLSVerify = true, tc, o.TLSCA != ""
		opts.TLSTimeout = 2
	}
	return opts, nil
}

func listenOrDefault(l string) string {
	if l == "" {
		return "127.0.0.1:0"
	}
	return l
}

// splitListen parses host:port; port 0 becomes the server's "any free
// port", which it spells -1 (its 0 means 4222).
func splitListen(l string) (string, int, error) {
	host, p, err := net.SplitHostPort(l)
	if err != nil {
		return "", 0, fmt.Errorf("listen address %q: want host:port, like 127.0.0.1:4222", l)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("listen address %q: port %q is not a number from 0 to 65535", l, p)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// dialable is the address a client on this machine dials to reach a
// listener on a: loopback for "every address".
func dialable(a *net.TCPAddr) string {
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// IsLoopback reports whether a listen address (host:port) takes
// connections from this machine only: 127.0.0.0/8, ::1 or localhost.
// An empty host listens on every address and is not.
func IsLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listenOrDefault(listen))
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func isUserNkey(k string) bool {
	return len(k) == 56 && k[0] == 'U'
}

// serverLog takes the embedded server's log: its first fatal error goes
// to StartEmbedded (the server's own logger would exit the process),
// warnings and errors to w.
type serverLog struct {
	w     io.Writer
	mu    sync.Mutex
	fatal chan string
}

func (l *serverLog) Noticef(string, ...any) {}
func (l *serverLog) Debugf(string, ...any)  {}
func (l *serverLog) Tracef(string, ...any)  {}
func (l *serverLog) Warnf(format string, v ...any) {
	l.line("warning: "+format, v...)
}
func (l *serverLog) Errorf(format string, v ...any) {
	l.line("error: "+format, v...)
}

// Fatalf hands the error to StartEmbedded, which returns it: it is not
// logged as well.
func (l *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.HasPrefix(format, "Error listening on port") && len(v) == 2 {
		if err, ok := v[1].(error); ok {
			msg = "cannot listen: " + err.Error()
			if errors.Is(err, syscall.EADDRINUSE) {
				msg = "the address is in use (by another broker?)"
			}
		}
	}
	select {
	case l.fatal <- msg:
	default:
	}
}

func (l *serverLog) line(format string, v ...any) {
	if l.w == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "broker: "+format+"\n", v...)
}
