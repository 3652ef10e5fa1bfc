package cli

import (
	"fmt"
	"io"

	urfave "github.com/urfave/cli/v2"
)

func validateCommand(stdin io.Reader, stdout io.Writer) *urfave.Command {
	return withExitStatus(&urfave.Command{
		Name:      "validate",
		Usage:     "check a pipeline without running it",
		ArgsUsage: "FILE (- for stdin)",
		Description: `Checks everything run checks before it starts, and runs nothing: the file
(each problem at file:line:col), the input files or the glob's matches, that
the output and dead-letter files can be created, and every stage as the run
makes it (an exec plugin's program is found, a wasm module compiles). The
flags are run's, for a pipeline that is valid only with them.`,
		Flags: []urfave.Flag{
			&urfave.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "as for run: the records' `PATH` instead of the pipeline's input"},
			&urfave.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "as for run: the output's `PATH` instead of the pipeline's"},
			&urfave.StringFlag{Name: "dead-letter", Usage: "as for run: the dead-letter `FILE` instead of the pipeline's"},
			&urfave.StringSliceFlag{Name: "set", Usage: "override `KEY=VALUE` of the pipeline, as for run"},
		},
		Action: func(c *urfave.Context) error {
			if c.NArg() != 1 {
				return usagef("validate takes one pipeline FILE, got %d arguments", c.NArg())
			}
			return validate(c.Args().First(), paths{
				input: c.String("input"), output: c.String("output"), deadLetter: c.String("dead-letter"), set: c.StringSlice("set"),
				// The records of a pipeline from stdin are given to run.
				noInput: c.Args().First() == "-" && c.String("input") == "",
			}, stdin, stdout)
		},
	}, "   0    the pipeline is valid and could start\n   2    it is not (each problem at its place), or a usage mistake\n")
}

func validate(file string, f paths, stdin io.Reader, stdout io.Writer) error {
	p, release, err := prepare(file, f, stdin)
	release()
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s: ok: pipeline %q, %d stages\n", file, p.Name, len(p.Stages))
	return err
}
