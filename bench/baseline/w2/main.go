// Command w2 is the hand-written baseline for workload W2: two workers
// decode JSON lines into a typed struct with encoding/json, keep those
// with active && score > 50, add name_upper, and the output stays in input
// order. Lines travel in batches, as a good engineer would send them, so
// that channel operations do not dominate.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

const (
	workers   = 2
	batchSize = 256
)

type record struct {
	ID        int64    `json:"id"`
	Name      string   `json:"name"`
	Score     float64  `json:"score"`
	Tags      []string `json:"tags"`
	Active    bool     `json:"active"`
	NameUpper string   `json:"name_upper"`
}

// job is a batch of input lines and where its output goes; the writer
// receives jobs in input order, which keeps the output ordered.
type job struct {
	lines [][]byte
	out   chan []byte
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "w2:", err)
		os.Exit(1)
	}
}

func run() error {
	jobs := make(chan job, workers*2)
	order := make(chan job, workers*4)
	errs := make(chan error, 1)
	for range workers {
		go func() {
			for j := range jobs {
				b, err := process(j.lines)
				if err != nil {
					// A malformed record ends the run, as a script's would.
					fmt.Fprintln(os.Stderr, "w2:", err)
					os.Exit(1)
				}
				j.out <- b
			}
		}()
	}
	go func() {
		defer close(jobs)
		defer close(order)
		in := bufio.NewScanner(os.Stdin)
		in.Buffer(make([]byte, 64<<10), 1<<30)
		var lines [][]byte
		flush := func() {
			j := job{lines: lines, out: make(chan []byte, 1)}
			order <- j
			jobs <- j
			lines = nil
		}
		for in.Scan() {
			lines = append(lines, append([]byte(nil), in.Bytes()...))
			if len(lines) == batchSize {
				flush()
			}
		}
		if len(lines) > 0 {
			flush()
		}
		if err := in.Err(); err != nil {
			errs <- err
		}
	}()
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	for j := range order {
		out.Write(<-j.out)
	}
	select {
	case err := <-errs:
		return err
	default:
	}
	return out.Flush()
}

func process(lines [][]byte) ([]byte, error) {
	var out []byte
	for _, line := range lines {
		var r record
		if err := json.Unmarshal(line, &r); err != nil {
			return out, err
		}
		if !r.Active || r.Score <= 50 {
			continue
		}
		r.NameUpper = strings.ToUpper(r.Name)
		b, err := json.Marshal(&r)
		if err != nil {
			return out, err
		}
		out = append(append(out, b...), '\n')
	}
	return out, nil
}
