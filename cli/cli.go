package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"

	urfave "github.com/urfave/cli/v2"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
	_ "github.com/flowrun/flowrun/stages/all" // the families of built-in stages register themselves
)

// Exit codes, as DESIGN.md and every command's help promise them.
const (
	ExitOK       = 0   // every record done
	ExitFailed   = 1   // the run failed
	ExitUsage    = 2   // a usage mistake or an invalid pipeline
	ExitPartial  = 3   // finished, but records were skipped or dead-lettered
	ExitSignaled = 130 // stopped by a signal, after draining
)

// exitStatusHelp is the app's help's EXIT STATUS section: every code any
// command returns. Each command's help lists only its own.
const exitStatusHelp = `EXIT STATUS:
   0    every record done
   1    the run failed (a record failed a stage with on_error: fail, or I/O failed)
   2    usage mistake, invalid pipeline, or a run that could not start
   3    finished, but records were skipped or dead-lettered
   130  stopped by SIGINT, SIGTERM or SIGHUP after draining what was in flight
        (or, on a second signal, aborted)
`

// withExitStatus gives c a help that ends with its own EXIT STATUS
// section, status being its lines.
func withExitStatus(c *urfave.Command, status string) *urfave.Command {
	c.CustomHelpTemplate = urfave.CommandHelpTemplate + "\nEXIT STATUS:\n" + status
	return c
}

// Main runs the CLI on the process's arguments and standard streams and
// returns the exit code, for os.Exit.
func Main() int {
	ownProcess = true
	return Run(context.Background(), os.Args, os.Stdin, os.Stdout, os.Stderr)
}

// usageError is a mistake in how flowrun was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// load reads and validates a pipeline: the file, or standard input when
// file is "-". A file that cannot be read is a usage mistake, like an
// invalid one.
func load(file string, opts spec.Options, stdin io.Reader) (*spec.Pipeline, error) {
	var p *spec.Pipeline
	var err error
	if file == "-" {
		// One byte past the limit is enough for Parse to refuse it.
		data, rerr := io.ReadAll(io.LimitReader(stdin, spec.MaxFileSize+1))
		if rerr != nil {
			return nil, usagef("reading the pipeline from stdin: %v", rerr)
		}
		p, err = spec.Parse(spec.Stdin, data, opts)
	} else {
		p, err = spec.Load(file, opts)
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return nil, usagef("%s", pathProblem(pe, "a pipeline file"))
	}
	return p, err
}

// pathProblem says in words why the file at pe.Path could not be read
// ("p.yaml: no such file"), not as the system call that failed ("open
// p.yaml: no such file or directory"). want is what the file should have
// been, for a directory in its place.
func pathProblem(pe *fs.PathError, want string) string {
	switch {
	case errors.Is(pe.Err, fs.ErrNotExist), errors.Is(pe.Err, syscall.ENOTDIR):
		return pe.Path + ": no such file"
	case errors.Is(pe.Err, syscall.EISDIR):
		return pe.Path + " is a directory, not " + want
	case errors.Is(pe.Err, fs.ErrPermission):
		return pe.Path + " cannot be read: permission denied"
	}
	return pe.Path + ": " + pe.Err.Error()
}

// outcome carries a finished run's summary to exitCode.
type outcome struct {
	sum *runner.Summary
	err error
}

func (o *outcome) Error() string {
	if o.err != nil {
		return o.err.Error()
	}
	return ""
}

func (o *outcome) Unwrap() error { return o.err }

// Run runs the CLI with args (args[0] is the program name) and returns the
// exit code. Signals are handled by the run command itself.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := &urfave.App{
		Name:                  "flowrun",
		Usage:                 "run dataflow pipelines declared in YAML",
		Writer:                stdout,
		ErrWriter:             stderr,
		Reader:                stdin,
		HideHelpCommand:       true, // ours, with exit codes and hints
		HideVersion:           true, // ours, with the VCS revision
		CustomAppHelpTemplate: urfave.AppHelpTemplate + "\n" + exitStatusHelp,
		ExitErrHandler:        func(*urfave.Context, error) {}, // exit codes are ours
		OnUsageError: func(c *urfave.Context, err error, _ bool) error {
			return usageError{flagProblem(c, err)}
		},
		Flags: []urfave.Flag{
			&urfave.BoolFlag{Name: "version", Usage: "print the version and exit"},
			// urfave/cli adds its own only when it has no help command,
			// and we have one: without it, --help was an unknown flag.
			urfave.HelpFlag,
		},
		Commands: []*urfave.Command{
			runCommand(stdin, stdout, stderr),
			workerCommand(stdin, stderr),
			validateCommand(stdin, stdout),
			stagesCommand(stdout),
			connectorsCommand(stdout),
			graphCommand(stdin, stdout),
			testCommand(stdout),
			brokerCommand(stdout, stderr),
			versionCommand(stdout),
			helpCommand(stdout),
		},
	}
	// The app's own action runs when no command matched.
	app.Action = func(c *urfave.Context) error {
		switch {
		case c.Bool("version"):
			_, err := io.WriteString(stdout, versionText())
			return err
		case c.NArg() > 0:
			return unknownCommand(c.App, c.Args().First())
		}
		// Bare flowrun did nothing: say how to use it, and fail as a
		// mistake would.
		urfave.HelpPrinter(stderr, c.App.CustomAppHelpTemplate, c.App)
		return usageError{errShown}
	}
	for _, c := range app.Commands {
		c.OnUsageError = app.OnUsageError
		if c.CustomHelpTemplate == "" { // a command that has not said its own
			withExitStatus(c, "   0    done\n   2    a usage mistake\n")
		}
	}
	err := app.RunContext(ctx, permute(args, app.Commands))
	if name, ok := strings.CutPrefix(errorText(err), "No help topic for '"); ok {
		// flowrun -h NAME: urfave/cli's own help, for a name that is no
		// command; say it as `flowrun help NAME` does.
		err = unknownCommand(app, strings.TrimSuffix(name, "'"))
	}
	code := exitCode(err)
	if msg := errorMessage(err); msg != "" {
		fmt.Fprintln(stderr, msg)
	}
	return code
}

