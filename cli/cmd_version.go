package cli

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	urfave "github.com/urfave/cli/v2"
)

func versionCommand(stdout io.Writer) *urfave.Command {
	return withExitStatus(&urfave.Command{
		Name:  "version",
		Usage: "print flowrun's version, the revision it was built from and the Go version (as --version)",
		Action: func(c *urfave.Context) error {
			if c.NArg() > 0 {
				return usagef("version takes no arguments")
			}
			_, err := io.WriteString(stdout, versionText())
			return err
		},
	}, "   0    always\n")
}

// versionText says which flowrun this is: the module's version, the VCS
// revision it was built from (as go build records it), and the Go that
// built it.
func versionText() string {
	bi, _ := debug.ReadBuildInfo()
	return formatVersion(bi)
}

// formatVersion is versionText for the build information bi, which may be
// nil.
func formatVersion(bi *debug.BuildInfo) string {
	version, revision, when, modified := "(devel)", "", "", false
	if bi != nil {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				revision = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "flowrun %s\n", version)
	switch {
	case revision == "":
		b.WriteString("revision unknown (not built from a git checkout)\n")
	default:
		fmt.Fprintf(&b, "revision %s", revision)
		if when != "" {
			fmt.Fprintf(&b, " (%s)", when)
		}
		if modified {
			b.WriteString(", with uncommitted changes")
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return b.String()
}
