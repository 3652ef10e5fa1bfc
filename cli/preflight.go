package cli

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/flowrun/flowrun/connect"
	fileconn "github.com/flowrun/flowrun/connect/file"
	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

// paths are the flags of run and validate that change what a pipeline
// reads and writes.
type paths struct {
	input, output, deadLetter string   // -i, -o, --dead-letter
	stats                     string   // run's --stats
	set                       []string // --set
	noInput                   bool     // the input is not the pipeline's (--resume-failed)
}

// prepare loads the pipeline in file ("-": stdin) with the flags' values in
// place and checks it with preflight: run and validate both start here.
// release closes the stages preflight made; run holds them until the run
// is over, so that what stages share between their workers (lookup's
// reference table) is loaded once, not once for the check and again for
// the run.
func prepare(file string, f paths, stdin io.Reader) (p *spec.Pipeline, release func(), err error) {
	release = func() {}
	p, err = load(file, spec.Options{Set: f.set, DeadLetter: f.deadLetter}, stdin)
	if err != nil {
		return nil, release, err
	}
	for _, flag := range []struct {
		name string
		v    *string
	}{{"-i", &f.input}, {"-o", &f.output}} {
		// A file:// URL is read and written as its path.
		if path, isFile, err := fileconn.Path(*flag.v); isFile {
			if err != nil {
				return nil, release, usagef("%s: %v", flag.name, err)
			}
			*flag.v = path
		}
	}
	if f.input != "" {
		p.Input.With = overrideWith(p.Input.From, f.input, p.Input.With)
		p.Input.From = f.input
	}
	if f.output != "" {
		p.Output.With = overrideWith(p.Output.To, f.output, p.Output.With)
		p.Output.To = f.output
	}
	if file == "-" && isStd(p.Input.From) && !f.noInput {
		return nil, release, usagef("the pipeline came from stdin (-), so its records cannot: give them with -i FILE")
	}
	made, err := preflight(p, f)
	release = func() {
		for _, st := range made {
			if c, ok := st.(io.Closer); ok {
				c.Close()
			}
		}
	}
	if err != nil {
		release()
		return nil, func() {}, err
	}
	return p, release, nil
}

// preflight checks what a run needs before any record moves and that the
// pipeline file cannot say by itself: the input files (or the glob's
// matches) are there and readable, the output's and the dead-letter
// file's directories are writable, and every stage can be made, as the
// run will make it: an exec plugin's program is on $PATH or at its path, a
// wasm module is there and compiles. It runs nothing and writes no file
// (but for what making a stage does: file.write creates its directory).
//
// `flowrun validate` is preflight after spec; `flowrun run` calls it
// before runner.Run, so a run that cannot start has touched no file, and
// the two commands cannot disagree. Every problem is reported, each at
// its place.
//
// It returns the stages it made, for the caller to close.
func preflight(p *spec.Pipeline, o paths) ([]stages.Stage, error) {
	var ps problems
	var made []stages.Stage
	var inputs []string
	if !o.noInput {
		var msg string
		if inputs, msg = checkInput(p.Input.From, p.Input.With); msg != "" {
			ps.add(o.place(p.Input.Pos, o.input != "", "-i", "input.from"), "input: "+msg)
		}
	}
	if msg := checkOutput(p.Output.To, p.Output.With, inputs); msg != "" {
		ps.add(o.place(p.Output.Pos, o.output != "", "-o", "output.to"), "output: "+msg)
	}
	if p.DeadLetter != "" {
		msg := checkWritable(p.DeadLetter, inputs)
		if msg == "" && samePath(p.DeadLetter, p.Output.To) {
			msg = fmt.Sprintf("%s is also the output: the dead letters would overwrite the records; write them to another file", p.DeadLetter)
		}
		if msg != "" {
			ps.add(o.place(p.DeadLetterPos, o.deadLetter != "", "--dead-letter", "dead_letter"), "dead letter: "+msg)
		}
	}
	if o.stats != "" {
		var msg string
		switch {
		case o.stats == "-" && isStd(p.Output.To):
			msg = "- is stdout, which carries the records: write the stats to a FILE (or the records with -o)"
		case o.stats == "-":
		case samePath(o.stats, p.Output.To), samePath(o.stats, p.DeadLetter):
			msg = fmt.Sprintf("%s is also the output or the dead-letter file: write the stats to another file", o.stats)
		default:
			msg = checkWritable(o.stats, inputs)
		}
		if msg != "" {
			ps.add("flowrun: --stats", msg)
		}
	}
	for _, s := range p.Stages {
		st, pos, err := makeStage(s)
		if err != nil {
			ps.add(o.place(pos, false, "", ""), fmt.Sprintf("stage %q: %v", s.Name, err))
			continue
		}
		made = append(made, st)
	}
	if len(ps) == 0 {
		return made, nil
	}
	return made, ps
}

