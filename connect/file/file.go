// Package file is the connector of files and stdin, the default input and
// output: a path, a glob (its matches read in lexical order), - for stdin
// or stdout, or a file:// URL, in the formats of connect/codec.
//
// A file source's Settle does nothing: a file is not a queue, and what
// makes a run over files durable is the journal (--journal), which knows
// the input's byte offsets. A file sink's Flush writes what it holds and
// fsyncs it.
//
// Its options are the keys of a pipeline's input: and output: (format,
// max_record_size, select, csv.delimiter, …), which spec reads, or a
// file:// URL's query when it is opened through the registry. Spec
// validates the format against this package's Spec, and `flowrun
// connectors` documents it from the same.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"unicode/utf8"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/codec"
)

// Scheme is the URL scheme of files.
const Scheme = "file"

// Formats are the formats an input may have; OutputFormats an output's
// (json, a whole document, is read only).
var (
	Formats       = []string{"lines", "jsonl", "csv", "tsv", "json"}
	OutputFormats = []string{"lines", "jsonl", "csv", "tsv"}
)

// Spec is the file connector's registry entry.
var Spec = connect.Spec{
	Name:    "file",
	Schemes: []string{Scheme},
	URL:     "PATH, GLOB, - or file:///PATH",
	Doc: "Files and stdin/stdout, the default: a path, a glob (its matches read in lexical order, their sizes the progress total), " +
		"- for stdin or stdout, or a file:// URL. The options are the input's and output's own keys (input.format, input.csv.delimiter; " +
		"a Go program opening file:///PATH?format=csv through the registry gives them in the query). Nothing is acked: --journal makes a run over files resumable.",
	Options: []connect.Option{
		{Name: "format", Type: connect.String, Default: "lines", Enum: Formats, Use: connect.Both,
			Doc: "How records are written in the file: lines, jsonl (one JSON value a line), csv and tsv (a row is a JSON object keyed by the header), json (input: one document, its records picked by select)."},
		{Name: "max_record_size", Type: connect.Size, Default: "1GiB", Use: connect.In,
			Doc: "A longer record is an input error (input.on_error says what then), costing about this much memory, not more."},
		{Name: "select", Type: connect.String, Use: connect.In,
			Doc: "format json: the jq path of the values that are the records (.items[]); a plain path streams, any other reads the document whole."},
		{Name: "delimiter", Type: connect.String, Use: connect.Both,
			Doc: "csv, tsv (input.csv.delimiter): the field separator, one character; default , for csv and a tab for tsv."},
		{Name: "header", Type: connect.Bool, Default: "true", Use: connect.Both,
			Doc: "csv, tsv (input.csv.header): false: no header row, the columns are named 1, 2, …"},
		{Name: "ragged", Type: connect.Bool, Default: "false", Use: connect.In,
			Doc: "csv, tsv: a short row is padded with empty values, a long one's extra fields keyed by their numbers."},
		{Name: "comment", Type: connect.String, Use: connect.In,
			Doc: "csv, tsv: lines starting with this character are skipped."},
		{Name: "lazy_quotes", Type: connect.Bool, Default: "false", Use: connect.In,
			Doc: "csv: a quote may appear in an unquoted field, and a non-doubled quote in a quoted one."},
		{Name: "infer", Type: connect.Bool, Default: "false", Use: connect.In,
			Doc: "csv, tsv: numbers and booleans become JSON numbers and booleans, not strings."},
	},
	Check:  check,
	Source: openSource,
	Sink:   openSink,
}

func init() { connect.Register(Spec) }

// Path returns the path a file:// URL names, and whether s is one, for a
// pipeline's from: and to: and -i and -o, which read and write it as that
// path. A file URL names a local file (its host is empty or localhost),
// and takes no query there: the pipeline's keys are the options.
func Path(s string) (string, bool, error) {
	if connect.Scheme(s) != Scheme {
		return "", false, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", true, fmt.Errorf("%s: bad URL: %v", s, strings.TrimPrefix(err.Error(), "parse "))
	}
	if u.Host != "" && u.Host != "localhost" {
		return "", true, fmt.Errorf("%s: a file URL names a local file (file:///PATH), not one on %s", s, u.Host)
	}
	if u.Path == "" {
		return "", true, fmt.Errorf("%s: the URL names no file (file:///PATH)", s)
	}
	if u.RawQuery != "" {
		return "", true, fmt.Errorf("%s: a pipeline gives a file's options as input: and output: keys (format: csv), not in its URL", s)
	}
	if u.Fragment != "" {
		// Not dropped: file:///x#1 read /x, not the file x#1 (%23).
		return "", true, fmt.Errorf("%s: a file URL has no fragment (a # in a file name is %%23)", s)
	}
	if strings.Contains(strings.ToUpper(u.EscapedPath()), "%2F") {
		// Not decoded: file:///tmp%2Fx read /tmp/x, a file in /tmp,
		// where the URL names one file whose name holds a slash.
		return "", true, fmt.Errorf("%s: a file name cannot hold a / (%%2F); write the path with /", s)
	}
	if err := CheckName(u.Path); err != nil {
		return "", true, fmt.Errorf("%s: %w", s, err)
	}
	return u.Path, true, nil
}

