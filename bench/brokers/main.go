// Command brokers measures flowrun through each broker, side by side in
// one run, against the least Go program that does the same with the same
// client library and ack mode (baseline.go: consume, upper-case, publish
// and wait for the confirm, then ack), and against the seed's kind of
// worker: Python, one message at a time (pika_worker.py: prefetch 1, an
// ack per message; redis_worker.py: BLMOVE, RPUSH, LREM). Messages are
// 1 KiB, queues durable and messages persistent; the servers are started
// by connect/brokertest (Redis with appendfsync always, JetStream on
// file storage).
//
// Each round runs the baseline, flowrun and the Python worker one after
// the other on fresh queues, so that all three see the same machine; the
// table gives the medians. A rate is counted from the first result in
// the output queue to the last (the bench polls its length), so start-up
// and flowrun's --until-idle wait count for nobody. Then flowrun drains
// BIG queued messages once: its peak RSS there beside that at N shows
// whether memory grows with the queue.
//
//	bench/brokers/run.sh                   # N=20000 BIG=200000 RUNS=3
//	QUICK=1 bench/brokers/run.sh           # N=5000 BIG=50000 RUNS=1, a smoke test
//	BROKERS="nats" RUNS=5 bench/brokers/run.sh
//	PREFETCH=64 bench/brokers/run.sh       # instead of flowrun's default, for both
//	PROFILE=/tmp/p bench/brokers/run.sh    # CPU profiles of the flowrun runs: /tmp/p/BROKER-N.prof
package main

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"

	"github.com/flowrun/flowrun/connect"
	_ "github.com/flowrun/flowrun/connect/all"
	"github.com/flowrun/flowrun/connect/brokertest"
)

// workers is the benchmark pipeline's: upper with 4 workers.
const (
	workers  = 4
	pipeline = "stages: [{use: upper, workers: 4}]\n"
	idle     = 3 * time.Second
)

var body = bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz012345"), 32) // 1 KiB

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "brokers:", err)
		os.Exit(1)
	}
}

func env(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// broker is one broker's part of the benchmark.
type broker struct {
	name  string
	start func() (*brokertest.Server, error)
	// in and out are flowrun's URLs for queue q.
	in, out  func(s *brokertest.Server, q string) string
	baseline func(ctx context.Context, serverURL, in, out string, prefetch, n int) error
	// python runs the seed's kind of worker on n messages from q-in to q-out.
	python func(s *brokertest.Server, in, out string, n int) *exec.Cmd
	// client opens a client that counts the messages in a queue.
	client func(s *brokertest.Server) (queues, error)
}

// queues counts the messages in a queue, and deletes queues.
type queues struct {
	length func(q string) (int, error)
	drop   func(q ...string)
	close  func()
}

type result struct {
	base, flowrun, py []float64 // msg/s per round
	rss               int64     // peak RSS in KiB at n, the most of the rounds
	rssBig            int64
}

func run() error {
	n, big, runs, pyN := env("N", 20000), env("BIG", 200000), env("RUNS", 3), env("PY_N", 4000)
	if os.Getenv("QUICK") == "1" {
		n, big, runs, pyN = env("N", 5000), env("BIG", 50000), env("RUNS", 1), env("PY_N", 2000)
	}
	prefetch := connect.DefaultPrefetch(workers)
	given := env("PREFETCH", 0)
	if given > 0 {
		prefetch = given
	}
	dir, err := os.MkdirTemp("", "flowrun-bench-brokers")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "flowrun")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		return fmt.Errorf("build: %v: %s", err, out)
	}
	pfile := filepath.Join(dir, "upper.yaml")
	if err := os.WriteFile(pfile, []byte(pipeline), 0o644); err != nil {
		return err
	}
	want := strings.Fields(os.Getenv("BROKERS"))
	loadStart := loadavg()
	var rows []string
	for _, b := range brokers() {
		if len(want) > 0 && !slices.Contains(want, b.name) {
			continue
		}
		s, err := b.start()
		if err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		res, err := measure(b, s, bin, pfile, prefetch, given, n, big, runs, pyN)
		s.Stop()
		if err != nil {
			return fmt.Errorf("%s: %w", b.name, err)
		}
		base, fr, py := median(res.base), median(res.flowrun), median(res.py)
		pyRate, pyRatio := "–", "–"
		if py > 0 {
			pyRate, pyRatio = fmt.Sprintf("%.0f", py), fmt.Sprintf("%.1f×", fr/py)
		}
		rows = append(rows, fmt.Sprintf("| %s | %d | %.0f | %.0f | %.2f× | %s | %s | %.0f / %.0f MiB |",
			b.name, prefetch, base, fr, fr/base, pyRate, pyRatio, float64(res.rss)/1024, float64(res.rssBig)/1024))
	}
	fmt.Printf("flowrun through brokers, %s; 1 KiB persistent messages, %d per run (Python: %d), median of %d rounds; load average %s → %s\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), n, pyN, runs, loadStart, loadavg())
	fmt.Printf("| broker | prefetch | Go baseline msg/s | flowrun msg/s | flowrun / baseline | Python worker msg/s | flowrun / Python | flowrun peak RSS, %d / %d queued |\n", n, big)
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		fmt.Println(r)
	}
	return nil
}