// problems are what preflight found, one a line, each with its place.
type problems []string

func (ps problems) Error() string { return strings.Join(ps, "\n") }

func (ps *problems) add(place, msg string) { *ps = append(*ps, place+": "+msg) }

// place is where a problem with a path is: the flag that set it, the
// --set that did, or its place in the file.
func (o paths) place(pos spec.Pos, byFlag bool, flag, key string) string {
	switch {
	case byFlag:
		return "flowrun: " + flag
	case pos.File == "--set" && pos.Line >= 1 && pos.Line <= len(o.set):
		return "flowrun: --set " + o.set[pos.Line-1]
	case pos.File == "":
		return "flowrun: " + key
	}
	return pos.String()
}

// checkInput says what is wrong with reading from, or "", and returns the
// files it names.
func checkInput(from string, with map[string]string) ([]string, string) {
	if isStd(from) {
		return nil, ""
	}
	if connect.Scheme(from) != "" {
		return nil, checkURL(from, with, connect.In)
	}
	if err := fileconn.CheckName(from); err != nil {
		return nil, err.Error()
	}
	paths := []string{from}
	if strings.ContainsAny(from, "*?[") {
		m, err := filepath.Glob(from)
		if err != nil {
			return nil, fmt.Sprintf("%q is not a glob: %v", from, err)
		}
		if len(m) == 0 {
			return nil, fmt.Sprintf("no file matches %s", from)
		}
		paths = m
	}
	for _, path := range paths {
		fi, err := os.Stat(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
			return nil, fmt.Sprintf("%s: no such file", path)
		case err != nil:
			return nil, err.Error()
		case fi.IsDir():
			return nil, fmt.Sprintf("%s is a directory", path)
		}
		if err := unix.Access(path, unix.R_OK); err != nil {
			return nil, fmt.Sprintf("%s cannot be read: %v", path, err)
		}
	}
	return paths, ""
}

// checkWritable says why the file at path could not be created or
// written, or "", and refuses one of the inputs (by any name): writing it
// would destroy what is being read. It creates nothing.
func checkWritable(path string, inputs []string) string {
	if isStd(path) {
		return ""
	}
	if connect.Scheme(path) != "" {
		return checkURL(path, nil, connect.Out)
	}
	if err := fileconn.CheckName(path); err != nil {
		return err.Error()
	}
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Sprintf("%s is a directory", path)
	case err == nil:
		for _, in := range inputs {
			if ifi, err := os.Stat(in); err == nil && fi.Mode().IsRegular() && os.SameFile(fi, ifi) {
				if in == path {
					return fmt.Sprintf("%s is also the input: writing it would destroy what is being read; write to another file", path)
				}
				return fmt.Sprintf("%s is the input file %s: writing it would destroy what is being read; write to another file", path, in)
			}
		}
		if err := unix.Access(path, unix.W_OK); err != nil {
			return fmt.Sprintf("%s cannot be written: %v", path, err)
		}
		return ""
	case !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
		return err.Error()
	}
	dir := filepath.Dir(path)
	fi, err = os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return fmt.Sprintf("cannot create %s: no directory %s", path, dir)
	case err != nil:
		return err.Error()
	case !fi.IsDir():
		return fmt.Sprintf("cannot create %s: %s is not a directory", path, dir)
	}
	if err := unix.Access(dir, unix.W_OK|unix.X_OK); err != nil {
		return fmt.Sprintf("cannot create %s: directory %s is not writable", path, dir)
	}
	return ""
}