// CheckName refuses a path that no file can have: one holding a NUL byte
// (%00 in a URL, \0 in YAML), which the system would refuse with a bare
// "invalid argument".
func CheckName(path string) error {
	if strings.IndexByte(path, 0) >= 0 {
		return fmt.Errorf("%q: a file name cannot hold a NUL byte", path)
	}
	return nil
}

// Input is one file of an input, read in order.
type Input = connect.File

// Expand resolves an input: stdin ("", "stdin", "-"), one path, or a glob
// whose matches are read in lexical order. It returns the files and their
// total size in bytes, or -1 when it cannot be known (stdin, a pipe).
func Expand(from string) ([]Input, int64, error) {
	if from == "" || from == "stdin" || from == "-" {
		return []Input{{Name: "stdin"}}, -1, nil
	}
	paths := []string{from}
	if strings.ContainsAny(from, "*?[") {
		m, err := filepath.Glob(from)
		if err != nil {
			return nil, 0, fmt.Errorf("input %q: %w", from, err)
		}
		if len(m) == 0 {
			return nil, 0, fmt.Errorf("input %q: no file matches", from)
		}
		paths = m
	}
	var total int64
	files := make([]Input, len(paths))
	for i, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, 0, fmt.Errorf("input: %w", err)
		}
		if fi.IsDir() {
			return nil, 0, fmt.Errorf("input %s: is a directory", p)
		}
		if fi.Mode().IsRegular() && total >= 0 {
			total += fi.Size()
		} else {
			total = -1
		}
		files[i] = Input{Name: p, Path: p}
	}
	return files, total, nil
}

func check(p *connect.Params, d connect.Direction) error {
	bad := func(opt, reason string) error {
		return &connect.OptionError{Connector: "file", Option: opt, Reason: reason}
	}
	if h := p.URL.Host; h != "" && h != "localhost" {
		// As Path refuses it for from: and -i: not the local path.
		return &connect.OptionError{Connector: "file", Reason: fmt.Sprintf("a file URL names a local file (file:///PATH), not one on %s", h)}
	}
	if p.URL.Fragment != "" {
		return &connect.OptionError{Connector: "file", Reason: "a file URL has no fragment (a # in a file name is %23)"}
	}
	f := p.String("format")
	if d == connect.Out && f == "json" {
		return bad("format", "json is an input format; write jsonl")
	}
	if p.Has("select") && f != "json" {
		return bad("select", "applies to format json, not "+f)
	}
	for _, o := range []string{"delimiter", "header", "ragged", "comment", "lazy_quotes", "infer"} {
		if p.Has(o) && f != "csv" && f != "tsv" {
			return bad(o, "applies to format csv or tsv, not "+f)
		}
	}
	for _, o := range []string{"delimiter", "comment"} {
		if v := p.String(o); p.Has(o) {
			if r, n := utf8.DecodeRuneInString(v); n == 0 || n != len(v) || r == '"' || r == '\r' || r == '\n' || r == utf8.RuneError {
				return bad(o, fmt.Sprintf("must be one character other than a quote or a line break, not %q", v))
			}
		}
	}
	return nil
}

// options are the codec's options from the connector's.
func options(p *connect.Params) codec.Options {
	char := func(name string) rune {
		if v := p.String(name); v != "" {
			r, _ := utf8.DecodeRuneInString(v)
			return r
		}
		return 0
	}
	return codec.Options{
		Format:        p.String("format"),
		MaxRecordSize: p.Int("max_record_size"),
		Select:        p.String("select"),
		Table: codec.Table{
			Delimiter: char("delimiter"), NoHeader: !p.Bool("header"), Ragged: p.Bool("ragged"),
			Comment: char("comment"), LazyQuotes: p.Bool("lazy_quotes"), Infer: p.Bool("infer"),
		},
	}
}

// Source reads the files of an input in order, record by record. It is
// a connect.FileSource.
type Source struct {
	cfg   SourceConfig
	files []Input
	total int64
	i     int
	f     *os.File
	dec   codec.Decoder
	recs  []codec.Record
	read  atomic.Int64
	base  int64 // bytes of the files before the one being read
	pos   int64 // Consumed
	err   error // a record that did not decode: Receive has ended
}

var _ connect.FileSource = (*Source)(nil)

