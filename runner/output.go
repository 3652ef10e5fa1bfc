package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/flowrun/flowrun/connect/file"
)

// errOutputClosed says the reader of the output went away (`| head`).
var errOutputClosed = file.ErrClosed

// checkFiles refuses a run whose output or dead-letter file is one of its
// input files (by a glob, a symlink or another name): writing it would
// destroy what is being read. It returns the output, probed.
func (r *run) checkFiles(files []inputFile) (file.Writable, error) {
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
	if !isStd(r.p.Output.To) && !IsBroker(r.p.Output.To) {
		if err := same("output", r.p.Output.To); err != nil {
			return file.Writable{}, err
		}
	}
	if r.p.DeadLetter != "" {
		if err := same("dead_letter", r.p.DeadLetter); err != nil {
			return file.Writable{}, err
		}
	}
	if j := r.opts.Journal; j != "" {
		// The journal replaces itself through a new file beside it: its
		// directory must take one, and it must be no file the run reads
		// or writes, which it would replace.
		if err := same("journal", j); err != nil {
			return file.Writable{}, err
		}
		for _, o := range [...]struct{ what, path string }{{"output", r.p.Output.To}, {"dead_letter", r.p.DeadLetter}} {
			if o.path != "" && !isStd(o.path) && file.Same(j, o.path) {
				return file.Writable{}, fmt.Errorf("journal %s is also the %s: each needs a file of its own", j, o.what)
			}
		}
		w, err := file.Probe(j)
		if err != nil {
			return file.Writable{}, fmt.Errorf("journal: %w", err)
		}
		w.Close()
	}
	if isStd(r.p.Output.To) || IsBroker(r.p.Output.To) {
		return file.Writable{}, nil
	}
	w, err := file.Probe(r.p.Output.To)
	if err != nil {
		return file.Writable{}, fmt.Errorf("output: %w", err)
	}
	return w, nil
}

// openOutput opens the output file as mode and the run say, and returns
// what the sink writes to, the file under it (nil for stdout), the
// output's name and how to close it.
func (r *run) openOutput(resumed *JournalEntry, w file.Writable) (io.Writer, *os.File, string, func() error, error) {
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
	mode := file.Truncate
	switch {
	case resumed != nil:
		mode = file.Keep
	case r.opts.RetryDeadLetters != "":
		mode = file.Append // after what the first run wrote
	case r.acks != nil:
		mode = file.Append // what earlier runs wrote was acked: it is nowhere else
	}
	f, err := w.Open(mode)
	if err != nil {
		return nil, nil, "", nil, fmt.Errorf("output: %w", err)
	}
	switch {
	case r.opts.RetryDeadLetters != "":
		err = r.retryFrom(f)
	case r.acks != nil:
		if err = file.CutTorn(f); err != nil {
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

// outputKept is how many of the output's bytes the run keeps and writes
// after, as openOutput will cut it: the journal's length for a resume,
// an interrupted re-run's starting length for a re-run of dead letters;
// -1 for all of it. A CSV header past that is cut with the rest.
func (r *run) outputKept(resumed *JournalEntry) int64 {
	if resumed != nil {
		return resumed.OutputBytes
	}
	if r.opts.RetryDeadLetters != "" {
		var m retryMark
		if data, err := os.ReadFile(RetryMarker(r.opts.RetryDeadLetters)); err == nil && json.Unmarshal(data, &m) == nil && m.Output == r.p.Output.To {
			return m.OutputBytes
		}
	}
	return -1
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
func (r *run) write(ctx context.Context, in <-chan batch, s *file.Sink) error {
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
