package nats_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/brokertest"
	"github.com/flowrun/flowrun/connect/connecttest"
	_ "github.com/flowrun/flowrun/connect/nats"
)

func TestMain(m *testing.M) { brokertest.Main(m) }

func urls(s *brokertest.Server, name string) (string, string) {
	in := s.URL + "?stream=" + name + "&ack_wait=2s"
	return in, s.URL + "?stream=" + name + "&subject=" + name + ".in"
}

// The suite against both servers: the one embedded in Go and Debian's
// nats-server binary.
func TestSuite(t *testing.T) {
	for _, kind := range []string{"nats-embedded", "nats"} {
		t.Run(kind, func(t *testing.T) {
			connecttest.Run(t, connecttest.Broker{
				URLs: urls,
				Shared: func(t testing.TB) *brokertest.Server {
					if kind == "nats" {
						return brokertest.NATS(t)
					}
					return brokertest.NATSEmbedded(t)
				},
				Own: func(t testing.TB) *brokertest.Server { return brokertest.Own(t, kind) },
			})
		})
	}
}

// A message published twice with the same id (a re-publish after a
// crash) is in the stream once.
func TestRepublishIsDeduplicated(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := brokertest.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in, out := urls(srv, "dedupe")
	connecttest.Publish(t, ctx, out, 1, 3)
	connecttest.Publish(t, ctx, out, 1, 3) // the same ids again
	src, _, err := connect.OpenSource(ctx, in, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	got := connecttest.Take(t, ctx, src, 3)
	if err := src.Settle(ctx, got, connect.Ack); err != nil {
		t.Fatal(err)
	}
	connecttest.Nothing(t, src)
}

// Core NATS: what is published while the subscriber is there arrives.
func TestCoreSubject(t *testing.T) {
	srv := brokertest.NATSEmbedded(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	u := srv.URL + "?subject=core.test"
	src, _, err := connect.OpenSource(ctx, u, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	connecttest.Publish(t, ctx, u, 1, 5)
	got := connecttest.Take(t, ctx, src, 5)
	if fmt.Sprint(len(got)) != "5" || string(got[4].Data) != "m5" {
		t.Fatalf("got %v", got)
	}
}

func TestStartErrors(t *testing.T) {
	srv := brokertest.NATSEmbedded(t)
	port, _ := brokertest.FreePort()
	connecttest.StartErrors(t, [][2]string{
		{fmt.Sprintf("nats://127.0.0.1:%d?stream=s", port), fmt.Sprintf("nats nats://127.0.0.1:%d: cannot connect: no server answers", port)},
		{srv.URL + "?stream=flowrun-missing&create=false", `stream "flowrun-missing": no such stream`},
	})
}

// A stream the server refuses (its subject is another stream's) is said
// in the server's words, not the client's "API error: code=400
// err_code=10065 description=...".
func TestStreamRefused(t *testing.T) {
	srv := brokertest.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snk, _, err := connect.OpenSink(ctx, srv.URL+"?stream=flowrun-first&subject=flowrun-taken", nil)
	if err != nil {
		t.Fatal(err)
	}
	snk.Close()
	_, _, err = connect.OpenSink(ctx, srv.URL+"?stream=flowrun-second&subject=flowrun-taken", nil)
	want := `stream "flowrun-second": subjects overlap with an existing stream`
	var ce *connect.Error
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "err_code") {
		t.Errorf("got %v, want a *connect.Error with %q", err, want)
	}
}

// An input whose subject the stream does not take is refused at start,
// by the embedded server (which takes such a consumer, that then never
// gets a message) as by Debian's.
func TestSourceSubjectNotInStream(t *testing.T) {
	for _, kind := range []string{"nats-embedded", "nats"} {
		t.Run(kind, func(t *testing.T) {
			srv := brokertest.NATS(t)
			if kind == "nats-embedded" {
				srv = brokertest.NATSEmbedded(t)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			made, _, err := connect.OpenSource(ctx, srv.URL+"?stream=flowrun-filter&consumer=maker", nil, 1) // on flowrun-filter.>
			if err != nil {
				t.Fatal(err)
			}
			made.Close()
			for i, ok := range []string{"flowrun-filter.a", "flowrun-filter.*", "flowrun-filter.>", "flowrun-filter.a.>", ">"} {
				src, _, err := connect.OpenSource(ctx, srv.URL+"?stream=flowrun-filter&consumer=c"+strconv.Itoa(i)+"&subject="+ok, nil, 1)
				if err != nil {
					t.Fatalf("%s: %v", ok, err)
				}
				src.Close()
			}
			for _, bad := range []string{"elsewhere", "flowrun-filter", "*", "other.>"} {
				_, _, err = connect.OpenSource(ctx, srv.URL+"?stream=flowrun-filter&subject="+bad, nil, 1)
				want := fmt.Sprintf(`stream "flowrun-filter" does not take subject %q (its subjects: flowrun-filter.>)`, bad)
				var ce *connect.Error
				if !errors.As(err, &ce) || !strings.Contains(err.Error(), want) {
					t.Errorf("%s: got %v, want a *connect.Error with %q", bad, err, want)
				}
			}
		})
	}
}

// Output to a stream that does not take the subject (made by an input
// before, on STREAM.>) is refused at start, naming both: its publishes
// would find no stream, and Flush would wait for PubAcks for ever.
func TestSinkSubjectNotInStream(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := brokertest.NATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	src, _, err := connect.OpenSource(ctx, srv.URL+"?stream=made-by-input", nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	src.Close()
	for _, subject := range []string{"other.in", "made-by-input", "made-by-input.a.b"} {
		snk, _, err := connect.OpenSink(ctx, srv.URL+"?stream=made-by-input&subject="+subject, nil)
		if subject == "made-by-input.a.b" {
			if err != nil {
				t.Fatalf("%s: %v, want it taken by made-by-input.>", subject, err)
			}
			snk.Close()
			continue
		}
		var ce *connect.Error
		want := fmt.Sprintf(`stream "made-by-input" does not take subject %q (its subjects: made-by-input.>)`, subject)
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), want) {
			if snk != nil {
				snk.Close()
			}
			t.Fatalf("%s: got %v, want a *connect.Error with %q", subject, err, want)
		}
	}
}
