// Command upper is an example flowrun wasm plugin: it upper-cases each line
// it reads on stdin and writes the result as one line on stdout.
//
// Build it as a WASI module for the wasm stage (pipelines/wasm.yaml):
//
//	GOOS=wasip1 GOARCH=wasm go build -o pipelines/wasm/upper.wasm ./pipelines/wasm/upper
//
// The same source builds and runs on the host as a plain filter
// (go run ./pipelines/wasm/upper < file), which is why it needs no build
// constraint: nothing in it is specific to WebAssembly.
//
// A plugin answers every line with exactly one line, the k-th answer for the
// k-th line, and must not wait for more input before answering: it flushes
// its output whenever it has read all the input that has arrived. Buffering
// while more input is at hand is what lets flowrun write records ahead and
// keep the plugin busy.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "upper:", err)
		os.Exit(1)
	}
}

func run(stdin io.Reader, stdout io.Writer) error {
	in := bufio.NewReaderSize(stdin, 64<<10)
	out := bufio.NewWriterSize(stdout, 64<<10)
	var long []byte
	for {
		line, err := in.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: gather it whole.
			long = append(long[:0], line...)
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = in.ReadSlice('\n')
				long = append(long, line...)
			}
			line = long
		}
		if len(line) > 0 {
			line = bytes.TrimSuffix(line, []byte("\n"))
			out.Write(bytes.ToUpper(line))
			out.WriteByte('\n')
		}
		if err == io.EOF {
			return out.Flush()
		}
		if err != nil {
			return err
		}
		// Answer now if no more input is waiting: the runner may be
		// waiting for this answer before it sends the next line.
		if in.Buffered() == 0 {
			if err := out.Flush(); err != nil {
				return err
			}
		}
	}
}
