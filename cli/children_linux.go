package cli

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A plugin's process runs in a process group of its own, which the exec
// stage kills when the plugin is done with. A child that leaves the group
// (setsid, setpgid) or outlives its parent (a double fork) escapes that:
// as a child subreaper, flowrun inherits such orphans instead of init, so
// that it can reap them while it runs and kill them when the run ends.
// What escapes this too is a process that a plugin hands to another
// subreaper or to a service manager (systemd-run, a daemon's own socket):
// flowrun cannot see those.

// becomeSubreaper makes the process inherit its orphaned descendants.
func becomeSubreaper() {
	_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
}

// children returns the pids of the process's children, from
// /proc/self/task/*/children.
func children() []int {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	var pids []int
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// procStat returns a process's state, group and session from
// /proc/PID/stat.
func procStat(pid int) (state byte, pgid, sid int, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, 0, false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:]) // state ppid pgrp session ...
	if i < 0 || len(f) < 4 {
		return 0, 0, 0, false
	}
	pgid, _ = strconv.Atoi(f[2])
	sid, _ = strconv.Atoi(f[3])
	return f[0][0], pgid, sid, true
}

// reapOrphans reaps the inherited children that have exited. A plugin's
// own process leads its group in flowrun's session; its exec stage waits
// for it, so it is left alone. Anything else is an orphan a plugin left.
func reapOrphans() {
	self, _ := unix.Getsid(0)
	for _, pid := range children() {
		state, pgid, sid, ok := procStat(pid)
		if !ok || state != 'Z' || (pgid == pid && sid == self) {
			continue
		}
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}

// killChildren kills every child process and its process group, and
// reaps them, for at most about a second: at the end of a run, a child
// left is a plugin (or an orphan of one) that must not outlive flowrun.
func killChildren() {
	own := syscall.Getpgrp()
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		pids := children()
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			if _, pgid, _, ok := procStat(pid); ok && pgid != own && pgid > 1 {
				_ = syscall.Kill(-pgid, syscall.SIGKILL)
			}
			_ = syscall.Kill(pid, syscall.SIGKILL)
			var ws syscall.WaitStatus
			_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