// SourceConfig opens a Source from Go with what a URL cannot say.
type SourceConfig struct {
	From    string // a path, a glob, or stdin ("", "stdin", "-")
	Options codec.Options
	// Stdin is what stdin reads; nil is an empty input.
	Stdin io.Reader
	// Wrap, when set, wraps the reader of each file (not stdin's): a
	// journal hashes what is read.
	Wrap func(io.Reader) io.Reader
	// Decoder, when set, decodes each file instead of codec.NewDecoder
	// (a re-run of dead letters reads their file in a format of its
	// own); it adds the bytes it reads from r to read, as NewDecoder.
	Decoder func(r io.Reader, read *atomic.Int64) codec.Decoder
}

// NewSource resolves c.From (Expand) and returns its Source; nothing is
// opened until the first read.
func NewSource(c SourceConfig) (*Source, error) {
	files, total, err := Expand(c.From)
	if err != nil {
		return nil, err
	}
	return &Source{cfg: c, files: files, total: total}, nil
}

func openSource(_ context.Context, p *connect.Params) (connect.Source, error) {
	s, err := NewSource(SourceConfig{From: p.URL.Path, Options: options(p), Stdin: os.Stdin})
	if err != nil {
		return nil, &connect.Error{Broker: p.Broker(), Reason: err.Error(), Err: err}
	}
	return s, nil
}

// Files returns the files read, in order.
func (s *Source) Files() []Input { return s.files }

// Size is the files' total size, -1 when it cannot be known.
func (s *Source) Size() int64 { return s.total }

// Read is how many bytes were read so far.
func (s *Source) Read() int64 { return s.read.Load() }

// Consumed is how many bytes the records returned so far span.
func (s *Source) Consumed() int64 { return s.pos }

// ReceiveRecords returns the next records of the file being read,
// opening the next file when the last has ended (connect.FileSource).
func (s *Source) ReceiveRecords(max int, out []codec.Record) ([]codec.Record, error) {
	if s.dec == nil {
		if s.i == len(s.files) {
			return out, io.EOF
		}
		if err := s.open(); err != nil {
			return out, err
		}
	}
	recs, err := s.dec.Next(max, out)
	s.pos = s.base + s.dec.Consumed()
	switch {
	case err == io.EOF:
		s.closeFile() // this file's, not the whole glob's: a glob may match thousands
		s.dec = nil
		s.i++
		s.base = s.read.Load()
	case err != nil:
		return recs, fmt.Errorf("read %s: %w", s.files[s.i].Name, err)
	}
	return recs, nil
}

