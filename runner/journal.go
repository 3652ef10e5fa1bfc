package runner

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
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
// InputBytes bytes the run read), the output (its first OutputBytes
// bytes, by their SHA-256) and the dead-letter file (its entries of
// records up to Seq, which are there and nowhere else: their number and a
// hash of them that their order does not change, since a resume drops the
// entries after Seq from among them). A mismatch is refused with what changed, never
// mixed into the output; an output shorter than the journal says is never
// padded.

// journalVersion is the journal format's version; an older journal does
// not identify its run and cannot be resumed.
const journalVersion = 3

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
	DeadLettered    int64         `json:"dead_lettered"`   // entries of records up to Seq
	DeadLetterSum   string        `json:"dead_letter_sum"` // of those entries, see dlSum
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
		fi, err := os.Stat(f.Path)
		if err != nil {
			return e, fmt.Errorf("input: %w", err)
		}
		e.InputFiles = append(e.InputFiles, JournalFile{Path: f.Path, Size: fi.Size(), Modified: fi.ModTime().UTC().Format(time.RFC3339Nano)})
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
	dls     *dlSum
}

// dlSum sums the dead-letter entries of records up to a journal entry's
// Seq: how many, and the sum of their SHA-256s taken as four 64-bit
// lanes, which the entries' order does not change. An entry is pending
// until a journal entry's Seq reaches its record.
type dlSum struct {
	mu      sync.Mutex
	pending []dlMark
	n       int64
	lanes   [4]uint64
}

type dlMark struct {
	seq uint64
	sum [32]byte
}

// add notes an entry (a line without its newline) of record seq.
func (s *dlSum) add(seq uint64, line []byte) {
	m := dlMark{seq: seq, sum: sha256.Sum256(line)}
	s.mu.Lock()
	s.pending = append(s.pending, m)
	s.mu.Unlock()
}

// upTo settles the pending entries of records up to seq and returns the
// count and sum of every settled one.
func (s *dlSum) upTo(seq uint64) (int64, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := s.pending[:0]
	for _, m := range s.pending {
		if m.seq > seq {
			keep = append(keep, m)
			continue
		}
		s.n++
		for i := range s.lanes {
			s.lanes[i] += binary.LittleEndian.Uint64(m.sum[8*i:])
		}
	}
	s.pending = keep
	return s.n, s.text()
}

func (s *dlSum) text() string {
	var b [32]byte
	for i, l := range s.lanes {
		binary.LittleEndian.PutUint64(b[8*i:], l)
	}
	return hex.EncodeToString(b[:])
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
	if err := checkDeadLetters(e); err != nil {
		return err
	}
	return checkOutput(e, out)
}

// eachDeadLetter calls fn with each whole entry (a line with its newline)
// of the dead-letter file at path and its record's number; a torn last
// line or one that is not an entry is left out. A missing file has none.
func eachDeadLetter(path string, fn func(seq uint64, line []byte) error) error {
	in, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dead letter: %w", err)
	}
	defer in.Close()
	r := bufio.NewReader(in)
	for {
		line, err := r.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			var d DeadLetter
			if json.Unmarshal(line, &d) == nil {
				if err := fn(d.Seq, line); err != nil {
					return err
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dead letter %s: %w", path, err)
		}
	}
}

// checkDeadLetters checks that the dead-letter file still holds the
// entries of records up to Seq that the journal counts: they are there
// only, and a resume that went on without them would lose them.
func checkDeadLetters(e *JournalEntry) error {
	if e.DeadLetter == "" || e.DeadLettered == 0 {
		return nil
	}
	var s dlSum
	err := eachDeadLetter(e.DeadLetter, func(seq uint64, line []byte) error {
		if seq <= e.Seq {
			s.add(seq, line[:len(line)-1])
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, statErr := os.Stat(e.DeadLetter); errors.Is(statErr, fs.ErrNotExist) {
		return fmt.Errorf("the dead-letter file %s was removed since the journal was written (it held %d dead letters of records done)", e.DeadLetter, e.DeadLettered)
	}
	if n, sum := s.upTo(e.Seq); n != e.DeadLettered || sum != e.DeadLetterSum {
		return fmt.Errorf("the dead-letter file %s changed since the journal was written (it holds %d dead letters of records done, not the %d the run wrote, or not the same ones)", e.DeadLetter, n, e.DeadLettered)
	}
	return nil
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
		file, err := os.Open(f.Path)
		if err != nil {
			return fmt.Errorf("input: %w", err)
		}
		c, err := io.CopyN(h, file, left)
		file.Close()
		left -= c
		if err != nil && err != io.EOF {
			return fmt.Errorf("input %s: %w", f.Name, err)
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
		j.entry.DeadLettered, j.entry.DeadLetterSum = j.dls.upTo(seq)
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
// otherwise appear twice. It notes what it keeps in sum.
func keepDeadLetters(path string, seq uint64, sum *dlSum) error {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return replaceFile(path, func(w io.Writer) error {
		return eachDeadLetter(path, func(s uint64, line []byte) error {
			if s > seq {
				return nil
			}
			sum.add(s, line[:len(line)-1])
			_, err := w.Write(line)
			return err
		})
	})
}
