// Command stuckflowrun is flowrun with one more stage, test.stuck, that
// blocks in a read of a pipe no one writes, ignoring its context: the
// call that only ending the process can end. The CLI's tests build it.
package main

import (
	"context"
	"os"
	"syscall"

	"github.com/flowrun/flowrun/cli"
	"github.com/flowrun/flowrun/stages"
)

func main() {
	stages.Register(stages.Spec{
		Name: "test.stuck",
		Doc:  "Blocks forever in a read(2) of a pipe, ignoring its context.",
		New: func(stages.Config) (stages.Stage, error) {
			return stages.Func(func(context.Context, []byte, [][]byte) ([][]byte, error) {
				var p [2]int
				if err := syscall.Pipe(p[:]); err != nil {
					return nil, err
				}
				var b [1]byte
				syscall.Read(p[0], b[:]) // never returns: the write end stays open
				return nil, nil
			}), nil
		},
	})
	os.Exit(cli.Main())
}