// open opens the next file and its decoder.
func (s *Source) open() error {
	in := s.cfg.Stdin
	if p := s.files[s.i].Path; p != "" {
		f, err := os.Open(p)
		if err != nil {
			return fmt.Errorf("input: %w", err)
		}
		s.f, in = f, f
		if s.cfg.Wrap != nil {
			in = s.cfg.Wrap(f)
		}
	}
	if in == nil {
		in = eofReader{}
	}
	if s.cfg.Decoder != nil {
		s.dec = s.cfg.Decoder(in, &s.read)
	} else {
		s.dec = codec.NewDecoder(in, s.cfg.Options, &s.read)
	}
	return nil
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// Receive returns the next records, each a message whose ID is its file
// and line. A record that cannot be decoded ends the read with an error
// naming it, which every later Receive returns again: a program that
// wants to go on past it calls ReceiveRecords, as the runner does.
func (s *Source) Receive(ctx context.Context, buf []connect.Message) ([]connect.Message, error) {
	buf = buf[:0]
	max := cap(buf)
	if max == 0 {
		max = 1024
	}
	for {
		if s.err != nil {
			return buf, s.err
		}
		if err := ctx.Err(); err != nil {
			return buf, err
		}
		if s.i == len(s.files) {
			return buf, io.EOF
		}
		name := s.files[s.i].Name
		recs, err := s.ReceiveRecords(max-len(buf), s.recs[:0])
		s.recs = recs[:0]
		for _, r := range recs {
			if r.Err != nil {
				s.err = fmt.Errorf("input %s %w", name, r.Err)
				return buf, s.err
			}
			buf = append(buf, connect.Message{Data: r.Data, ID: fmt.Sprintf("%s:%d", name, r.Line)})
		}
		if err != nil {
			return buf, err
		}
		if len(buf) > 0 {
			return buf, nil
		}
	}
}

// Settle does nothing: a file forgets nothing until it is rewritten.
func (s *Source) Settle(context.Context, []connect.Message, connect.Outcome) error { return nil }

// Close closes the file being read.
func (s *Source) Close() error { return s.closeFile() }

func (s *Source) closeFile() error {
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	return err
}

// Sink writes records to a file or stdout in large, record-aligned
// writes: its buffer only ever holds whole records, so a run stopped
// between two writes never leaves half a record behind. It is a
// connect.FileSink.
type Sink struct {
	w     io.Writer
	f     *os.File // fsynced by Flush; nil when not a file
	own   bool     // Close closes f
	name  string   // for messages: "stdout" or the path
	enc   *codec.Encoder
	bytes int64 // written
}

var _ connect.FileSink = (*Sink)(nil)

// SinkConfig makes a Sink from Go, for a caller that opens and positions
// the file itself (a resumed run truncates it where its journal says).
type SinkConfig struct {
	W      io.Writer // where the bytes go: the file, or what wraps it
	File   *os.File  // the file under W, which Flush fsyncs; nil: none
	Name   string    // "stdout" or the path, for messages
	Format string
	Table  codec.Table
	// Header, for csv and tsv, is the header row of the file written
	// after (codec.Header): the columns continue it. nil: a new file.
	Header []string
}

// flushAt is how much the sink gathers before it writes.
const flushAt = 64 << 10

// ErrClosed says the reader of the output went away (`| head`).
var ErrClosed = errors.New("output closed by its reader")

// NewSink returns the sink c describes; it writes nothing yet.
func NewSink(c SinkConfig) *Sink {
	enc := codec.NewEncoder(c.Format, c.Table, c.Header)
	enc.Buf = make([]byte, 0, flushAt+4096)
	return &Sink{w: c.W, f: c.File, name: c.Name, enc: enc}
}

func openSink(_ context.Context, p *connect.Params) (connect.Sink, error) {
	path := p.URL.Path
	c := SinkConfig{Name: path, Format: p.String("format"), Table: options(p).Table}
	if path == "-" || path == "stdout" {
		c.W, c.Name = os.Stdout, "stdout"
		return NewSink(c), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, &connect.Error{Broker: p.Broker(), Reason: err.Error(), Err: err}
	}
	c.W, c.File = f, f
	s := NewSink(c)
	s.own = true
	return s, nil
}

// Write formats msgs; a record the format cannot hold (csv needs JSON
// objects) is an error naming it.
func (s *Sink) Write(_ context.Context, msgs []connect.Message) error {
	for _, m := range msgs {
		if err := s.enc.Add(m.Data); err != nil {
			return fmt.Errorf("output %s: %w", s.name, err)
		}
		if s.Full() {
			if err := s.WriteOut(); err != nil {
				return err
			}
		}
	}
	return nil
}

// Add formats one record into the buffer. An error is about the record,
// not the output: it cannot be written in the output's format.
func (s *Sink) Add(rec []byte) error { return s.enc.Add(rec) }

// Full says the buffer should be written now.
func (s *Sink) Full() bool { return len(s.enc.Buf) >= flushAt }

// Written is how many bytes were written.
func (s *Sink) Written() int64 { return s.bytes }

// Flush writes what Write gathered and fsyncs a regular file.
func (s *Sink) Flush(context.Context) error {
	if err := s.WriteOut(); err != nil {
		return err
	}
	if s.f == nil {
		return nil
	}
	if fi, err := s.f.Stat(); err == nil && fi.Mode().IsRegular() {
		if err := s.f.Sync(); err != nil {
			return fmt.Errorf("output %s: %w", s.name, err)
		}
	}
	return nil
}

// WriteOut writes the buffer, without an fsync. A reader that went away
// is ErrClosed.
func (s *Sink) WriteOut() error {
	if len(s.enc.Buf) == 0 {
		return nil
	}
	n, err := s.w.Write(s.enc.Buf)
	s.bytes += int64(n)
	s.enc.Buf = s.enc.Buf[:0]
	if err != nil {
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrClosedPipe) {
			return ErrClosed
		}
		if n > 0 {
			// A short write (a full disk) left part of the records
			// at the end of the file: a file holds whole records,
			// so they go. The records before them stay.
			if cerr := s.cutTorn(n); cerr == nil {
				s.bytes -= int64(n)
			}
		}
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is s.name already
		}
		return fmt.Errorf("write %s: %w", s.name, err)
	}
	return nil
}

// cutTorn takes the n bytes a failed write left at the end of a regular
// file back off it.
func (s *Sink) cutTorn(n int) error {
	if s.f == nil {
		return errors.New("not a file")
	}
	if fi, err := s.f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return errors.New("not a regular file")
	}
	end, err := s.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if err := s.f.Truncate(end - int64(n)); err != nil {
		return err
	}
	_, err = s.f.Seek(end-int64(n), io.SeekStart)
	return err
}

// Close closes the file the sink opened; it flushes nothing.
func (s *Sink) Close() error {
	if !s.own {
		return nil
	}
	return s.f.Close()
}
