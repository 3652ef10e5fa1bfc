package cli

import (
	"io"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/flowrun/flowrun/runner"
)

// shown is how a run shows itself: its Progress (nil: none), and where
// records and messages go, which is above the live display when they
// share its terminal.
type shown struct {
	progress       runner.Progress
	stdout, stderr io.Writer
}

// chooseProgress picks the display for --progress MODE:
//
//   - none: nothing while the run runs (the summary still comes at the end);
//   - plain: a status line every few seconds, no escape codes, for logs;
//   - bar: the live display on stderr;
//   - auto: the live display when stderr is a terminal, CI is not set
//     and the records are not typed on that terminal (their echo under
//     the block would break it); a plain status line when stderr is a
//     file or a pipe, CI is set or TERM is dumb (no cursor movement);
//     none when records are typed.
//
// When stdout is the display's terminal, records are written above the
// block, which is drawn again below them: the display never draws over
// a record.
func chooseProgress(mode string, every time.Duration, readsStdin bool, stdin io.Reader, stdout, stderr io.Writer) (shown, error) {
	s := shown{stdout: stdout, stderr: stderr}
	switch mode {
	case "none":
		return s, nil
	case "plain":
		s.progress = runner.Plain{W: stderr, Every: every}
		return s, nil
	case "bar":
	case "auto", "":
		switch {
		case !isTerminal(stderr) || os.Getenv("CI") != "" || os.Getenv("TERM") == "dumb":
			s.progress = runner.Plain{W: stderr, Every: every}
			return s, nil
		case readsStdin && sameFile(stdin, stderr):
			return s, nil
		}
	default:
		return s, usagef("--progress %q: want auto, bar, plain or none", mode)
	}
	d := &runner.Display{W: stderr, Every: every}
	s.progress = d
	s.stderr = d.Messages()
	if sameFile(stdout, stderr) {
		s.stdout = d.Above(stdout)
	}
	return s, nil
}

// terminalWidth is the width of the terminal w is, 0 when it is none.
func terminalWidth(w any) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	width, _, err := term.GetSize(int(f.Fd()))
	if err != nil {
		return 0
	}
	return width
}

func isTerminal(w any) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// sameFile reports whether a and b are one terminal.
func sameFile(a, b any) bool {
	fa, ok := a.(*os.File)
	if !ok || !isTerminal(fa) {
		return false
	}
	fb, ok := b.(*os.File)
	if !ok || !isTerminal(fb) {
		return false
	}
	sa, err := fa.Stat()
	if err != nil {
		return false
	}
	sb, err := fb.Stat()
	return err == nil && os.SameFile(sa, sb)
}
