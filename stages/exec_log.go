package stages

import (
	"bytes"
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
	l.refill(time.Now())
	l.show(b)
}

// refill adds the tokens earned since the last refill. time.Now costs
// more than the rest of a dropped line (a plugin may write millions of
// short lines a second to stderr), so it is read once per write, not per
// line.
func (l *execLog) refill(now time.Time) {
	if !l.last.IsZero() {
		l.tokens = min(execLogBurst, l.tokens+now.Sub(l.last).Seconds()*execLogRate)
	}
	l.last = now
}

// show shows b if a token is left, and counts it as dropped otherwise.
// l.mu must be held.
func (l *execLog) show(b []byte) {
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
// are written as \xNN, as are bytes that are not UTF-8 (a lone 0x9b is
// CSI to a terminal in 8-bit mode); the C1 controls U+0080 to U+009F,
// which some terminals obey in UTF-8 too, as \u00NN. The line is cut to
// execLogLineMax bytes.
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
	for i := 0; i < len(line); {
		c := line[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' || c == 0x7f {
				b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
			} else {
				b = append(b, c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(line[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b = append(b, '\\', 'x', hex[c>>4], hex[c&0xf])
		case r <= 0x9f:
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		default:
			b = append(b, line[i:i+n]...)
		}
		i += n
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
	l := e.log
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(time.Now())
	for len(p) > 0 {
		if l.tokens < 1 {
			// Every line that ends in p is dropped: count them at once.
			if k := bytes.LastIndexByte(p, '\n'); k >= 0 {
				l.dropped += bytes.Count(p[:k+1], []byte{'\n'})
				e.partial = e.partial[:0]
				p = p[k+1:]
				continue
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			// Keep no more of a long line than the log shows of it.
			room := execLogLineMax + utf8.UTFMax + 1 - len(e.partial)
			e.partial = append(e.partial, p[:min(len(p), max(0, room))]...)
			break
		}
		if len(e.partial) > 0 {
			room := execLogLineMax + utf8.UTFMax + 1 - len(e.partial)
			e.partial = append(e.partial, p[:min(i, max(0, room))]...)
			l.show(e.partial)
			e.partial = e.partial[:0]
		} else {
			l.show(p[:i])
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
