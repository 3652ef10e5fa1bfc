package cli

import (
	"context"
	"fmt"
	"io"
	"net"
	"os/signal"
	"strings"
	"syscall"

	urfave "github.com/urfave/cli/v2"

	"github.com/flowrun/flowrun/transport"
)

func brokerCommand(stdout, stderr io.Writer) *urfave.Command {
	return withExitStatus(&urfave.Command{
		Name:  "broker",
		Usage: "run a NATS JetStream broker for runs and workers on other machines",
		Description: `Runs the NATS server with JetStream that --broker embedded runs inside a
run, standalone, until SIGINT, SIGTERM or SIGHUP. It prints the URL to
dial on stdout. The queues are kept in --store across restarts: a broker
killed and started again on its store loses nothing, and the runs and
workers reconnect by themselves.

Nothing is open without credentials except loopback: listening on any other
address needs --user and --password, --token, --nkey or --tls-ca (client
certificates). Give --tls-cert and --tls-key too, or the credentials cross
the network in clear. Passwords and tokens are better given in
$FLOWRUN_BROKER_PASSWORD and $FLOWRUN_BROKER_TOKEN, out of ps.

For production, any NATS server or cluster with JetStream does the same.`,
		Flags: []urfave.Flag{
			&urfave.StringFlag{Name: "listen", Value: "127.0.0.1:4222", Usage: "take clients on `ADDR` (host:port; port 0 for any free one, 0.0.0.0:4222 for every address)"},
			&urfave.StringFlag{Name: "store", Usage: "keep the queues in `DIR` (created if missing); without it, in a temporary directory removed at exit"},
			&urfave.StringFlag{Name: "user", Usage: "clients must give this `USER` and --password"},
			&urfave.StringFlag{Name: "password", EnvVars: []string{"FLOWRUN_BROKER_PASSWORD"}, Usage: "the `PASSWORD` of --user"},
			&urfave.StringFlag{Name: "token", EnvVars: []string{"FLOWRUN_BROKER_TOKEN"}, Usage: "clients must give this `TOKEN` (nats://TOKEN@host:port, or --broker-token)"},
			&urfave.StringSliceFlag{Name: "nkey", Usage: "clients may authenticate with the seed of this public user nkey `U…` (repeatable)"},
			&urfave.StringFlag{Name: "tls-cert", Usage: "speak TLS only, with the server certificate in `FILE` (PEM)"},
			&urfave.StringFlag{Name: "tls-key", Usage: "the key of --tls-cert, in `FILE` (PEM)"},
			&urfave.StringFlag{Name: "tls-ca", Usage: "with --tls-cert, clients must present a certificate signed by a CA in `FILE` (PEM)"},
		},
		Action: func(c *urfave.Context) error {
			if c.NArg() > 0 {
				return usagef("broker takes no arguments, got %q", c.Args().First())
			}
			o := transport.EmbeddedOptions{
				Listen: c.String("listen"), StoreDir: c.String("store"),
				User: c.String("user"), Password: c.String("password"), Token: c.String("token"), Nkeys: c.StringSlice("nkey"),
				TLSCert: c.String("tls-cert"), TLSKey: c.String("tls-key"), TLSCA: c.String("tls-ca"),
				Log: stderr,
			}
			return runBroker(c.Context, o, stdout, stderr)
		},
	}, `   0    stopped by SIGINT, SIGTERM or SIGHUP
   2    usage mistake, or the broker could not start (the address in use, a store
        that cannot be written, a certificate that cannot be read, no credentials
        for an address beyond loopback)
`)
}

func runBroker(ctx context.Context, o transport.EmbeddedOptions, stdout, stderr io.Writer) error {
	if _, _, err := net.SplitHostPort(o.Listen); err != nil {
		return usagef("broker --listen %q: want host:port, like 127.0.0.1:4222", o.Listen)
	}
	open := o.User == "" && o.Password == "" && o.Token == "" && len(o.Nkeys) == 0 && o.TLSCA == ""
	if open && !transport.IsLoopback(o.Listen) {
		return usagef("broker --listen %s: nothing is open without credentials except loopback; "+
			"give --user and --password, --token, --nkey or --tls-ca (with --tls-cert and --tls-key), or listen on 127.0.0.1", o.Listen)
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	s, err := transport.StartEmbedded(ctx, o)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while it started
		}
		return usagef("%v", err)
	}
	defer s.Shutdown()
	store := o.StoreDir
	if store == "" {
		store = "a temporary directory, removed at exit (--store DIR keeps it)"
	}
	if !open && o.TLSCert == "" && !transport.IsLoopback(o.Listen) {
		fmt.Fprintln(stderr, "flowrun broker: warning: without --tls-cert, credentials and records cross the network in clear")
	}
	fmt.Fprintf(stderr, "flowrun broker: listening on %s, store %s; stop with Ctrl-C\n", listening(o.Listen, s.URL()), store)
	fmt.Fprintln(stdout, s.URL())
	<-ctx.Done()
	return nil
}

// listening is the listen address with the port the server took for 0.
func listening(listen, url string) string {
	host, _, err := net.SplitHostPort(listen)
	_, port, uerr := net.SplitHostPort(strings.TrimPrefix(strings.TrimPrefix(url, "nats://"), "tls://"))
	if err != nil || uerr != nil {
		return listen
	}
	return net.JoinHostPort(host, port)
}