func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// flagProblem says a mistake with a flag as a person wrote it, --stat
// rather than Go's "flag provided but not defined: -stat", with the
// flag meant when one is near.
func flagProblem(c *urfave.Context, err error) error {
	flags, who, help := c.App.Flags, "", "flowrun help"
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		flags, who, help = c.Command.Flags, c.Command.Name+" has ", "flowrun help "+c.Command.Name
	}
	dashes := func(n string) string {
		if len(n) == 1 {
			return "-" + n
		}
		return "--" + n
	}
	if name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -"); ok {
		var names []string
		for _, f := range flags {
			for _, n := range f.Names() {
				if len(n) > 1 {
					names = append(names, n)
				}
			}
		}
		hint := spec.DidYouMean(name, names)
		if h, ok := strings.CutPrefix(hint, " (did you mean \""); ok {
			hint = " (did you mean " + dashes(strings.TrimSuffix(h, "\"?)")) + "?)"
		}
		return fmt.Errorf("%sno flag %s%s; `%s` lists them", who, dashes(name), hint, help)
	}
	if name, ok := strings.CutPrefix(err.Error(), "flag needs an argument: -"); ok {
		return fmt.Errorf("%s needs a value", dashes(name))
	}
	return err
}

// errShown is a usage mistake whose explanation is already on stderr.
var errShown = errors.New("")

// unknownCommand is the error for a command name that is none of app's.
func unknownCommand(app *urfave.App, name string) error {
	var names []string
	for _, c := range app.Commands {
		names = append(names, c.Name)
	}
	return usagef("unknown command %q%s; `flowrun help` lists them", name, spec.DidYouMean(name, names))
}

// exitCode maps the outcome of a command to the process's exit code. It
// is the one place that does.
func exitCode(err error) int {
	var o *outcome
	var setup *runner.SetupError
	if errors.As(err, &o) {
		switch s := o.sum; {
		case errors.As(o.err, &setup):
			return ExitUsage // nothing ran: a mistake in the pipeline or the command
		case s != nil && s.Stopped:
			return ExitSignaled
		case o.err != nil:
			return ExitFailed
		case s != nil && s.Closed:
			return ExitOK
		case s != nil && s.Skipped()+s.DeadLettered() > 0:
			return ExitPartial
		}
		return ExitOK
	}
	var serr spec.Errors
	var uerr usageError
	var perr problems
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &serr), errors.As(err, &uerr), errors.As(err, &perr):
		return ExitUsage
	case strings.HasPrefix(err.Error(), "flag provided but not defined"),
		strings.HasPrefix(err.Error(), "No help topic"):
		return ExitUsage
	}
	return ExitFailed
}

// errorMessage is what the user reads on stderr about err: no stack, the
// place of the problem first.
func errorMessage(err error) string {
	var o *outcome
	if errors.As(err, &o) {
		if o.err == nil || (o.sum != nil && o.sum.Stopped && errors.Is(o.err, context.Canceled)) {
			return ""
		}
		err = o.err
	}
	if err == nil || errors.Is(err, errShown) {
		return ""
	}
	var serr spec.Errors
	if errors.As(err, &serr) {
		return serr.Error()
	}
	var perr problems
	if errors.As(err, &perr) {
		return perr.Error() // each line has its place
	}
	return "flowrun: " + err.Error()
}

// permute moves a command's flags before its positional arguments, so
// that `flowrun run p.yaml -o out` works as well as `flowrun run -o out
// p.yaml` (urfave/cli stops parsing flags at the first argument).
func permute(args []string, cmds []*urfave.Command) []string {
	if len(args) < 3 {
		return args
	}
	var cmd *urfave.Command
	for _, c := range cmds {
		if c.Name == args[1] {
			cmd = c
		}
	}
	if cmd == nil {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*urfave.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	var flags, positional []string
	rest := args[2:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		switch {
		case a == "--":
			positional = append(positional, rest[i+1:]...)
			i = len(rest)
		case len(a) > 1 && a[0] == '-':
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] && i+1 < len(rest) {
				i++
				flags = append(flags, rest[i])
			}
		default:
			positional = append(positional, a)
		}
	}
	out := append([]string{args[0], args[1]}, flags...)
	if len(positional) > 0 {
		out = append(out, "--")
		out = append(out, positional...)
	}
	return out
}
