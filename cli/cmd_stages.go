package cli

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	urfave "github.com/urfave/cli/v2"

	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

func stagesCommand(stdout io.Writer) *urfave.Command {
	return withExitStatus(&urfave.Command{
		Name:      "stages",
		Usage:     "list the built-in stages and their options",
		ArgsUsage: "[NAME...]",
		Flags: []urfave.Flag{
			&urfave.BoolFlag{Name: "markdown", Usage: "print the table that README.md holds"},
		},
		Action: func(c *urfave.Context) error {
			return listStages(stdout, c.Args().Slice(), c.Bool("markdown"))
		},
	}, "   0    stages listed\n   2    a NAME that is no stage, or a usage mistake\n")
}

func listStages(w io.Writer, names []string, markdown bool) error {
	var list []stages.Spec
	if len(names) == 0 {
		list = stages.All()
	}
	for _, n := range names {
		s, ok := stages.Lookup(n)
		if !ok {
			return usagef("no stage %q%s; `flowrun stages` lists them", n, spec.DidYouMean(n, stages.Names()))
		}
		list = append(list, s)
	}
	if markdown {
		_, err := io.WriteString(w, StagesMarkdown(list))
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, s := range list {
		if i > 0 {
			fmt.Fprintln(tw)
		}
		fmt.Fprintf(tw, "%s\t%s\n", s.Name, s.Doc)
		for _, o := range s.Options {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", o.Name, optionType(o), o.Doc)
		}
		if note := limits(s); note != "" {
			fmt.Fprintf(tw, "  \t\t%s\n", note)
		}
	}
	return tw.Flush()
}

// optionType says an option's type and its default, or that it is
// required.
func optionType(o stages.Option) string {
	t := o.Type.String()
	if len(o.Enum) > 0 {
		t = strings.Join(o.Enum, "|")
	}
	switch {
	case o.Required:
		return t + " (required)"
	case o.Default != nil && o.Type == stages.Size:
		return t + " = " + formatSize(o.Default.(int))
	case o.Default != nil:
		return t + " = " + formatDefault(o.Default)
	}
	return t
}

func formatDefault(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("%q", v)
	case []string:
		return "[" + strings.Join(v, ", ") + "]"
	case map[string]string:
		if len(v) == 0 {
			return "{}"
		}
	}
	return fmt.Sprint(v)
}

// formatSize writes a size in the largest binary unit that divides it.
func formatSize(n int) string {
	for _, u := range []struct {
		name string
		size int
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d%s", n/u.size, u.name)
		}
	}
	return fmt.Sprint(n)
}

// StagesMarkdown renders the stage reference as the Markdown table in
// README.md; a test keeps the two identical.
func StagesMarkdown(list []stages.Spec) string {
	var b strings.Builder
	b.WriteString("| stage | what it does | options |\n|---|---|---|\n")
	for _, s := range list {
		var opts []string
		for _, o := range s.Options {
			opts = append(opts, fmt.Sprintf("`%s` %s: %s", o.Name, strings.ReplaceAll(optionType(o), "|", "\\|"), o.Doc))
		}
		doc := s.Doc
		if note := limits(s); note != "" {
			doc += " " + strings.ToUpper(note[:1]) + note[1:] + "."
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", s.Name, strings.ReplaceAll(doc, "|", "\\|"), strings.ReplaceAll(strings.Join(opts, "<br>"), "\n", " "))
	}
	return b.String()
}

// limits says what a stage's spec imposes beyond its options.
func limits(s stages.Spec) string {
	var notes []string
	if s.MaxWorkers > 0 {
		notes = append(notes, fmt.Sprintf("at most %d worker(s)", s.MaxWorkers))
	}
	if s.DefaultTimeout > 0 {
		notes = append(notes, fmt.Sprintf("timeout %v unless the stage sets one", s.DefaultTimeout))
	}
	return strings.Join(notes, "; ")
}
