package runner

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/flowrun/flowrun/spec"
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

//
// A journal identifies the run it journals, and a resume checks each part
// before it touches a file: the pipeline (a hash of its resolved settings
// and of each stage: its use, options, timeout, retries and on_error, not
// its workers or buffer, which change nothing in the output), the input
// (each file's size and modification time, and a SHA-256 of the first
// InputBytes bytes the run read), and the output (its first OutputBytes
// bytes, by their SHA-256). A mismatch is refused with what changed, never
// mixed into the output; an output shorter than the journal says is never
// padded.

// journalVersion is the journal format's version; an older journal does
// not identify its run and cannot be resumed.
const journalVersion = 2

// JournalEntry is the journal file's content.
type JournalEntry struct {
	Version         int           `json:"version"`
	Pipeline        string        `json:"pipeline"`
	Input           string        `json:"input"`
	Output          string        `json:"output"`
	DeadLetter      string        `json:"dead_letter,omitempty"`
	Settings        string        `json:"settings_sha256"` // formats, ordering, input on_error
	Stages          []JournalHash `json:"stages"`
	InputFiles      []JournalFile `json:"input_files"`
	InputBytes      int64         `json:"input_bytes"` // read when the entry was written
	InputSHA256     string        `json:"input_sha256"`
	Seq             uint64        `json:"seq"`
	OutputBytes     int64         `json:"output_bytes"`
	OutputSHA256    string        `json:"output_sha256"`
	DeadLetterBytes int64         `json:"dead_letter_bytes"`
	Done            bool          `json:"done"`
}

// JournalHash names a stage and the hash of what it does.
type JournalHash struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// JournalFile is an input file as the journaled run found it.
type JournalFile struct {
	Path     string `json:"path"`
	Size     int64  `json:"size"`
	Modified string `json:"modified"` // RFC 3339, nanoseconds
}

func hashOf(v any) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%#v", v))
	return hex.EncodeToString(sum[:])
}

// identify describes the run that a journal journals.
func identify(p *spec.Pipeline, files []inputFile) (JournalEntry, error) {
	e := JournalEntry{
		Version: journalVersion, Pipeline: p.Name, Input: p.Input.From, Output: p.Output.To, DeadLetter: p.DeadLetter,
		Settings: hashOf([]any{p.Input.Format, p.Input.MaxRecordSize, p.Input.OnError, p.Output.Format, p.Ordered}),
	}
	for _, s := range p.Stages {
		cfg := s.Config
		if abs, err := filepath.Abs(cfg.Dir); err == nil {
			cfg.Dir = abs // the same file, from another directory
		}
		e.Stages = append(e.Stages, JournalHash{Name: s.Name, SHA256: hashOf([]any{s.Use, s.Timeout, s.Retry, s.OnError, cfg})})
	}
	for _, f := range files {
		fi, err := os.Stat(f.path)
		if err != nil {
			return e, fmt.Errorf("input: %w", err)
		}
		e.InputFiles = append(e.InputFiles, JournalFile{Path: f.path, Size: fi.Size(), Modified: fi.ModTime().UTC().Format(time.RFC3339Nano)})
	}
	return e, nil
}

// inputHash hashes the input's bytes as the reader reads them; a journal
// entry takes the hash of what was read so far.
type inputHash struct {
	mu sync.Mutex
	h  hash.Hash
	n  int64
}

func newInputHash() *inputHash { return &inputHash{h: sha256.New()} }

// reader hashes what r reads.
func (ih *inputHash) reader(r io.Reader) io.Reader { return &hashingReader{r: r, ih: ih} }

func (ih *inputHash) sum() (int64, string) {
	ih.mu.Lock()
	defer ih.mu.Unlock()
	return ih.n, hex.EncodeToString(ih.h.Sum(nil))
}

type hashingReader struct {
	r  io.Reader
	ih *inputHash
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.ih.mu.Lock()
	h.ih.h.Write(p[:n])
	h.ih.n += int64(n)
	h.ih.mu.Unlock()
	return n, err
}

// hashingWriter hashes what goes through it to the output.
type hashingWriter struct {
	w io.Writer
	h hash.Hash
}

func (h hashingWriter) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	h.h.Write(p[:n])
	return n, err
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
	// in hashes the input as it is read; outHash the output as it is
	// written (from its first byte: a resume feeds it what it keeps).
	in      *inputHash
	outHash hash.Hash
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
	if err := json.Unmarshal(data, &e); err != nil || e.Version < 1 {
		return nil, fmt.Errorf("journal %s: not a flowrun journal", path)
	}
	if e.Version != journalVersion {
		return nil, fmt.Errorf("--resume: journal %s was written by another version of flowrun and cannot say which run it journaled; to start afresh, run without --resume or delete it", path)
	}
	return &e, nil
}

