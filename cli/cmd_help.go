package cli

import (
	"io"

	urfave "github.com/urfave/cli/v2"
)

func helpCommand(stdout io.Writer) *urfave.Command {
	return withExitStatus(&urfave.Command{
		Name:      "help",
		Usage:     "show the commands, or one command's flags and exit statuses",
		ArgsUsage: "[COMMAND]",
		Action: func(c *urfave.Context) error {
			switch c.NArg() {
			case 0:
				urfave.HelpPrinter(stdout, c.App.CustomAppHelpTemplate, c.App)
				return nil
			case 1:
			default:
				return usagef("help takes one COMMAND, got %d arguments", c.NArg())
			}
			name := c.Args().First()
			cmd := c.App.Command(name)
			if cmd == nil {
				return unknownCommand(c.App, name)
			}
			urfave.HelpPrinter(stdout, cmd.CustomHelpTemplate, cmd)
			return nil
		},
	}, "   0    help shown\n   2    no such command\n")
}