func brokers() []broker {
	py := func(script string) func(s *brokertest.Server, in, out string, n int) *exec.Cmd {
		return func(s *brokertest.Server, in, out string, n int) *exec.Cmd {
			return exec.Command(brokertest.Python(), filepath.Join("bench", "brokers", script), s.URL, in, out, strconv.Itoa(n))
		}
	}
	return []broker{
		{
			name:     "rabbitmq",
			start:    brokertest.StartRabbitMQ,
			in:       func(s *brokertest.Server, q string) string { return s.URL + "?queue=" + q },
			out:      func(s *brokertest.Server, q string) string { return s.URL + "?queue=" + q },
			baseline: rabbitBaseline,
			python:   py("pika_worker.py"),
			client: func(s *brokertest.Server) (queues, error) {
				conn, err := amqp.Dial(s.URL)
				if err != nil {
					return queues{}, err
				}
				ch, err := conn.Channel()
				if err != nil {
					conn.Close()
					return queues{}, err
				}
				return queues{
					length: func(q string) (int, error) {
						qu, err := ch.QueueDeclare(q, true, false, false, false, nil)
						return qu.Messages, err
					},
					drop: func(qs ...string) {
						for _, q := range qs {
							ch.QueueDelete(q, false, false, false)
						}
					},
					close: func() { conn.Close() },
				}, nil
			},
		},
		{
			name:     "redis",
			start:    brokertest.StartRedis,
			in:       func(s *brokertest.Server, q string) string { return s.URL + "?list=" + q },
			out:      func(s *brokertest.Server, q string) string { return s.URL + "?list=" + q },
			baseline: redisBaseline,
			python:   py("redis_worker.py"),
			client: func(s *brokertest.Server) (queues, error) {
				opt, err := redis.ParseURL(s.URL)
				if err != nil {
					return queues{}, err
				}
				c := redis.NewClient(opt)
				return queues{
					length: func(q string) (int, error) {
						n, err := c.LLen(context.Background(), q).Result()
						return int(n), err
					},
					drop:  func(qs ...string) { c.Del(context.Background(), qs...) },
					close: func() { c.Close() },
				}, nil
			},
		},
		{
			name:     "nats",
			start:    brokertest.StartNATS,
			in:       func(s *brokertest.Server, q string) string { return s.URL + "?stream=" + q },
			out:      func(s *brokertest.Server, q string) string { return s.URL + "?stream=" + q + "&subject=" + q + ".in" },
			baseline: natsBaseline,
			client: func(s *brokertest.Server) (queues, error) {
				nc, err := nats.Connect(s.URL)
				if err != nil {
					return queues{}, err
				}
				js, err := jetstream.New(nc)
				if err != nil {
					nc.Close()
					return queues{}, err
				}
				length := func(q string) (int, error) {
					st, err := js.Stream(context.Background(), q)
					if errors.Is(err, jetstream.ErrStreamNotFound) {
						return 0, nil
					}
					if err != nil {
						return 0, err
					}
					info, err := st.Info(context.Background())
					if err != nil {
						return 0, err
					}
					return int(info.State.Msgs), nil
				}
				drop := func(qs ...string) {
					for _, q := range qs {
						js.DeleteStream(context.Background(), q)
					}
				}
				return queues{length: length, drop: drop, close: nc.Close}, nil
			},
		},
	}
}

