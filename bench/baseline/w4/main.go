// Command w4 is the hand-written baseline for workload W4: the classic
// download/resize/upload pipeline as three goroutine stages of 3, 4 and 5
// workers, each spending 10 ms per item (a stand-in for I/O), joined by
// channels.
package main

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"time"
)

var stageWorkers = []int{3, 4, 5}

const perItem = 10 * time.Millisecond

func main() {
	in := make(chan string)
	go func() {
		defer close(in)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			in <- sc.Text()
		}
	}()
	var ch <-chan string = in
	for _, n := range stageWorkers {
		ch = stage(ch, n)
	}
	out := bufio.NewWriter(os.Stdout)
	for s := range ch {
		fmt.Fprintln(out, s)
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintln(os.Stderr, "w4:", err)
		os.Exit(1)
	}
}

func stage(in <-chan string, workers int) <-chan string {
	out := make(chan string)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range in {
				time.Sleep(perItem)
				out <- s
			}
		}()
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}
