package cli_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/flowrun/flowrun/connect/brokertest"
)

// brokerExample runs a broker example of pipelines/ against the test's
// server: its input queue is filled first, the run drains it
// (--until-idle), and the check reads the output queue.
func brokerExample(name string) example {
	var server *brokertest.Server
	var outURL string
	var in, want []string
	ex := example{args: []string{"--until-idle", "2s"}}
	ex.setup = func(t *testing.T) (string, []string) {
		var env []string
		var inURL string
		switch name {
		case "task_queue":
			server = brokertest.RabbitMQ(t)
			env = []string{"AMQP_URL=" + server.URL}
			inURL, outURL = server.URL+"?queue=task_queue", server.URL+"?queue=results"
			in, want = []string{" first task. ", "second task..", "third"}, []string{"FIRST TASK.", "SECOND TASK..", "THIRD"}
		case "redis_worker":
			server = brokertest.Redis(t)
			env = []string{"REDIS_URL=" + server.URL, "DEAD_LETTER=" + filepath.Join(t.TempDir(), "failed.jsonl")}
			inURL, outURL = server.URL+"?list=jobs", server.URL+"?list=done"
			in = []string{`{"user":"ada","n":3}`, `{"user":"bob","n":4}`}
			want = []string{`{"square":9,"user":"ada"}`, `{"square":16,"user":"bob"}`} // gojq sorts keys
		case "nats_stream":
			server = brokertest.NATS(t)
			env = []string{"NATS_URL=" + server.URL}
			inURL, outURL = server.URL+"?stream=ORDERS&subject=orders.new", server.URL+"?stream=SHIPPED&subject=shipped.orders&consumer=check"
			in, want = []string{"order 1", "order 2"}, []string{"ORDER 1", "ORDER 2"}
		}
		publish(t, inURL, in)
		return "", env
	}
	ex.check = func(t *testing.T, stdout string) {
		got := drain(t, outURL, len(want), 300*time.Millisecond)
		if !slices.Equal(sorted(got), sorted(want)) {
			t.Fatalf("%s wrote %q, want %q", name, got, want)
		}
	}
	return ex
}
