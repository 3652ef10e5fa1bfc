package stages

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"
	"unicode/utf8"
)

// A stream plugin's log (its stderr, and with protocol json the lines of
// stdout that are not answers) is shown on flowrun's stderr, each line
// prefixed with the stage's name, so that a plugin can say what it is
// doing. A chatty plugin must not flood the terminal or slow the run: past
// a burst of execLogBurst lines, a stage's plugin shows execLogRate lines
// a second, and says how many it left out.
const (
	execLogBurst   = 100
	execLogRate    = 20
	execLogLineMax = 1 << 10 // longer log lines are cut
)

// execLogMu makes each log line one write, whole, among all the stages
// writing to the same stderr.
var execLogMu sync.Mutex

// execLog writes a plugin's log lines to w, rate-limited. It is safe for
// concurrent use.
type execLog struct {
	w      io.Writer
	prefix string

	mu      sync.Mutex
	tokens  float64
	last    time.Time
	dropped int
	buf     []byte
}

func newExecLog(w io.Writer, stage string) *execLog {
	if w == nil {
		w = os.Stderr
	}
	return &execLog{w: w, prefix: "[" + stage + "] ", tokens: execLogBurst}
}

// line shows one line of the plugin's log (without its newline).
func (l *execLog) line(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() {
		l.tokens = min(execLogBurst, l.tokens+now.Sub(l.last).Seconds()*execLogRate)
	}
	l.last = now
	if l.tokens < 1 {
		l.dropped++
		return
	}
	l.tokens--
	l.buf = l.appendDropped(l.buf[:0])
	l.buf = append(l.buf, l.prefix...)
	l.buf = appendExecLogText(l.buf, b)
	l.buf = append(l.buf, '\n')
	l.write()
}

// close reports the lines left out since the last one shown.
func (l *execLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dropped > 0 {
		l.buf = l.appendDropped(l.buf[:0])
		l.write()
	}
}

func (l *execLog) appendDropped(b []byte) []byte {
	if l.dropped == 0 {
		return b
	}
	b = fmt.Appendf(b, "%s(%d lines of the plugin's log not shown: more than %d a second)\n", l.prefix, l.dropped, execLogRate)
	l.dropped = 0
	return b
}

func (l *execLog) write() {
	execLogMu.Lock()
	defer execLogMu.Unlock()
	_, _ = l.w.Write(l.buf)
}

// appendExecLogText appends a log line as text that cannot move the
// cursor or change a terminal's state: control characters other than tab
// are written as \xNN, and the line is cut to execLogLineMax bytes.
func appendExecLogText(b, line []byte) []byte {
	const hex = "0123456789abcdef"
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	cut := len(line) > execLogLineMax
	if cut {
		n := execLogLineMax
		for n > 0 && !utf8.RuneStart(line[n]) {
			n--
		}
		line = line[:n]
	}
	for _, c := range line {
		if c < 0x20 && c != '\t' || c == 0x7f {
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
			continue
		}
		b = append(b, c)
	}
	if cut {
		b = append(b, "…"...)
	}
	return b
}

// execStderr is a stream plugin's stderr: each line goes to the log, and
// the last execTailSize bytes are kept for the error message of a crash.
type execStderr struct {
	execTail
	log     *execLog
	partial []byte // the start of a line without its newline yet
}

func (e *execStderr) Write(p []byte) (int, error) {
	_, _ = e.execTail.Write(p)
	n := len(p)
	for len(p) > 0 {
		i := 0
		for i < len(p) && p[i] != '\n' {
			i++
		}
		if i == len(p) {
			// Keep no more of a long line than the log shows of it.
			room := execLogLineMax + utf8.UTFMax + 1 - len(e.partial)
			e.partial = append(e.partial, p[:min(len(p), max(0, room))]...)
			break
		}
		if len(e.partial) > 0 {
			room := execLogLineMax + utf8.UTFMax + 1 - len(e.partial)
			e.partial = append(e.partial, p[:min(i, max(0, room))]...)
			e.log.line(e.partial)
			e.partial = e.partial[:0]
		} else {
			e.log.line(p[:i])
		}
		p = p[i+1:]
	}
	return n, nil
}

// flush shows a last line that had no newline. It must not run
// concurrently with Write: call it once the plugin has been reaped.
func (e *execStderr) flush() {
	if len(e.partial) > 0 {
		e.log.line(e.partial)
		e.partial = nil
	}
}
