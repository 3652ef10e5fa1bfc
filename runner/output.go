package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/codec"
	"github.com/flowrun/flowrun/connect/file"
)

// errOutputClosed says the reader of the output went away (`| head`).
var errOutputClosed = file.ErrClosed

// tableHeader reads the header row of the CSV or TSV file that output
// appends to (codec.Header): nil for an empty file, which gets a header
// as a new one would, or for a dialect without a header row.
func tableHeader(path, format string, t codec.Table) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("output: %w", err)
	}
	defer f.Close()
	header, err := codec.Header(f, format, t)
	if err != nil {
		return nil, fmt.Errorf("output %s: reading its %s header: %w", path, strings.ToUpper(format), err)
	}
	return header, nil
}

// writable is a file the run will write, opened (when it exists) or
// checked for (when it does not) without changing it: a run that cannot
// start must leave every file as it was.
type writable struct {
	path string
	f    *os.File // nil: the file does not exist yet
}

// probeWritable opens path for writing if it exists, and otherwise checks
// that its directory lets it be created; it changes nothing.
func probeWritable(path string) (writable, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err == nil {
		if fi, err := f.Stat(); err == nil && fi.IsDir() {
			f.Close()
			return writable{}, fmt.Errorf("%s: is a directory", path)
		}
		return writable{path: path, f: f}, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return writable{}, err
	}
	if err := unix.Access(filepath.Dir(path), unix.W_OK|unix.X_OK); err != nil {
		return writable{}, &fs.PathError{Op: "create", Path: path, Err: err}
	}
	return writable{path: path}, nil
}

type openMode int

const (
	truncate openMode = iota // a new file, or an old one emptied
	keep                     // as it is, written from the start
	appendTo                 // written after what it holds
)

