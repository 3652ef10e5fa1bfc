package cli

import (
	"io"

	urfave "github.com/urfave/cli/v2"

	"github.com/flowrun/flowrun/spec"
)

func graphCommand(stdin io.Reader, stdout io.Writer) *urfave.Command {
	return withExitStatus(&urfave.Command{
		Name:      "graph",
		Usage:     "print a pipeline's stage graph (Mermaid or DOT)",
		ArgsUsage: "FILE (- for stdin)",
		Flags: []urfave.Flag{
			&urfave.StringFlag{Name: "format", Value: "mermaid", Usage: "mermaid | dot"},
		},
		Action: func(c *urfave.Context) error {
			if c.NArg() != 1 {
				return usagef("graph takes one pipeline FILE, got %d arguments", c.NArg())
			}
			return graph(c.Args().First(), c.String("format"), stdin, stdout)
		},
	}, "   0    graph printed\n   2    an invalid pipeline, or a usage mistake\n")
}

func graph(file, format string, stdin io.Reader, stdout io.Writer) error {
	var render func(*spec.Pipeline) string
	switch format {
	case "mermaid":
		render = spec.Mermaid
	case "dot":
		render = spec.DOT
	default:
		return usagef("--format %q: want mermaid or dot", format)
	}
	p, err := load(file, spec.Options{}, stdin)
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, render(p))
	return err
}
