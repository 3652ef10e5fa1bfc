package stages_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/flowrun/flowrun/stages"
)

// execDir holds the scripts the exec tests run, as a pipeline's directory.
const execDir = "testdata/exec"

// execNoLeak checks, after every cleanup (Close) has run, that the test
// left no goroutine behind.
func execNoLeak(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// execNew makes an exec stage the way the runner does, and closes it when
// the test ends.
func execNew(t *testing.T, timeout time.Duration, with map[string]any) stages.Stage {
	t.Helper()
	st, err := execTryNew(timeout, with)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if c, ok := st.(io.Closer); ok {
		t.Cleanup(func() { _ = c.Close() })
	}
	return st
}

func execTryNew(timeout time.Duration, with map[string]any) (stages.Stage, error) {
	return execTryNewLog(timeout, with, io.Discard)
}

// execTryNewLog is execTryNew with the stage's log going to log.
func execTryNewLog(timeout time.Duration, with map[string]any, log io.Writer) (stages.Stage, error) {
	spec, ok := stages.Lookup("exec")
	if !ok {
		return nil, errors.New("exec is not registered")
	}
	c, err := stages.NewConfig(spec, "plugin", execDir, with)
	if err != nil {
		return nil, err
	}
	c.Timeout = timeout
	c.Log = log
	if err := spec.Check(c); err != nil {
		return nil, err
	}
	return spec.New(c)
}

// execGone waits until process pid is gone or a zombie that init will
// reap, and fails the test if it is still running after a while.
func execGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// The state follows the command name in parentheses: "pid (comm) S ...".
		if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d is still alive: %s", pid, stat)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// execPid reads a pid that a plugin wrote to file, waiting for it.
func execPid(t *testing.T, file string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(file)
		if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && perr == nil {
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pid in %s", file)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func execStrings(recs [][]byte) []string {
	s := make([]string, len(recs))
	for i, r := range recs {
		s[i] = string(r)
	}
	return s
}

func TestExecOptions(t *testing.T) {
	execNoLeak(t)
	tests := []struct {
		name    string
		with    map[string]any
		wantErr string
		option  string // the option an *OptionError must name
	}{
		{"empty command", map[string]any{"command": []string{}}, "needs a program", "command"},
		{"empty program", map[string]any{"command": []string{""}}, "needs a program", "command"},
		{"bad mode", map[string]any{"command": []string{"cat"}, "mode": "batch"}, "not one of", "mode"},
		{"inflight 0", map[string]any{"command": []string{"cat"}, "inflight": 0}, "less than 1", "inflight"},
		{"max_output 0", map[string]any{"command": []string{"cat"}, "max_output": 0}, "positive", "max_output"},
		{"bad env name", map[string]any{"command": []string{"cat"}, "env": map[string]string{"A=B": "x"}}, "not a variable name", "env"},
		{"missing dir", map[string]any{"command": []string{"cat"}, "dir": "nowhere"}, "not a directory", "dir"},
		{"missing program in PATH", map[string]any{"command": []string{"no-such-program-flowrun"}}, `"no-such-program-flowrun": no such program in $PATH`, ""},
		{"missing script by path", map[string]any{"command": []string{"./scroe.sh"}}, `exec: "./scroe.sh": no such file`, ""},
		{"missing script argument", map[string]any{"command": []string{"python3", "-u", "scroe.py"}}, `exec: "scroe.py": no such file`, ""},
		{"script beside the pipeline needs ./", map[string]any{"command": []string{"count.sh"}}, `write "./count.sh"`, ""},
		{"script not executable", map[string]any{"command": []string{"./shout.py"}}, "not executable", ""},
		{"script by path", map[string]any{"command": []string{"./count.sh"}}, "", ""},
		{"script argument", map[string]any{"command": []string{"python3", "-u", "shout.py"}}, "", ""},
		{"dir relative to the pipeline", map[string]any{"command": []string{"./exec/count.sh"}, "dir": ".."}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := execTryNew(0, tt.with)
			if c, ok := st.(io.Closer); ok {
				defer c.Close()
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
			}
			var oe *stages.OptionError
			if tt.option != "" && (!errors.As(err, &oe) || oe.Option != tt.option) {
				t.Fatalf("err = %#v, want an *OptionError for %s", err, tt.option)
			}
		})
	}
}

func TestExecPerRecord(t *testing.T) {
	tests := []struct {
		name    string
		with    map[string]any
		rec     string
		want    []string
		wantErr []string // substrings of the error
	}{
		{"one line", map[string]any{"command": []string{"tr", "a-z", "A-Z"}}, "hello", []string{"HELLO"}, nil},
		{"each line a record, the last without newline too", map[string]any{"command": []string{"sh", "-c", `read l; echo "$l 1"; echo; printf '%s 3' "$l"`}},
			"x", []string{"x 1", "", "x 3"}, nil},
		{"empty output filters", map[string]any{"command": []string{"sh", "-c", "cat >/dev/null"}}, "x", []string{}, nil},
		{"record on stdin, never on the command line", map[string]any{"command": []string{"sh", "-c", `echo "$#:$(cat)"`, "sh"}}, "$(id) ; rm -rf x", []string{"0:$(id) ; rm -rf x"}, nil},
		{"script by path in the pipeline's dir", map[string]any{"command": []string{"./count.sh"}}, "abc", []string{"4"}, nil},
		{"env and dir", map[string]any{"command": []string{"sh", "-c", `echo "$GREETING $(basename "$PWD")"`}, "env": map[string]string{"GREETING": "hi"}, "dir": "."},
			"", []string{"hi exec"}, nil},
		{"non-zero exit carries status and stderr", map[string]any{"command": []string{"sh", "-c", "echo 'no good: bad input' >&2; exit 3"}}, "x", nil,
			[]string{"exit status 3", "no good: bad input"}},
		{"killed by a signal", map[string]any{"command": []string{"sh", "-c", "kill -9 $$"}}, "x", nil, []string{"signal: killed"}},
		{"output over max_output", map[string]any{"command": []string{"sh", "-c", "head -c 5000 /dev/zero"}, "max_output": 1000}, "x", nil,
			[]string{"max_output (1000 bytes)"}},
		{"10 MB of stderr, then a failure", map[string]any{"command": []string{"sh", "-c", `head -c 10000000 /dev/zero | tr '\0' x >&2; echo last words >&2; exit 1`}},
			"x", nil, []string{"exit status 1", "xxxlast words"}},
		{"10 MB of stderr, then success", map[string]any{"command": []string{"sh", "-c", `head -c 10000000 /dev/zero >&2; echo fine`}},
			"x", []string{"fine"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execNoLeak(t)
			tt.with["mode"] = "per-record"
			st := execNew(t, 0, tt.with)
			got, err := st.Process(context.Background(), []byte(tt.rec), nil)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("got %q, want an error", execStrings(got))
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("err = %.300q, want it to contain %q", err, w)
					}
				}
				if len(err.Error()) > 5000 {
					t.Errorf("error is %d bytes long; stderr must be cut to its tail", len(err.Error()))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if g := execStrings(got); strings.Join(g, "|") != strings.Join(tt.want, "|") || len(g) != len(tt.want) {
				t.Fatalf("got %q, want %q", g, tt.want)
			}
		})
	}
}