// check says whether a resumed run is the run the journal was written by,
// and whether the input and the output are as it left them; it says what
// changed. out is fed the output's first OutputBytes bytes, so that the
// resumed run's output hash goes on from them.
func (e *JournalEntry) check(want JournalEntry, files []inputFile, out hash.Hash) error {
	switch {
	case e.Pipeline != want.Pipeline:
		return fmt.Errorf("journal is of pipeline %q, not %q", e.Pipeline, want.Pipeline)
	case e.Input != want.Input:
		return fmt.Errorf("journal is of input %q, not %q", e.Input, want.Input)
	case e.Output != want.Output:
		return fmt.Errorf("journal is of output %q, not %q", e.Output, want.Output)
	case e.DeadLetter != want.DeadLetter:
		return fmt.Errorf("journal is of dead_letter %q, not %q", e.DeadLetter, want.DeadLetter)
	case e.Settings != want.Settings:
		return errors.New("the pipeline's input, output or ordered settings changed since the journal was written")
	}
	if err := checkStages(e.Stages, want.Stages); err != nil {
		return err
	}
	if err := checkInputFiles(e.InputFiles, want.InputFiles); err != nil {
		return err
	}
	if err := checkInputPrefix(files, e.InputBytes, e.InputSHA256); err != nil {
		return err
	}
	return checkOutput(e, out)
}

func checkStages(was, now []JournalHash) error {
	names := func(hs []JournalHash) []string {
		var n []string
		for _, h := range hs {
			n = append(n, h.Name)
		}
		return n
	}
	if len(was) != len(now) {
		return fmt.Errorf("the pipeline's stages changed since the journal was written (%s, now %s)", strings.Join(names(was), ","), strings.Join(names(now), ","))
	}
	for i := range was {
		switch {
		case was[i].Name != now[i].Name:
			return fmt.Errorf("the pipeline's stages changed since the journal was written (%s, now %s)", strings.Join(names(was), ","), strings.Join(names(now), ","))
		case was[i].SHA256 != now[i].SHA256:
			return fmt.Errorf("stage %q changed since the journal was written (its use, with:, timeout, retry or on_error)", now[i].Name)
		}
	}
	return nil
}

func checkInputFiles(was, now []JournalFile) error {
	if len(was) != len(now) {
		return fmt.Errorf("the input is %d files, and was %d when the journal was written", len(now), len(was))
	}
	for i := range was {
		w, n := was[i], now[i]
		switch {
		case w.Path != n.Path:
			return fmt.Errorf("input file %d is %s, and was %s when the journal was written", i+1, n.Path, w.Path)
		case w.Size != n.Size:
			return fmt.Errorf("the input %s changed since the journal was written (%d bytes, now %d)", n.Path, w.Size, n.Size)
		case w.Modified != n.Modified:
			return fmt.Errorf("the input %s changed since the journal was written (modified %s, now %s)", n.Path, w.Modified, n.Modified)
		}
	}
	return nil
}

// checkInputPrefix compares the first n bytes of the input with the hash
// the journal took of them.
func checkInputPrefix(files []inputFile, n int64, want string) error {
	h := sha256.New()
	left := n
	for _, f := range files {
		if left == 0 {
			break
		}
		file, err := os.Open(f.path)
		if err != nil {
			return fmt.Errorf("input: %w", err)
		}
		c, err := io.CopyN(h, file, left)
		file.Close()
		left -= c
		if err != nil && err != io.EOF {
			return fmt.Errorf("input %s: %w", f.name, err)
		}
	}
	if left > 0 || hex.EncodeToString(h.Sum(nil)) != want {
		return fmt.Errorf("the input's content changed since the journal was written (its first %d bytes differ)", n)
	}
	return nil
}

// checkOutput checks that the output still begins with the bytes the
// journal counts, and, for a finished run, holds nothing else.
func checkOutput(e *JournalEntry, h hash.Hash) error {
	f, err := os.Open(e.Output)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("the output %s was removed since the journal was written (it held %d bytes)", e.Output, e.OutputBytes)
	}
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	switch {
	case fi.Size() < e.OutputBytes:
		return fmt.Errorf("the output %s is %d bytes, shorter than the %d the journal says were written: it was cut or rewritten", e.Output, fi.Size(), e.OutputBytes)
	case e.Done && fi.Size() != e.OutputBytes:
		return fmt.Errorf("the output %s is %d bytes, not the %d the finished run wrote: it changed since", e.Output, fi.Size(), e.OutputBytes)
	}
	if _, err := io.CopyN(h, f, e.OutputBytes); err != nil {
		return fmt.Errorf("output %s: %w", e.Output, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != e.OutputSHA256 {
		return fmt.Errorf("the output %s changed since the journal was written (its first %d bytes are not what the run wrote)", e.Output, e.OutputBytes)
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
	j.entry.OutputSHA256 = hex.EncodeToString(j.outHash.Sum(nil))
	j.entry.InputBytes, j.entry.InputSHA256 = j.in.sum()
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
