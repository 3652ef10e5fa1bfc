package stages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// The exec stage's modes.
const (
	execPerRecord = "per-record"
	execStream    = "stream"
)

// execGrace is how long a plugin gets to exit on its own (after its input
// closes, or after its stdout ends) before its process group is killed, and
// how long its pipes may outlive it (a child that left the group).
const execGrace = 2 * time.Second

// execTailSize bounds the stderr kept for error messages: a plugin may
// write any amount to stderr, and only its last words explain a failure.
const execTailSize = 4 << 10

func init() {
	Register(Spec{
		Name: "exec",
		// A plugin may stall (one that buffers its output never answers):
		// without a timeout of the pipeline's, a minute without an answer
		// is reported as a stall.
		DefaultTimeout: time.Minute,
		Doc: "Runs any program as a plugin, never through a shell: per-record starts it for each record (the record on stdin, " +
			"each line of stdout a result); stream keeps one process per worker that answers each line in with one line out, " +
			"or with protocol json each request with an answer naming its id. A stream plugin's stderr is shown, prefixed with the stage's name.",
		Options: []Option{
			{Name: "command", Type: Strings, Required: true,
				Doc: "the program and its arguments, like [python3, -u, score.py]; a relative path with a slash resolves against dir"},
			{Name: "mode", Type: String, Default: execStream, Enum: []string{execPerRecord, execStream},
				Doc: "per-record: a process per record; stream: one process per worker, answering record after record as protocol says"},
			{Name: "env", Type: StringMap, Default: map[string]string{}, Doc: "environment variables added to flowrun's own"},
			{Name: "dir", Type: String, Default: "", Doc: "the working directory; relative to the pipeline's directory, which is the default"},
			{Name: "max_output", Type: Int, Default: 64 << 20,
				Doc: "the most bytes of output per record (per-record: all of stdout; stream: one answer line); more is an error"},
			{Name: "protocol", Type: String, Default: execLines, Enum: []string{execLines, execJSON},
				Doc: "stream: lines: the k-th line out answers the k-th line in, an empty line is an empty record (sed -u, mawk -W interactive); " +
					"json: {\"id\": N, \"record\": \"...\"} in, {\"id\": N, \"records\": [...]} or {\"id\": N, \"error\": \"...\"} out, " +
					"in any order, any other line the plugin's log"},
			{Name: "inflight", Type: Int, Default: 256, Doc: "stream: how many records may be written ahead of their answers"},
		},
		Check: execCheck,
		New: func(c Config) (Stage, error) {
			if err := execCheck(c); err != nil {
				return nil, err
			}
			cmd, err := newExecCommand(c)
			if err != nil {
				return nil, err
			}
			if c.String("mode") == execPerRecord {
				return &execRecordStage{cmd: cmd, maxOutput: c.Int("max_output"), timeout: c.Timeout}, nil
			}
			return newExecStreamStage(cmd, c), nil
		},
	})
}

func execCheck(c Config) error {
	argv := c.Strings("command")
	if len(argv) == 0 || argv[0] == "" {
		return OptionErrorf("command", "needs a program to run, like [python3, -u, score.py]")
	}
	if m := c.String("mode"); m != execPerRecord && m != execStream {
		return OptionErrorf("mode", "%q is not one of %s, %s", m, execPerRecord, execStream)
	}
	for k := range c.Map("env") {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return OptionErrorf("env", "%q is not a variable name", k)
		}
	}
	switch p := c.String("protocol"); {
	case p != execLines && p != execJSON:
		return OptionErrorf("protocol", "%q is not one of %s, %s", p, execLines, execJSON)
	case p == execJSON && c.String("mode") == execPerRecord:
		return OptionErrorf("protocol", "json is a protocol of mode: stream; per-record mode has none (a process per record, its stdout the results)")
	}
	if n := c.Int("max_output"); n < 1 {
		return OptionErrorf("max_output", "%d is not a positive number of bytes", n)
	}
	if n := c.Int("inflight"); n < 1 {
		return OptionErrorf("inflight", "%d is less than 1", n)
	}
	return nil
}

// execCommand is a resolved plugin command: everything needed to start
// it again and again.
type execCommand struct {
	name string // command[0] as the user wrote it: its argv[0]
	// label names the plugin in messages: command[0], and the script an
	// interpreter runs (python3 score.py), which is what the user wrote.
	label string
	path  string // the program that runs
	args  []string
	dir   string
	env   []string
}

// newExecCommand resolves c's program and working directory. It fails on
// what would otherwise fail on every record: a missing program, a missing
// script beside the pipeline, a missing directory.
func newExecCommand(c Config) (execCommand, error) {
	argv := c.Strings("command")
	dir := c.Dir
	if d := c.String("dir"); d != "" {
		if filepath.IsAbs(d) {
			dir = d
		} else {
			dir = filepath.Join(c.Dir, d)
		}
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return execCommand{}, OptionErrorf("dir", "%s is not a directory", dir)
		}
	}
	path, err := execResolve(argv[0], dir)
	if err != nil {
		return execCommand{}, &OptionError{Option: "command", Err: err}
	}
	if err := execCheckScripts(argv[1:], dir); err != nil {
		return execCommand{}, &OptionError{Option: "command", Err: err}
	}
	env := os.Environ()
	extra := c.Map("env")
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+extra[k])
	}
	label := argv[0]
	for _, a := range argv[1:] {
		if !strings.HasPrefix(a, "-") && execScriptExts[filepath.Ext(a)] {
			label += " " + a
			break
		}
	}
	return execCommand{name: argv[0], label: label, path: path, args: argv[1:], dir: dir, env: env}, nil
}

