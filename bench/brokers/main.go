// Command brokers measures flowrun through each broker against the least
// Go program that does the same with the same client library and ack
// mode (consume, upper-case, publish with confirms, then ack), and
// against the seed's kind of consumer: a Python pika worker with prefetch
// 1 that acks each message. Messages are 1 KiB, durable and persistent.
// It starts its own servers (connect/brokertest) and prints a Markdown
// table.
//
//	go run ./bench/brokers               # 20000 messages per run
//	N=5000 go run ./bench/brokers        # fewer, on a loaded machine
//	PREFETCH=256 go run ./bench/brokers  # more unacked at once, for baselines and flowrun
package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/flowrun/flowrun/connect"
	_ "github.com/flowrun/flowrun/connect/all"
	"github.com/flowrun/flowrun/connect/brokertest"
)

const idle = 300 * time.Millisecond

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "brokers:", err)
		os.Exit(1)
	}
}

type target struct {
	name     string
	start    func() (*brokertest.Server, error)
	urls     func(s *brokertest.Server, q string) (in, out string)
	baseline func(ctx context.Context, s *brokertest.Server, in, out string, n int) error
}

func run() error {
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("N")); err == nil && v > 0 {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("PREFETCH")); err == nil && v > 0 {
		prefetch = v
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
	pipeline := filepath.Join(dir, "upper.yaml")
	if err := os.WriteFile(pipeline, []byte("stages: [{use: upper, workers: 4}]\n"), 0o644); err != nil {
		return err
	}
	body := bytes.Repeat([]byte("abcdefghijklmnopqrstuvwxyz012345"), 32) // 1 KiB
	targets := []target{
		{"rabbitmq", brokertest.StartRabbitMQ, func(s *brokertest.Server, q string) (string, string) {
			return s.URL + "?queue=" + q, s.URL + "?queue=" + q
		}, rabbitBaseline},
		{"redis", brokertest.StartRedis, func(s *brokertest.Server, q string) (string, string) {
			return s.URL + "?list=" + q, s.URL + "?list=" + q
		}, redisBaseline},
		{"nats", brokertest.StartNATS, func(s *brokertest.Server, q string) (string, string) {
			return s.URL + "?stream=" + q, s.URL + "?stream=" + q + "&subject=" + q + ".in"
		}, natsBaseline},
	}
	fmt.Printf("load average: %s; prefetch %d\n\n", loadavg(), prefetch)
	fmt.Println("| broker | messages | Go baseline msg/s | flowrun msg/s | flowrun / baseline | flowrun peak RSS (n / 4n) |")
	fmt.Println("|---|---|---|---|---|---|")
	var rabbit *brokertest.Server
	for _, tg := range targets {
		s, err := tg.start()
		if err != nil {
			return err
		}
		ctx := context.Background()
		fill := func(q string, count int) (string, string, error) {
			in, sink := tg.urls(s, q+"-in")
			_, outSink := tg.urls(s, q+"-out")
			return in + "&prefetch=" + strconv.Itoa(prefetch), outSink, publish(ctx, sink, body, count)
		}
		in, out, err := fill("base", n)
		if err != nil {
			return err
		}
		began := time.Now()
		if err := tg.baseline(ctx, s, in, out, n); err != nil {
			return fmt.Errorf("%s baseline: %w", tg.name, err)
		}
		base := float64(n) / time.Since(began).Seconds()

		in, out, err = fill("flowrun", n)
		if err != nil {
			return err
		}
		d, rss, err := runFlowrun(bin, pipeline, in, out)
		if err != nil {
			return fmt.Errorf("%s flowrun: %w", tg.name, err)
		}
		fr := float64(n) / d.Seconds()
		in, out, err = fill("flowrun4", 4*n)
		if err != nil {
			return err
		}
		_, rss4, err := runFlowrun(bin, pipeline, in, out)
		if err != nil {
			return fmt.Errorf("%s flowrun 4n: %w", tg.name, err)
		}
		fmt.Printf("| %s | %d | %.0f | %.0f | %.2f× | %d / %d MiB |\n", tg.name, n, base, fr, fr/base, rss>>10, rss4>>10)
		if tg.name == "rabbitmq" {
			rabbit = s
			defer s.Stop()
		} else {
			s.Stop()
		}
	}
	// The seed's worker: pika, prefetch 1, an ack per message.
	if rabbit != nil {
		m := max(n/10, 500)
		in, _ := rabbit.URL+"?queue=pika-in", ""
		if err := publish(context.Background(), in, body, m); err != nil {
			return err
		}
		began := time.Now()
		cmd := exec.Command(brokertest.Python(), "bench/brokers/pika_worker.py", rabbit.URL, "pika-in", "pika-out", strconv.Itoa(m))
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Printf("\npika worker: %v: %s\n", err, out)
			return nil
		}
		py := float64(m) / time.Since(began).Seconds()
		fmt.Printf("\nPython pika worker (prefetch 1, ack each, %d messages): %.0f msg/s\n", m, py)
	}
	return nil
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return string(bytes.TrimSpace(b))
}

func publish(ctx context.Context, url string, body []byte, n int) error {
	snk, _, err := connect.OpenSink(ctx, url, nil)
	if err != nil {
		return err
	}
	defer snk.Close()
	batch := make([]connect.Message, 0, 500)
	for i := 0; i < n; i++ {
		batch = append(batch, connect.Message{Data: body})
		if len(batch) == cap(batch) || i == n-1 {
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

// runFlowrun drains the input queue into the output one and returns the
// time it took (less the idle wait that ends it) and the peak RSS in KiB.
func runFlowrun(bin, pipeline, in, out string) (time.Duration, int64, error) {
	cmd := exec.Command(bin, "run", "-q", "--progress", "none", "--until-idle", idle.String(), "-i", in, "-o", out, pipeline)
	began := time.Now()
	msg, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("%v: %s", err, msg)
	}
	d := time.Since(began) - idle
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return d, ru.Maxrss, nil
}
