package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	urfave "github.com/urfave/cli/v2"

	"github.com/flowrun/flowrun/connect"
	_ "github.com/flowrun/flowrun/connect/all" // the connectors of the default binary
)

func connectorsCommand(stdout io.Writer) *urfave.Command {
	return &urfave.Command{
		Name:      "connectors",
		Usage:     "list the files and brokers input and output can use, and their options",
		ArgsUsage: "[NAME...]",
		Flags: []urfave.Flag{
			&urfave.BoolFlag{Name: "markdown", Usage: "print the table that README.md holds"},
		},
		Action: func(c *urfave.Context) error {
			return listConnectors(stdout, c.Args().Slice(), c.Bool("markdown"))
		},
	}
}

func listConnectors(w io.Writer, names []string, markdown bool) error {
	var list []*connect.Spec
	if len(names) == 0 {
		list = connect.All()
	}
	for _, n := range names {
		var found *connect.Spec
		var all []string
		for _, s := range connect.All() {
			all = append(all, s.Name)
			if s.Name == n || contains(s.Schemes, n) {
				found = s
			}
		}
		if found == nil {
			return usagef("no connector %q%s; `flowrun connectors` lists them", n, connect.Hint(n, all))
		}
		list = append(list, found)
	}
	if markdown {
		_, err := io.WriteString(w, connect.Markdown(list))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, s := range list {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "%s\t%s\n", s.Name, s.URL)
		fmt.Fprintf(tw, "  \t%s\n", s.Doc)
		for _, o := range s.Options {
			typ := o.Type.String()
			if len(o.Enum) > 0 {
				typ = strings.Join(o.Enum, "|")
			}
			if o.Default != "" {
				typ += " = " + o.Default
			}
			fmt.Fprintf(tw, "  %s\t%s (%s): %s\n", o.Name, typ, o.Use, o.Doc)
		}
	}
	return tw.Flush()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ConnectorsMarkdown is the README's table of every registered connector.
func ConnectorsMarkdown() string { return connect.Markdown(connect.All()) }
