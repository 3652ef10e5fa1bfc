package connect

import (
	"fmt"
	"strings"
)

// Markdown returns the README's table of connectors and their options,
// from the registry.
func Markdown(list []*Spec) string {
	var b strings.Builder
	b.WriteString("| connector | URL | option | for | type | default | what it does |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, s := range list {
		fmt.Fprintf(&b, "| **%s** | `%s` | | | | | %s |\n", s.Name, s.URL, cell(s.Doc))
		for _, o := range s.Options {
			def := ""
			if o.Default != "" {
				def = "`" + o.Default + "`"
			}
			typ := o.Type.String()
			if len(o.Enum) > 0 {
				typ = strings.Join(o.Enum, " \\| ")
			}
			fmt.Fprintf(&b, "| | | `%s` | %s | %s | %s | %s |\n", o.Name, o.Use, typ, def, cell(o.Doc))
		}
	}
	return b.String()
}

func cell(s string) string { return strings.ReplaceAll(s, "|", "\\|") }
