package file

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/flowrun/flowrun/connect/codec"
)

// Opening a file a run writes, so that a run that cannot start changes
// nothing: Probe checks it can be written before anything is created or
// emptied, and Open then makes it as the run needs it (emptied, kept for
// a resume to cut back, or appended to).

// ReadHeader reads the header row of the CSV or TSV file that an output
// appends to (codec.Header), in its first keep bytes (all of it when keep
// is negative): what a resume cuts off is not there, header or not. It
// is nil for a file empty there, which gets a header as a new one would,
// or for a dialect without a header row.
func ReadHeader(path, format string, t codec.Table, keep int64) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("output: %w", err)
	}
	defer f.Close()
	var r io.Reader = f
	if keep >= 0 {
		r = io.LimitReader(f, keep)
	}
	header, err := codec.Header(r, format, t)
	if err != nil {
		return nil, fmt.Errorf("output %s: reading its %s header: %w", path, strings.ToUpper(format), err)
	}
	return header, nil
}

// Writable is a file a run will write, opened (when it exists) or
// checked for (when it does not) without changing it: a run that cannot
// start must leave every file as it was.
type Writable struct {
	path string
	f    *os.File // nil: the file does not exist yet
}

// Probe opens path for writing if it exists, and otherwise checks
// that its directory lets it be created; it changes nothing.
func Probe(path string) (Writable, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err == nil {
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			f.Close()
			return Writable{}, fmt.Errorf("%s: is a directory", path)
		}
		if err := lock(f, path); err != nil {
			f.Close()
			return Writable{}, err
		}
		return Writable{path: path, f: f}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Writable{}, err
	}
	if err := unix.Access(filepath.Dir(path), unix.W_OK|unix.X_OK); err != nil {
		return Writable{}, &fs.PathError{Op: "create", Path: path, Err: err}
	}
	return Writable{path: path}, nil
}

// Mode is how Open leaves a file for writing.
type Mode int

const (
	Truncate Mode = iota // a new file, or an old one emptied
	Keep                 // as it is, written from the start
	Append               // written after what it holds
)

// Open makes the file the run writes: created if missing, then emptied or
// positioned as mode says.
func (w Writable) Open(mode Mode) (*os.File, error) {
	f := w.f
	if f == nil {
		var err error
		if f, err = os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE, 0o644); err != nil {
			return nil, err
		}
		if err := lock(f, w.path); err != nil {
			f.Close()
			return nil, err
		}
	}
	var err error
	switch mode {
	case Truncate:
		if err = f.Truncate(0); errors.Is(err, syscall.EINVAL) {
			err = nil // a pipe or a terminal: nothing to empty
		}
	case Append:
		if _, err = f.Seek(0, io.SeekEnd); errors.Is(err, syscall.ESPIPE) {
			err = nil
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// CutTorn cuts what follows the last newline of f, a file a run with a
// broker input appends to: half a record, written when an earlier run
// was killed in the middle of a write, whose message was not acked and
// comes again. f is left at its end. A file that is not a regular one
// is left as it is.
func CutTorn(f *os.File) error {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
		return err
	}
	rf, err := os.Open(f.Name()) // f is open for writing only
	if err != nil {
		return err
	}
	defer rf.Close()
	end := fi.Size()
	buf := make([]byte, 64<<10)
	for at := end; at > 0; {
		n := min(at, int64(len(buf)))
		at -= n
		if _, err := rf.ReadAt(buf[:n], at); err != nil {
			return err
		}
		if i := bytes.LastIndexByte(buf[:n], '\n'); i >= 0 {
			end = at + int64(i) + 1
			break
		}
		if at == 0 {
			end = 0
		}
	}
	if end != fi.Size() {
		if err := f.Truncate(end); err != nil {
			return err
		}
	}
	_, err = f.Seek(end, io.SeekStart)
	return err
}

// lock takes a regular file for this process alone while it holds f
// open: two runs writing one file (a --resume started while the run it
// resumes still lives, stopped with Ctrl-Z or on another terminal) mix
// their records in it. The lock goes with the process, however it ends.
// A file system without locks writes as before.
func lock(f *os.File, path string) error {
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); errors.Is(err, unix.EWOULDBLOCK) {
		return fmt.Errorf("%s: another flowrun is writing it (a run still going, or stopped with Ctrl-Z); wait for it to end, or stop it", path)
	}
	return nil
}

// Close closes the file Probe opened, if it did.
func (w Writable) Close() {
	if w.f != nil {
		w.f.Close()
	}
}

// Same says whether paths a and b name one file: the same file if
// both exist, else the same absolute path.
func Same(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(fa, fb)
	}
	x, errX := filepath.Abs(a)
	y, errY := filepath.Abs(b)
	return errX == nil && errY == nil && x == y
}
