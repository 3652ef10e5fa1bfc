package cli

import (
	"fmt"
	"io"

	urfave "github.com/urfave/cli/v2"

	"github.com/flowrun/flowrun/spec"
)

func validateCommand(stdin io.Reader, stdout io.Writer) *urfave.Command {
	return withExitStatus(&urfave.Command{
		Name:      "validate",
		Usage:     "check a pipeline without running it",
		ArgsUsage: "FILE (- for stdin)",
		Flags: []urfave.Flag{
			&urfave.StringSliceFlag{Name: "set", Usage: "override `KEY=VALUE` of the pipeline, as for run"},
		},
		Action: func(c *urfave.Context) error {
			if c.NArg() != 1 {
				return usagef("validate takes one pipeline FILE, got %d arguments", c.NArg())
			}
			return validate(c.Args().First(), c.StringSlice("set"), stdin, stdout)
		},
	}, "   0    the pipeline is valid and could start\n   2    it is not (each problem at file:line:col), or a usage mistake\n")
}

func validate(file string, set []string, stdin io.Reader, stdout io.Writer) error {
	p, err := load(file, spec.Options{Set: set}, stdin)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s: ok: pipeline %q, %d stages\n", file, p.Name, len(p.Stages))
	return err
}
