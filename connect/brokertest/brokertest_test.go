package brokertest_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/connect/brokertest"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

// Each server starts, answers, survives a restart with its port, and is
// gone after Stop; the embedded NATS server leaves no goroutine behind.
func TestServersStartAndRestart(t *testing.T) {
	// RabbitMQ restarts in its own suite, slowly: not again here.
	for _, kind := range []string{"redis", "nats", "nats-embedded"} {
		t.Run(kind, func(t *testing.T) {
			defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
			s := brokertest.Own(t, kind)
			if s.URL == "" || s.Port == 0 {
				t.Fatalf("server without address: %+v", s)
			}
			if err := s.Restart(); err != nil {
				t.Fatal(err)
			}
			s.Stop()
		})
	}
}