// open makes the file the run writes: created if missing, then emptied or
// positioned as mode says.
func (w writable) open(mode openMode) (*os.File, error) {
	f := w.f
	if f == nil {
		var err error
		if f, err = os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE, 0o644); err != nil {
			return nil, err
		}
	}
	var err error
	switch mode {
	case truncate:
		if err = f.Truncate(0); errors.Is(err, syscall.EINVAL) {
			err = nil // a pipe or a terminal: nothing to empty
		}
	case appendTo:
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

// cutTorn cuts what follows the last newline of f, a file a run with a
// broker input appends to: half a record, written when an earlier run
// was killed in the middle of a write, whose message was not acked and
// comes again. f is left at its end. A file that is not a regular one
// is left as it is.
func cutTorn(f *os.File) error {
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

func (w writable) close() {
	if w.f != nil {
		w.f.Close()
	}
}

// checkFiles refuses a run whose output or dead-letter file is one of its
// input files (by a glob, a symlink or another name): writing it would
// destroy what is being read. It returns the output, probed.
func (r *run) checkFiles(files []inputFile) (writable, error) {
	var ins []os.FileInfo
	for _, f := range files {
		if f.Path == "" {
			continue
		}
		if fi, err := os.Stat(f.Path); err == nil {
			ins = append(ins, fi)
		}
	}
	same := func(what, path string) error {
		fi, err := os.Stat(path)
		if err != nil {
			return nil // it does not exist: it is none of them
		}
		for i, in := range ins {
			if os.SameFile(fi, in) && fi.Mode().IsRegular() {
				name := files[i].Name
				if name == path {
					return fmt.Errorf("%s %s is also the input: writing it would destroy what is being read; write to another file", what, path)
				}
				return fmt.Errorf("%s %s is the input file %s: writing it would destroy what is being read; write to another file", what, path, name)
			}
		}
		return nil
	}
	if !isStd(r.p.Output.To) && r.snk == nil {
		if err := same("output", r.p.Output.To); err != nil {
			return writable{}, err
		}
	}
	if r.p.DeadLetter != "" {
		if err := same("dead_letter", r.p.DeadLetter); err != nil {
			return writable{}, err
		}
	}
	if j := r.opts.Journal; j != "" {
		// The journal replaces itself through a new file beside it: its
		// directory must take one, and it must be no file the run reads
		// or writes, which it would replace.
		if err := same("journal", j); err != nil {
			return writable{}, err
		}
		for _, o := range [...]struct{ what, path string }{{"output", r.p.Output.To}, {"dead_letter", r.p.DeadLetter}} {
			if o.path != "" && !isStd(o.path) && sameFile(j, o.path) {
				return writable{}, fmt.Errorf("journal %s is also the %s: each needs a file of its own", j, o.what)
			}
		}
		w, err := probeWritable(j)
		if err != nil {
			return writable{}, fmt.Errorf("journal: %w", err)
		}
		w.close()
	}
	if isStd(r.p.Output.To) || r.snk != nil {
		return writable{}, nil
	}
	w, err := probeWritable(r.p.Output.To)
	if err != nil {
		return writable{}, fmt.Errorf("output: %w", err)
	}
	return w, nil
}

// sameFile says whether paths a and b name one file: the same file if
// both exist, else the same absolute path.
func sameFile(a, b string) bool {
	fa, errA := os.Stat(a)
	fb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(fa, fb)
	}
	x, errX := filepath.Abs(a)
	y, errY := filepath.Abs(b)
	return errX == nil && errY == nil && x == y
}

// openOutput opens the output file as mode and the run say, and returns
// what the sink writes to, the file under it (nil for stdout), the
// output's name and how to close it.
func (r *run) openOutput(resumed *JournalEntry, w writable) (io.Writer, *os.File, string, func() error, error) {
	to := r.p.Output.To
	if r.snk != nil {
		return r.opts.Stdout, nil, "stdout", func() error { return nil }, nil // unused: writeBroker writes
	}
	if isStd(to) {
		if r.opts.RetryDeadLetters != "" {
			if _, err := os.Stat(RetryMarker(r.opts.RetryDeadLetters)); err == nil {
				return nil, nil, "", nil, fmt.Errorf("--resume-failed: an earlier re-run of %s to stdout was interrupted, and some of its records may be in that output already; to run them all again anyway, delete %s, or give -o FILE",
					r.opts.RetryDeadLetters, RetryMarker(r.opts.RetryDeadLetters))
			}
			if err := writeFileAtomic(RetryMarker(r.opts.RetryDeadLetters), []byte("{\"output\":\"stdout\"}\n")); err != nil {
				return nil, nil, "", nil, err
			}
		}
		return r.opts.Stdout, nil, "stdout", func() error { return nil }, nil
	}
	mode := truncate
	switch {
	case resumed != nil:
		mode = keep
	case r.opts.RetryDeadLetters != "":
		mode = appendTo // after what the first run wrote
	case r.acks != nil:
		mode = appendTo // what earlier runs wrote was acked: it is nowhere else
	}
	f, err := w.open(mode)
	if err != nil {
		return nil, nil, "", nil, fmt.Errorf("output: %w", err)
	}
	switch {
	case r.opts.RetryDeadLetters != "":
		err = r.retryFrom(f)
	case r.acks != nil:
		if err = cutTorn(f); err != nil {
			err = fmt.Errorf("output: %w", err)
		}
	}
	if err != nil {
		f.Close()
		return nil, nil, "", nil, err
	}
	if resumed != nil {
		// What was written after the last journal entry is written again.
		if err := f.Truncate(resumed.OutputBytes); err != nil {
			f.Close()
			return nil, nil, "", nil, fmt.Errorf("output: %w", err)
		}
		if _, err := f.Seek(resumed.OutputBytes, io.SeekStart); err != nil {
			f.Close()
			return nil, nil, "", nil, fmt.Errorf("output: %w", err)
		}
	}
	var out io.Writer = f
	if r.jr != nil {
		r.jr.out = f
		out = hashingWriter{w: f, h: r.jr.outHash}
	}
	return out, f, to, func() error {
		if err := f.Close(); err != nil {
			return fmt.Errorf("output: %w", err)
		}
		return nil
	}, nil
}

// RetryMarker is the file beside a dead-letter file being re-run (by
// Options.RetryDeadLetters) that says how long the output was before the
// re-run appended to it. A re-run that finds it was interrupted: it cuts
// the output back to that length and runs every record again, so that
// each comes out once however often a re-run is killed. The caller
// removes it, after the dead letters being re-run, when a re-run finishes.
func RetryMarker(retrying string) string { return retrying + ".json" }

// retryMark is RetryMarker's content.
type retryMark struct {
	Output      string `json:"output"`
	OutputBytes int64  `json:"output_bytes"`
}

// retryFrom positions f, the output a re-run of dead letters appends to,
// after what the first run wrote: at its end, or where an interrupted
// re-run began.
func (r *run) retryFrom(f *os.File) error {
	marker := RetryMarker(r.opts.RetryDeadLetters)
	data, err := os.ReadFile(marker)
	switch {
	case err == nil:
		var m retryMark
		if err := json.Unmarshal(data, &m); err != nil || m.Output != r.p.Output.To {
			return fmt.Errorf("--resume-failed: %s is not about the output %s; delete it to run the dead letters again", marker, r.p.Output.To)
		}
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("output: %w", err)
		}
		if fi.Size() < m.OutputBytes {
			return fmt.Errorf("--resume-failed: the output %s is %d bytes, shorter than the %d it had before an interrupted re-run: it was changed; delete %s to append after what it holds", r.p.Output.To, fi.Size(), m.OutputBytes, marker)
		}
		// An interrupted re-run appended some of its records: they are
		// written again, so they go.
		if err := f.Truncate(m.OutputBytes); err != nil {
			return fmt.Errorf("output: %w", err)
		}
	case errors.Is(err, fs.ErrNotExist):
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("output: %w", err)
		}
		data, _ := json.Marshal(retryMark{Output: r.p.Output.To, OutputBytes: fi.Size()})
		if err := writeFileAtomic(marker, append(data, '\n')); err != nil {
			return err
		}
	default:
		return fmt.Errorf("--resume-failed: %w", err)
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	return nil
}

