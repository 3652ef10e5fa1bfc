package connect_test

import (
	"strings"
	"testing"

	"github.com/flowrun/flowrun/connect"
	_ "github.com/flowrun/flowrun/connect/all"
)

// Options are checked against the connector's spec before anything
// connects: unknown ones with a hint, values of the wrong type, options
// for the other direction, and what a connector needs.
func TestParseRejects(t *testing.T) {
	for _, tc := range []struct {
		url  string
		d    connect.Direction
		want string
	}{
		{"amqp://h/?queue=q&prefech=3", connect.In, `rabbitmq option "prefech": no such option (did you mean "prefetch"?)`},
		{"amqp://h/?queue=q&prefetch=many", connect.In, `rabbitmq option "prefetch": "many" is not a whole number ≥ 0`},
		{"amqp://h/?queue=q&prefetch=3", connect.Out, `rabbitmq option "prefetch": applies to input only`},
		{"amqp://h/?queue=q&prefetch=65536", connect.In, `rabbitmq option "prefetch": at most 65535`},
		{"amqp://h/", connect.In, `rabbitmq option "queue": input needs a queue`},
		{"amqp://h/?queue=q&exchange=x", connect.Out, `give a queue or an exchange, not both`},
		{"redis://h:6379/0", connect.In, `redis option "list": give a list`},
		{"redis://h:6379/0?list=a&push=append", connect.Out, `redis option "push": "append" is not one of rpush, lpush`},
		{"redis://h:6379/0?list=a&claim_after=soon", connect.In, `"soon" is not a duration`},
		{"nats://h?stream=s", connect.Out, `nats option "subject": output to a stream needs the subject`},
		{"kafka://h/?topic=t", connect.In, `no connector for "kafka://" URLs`},
	} {
		_, err := connect.Parse(tc.url, nil, tc.d)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", tc.url, err, tc.want)
		}
		if err != nil && !connect.IsSetup(err) {
			t.Errorf("%s: %v is not a setup error", tc.url, err)
		}
	}
}

func TestParseTakesWithOverQuery(t *testing.T) {
	p, err := connect.Parse("amqp://u:secret@h:5672/v?queue=a&prefetch=2", map[string]string{"prefetch": "7"}, connect.In)
	if err != nil {
		t.Fatal(err)
	}
	if p.String("queue") != "a" || p.Int("prefetch") != 7 || !p.Bool("declare") {
		t.Errorf("queue %q prefetch %d declare %v", p.String("queue"), p.Int("prefetch"), p.Bool("declare"))
	}
	if b := p.Broker(); b != "rabbitmq amqp://u:xxxxx@h:5672/v" {
		t.Errorf("Broker() = %q: the password must be masked and the query gone", b)
	}
}

func TestScheme(t *testing.T) {
	for in, want := range map[string]string{
		"amqp://h/": "amqp", "Redis://h": "redis", "data/*.txt": "", "-": "", "c:/x": "", "./a://b": "",
	} {
		if got := connect.Scheme(in); got != want {
			t.Errorf("Scheme(%q) = %q, want %q", in, got, want)
		}
	}
}
