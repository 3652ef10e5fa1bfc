package stages

import (
	"bytes"
	"errors"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

func execSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// execGroup is the process group of one run of a plugin, led by the
// plugin's process. Killing a group by its id is only safe while that id
// cannot be reused, that is until the leader is reaped: awaitExit waits for
// the leader to exit without reaping it (waitid WNOWAIT), kills what is left
// of the group, and only then lets cmd.Wait reap the leader. Every kill
// before that point goes through the same lock.
type execGroup struct {
	mu     sync.Mutex
	pid    int
	reaped bool
	killed bool // kill reached the group while its leader was unreaped
}

// start starts cmd and records its group. cmd must have Setpgid set.
func (g *execGroup) start(cmd *exec.Cmd) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return err
	}
	g.pid = cmd.Process.Pid
	return nil
}

// kill sends SIGKILL to the whole group, if its leader is still unreaped.
func (g *execGroup) kill() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pid > 0 && !g.reaped {
		g.killed = true
		_ = syscall.Kill(-g.pid, syscall.SIGKILL)
	}
}

func (g *execGroup) wasKilled() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.killed
}

// awaitExit blocks until the leader has exited, then kills the rest of the
// group: a plugin's background children die with it rather than hold its
// pipes open. The caller must then reap the leader with cmd.Wait.
func (g *execGroup) awaitExit() {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, g.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	_ = syscall.Kill(-g.pid, syscall.SIGKILL)
	g.reaped = true
}

// execTail keeps the last execTailSize bytes written to it, and accepts
// any amount: a plugin's stderr is drained whatever it writes, so that it
// never blocks on a full pipe.
type execTail struct {
	mu  sync.Mutex
	buf []byte
	cut bool // bytes before buf were dropped
}

func (t *execTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= execTailSize {
		t.cut = t.cut || len(t.buf) > 0 || len(p) > execTailSize
		t.buf = append(t.buf[:0], p[len(p)-execTailSize:]...)
		return n, nil
	}
	// Keep up to twice the tail, so that dropping the head is a copy
	// every execTailSize bytes rather than on every write.
	if len(t.buf)+len(p) > 2*execTailSize {
		keep := t.buf[len(t.buf)-(execTailSize-len(p)):]
		t.buf = append(t.buf[:0], keep...)
		t.cut = true
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// suffix returns the tail for an error message: "; stderr: ...", or ""
// when the plugin wrote nothing there.
func (t *execTail) suffix() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.buf
	cut := t.cut
	if len(b) > execTailSize {
		b, cut = b[len(b)-execTailSize:], true
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return ""
	}
	if cut {
		return "; stderr (its end): …" + string(b)
	}
	return "; stderr: " + string(b)
}