// TestExecPerRecordTimeout checks that a timeout kills the plugin's whole
// process group, not just the shell: its sleep child must die too.
func TestExecPerRecordTimeout(t *testing.T) {
	execNoLeak(t)
	pidfile := filepath.Join(t.TempDir(), "pid")
	st := execNew(t, 200*time.Millisecond, map[string]any{
		"mode":    "per-record",
		"command": []string{"sh", "-c", `sleep 100 & echo $! >"$PIDFILE"; wait`},
		"env":     map[string]string{"PIDFILE": pidfile},
	})
	// As the runner does it: a deadline with a cause of its own.
	ctx, cancel := context.WithTimeoutCause(context.Background(), 200*time.Millisecond, errors.New("the runner's timeout"))
	defer cancel()
	_, err := st.Process(ctx, []byte("x"), nil)
	if err == nil || !strings.Contains(err.Error(), "no result within 200ms") {
		t.Fatalf("err = %v, want one naming the timeout", err)
	}
	execGone(t, execPid(t, pidfile))
}

func TestExecStreamProcess(t *testing.T) {
	tests := []struct {
		name    string
		command []string
		in      []string
		want    []string
	}{
		{"sed -u", []string{"sed", "-u", "s/^/> /"}, []string{"a", "", "c"}, []string{"> a", "> ", "> c"}},
		{"an empty answer is an empty record", []string{"sed", "-u", "s/.*//"}, []string{"a", "b"}, []string{"", ""}},
		{"python3 -u script", []string{"python3", "-u", "shout.py"}, []string{"hi", "ho"}, []string{"HI!", "HO!"}},
		{"mawk -W interactive", []string{"mawk", "-W", "interactive", "{ print NR \": \" $0 }"}, []string{"a", "b"}, []string{"1: a", "2: b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execNoLeak(t)
			if _, err := exec.LookPath(tt.command[0]); err != nil {
				t.Skipf("%s is not installed", tt.command[0])
			}
			st := execNew(t, 10*time.Second, map[string]any{"command": tt.command})
			for i, rec := range tt.in {
				got, err := st.Process(context.Background(), []byte(rec), nil)
				if err != nil {
					t.Fatalf("record %d: %v", i, err)
				}
				if len(got) != 1 || string(got[0]) != tt.want[i] {
					t.Fatalf("record %d: got %q, want [%q]", i, execStrings(got), tt.want[i])
				}
			}
			if err := st.(io.Closer).Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

// execBatch runs recs through ProcessBatch and returns what was emitted,
// failing the test unless emit was called once per record, in order, with
// one answer for each record that did not fail.
func execBatch(t *testing.T, ctx context.Context, st stages.Stage, recs []string, each func(i int)) ([]string, []error) {
	t.Helper()
	outs, errs := execBatchAll(t, ctx, st, recs, each)
	got := make([]string, len(recs))
	for i, out := range outs {
		switch {
		case errs[i] != nil:
		case len(out) != 1:
			t.Fatalf("record %d: %d answers", i, len(out))
		default:
			got[i] = out[0]
		}
	}
	return got, errs
}

// execBatchAll is execBatch for any number of results per record.
func execBatchAll(t *testing.T, ctx context.Context, st stages.Stage, recs []string, each func(i int)) ([][]string, []error) {
	t.Helper()
	in := make([][]byte, len(recs))
	for i, r := range recs {
		in[i] = []byte(r)
	}
	got := make([][]string, 0, len(recs))
	errs := make([]error, 0, len(recs))
	st.(stages.BatchStage).ProcessBatch(ctx, in, func(i int, out [][]byte, err error) {
		if i != len(got) {
			t.Fatalf("emit(%d) after %d records", i, len(got))
		}
		if err != nil && len(out) > 0 {
			t.Fatalf("record %d: an error with %d results", i, len(out))
		}
		got = append(got, execStrings(out))
		errs = append(errs, err)
		if each != nil {
			each(i)
		}
	})
	if len(got) != len(recs) {
		t.Fatalf("emitted %d of %d records", len(got), len(recs))
	}
	return got, errs
}

func TestExecStreamBatch(t *testing.T) {
	tests := []struct {
		name     string
		command  []string
		inflight int
		n        int
	}{
		{"sed -u, 10000 records", []string{"sed", "-u", "s/^/ok /"}, 256, 10000},
		{"python3 -u, inflight 1", []string{"python3", "-u", "-c", "import sys\nfor l in sys.stdin: print('ok', l, end='', flush=True)"}, 1, 500},
		{"cat, records longer than a pipe", []string{"cat"}, 8, 50},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execNoLeak(t)
			st := execNew(t, 10*time.Second, map[string]any{"command": tt.command, "inflight": tt.inflight})
			recs := make([]string, tt.n)
			for i := range recs {
				recs[i] = "record " + strconv.Itoa(i)
				if tt.command[0] == "cat" {
					recs[i] += strings.Repeat("x", 100<<10)
				}
			}
			got, errs := execBatch(t, context.Background(), st, recs, nil)
			for i := range recs {
				want := "ok " + recs[i]
				if tt.command[0] == "cat" {
					want = recs[i]
				}
				if errs[i] != nil || got[i] != want {
					t.Fatalf("record %d: got %.40q, %v; want %.40q", i, got[i], errs[i], want)
				}
			}
			if err := st.(io.Closer).Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestExecStreamNewline(t *testing.T) {
	execNoLeak(t)
	st := execNew(t, 10*time.Second, map[string]any{"command": []string{"sed", "-u", "s/^/> /"}})
	got, errs := execBatch(t, context.Background(), st, []string{"a", "b\nc", "d"}, nil)
	if got[0] != "> a" || got[2] != "> d" || errs[0] != nil || errs[2] != nil {
		t.Fatalf("got %q, %v", got, errs)
	}
	if !errors.Is(errs[1], stages.ErrPermanent) || !strings.Contains(errs[1].Error(), "newline") {
		t.Fatalf("record 1: err = %v, want a permanent error naming the newline", errs[1])
	}
	if _, err := st.Process(context.Background(), []byte("x\ny"), nil); !errors.Is(err, stages.ErrPermanent) {
		t.Fatalf("Process: err = %v, want a permanent error", err)
	}
}

// TestExecStreamDeath checks what happens to the records in flight when a
// stream plugin dies: the one it was answering fails with the reason, the
// ones behind are ErrLost, and the next call starts a fresh plugin.
func TestExecStreamDeath(t *testing.T) {
	tests := []struct {
		name    string
		command []string
		recs    []string
		answers int      // records answered before the death
		wantErr []string // in the error of the record after them
		kill    bool     // kill -9 the plugin once the answered records are out
	}{
		{"crash", []string{"./crash.sh"}, []string{"a", "b", "c", "d", "e", "f"}, 3,
			[]string{"exit status 3", "cannot handle d"}, false},
		{"exit 0 early", []string{"sh", "-c", "read l; echo $l; exit 0"}, []string{"a", "b", "c"}, 1,
			[]string{"exited with status 0 before answering"}, false},
		{"kill -9 mid-stream", []string{"./hang.sh"}, []string{"a", "b", "hang", "c", "d"}, 2,
			[]string{"signal: killed"}, true},
		{"closes stdout early", []string{"sh", "-c", `read l; echo "$l"; exec >&-; sleep 100`}, []string{"a", "b", "c"}, 1,
			[]string{"closed its stdout"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execNoLeak(t)
			pidfile := filepath.Join(t.TempDir(), "pid")
			st := execNew(t, 0, map[string]any{"command": tt.command, "env": map[string]string{"CRASH_AFTER": strconv.Itoa(tt.answers), "PIDFILE": pidfile}})
			got, errs := execBatch(t, context.Background(), st, tt.recs, func(i int) {
				if tt.kill && i == tt.answers-1 {
					execPid(t, pidfile+".child") // the plugin is now busy with "hang"
					if err := syscall.Kill(execPid(t, pidfile), syscall.SIGKILL); err != nil {
						t.Error(err)
					}
				}
			})
			for i := range tt.answers {
				if errs[i] != nil || got[i] != tt.recs[i] {
					t.Fatalf("record %d: got %q, %v; want it answered", i, got[i], errs[i])
				}
			}
			err := errs[tt.answers]
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("record %d: err = %v, want it to contain %q", tt.answers, err, w)
				}
			}
			if errors.Is(err, stages.ErrLost) {
				t.Errorf("record %d: the record the plugin died on must not be ErrLost", tt.answers)
			}
			for i := tt.answers + 1; i < len(tt.recs); i++ {
				if !errors.Is(errs[i], stages.ErrLost) {
					t.Errorf("record %d: err = %v, want ErrLost", i, errs[i])
				}
			}
			if tt.kill {
				execGone(t, execPid(t, pidfile+".child"))
			}
			out, err := st.Process(context.Background(), []byte("again"), nil)
			if err != nil || len(out) != 1 || string(out[0]) != "again" {
				t.Fatalf("after the death: got %q, %v; want a fresh plugin to answer", execStrings(out), err)
			}
		})
	}
}

// TestExecStreamStall checks that a plugin that never answers is named as
// stalled when the stage has a timeout, and that a cancelled context
// unblocks the stage when it has none.
func TestExecStreamStall(t *testing.T) {
	tests := []struct {
		name     string
		command  []string
		timeout  time.Duration
		ctx      time.Duration // a deadline on the batch's context
		wantErr  string
		lost     bool // the records behind fail with ErrLost
		lockstep bool // through Process, with the deadline on ctx as the runner sets it
	}{
		{"reads but never answers", []string{"sh", "-c", "cat >/dev/null"}, 300 * time.Millisecond, 0,
			"exec stream: no answer within 300ms for this record (is the plugin buffering its output?", true, false},
		{"plain mawk buffers", []string{"mawk", "{ print }"}, 300 * time.Millisecond, 0, "no answer within 300ms", true, false},
		{"no timeout, context deadline", []string{"sh", "-c", "cat >/dev/null"}, 0, 300 * time.Millisecond, "exec stream: the runner's timeout", false, false},
		{"lock-step, the runner's deadline", []string{"sh", "-c", "cat >/dev/null"}, 300 * time.Millisecond, 300 * time.Millisecond,
			"no answer within 300ms for this record", false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execNoLeak(t)
			if _, err := exec.LookPath(tt.command[0]); err != nil {
				t.Skipf("%s is not installed", tt.command[0])
			}
			st := execNew(t, tt.timeout, map[string]any{"command": tt.command})
			ctx := context.Background()
			if tt.ctx > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeoutCause(ctx, tt.ctx, errors.New("the runner's timeout"))
				defer cancel()
			}
			var errs []error
			if tt.lockstep {
				for _, rec := range []string{"a", "b", "c"} {
					_, err := st.Process(ctx, []byte(rec), nil)
					errs = append(errs, err)
					ctx = context.Background() // the first record fails; the next ones get a fresh plugin
				}
			} else {
				_, errs = execBatch(t, ctx, st, []string{"a", "b", "c"}, nil)
			}
			if errs[0] == nil || !strings.Contains(errs[0].Error(), tt.wantErr) {
				t.Fatalf("record 0: err = %v, want it to contain %q", errs[0], tt.wantErr)
			}
			for i := 1; i < 3; i++ {
				if errs[i] == nil || errors.Is(errs[i], stages.ErrLost) != tt.lost {
					t.Errorf("record %d: err = %v, want ErrLost: %v", i, errs[i], tt.lost)
				}
			}
		})
	}
}

// TestExecStreamTwoLines checks that a plugin answering a line with two
// neither hangs the stage nor makes it emit a record twice, and that its
// extra lines are caught once it has answered more lines than it was sent,
// at the latest when the stage closes.
// In lock-step the second line of one answer can pass for the answer to
// the next record, so only a surplus is certain to show: a batch makes one.
func TestExecStreamTwoLines(t *testing.T) {
	execNoLeak(t)
	st := execNew(t, 10*time.Second, map[string]any{"command": []string{"sed", "-u", "p"}})
	recs := make([]string, 100)
	for i := range recs {
		recs[i] = strconv.Itoa(i)
	}
	execBatch(t, context.Background(), st, recs, nil)
	var err error
	for i := 0; i < 50 && err == nil; i++ {
		var out [][]byte
		out, err = st.Process(context.Background(), []byte("x"), nil)
		if err == nil && len(out) != 1 {
			t.Fatalf("call %d: %d answers", i, len(out))
		}
	}
	if err == nil {
		// A plugin always one line ahead is seen when a line is waiting
		// at the start of a call, which depends on timing; at Close, when
		// its input has ended, a surplus is certain to show.
		err = st.(io.Closer).Close()
		if err == nil || !strings.Contains(err.Error(), "answered more lines than it was sent") {
			t.Fatalf("Close: %v, want the extra lines reported", err)
		}
		return
	}
	if !strings.Contains(err.Error(), "answered more lines than it was sent") {
		t.Fatalf("err = %v, want the extra lines reported", err)
	}
	if out, err := st.Process(context.Background(), []byte("y"), nil); err != nil || string(out[0]) != "y" {
		t.Fatalf("after the restart: got %q, %v", execStrings(out), err)
	}
}

// TestExecStreamClose checks that Close leaves no process behind, whether
// the plugin exits when its input closes or must be killed.
// TestExecStreamEscapedChild checks that a plugin whose child left its
// process group (setsid) and holds its stdout open is reported for what it
// did, and soon, rather than as a stall at the stage's timeout: when it
// dies before answering, and when it exits at the end of its input.
func TestExecStreamEscapedChild(t *testing.T) {
	// The child writes its pid once it has left the group, and the plugin
	// waits for that, so that killing the group cannot catch it first.
	const escape = `setsid sh -c 'echo $$ >"$PIDFILE"; exec sleep 30' 2>/dev/null & while [ ! -s "$PIDFILE" ]; do sleep 0.01; done`
	tests := []struct {
		name    string
		script  string
		recs    []string
		wantErr string // of the last record, or else of Close
	}{
		{"dies", `read l; echo "x$l"; ` + escape + `; read l; exit 3`, []string{"a", "b"},
			"left a process outside its group holding its stdout open, and exited with exit status 3 before answering this record"},
		{"exits at end of input", escape + `; exec sed -u s/^/x/`, []string{"a"},
			"exited at the end of its input, but left a process outside its group holding its stdout open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execNoLeak(t)
			pidfile := filepath.Join(t.TempDir(), "pid")
			// The old code waited out the timeout, then called it a stall.
			st := execNew(t, time.Minute, map[string]any{"command": []string{"sh", "-c", tt.script}, "env": map[string]string{"PIDFILE": pidfile}})
			t.Cleanup(func() {
				pid := execPid(t, pidfile)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				execGone(t, pid)
			})
			got, errs := execBatch(t, context.Background(), st, tt.recs, nil)
			if got[0] != "xa" || errs[0] != nil {
				t.Fatalf("got %q, %v", got, errs)
			}
			err := errs[len(errs)-1]
			if len(tt.recs) == 1 {
				err = st.(io.Closer).Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestExecStreamClose(t *testing.T) {
	tests := []struct {
		name    string
		script  string
		wantErr string
	}{
		{"exits at end of input", `echo $$ >"$PIDFILE"; exec sed -u s/^/x/`, ""},
		{"fails at end of input", `echo $$ >"$PIDFILE"; sed -u s/^/x/; echo 'cleanup failed' >&2; exit 4`, "exit status 4 at the end of its input; stderr: cleanup failed"},
		{"lingers after end of input", `echo $$ >"$PIDFILE"; sed -u s/^/x/; sleep 100`, "did not exit within 2s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			execNoLeak(t)
			pidfile := filepath.Join(t.TempDir(), "pid")
			st := execNew(t, 10*time.Second, map[string]any{"command": []string{"sh", "-c", tt.script}, "env": map[string]string{"PIDFILE": pidfile}})
			if out, err := st.Process(context.Background(), []byte("y"), nil); err != nil || string(out[0]) != "xy" {
				t.Fatalf("got %q, %v", execStrings(out), err)
			}
			pid := execPid(t, pidfile)
			err := st.(io.Closer).Close()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Close: %v, want %q", err, tt.wantErr)
			}
			// Close has reaped the plugin: not even a zombie may remain.
			if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
				t.Fatalf("process %d is still there after Close", pid)
			}
			if err := st.(io.Closer).Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
		})
	}
}

func BenchmarkExecStreamBatch(b *testing.B) {
	for _, cmd := range [][]string{{"cat"}, {"sed", "-u", "s/^/> /"}, {"python3", "-u", "shout.py"}} {
		b.Run(cmd[0], func(b *testing.B) {
			st := execBenchStage(b, map[string]any{"command": cmd})
			recs := make([][]byte, 1024)
			for i := range recs {
				recs[i] = []byte("record number " + strconv.Itoa(i) + " with some text")
			}
			b.ResetTimer()
			n := 0
			for n < b.N {
				batch := recs[:min(len(recs), b.N-n)]
				st.(stages.BatchStage).ProcessBatch(context.Background(), batch, func(i int, out [][]byte, err error) {
					if err != nil {
						b.Fatal(err)
					}
				})
				n += len(batch)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// BenchmarkExecStreamProtocol runs the same awk work on both protocols,
// as bench/pipelines/w3.yaml and w3-json.yaml do: what json costs over
// lines, in flowrun and in the plugin.
func BenchmarkExecStreamProtocol(b *testing.B) {
	if _, err := exec.LookPath("mawk"); err != nil {
		b.Skip("mawk is not installed")
	}
	for _, p := range []struct{ protocol, program string }{
		{"lines", `{ print toupper($0); fflush() }`},
		{"json", `{ i = index($0, ",\"record\":"); print "{\"id\":" substr($0, 7, i - 7) ",\"records\":[" toupper(substr($0, i + 10, length($0) - i - 10)) "]}"; fflush() }`},
	} {
		b.Run(p.protocol, func(b *testing.B) {
			st := execBenchStage(b, map[string]any{"command": []string{"mawk", "-W", "interactive", p.program}, "protocol": p.protocol})
			recs := make([][]byte, 1024)
			for i := range recs {
				recs[i] = []byte("  rec-" + strconv.Itoa(i) + " alpha beta  ")
			}
			b.ResetTimer()
			cpu := execCPU()
			n := 0
			for n < b.N {
				batch := recs[:min(len(recs), b.N-n)]
				st.(stages.BatchStage).ProcessBatch(context.Background(), batch, func(i int, out [][]byte, err error) {
					if err != nil || len(out) != 1 || len(out[0]) != len(batch[i]) {
						b.Fatalf("record %d: %q, %v", i, execStrings(out), err)
					}
				})
				n += len(batch)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			// flowrun's own CPU time, which the plugin's and other
			// processes' do not count in: steady on a loaded machine.
			b.ReportMetric(float64(execCPU()-cpu)/float64(b.N), "cpu-ns/record")
		})
	}
}

// execCPU returns the CPU time this process has used, in nanoseconds.
func execCPU() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func BenchmarkExecStreamLockstep(b *testing.B) {
	st := execBenchStage(b, map[string]any{"command": []string{"cat"}})
	rec := []byte("record number 1 with some text")
	var out [][]byte
	for b.Loop() {
		var err error
		if out, err = st.Process(context.Background(), rec, out[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkExecPerRecord(b *testing.B) {
	st := execBenchStage(b, map[string]any{"command": []string{"cat"}, "mode": "per-record"})
	rec := []byte("record number 1 with some text")
	var out [][]byte
	for b.Loop() {
		var err error
		if out, err = st.Process(context.Background(), rec, out[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func execBenchStage(b *testing.B, with map[string]any) stages.Stage {
	st, err := execTryNew(0, with)
	if err != nil {
		b.Fatal(err)
	}
	if c, ok := st.(io.Closer); ok {
		b.Cleanup(func() { _ = c.Close() })
	}
	return st
}