func measure(b broker, s *brokertest.Server, bin, pfile string, prefetch, given, n, big, runs, pyN int) (result, error) {
	var res result
	ctx := context.Background()
	qs, err := b.client(s)
	if err != nil {
		return res, err
	}
	defer qs.close()
	length := qs.length
	q := 0
	// queues fills a fresh input queue with count messages and returns
	// its name and the output queue's.
	queues := func(kind string, count int) (string, string, error) {
		q++
		in, out := fmt.Sprintf("%s%d-in", kind, q), fmt.Sprintf("%s%d-out", kind, q)
		return in, out, fill(ctx, b.out(s, in), count)
	}
	flowrun := func(count int) (float64, int64, error) {
		in, out, err := queues("flowrun", count)
		if err != nil {
			return 0, 0, err
		}
		inURL := b.in(s, in)
		if given > 0 {
			inURL += "&prefetch=" + strconv.Itoa(given)
		}
		args := []string{"run", "-q", "--progress", "none", "--until-idle", idle.String(), "-i", inURL, "-o", b.out(s, out)}
		if dir := os.Getenv("PROFILE"); dir != "" {
			args = append(args, "--cpuprofile", filepath.Join(dir, fmt.Sprintf("%s-%d.prof", b.name, count)))
		}
		cmd := exec.Command(bin, append(args, pfile)...)
		var msg bytes.Buffer
		cmd.Stdout, cmd.Stderr = &msg, &msg
		if err := cmd.Start(); err != nil {
			return 0, 0, err
		}
		rate, werr := watch(length, out, count, cmd.Wait)
		qs.drop(in, out)
		if werr != nil {
			return 0, 0, fmt.Errorf("flowrun: %v: %s", werr, msg.Bytes())
		}
		return rate, cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss, nil
	}
	for round := range runs {
		in, out, err := queues("base", n)
		if err != nil {
			return res, err
		}
		rate, err := watch(length, out, n, func() error {
			return b.baseline(ctx, s.URL, b.in(s, in), b.out(s, out), prefetch, n)
		})
		qs.drop(in, out)
		if err != nil {
			return res, fmt.Errorf("baseline: %w", err)
		}
		res.base = append(res.base, rate)

		rate, rss, err := flowrun(n)
		if err != nil {
			return res, err
		}
		res.flowrun = append(res.flowrun, rate)
		res.rss = max(res.rss, rss)

		if b.python != nil {
			in, out, err := queues("py", pyN)
			if err != nil {
				return res, err
			}
			cmd := b.python(s, in, out, pyN)
			rate, err := watch(length, out, pyN, func() error {
				if msg, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("%v: %s", err, msg)
				}
				return nil
			})
			qs.drop(in, out)
			if err != nil {
				return res, fmt.Errorf("python worker: %w", err)
			}
			res.py = append(res.py, rate)
		}
		py := "–"
		if len(res.py) > round {
			py = fmt.Sprintf("%.0f", res.py[round])
		}
		fmt.Fprintf(os.Stderr, "%s round %d: baseline %.0f, flowrun %.0f, python %s msg/s; load %s\n",
			b.name, round+1, res.base[round], res.flowrun[round], py, loadavg())
	}
	_, rss, err := flowrun(big)
	if err != nil {
		return res, err
	}
	res.rssBig = rss
	return res, nil
}

// watch runs work while polling queue out, and returns the rate at which
// it grew from its first message to its count-th: messages per second
// of steady work, without anyone's start-up or wait at the end. It fails
// if work fails or the queue does not hold count messages at the end.
func watch(length func(string) (int, error), out string, count int, work func() error) (float64, error) {
	errc := make(chan error, 1)
	go func() { errc <- work() }()
	var first, last time.Time
	var werr error
	finished := false
	for {
		got, err := length(out)
		now := time.Now()
		if err == nil && got > 0 && first.IsZero() {
			first = now
		}
		if err == nil && got >= count {
			last = now
			break
		}
		if finished {
			if werr == nil {
				werr = fmt.Errorf("%d of %d messages in %s at the end", got, count, out)
			}
			return 0, werr
		}
		select {
		case werr = <-errc:
			finished = true
		case <-time.After(5 * time.Millisecond):
		}
	}
	if !finished {
		werr = <-errc
	}
	if werr != nil {
		return 0, werr
	}
	return float64(count-1) / max(last.Sub(first), time.Millisecond).Seconds(), nil
}

// fill publishes count messages into the queue at url.
func fill(ctx context.Context, url string, count int) error {
	snk, _, err := connect.OpenSink(ctx, url, nil)
	if err != nil {
		return err
	}
	defer snk.Close()
	batch := make([]connect.Message, 0, 1000)
	for i := range count {
		batch = append(batch, connect.Message{Data: body})
		if len(batch) == cap(batch) || i == count-1 {
			if err := snk.Write(ctx, batch); err != nil {
				return err
			}
			if err := snk.Flush(ctx); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.SortFunc(s, cmp.Compare)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
