// Command latency measures streaming latency: it starts a command (flowrun
// running a pipeline) with a pipe on its stdin, writes one line, times how
// long the answer takes to appear on its stdout, and repeats while the pipe
// stays open. It prints the median, p90 and maximum in milliseconds.
//
//	latency -n 20 -- flowrun run bench/pipelines/w1.yaml --progress none -q
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"time"
)

func main() {
	n := flag.Int("n", 20, "how many lines to time")
	warmup := flag.Int("warmup", 0, "lines sent and answered first, untimed (a run on a broker waits for a worker to join)")
	gap := flag.Duration("gap", 20*time.Millisecond, "the pause between lines, so that each one travels alone")
	limit := flag.Duration("timeout", 5*time.Second, "the longest to wait for one answer")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: latency [-n N] -- COMMAND [ARG...]")
		os.Exit(2)
	}
	lat, err := measure(flag.Args(), *n, *warmup, *gap, *limit)
	if err != nil {
		fmt.Fprintln(os.Stderr, "latency:", err)
		os.Exit(1)
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	fmt.Printf("%.3f %.3f %.3f\n", ms(lat[len(lat)/2]), ms(lat[len(lat)*9/10]), ms(lat[len(lat)-1]))
}

// measure returns the time from writing each line to reading its answer.
// The first warmup lines are not timed.
func measure(args []string, n, warmup int, gap, limit time.Duration) ([]time.Duration, error) {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	lines := make(chan error)
	go func() {
		r := bufio.NewReader(stdout)
		for {
			_, err := r.ReadString('\n')
			lines <- err
			if err != nil {
				return
			}
		}
	}()
	var lat []time.Duration
	var werr error
	for i := range warmup + n {
		began := time.Now()
		if _, err := fmt.Fprintf(stdin, "  rec-%06d latency probe  \n", i); err != nil {
			werr = err
			break
		}
		select {
		case err := <-lines:
			if err != nil {
				werr = fmt.Errorf("line %d: output ended: %w", i, err)
			}
		case <-time.After(limit):
			werr = fmt.Errorf("line %d: no answer within %s", i, limit)
		}
		if werr != nil {
			break
		}
		if i >= warmup {
			lat = append(lat, time.Since(began))
		}
		time.Sleep(gap)
	}
	stdin.Close()
	if werr != nil {
		cmd.Process.Kill()
	}
	// Drain what is left so that the reader goroutine ends with the output.
	go func() {
		for err := range lines {
			if err != nil {
				return
			}
		}
	}()
	err = cmd.Wait()
	if werr != nil {
		return nil, werr
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return lat, nil
}
