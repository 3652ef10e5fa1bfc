package cli

import (
	"os"

	urfave "github.com/urfave/cli/v2"

	"github.com/flowrun/flowrun/transport"
)

// brokerURLHelp says what --broker takes, for the Description of the
// commands that dial one (run --broker, worker).
const brokerURLHelp = `--broker URL is nats://[USER:PASSWORD@]HOST:PORT, nats://TOKEN@HOST:PORT,
tls://HOST:PORT (TLS required), or several separated by commas (one
cluster). Credentials and TLS files may also go in its query
(?creds=FILE&nkey=FILE&token=T&tls_ca=FILE&tls_cert=FILE&tls_key=FILE),
but the flags below keep them out of the process list: a password or token
in the URL is seen by every user of the machine in ps. The connection
reconnects by itself for ever; a broker that cannot be reached, refuses
the credentials, fails TLS or runs no JetStream is an error (exit 2)
within a few seconds.`

// brokerDialFlags are the flags of a command that dials a broker, beside
// its --broker.
func brokerDialFlags() []urfave.Flag {
	return []urfave.Flag{
		&urfave.StringFlag{Name: "broker-creds", EnvVars: []string{"FLOWRUN_BROKER_CREDS"}, Usage: "authenticate with the NATS credentials `FILE` (a user JWT and its nkey seed, as nsc writes them)"},
		&urfave.StringFlag{Name: "broker-nkey", EnvVars: []string{"FLOWRUN_BROKER_NKEY"}, Usage: "authenticate with the user nkey seed in `FILE` (SU…)"},
		&urfave.StringFlag{Name: "broker-token", EnvVars: []string{"FLOWRUN_BROKER_TOKEN"}, Usage: "authenticate with `TOKEN` (better from $FLOWRUN_BROKER_TOKEN, out of ps)"},
		&urfave.StringFlag{Name: "broker-tls-ca", EnvVars: []string{"FLOWRUN_BROKER_TLS_CA"}, Usage: "use TLS, trusting the CAs in `FILE` (PEM) for the broker's certificate instead of the system's"},
		&urfave.StringFlag{Name: "broker-tls-cert", EnvVars: []string{"FLOWRUN_BROKER_TLS_CERT"}, Usage: "present the client certificate in `FILE` (PEM), with --broker-tls-key"},
		&urfave.StringFlag{Name: "broker-tls-key", EnvVars: []string{"FLOWRUN_BROKER_TLS_KEY"}, Usage: "the key of --broker-tls-cert, in `FILE` (PEM)"},
	}
}

// brokerDialOptions are what the flags of brokerDialFlags say.
func brokerDialOptions(c *urfave.Context) transport.DialOptions {
	return transport.DialOptions{
		Creds: c.String("broker-creds"), Nkey: c.String("broker-nkey"), Token: c.String("broker-token"),
		TLSCA: c.String("broker-tls-ca"), TLSCert: c.String("broker-tls-cert"), TLSKey: c.String("broker-tls-key"),
	}
}

// checkBrokerDialFlags refuses the flags of brokerDialFlags, given on
// the command line, without a broker URL to dial: without --broker, or
// with --broker embedded (a server in the process, on loopback only).
// Their environment variables are not refused: they are set once for
// the runs that use a broker, and the others may ignore them.
func checkBrokerDialFlags(c *urfave.Context, broker string) error {
	for _, f := range brokerDialFlags() {
		name := f.Names()[0]
		v := c.String(name)
		if env := f.(*urfave.StringFlag).EnvVars; v == "" || os.Getenv(env[0]) == v {
			continue // not given, or given by the environment
		}
		switch broker {
		case "":
			return usagef("--%s needs --broker URL", name)
		case "embedded":
			return usagef("--%s is for a broker URL; --broker embedded needs no credentials (it listens on loopback only)", name)
		}
	}
	return nil
}
