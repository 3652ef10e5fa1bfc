package runner

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The journal makes a run resumable after it was killed (SIGKILL, a power
// cut): it records, durably, how far the output is complete. A journal
// entry says "every input record up to Seq is done — in the output, the
// dead-letter file or skipped — and the output's first OutputBytes bytes
// hold exactly the output of those records". It is written only at a
// batch boundary in input order, after the output and the dead-letter file
// are fsynced, and it replaces the previous entry atomically (a temporary
// file renamed over it). A resumed run truncates the output to
// OutputBytes, keeps the dead letters of records up to Seq, skips those
// records of the input and carries on; for a pipeline whose stages are
// deterministic the final output is byte for byte that of a run never
// killed, however many times it is killed.
//
// A journaled run is written in input order even when the pipeline is not
// ordered (the multiset of records is the same), since "done up to Seq"
// needs an order. Stages that keep state across records (dedupe, take,
// sample, count, batch) start afresh after a resume, and stages with side
// effects (http.post, file.write) may repeat them for the records after
// Seq: resume is exactly-once for the output file, at-least-once for the
// world.

// JournalEntry is the journal file's content.
type JournalEntry struct {
	Version         int    `json:"version"`
	Pipeline        string `json:"pipeline"`
	Input           string `json:"input"`
	Output          string `json:"output"`
	DeadLetter      string `json:"dead_letter,omitempty"`
	Seq             uint64 `json:"seq"`
	OutputBytes     int64  `json:"output_bytes"`
	DeadLetterBytes int64  `json:"dead_letter_bytes"`
	Done            bool   `json:"done"`
}

// journalEvery is how often, at most, a journal entry is written: each
// costs an fsync of the output and of the journal.
const journalEvery = 200 * time.Millisecond

type journal struct {
	path  string
	entry JournalEntry
	last  time.Time
	out   *os.File // fsynced before each entry
	dl    *os.File
	base  int64 // output bytes kept from before a resume
}

// readJournal reads the journal at path; a missing file is a fresh start.
func readJournal(path string) (*JournalEntry, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	var e JournalEntry
	if err := json.Unmarshal(data, &e); err != nil || e.Version != 1 {
		return nil, fmt.Errorf("journal %s: not a flowrun journal", path)
	}
	return &e, nil
}

// check says whether a resumed run is the run the journal was written by.
func (e *JournalEntry) check(want JournalEntry) error {
	switch {
	case e.Pipeline != want.Pipeline:
		return fmt.Errorf("journal is of pipeline %q, not %q", e.Pipeline, want.Pipeline)
	case e.Input != want.Input:
		return fmt.Errorf("journal is of input %q, not %q", e.Input, want.Input)
	case e.Output != want.Output:
		return fmt.Errorf("journal is of output %q, not %q", e.Output, want.Output)
	case e.DeadLetter != want.DeadLetter:
		return fmt.Errorf("journal is of dead_letter %q, not %q", e.DeadLetter, want.DeadLetter)
	}
	return nil
}

// write records that input records up to seq are done and the output is
// outBytes long, if journalEvery has passed or final is set.
func (j *journal) write(seq uint64, outBytes int64, dl *deadLetters, final bool) error {
	if !final && time.Since(j.last) < journalEvery {
		return nil
	}
	j.last = time.Now()
	if err := j.out.Sync(); err != nil {
		return fmt.Errorf("journal: sync output: %w", err)
	}
	if dl != nil {
		if err := dl.flush(); err != nil {
			return err
		}
		if err := j.dl.Sync(); err != nil {
			return fmt.Errorf("journal: sync dead letter: %w", err)
		}
		fi, err := j.dl.Stat()
		if err != nil {
			return fmt.Errorf("journal: %w", err)
		}
		j.entry.DeadLetterBytes = fi.Size()
	}
	j.entry.Seq, j.entry.OutputBytes, j.entry.Done = seq, j.base+outBytes, final
	data, err := json.Marshal(j.entry)
	if err != nil {
		return err
	}
	return writeFileAtomic(j.path, append(data, '\n'))
}

// writeFileAtomic replaces path with data so that a crash leaves either
// the old content or the new, never a mix.
func writeFileAtomic(path string, data []byte) error {
	return replaceFile(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// replaceFile writes a new version of path with fill, fsyncs it and
// renames it over path.
func replaceFile(path string, fill func(io.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	bw := bufio.NewWriter(f)
	err = fill(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("journal: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync() // the rename itself, on file systems that need it
		d.Close()
	}
	return nil
}

// keepDeadLetters rewrites the dead-letter file with only the entries of
// records up to seq: the others are retried by the resumed run, and would
// otherwise appear twice.
func keepDeadLetters(path string, seq uint64) error {
	in, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	defer in.Close()
	return replaceFile(path, func(w io.Writer) error {
		r := bufio.NewReader(in)
		for {
			line, err := r.ReadBytes('\n')
			if len(line) > 0 && line[len(line)-1] == '\n' { // a torn last line is dropped
				var d DeadLetter
				if json.Unmarshal(line, &d) == nil && d.Seq <= seq {
					if _, err := w.Write(line); err != nil {
						return err
					}
				}
			}
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	})
}