// samePath says a and b name one file, existing or to be created. Stdin,
// stdout and broker URLs are no file.
func samePath(a, b string) bool {
	if isStd(a) || isStd(b) || connect.Scheme(a) != "" || connect.Scheme(b) != "" {
		return false
	}
	return fileconn.Same(a, b)
}

// checkOutput is checkWritable for the output, whose broker URL comes
// with its output.with.
func checkOutput(to string, with map[string]string, inputs []string) string {
	if connect.Scheme(to) != "" {
		return checkURL(to, with, connect.Out)
	}
	return checkWritable(to, inputs)
}

// overrideWith returns the input.with or output.with that holds when -i
// or -o replaces the file's URL: kept when the flag names the same
// connector, less the options the flag's own query gives (the command
// line wins over the file), and dropped when it names another connector
// or a file, whose options they are not.
func overrideWith(file, flag string, with map[string]string) map[string]string {
	if len(with) == 0 {
		return with
	}
	a, okA := connect.Lookup(connect.Scheme(file))
	b, okB := connect.Lookup(connect.Scheme(flag))
	if !okA || !okB || a != b {
		return nil
	}
	u, err := url.Parse(flag)
	if err != nil {
		return with // the URL's check says what is wrong with it
	}
	kept := maps.Clone(with)
	for k := range u.Query() {
		delete(kept, k)
	}
	return kept
}

// checkURL says what is wrong with a broker URL and its options,
// connecting to nothing: its connector's spec checks them.
func checkURL(raw string, with map[string]string, d connect.Direction) string {
	if _, err := connect.Parse(raw, with, d); err != nil {
		return err.Error()
	}
	return ""
}

// makeStage makes s, as the run makes each of its workers' stages, and
// says where a failure is: at the option it names, or at the stage.
func makeStage(s spec.Stage) (stages.Stage, spec.Pos, error) {
	st, err := newStage(s)
	if err == nil {
		return st, s.Pos, nil
	}
	var oe *stages.OptionError
	if !errors.As(err, &oe) {
		return nil, s.Pos, err
	}
	pos, ok := s.OptionPos[oe.Option]
	if !ok {
		pos = s.Pos
	}
	return nil, pos, fmt.Errorf("%w%s", err, listHint(s, oe.Option))
}

// newStage makes s, turning a panic in its New (a bug in the stage) into
// an error: the user gets a message, not a stack trace.
func newStage(s spec.Stage) (st stages.Stage, err error) {
	defer func() {
		if r := recover(); r != nil {
			st, err = nil, fmt.Errorf("making the stage panicked (a bug in %s): %v", s.Use, r)
		}
	}()
	return s.Spec.New(s.Config)
}

// listHint suggests a list for a list option written as one string with
// spaces, `command: python3 score.py`, which YAML reads as one program
// named "python3 score.py".
func listHint(s spec.Stage, option string) string {
	opt, ok := s.Spec.Option(option)
	if !ok || opt.Type != stages.Strings {
		return ""
	}
	v := s.Config.Strings(option)
	if len(v) != 1 || len(strings.Fields(v[0])) < 2 {
		return ""
	}
	return fmt.Sprintf(" (%s is a list, one item per argument: write %s: [%s])", option, option, strings.Join(strings.Fields(v[0]), ", "))
}
