// Command timeit runs a command once with stdin from a file and stdout to
// a file (or /dev/null), and prints its wall time in seconds and its peak
// resident set size in KiB: "0.512345 10240". bench/run.sh uses it instead
// of bash's time so that no shell start-up is measured and the RSS comes
// from the kernel (getrusage) without /usr/bin/time.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

func main() {
	in := flag.String("in", "/dev/null", "the file the command reads on stdin")
	out := flag.String("out", "/dev/null", "the file the command writes its stdout to")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: timeit [-in FILE] [-out FILE] -- COMMAND [ARG...]")
		os.Exit(2)
	}
	if err := run(*in, *out, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "timeit:", err)
		os.Exit(1)
	}
}

func run(in, out string, args []string) error {
	stdin, err := os.Open(in)
	if err != nil {
		return err
	}
	defer stdin.Close()
	stdout, err := os.Create(out)
	if err != nil {
		return err
	}
	defer stdout.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, os.Stderr
	began := time.Now()
	err = cmd.Run()
	wall := time.Since(began)
	if err != nil {
		return fmt.Errorf("%s: %w", args[0], err)
	}
	var rss int64
	if u, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = u.Maxrss // KiB on Linux
	}
	fmt.Printf("%.6f %d\n", wall.Seconds(), rss)
	return nil
}