// write drains the last queue into the sink, in input order when the
// pipeline is ordered. It writes when the buffer is full or when no batch
// is waiting, so a lone record is never held back for company.
func (r *run) write(ctx context.Context, in <-chan batch, s connect.FileSink) error {
	// unclaimed: the output ends with pieces of a stages.Drainer that
	// claim no input record yet (a sort's merge), so it is not "exactly
	// the records up to ro.next-1" and no journal entry may say so.
	unclaimed := false
	emit := func(b batch) error {
		unclaimed = b.part != 0 && b.hi+1 == b.lo
		recs := b.recs
		if f := r.failSeq.Load(); f != 0 {
			recs = before(recs, f)
		}
		for _, rec := range recs {
			if err := s.Add(rec.data); err != nil {
				r.failAt(rec.seq, &RecordError{Stage: "output", Seq: rec.seq, Record: rec.data, Attempts: 1, Err: err})
				break
			}
			if s.Full() {
				if err := s.WriteOut(); err != nil {
					return err
				}
			}
		}
		r.written.Add(int64(len(recs)))
		r.acks.emitted(b.lo, b.hi)
		b.release()
		putRecords(b.recs)
		return nil
	}
	var ro *reorder
	if r.ordered {
		ro = newReorderAt(r.skip + 1)
	}
	for {
		select {
		case b, ok := <-in:
			if !ok {
				if ctx.Err() != nil { // closed by a failure, not by the end
					return context.Cause(ctx)
				}
				if ro != nil {
					if err := ro.drain(emit); err != nil {
						return err
					}
				}
				if err := s.WriteOut(); err != nil {
					return err
				}
				if err := r.acks.settle(ctx); err != nil {
					return err
				}
				if r.jr != nil && !unclaimed {
					done, final := ro.next-1, !r.stopped.Load()
					if f := r.failSeq.Load(); f != 0 {
						done, final = min(done, f-1), false
					}
					return r.jr.write(done, s.Written(), r.dl, final)
				}
				return nil
			}
			var err error
			if ro != nil {
				err = ro.push(b, emit)
			} else {
				err = emit(b)
			}
			if err != nil {
				return err
			}
			if len(in) == 0 || (r.jr != nil && time.Since(r.jr.last) >= journalEvery) {
				if err := s.WriteOut(); err != nil {
					return err
				}
				if err := r.acks.settle(ctx); err != nil {
					return err
				}
				if r.jr != nil && r.failSeq.Load() == 0 && !unclaimed {
					// A batch boundary with the buffer written: the output
					// is exactly the records up to ro.next-1.
					if err := r.jr.write(ro.next-1, s.Written(), r.dl, false); err != nil {
						return err
					}
				}
			}
		case <-ctx.Done():
			// Aborted: what is formatted is whole records, finished, and
			// goes out (the journal does not count them: a resume writes
			// them again after the last entry).
			if s.WriteOut() == nil {
				r.acks.settleNow() // durable: acked, not done twice
			}
			return context.Cause(ctx)
		}
	}
}