// execResolve finds the program name: a relative path with a slash
// resolves against dir, as a script beside the pipeline is meant to; a bare
// name is looked up in $PATH, never in dir, as a shell would.
func execResolve(name, dir string) (string, error) {
	if !strings.Contains(name, "/") {
		path, err := exec.LookPath(name)
		if err == nil {
			return path, nil
		}
		if fi, serr := os.Stat(filepath.Join(dir, name)); serr == nil && !fi.IsDir() {
			return "", fmt.Errorf("exec: %q is not in $PATH; write \"./%s\" to run the one in %s", name, name, execDirName(dir))
		}
		return "", fmt.Errorf("exec: %q: no such program in $PATH", name)
	}
	// Absolute, because exec.Cmd would resolve a relative path against
	// Cmd.Dir once more.
	path, err := filepath.Abs(filepath.Join(dir, name))
	if filepath.IsAbs(name) {
		path = name
	}
	if err != nil {
		return "", fmt.Errorf("exec: %q: %w", name, err)
	}
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		return "", fmt.Errorf("exec: %q: no such file (looked for %s)", name, path)
	case fi.IsDir():
		return "", fmt.Errorf("exec: %q is a directory", name)
	case fi.Mode().Perm()&0o111 == 0:
		return "", fmt.Errorf("exec: %q is not executable: chmod +x it, or name its interpreter first, like [python3, -u, %s]", name, name)
	}
	return path, nil
}

// execScriptExts are the extensions of the scripts an interpreter is
// usually given. An argument with one of them is almost surely a script
// that must exist, and a typo in its name is better reported before the
// run than as an interpreter's complaint on every record.
var execScriptExts = map[string]bool{
	".py": true, ".sh": true, ".pl": true, ".rb": true, ".js": true, ".mjs": true,
	".awk": true, ".sed": true, ".lua": true, ".php": true, ".tcl": true, ".r": true, ".R": true,
}

func execCheckScripts(args []string, dir string) error {
	for _, a := range args {
		if strings.HasPrefix(a, "-") || !execScriptExts[filepath.Ext(a)] {
			continue
		}
		path := a
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("exec: %q: no such file in %s", a, execDirName(dir))
		}
	}
	return nil
}

func execDirName(dir string) string {
	if dir == "" {
		return "the current directory"
	}
	return dir
}

// command returns a Cmd for one run of the plugin. The plugin gets a
// process group of its own (see execGroup) so that killing the group also
// kills what it started (sh -c 'sleep 100').
func (c execCommand) command() *exec.Cmd {
	cmd := exec.Command(c.path, c.args...)
	cmd.Args[0] = c.name
	cmd.Dir = c.dir
	cmd.Env = c.env
	cmd.SysProcAttr = execSysProcAttr()
	cmd.WaitDelay = execGrace
	return cmd
}

// execRecordStage is exec in per-record mode: a process per record.
type execRecordStage struct {
	cmd       execCommand
	maxOutput int
	timeout   time.Duration
	stdin     []byte
}

// Process runs the plugin on rec: rec and a newline on its stdin (so that
// a line-reading tool sees a whole line), each line of its stdout a result,
// a last line without a newline included. Empty stdout filters rec out.
func (s *execRecordStage) Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if err := context.Cause(ctx); err != nil {
		return out, fmt.Errorf("exec per-record: %w", err)
	}
	cmd := s.cmd.command()
	s.stdin = append(append(s.stdin[:0], rec...), '\n')
	cmd.Stdin = bytes.NewReader(s.stdin)
	g := &execGroup{}
	stdout := &execCapped{max: s.maxOutput, group: g}
	stderr := &execTail{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := g.start(cmd); err != nil {
		return out, fmt.Errorf("exec per-record: start %s: %w", s.cmd.label, err)
	}
	stop := context.AfterFunc(ctx, g.kill)
	g.awaitExit()
	werr := cmd.Wait()
	stop()
	switch {
	case ctx.Err() != nil && g.wasKilled():
		cause := context.Cause(ctx)
		if s.timeout > 0 && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return out, fmt.Errorf("exec per-record: %s gave no result within %s (the stage's timeout): killed its process group", s.cmd.label, s.timeout)
		}
		return out, fmt.Errorf("exec per-record: %s killed: %w", s.cmd.label, cause)
	case stdout.over:
		return out, Permanent(fmt.Errorf("exec per-record: %s wrote more than max_output (%d bytes) for this record: killed it", s.cmd.label, s.maxOutput))
	case werr != nil:
		return out, fmt.Errorf("exec per-record: %s %s%s", s.cmd.label, execStatus(cmd, werr), stderr.suffix())
	}
	data := stdout.buf
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			out = append(out, data)
			break
		}
		out = append(out, data[:i:i])
		data = data[i+1:]
	}
	return out, nil
}

// execStatus describes how a plugin's process ended, given Wait's error.
func execStatus(cmd *exec.Cmd, werr error) string {
	if werr == nil {
		return "exited with status 0"
	}
	if st := cmd.ProcessState; st != nil && !st.Success() {
		return "exited with " + st.String() // "exit status 3", "signal: killed"
	}
	if errors.Is(werr, exec.ErrWaitDelay) {
		return "left a child holding its output open after it exited (kept for " + execGrace.String() + ")"
	}
	return "failed: " + werr.Error()
}

// execCapped collects a plugin's stdout up to max bytes; past that it
// kills the plugin rather than have it write on into a pipe nobody reads.
type execCapped struct {
	buf   []byte
	max   int
	over  bool
	group *execGroup
}

func (w *execCapped) Write(p []byte) (int, error) {
	if w.over {
		return len(p), nil
	}
	if len(w.buf)+len(p) > w.max {
		w.over = true
		w.buf = nil
		w.group.kill()
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	return len(p), nil
}
