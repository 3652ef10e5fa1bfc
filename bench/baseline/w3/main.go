// Command w3 is a second baseline for workload W3: the least a Go program
// can do to pass stdin through a plugin that answers each line with one
// line — mawk -W interactive, as flowrun's exec stream stage runs it —
// writing everything ahead from one goroutine and reading the answers in
// another. It shows what the pipe protocol itself costs, apart from
// flowrun.
package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "w3:", err)
		os.Exit(1)
	}
}

func run() error {
	cmd := exec.Command("mawk", "-W", "interactive", "{print toupper($0); fflush()}")
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	written := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(in, 64<<10)
		_, err := bufio.NewReaderSize(os.Stdin, 64<<10).WriteTo(bw)
		if err == nil {
			err = bw.Flush()
		}
		in.Close()
		written <- err
	}()
	w := bufio.NewWriterSize(os.Stdout, 64<<10)
	if _, err := bufio.NewReaderSize(out, 64<<10).WriteTo(w); err != nil {
		return err
	}
	if err := <-written; err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return cmd.Wait()
}
