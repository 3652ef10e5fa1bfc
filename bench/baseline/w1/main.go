// Command w1 is the hand-written baseline for workload W1: the
// single-goroutine bufio loop a good engineer would write for trim, upper,
// grep -v DROP on stdin to stdout.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"unicode/utf8"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "w1:", err)
		os.Exit(1)
	}
}

func run() error {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<30)
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	drop := []byte("DROP")
	for in.Scan() {
		line := upper(bytes.TrimSpace(in.Bytes()))
		if bytes.Contains(line, drop) {
			continue
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	if err := in.Err(); err != nil {
		return err
	}
	return out.Flush()
}

// upper upper-cases b in place when it is ASCII, as flowrun's upper does,
// and falls back to bytes.ToUpper otherwise.
func upper(b []byte) []byte {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return bytes.ToUpper(b)
		}
	}
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return b
}
