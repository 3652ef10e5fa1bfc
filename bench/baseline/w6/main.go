// Command w6 is the hand-written baseline for workload W6, a CPU-bound
// stage: each line of stdin is replaced by the hex SHA-256 digest iterated
// 1000 times (each round hashes the previous round's digest), by
// -workers goroutines, in input order.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"sync"
)

const rounds = 1000

func main() {
	workers := flag.Int("workers", 1, "goroutines hashing records")
	flag.Parse()
	if err := run(*workers); err != nil {
		fmt.Fprintln(os.Stderr, "w6:", err)
		os.Exit(1)
	}
}

// digest appends to dst the hex digest of rec hashed rounds times, each
// round hashing the previous round's digest, as flowrun's hash stage with
// rounds does.
func digest(dst, rec []byte) []byte {
	var hexSum [2 * sha256.Size]byte
	sum := sha256.Sum256(rec)
	for range rounds - 1 {
		sum = sha256.Sum256(sum[:])
	}
	hex.Encode(hexSum[:], sum[:])
	return append(dst, hexSum[:]...)
}

func run(workers int) error {
	type job struct {
		lines [][]byte
		out   chan []byte
	}
	jobs := make(chan job, workers)
	order := make(chan job, workers*2)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				var b []byte
				for _, l := range j.lines {
					b = append(digest(b, l), '\n')
				}
				j.out <- b
			}
		}()
	}
	errc := make(chan error, 1)
	go func() {
		defer close(jobs)
		defer close(order)
		sc := bufio.NewScanner(os.Stdin)
		var lines [][]byte
		for sc.Scan() {
			lines = append(lines, append([]byte(nil), sc.Bytes()...))
			if len(lines) == 16 {
				j := job{lines, make(chan []byte, 1)}
				order <- j
				jobs <- j
				lines = nil
			}
		}
		if len(lines) > 0 {
			j := job{lines, make(chan []byte, 1)}
			order <- j
			jobs <- j
		}
		errc <- sc.Err()
	}()
	out := bufio.NewWriter(os.Stdout)
	for j := range order {
		out.Write(<-j.out)
	}
	wg.Wait()
	if err := <-errc; err != nil {
		return err
	}
	return out.Flush()
}
