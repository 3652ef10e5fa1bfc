// Package codec turns bytes into records and records into bytes, in the
// formats of files and stdin: lines, jsonl, csv, tsv and json (a whole
// document, its records picked by a jq path). A Decoder splits what it
// reads into records; an Encoder formats records for writing.
//
// It knows nothing of stages, connectors or the runner: the file
// connector (connect/file) and the runner read and write through it.
// What it must keep: no limit on a line's length but MaxRecordSize (a
// longer one is a record error that costs about the limit, not 4×), a
// record typed on a terminal passed on at once (Next returns what one
// read gives), a byte-order mark dropped before jsonl, csv, tsv and json,
// and a record never an alias of another one's bytes.
package codec

import (
	"io"
	"sync/atomic"
)

// chunkSize is the size of each read; records point into these chunks.
const chunkSize = 64 << 10

// Record is what a Decoder hands on: a record, or one that could not be
// decoded.
type Record struct {
	Data []byte
	Line int64 // the line of the input where the record starts (for json, the value's number)
	Err  error // a decode error for this record; Data is what was read
	// Truncated says Data is only the start of a record too long to keep.
	Truncated bool
}

// Decoder yields the records of one input. Next returns the records that
// can be had with at most one blocking read, at most max of them,
// appended to out, so that a record typed on a terminal is passed on at
// once; io.EOF after the last. A record's Data is its own: it does not
// change when Next is called again, and appending to it cannot write
// into another record.
type Decoder interface {
	Next(max int, out []Record) ([]Record, error)
	// Consumed is how many bytes of the input the records returned so
	// far span: what a progress bar shows against the file's size.
	Consumed() int64
}

// Table is the dialect of csv or tsv. Its zero value is RFC 4180 CSV with
// a header row (for tsv, Miller's TSV: tab-separated, with \t, \n, \r and
// \\ escapes and no quoting).
type Table struct {
	Delimiter  rune // 0: ',' for csv, tab for tsv
	NoHeader   bool // no header row; columns are named 1, 2, …
	Ragged     bool // short rows are padded with empty values, long rows get extra numbered keys (Miller's --allow-ragged-csv-input)
	Comment    rune // lines starting with it are skipped; 0: none
	LazyQuotes bool // a quote may appear in an unquoted field, and a non-doubled quote in a quoted one
	Infer      bool // input: numbers and booleans become JSON numbers and booleans, not strings
}

// Options say how to decode an input.
type Options struct {
	Format        string // lines (also ""), jsonl, csv, tsv or json
	MaxRecordSize int    // bytes; a longer record is a record error
	Table         Table  // csv and tsv
	Select        string // json: the jq path of the values that are the records; "" is "."
}

// NewDecoder returns the decoder of r in o's format. Every byte read from
// r is added to bytesRead as it is read (a progress display reads it
// while the decoder runs).
func NewDecoder(r io.Reader, o Options, bytesRead *atomic.Int64) Decoder {
	cr := &countingReader{r: r, n: bytesRead}
	switch {
	case o.Format == "json":
		return newJSONDocDecoder(&bomReader{r: cr}, o.Select, o.MaxRecordSize)
	case o.Format == "tsv" || o.Format == "csv" && o.Table != (Table{}):
		return newTableDecoder(&bomReader{r: cr}, o.Format == "tsv", o.Table, o.MaxRecordSize)
	case o.Format == "jsonl":
		return &jsonlDecoder{lines: newLineDecoder(&bomReader{r: cr}, o.MaxRecordSize)}
	case o.Format == "csv":
		return newCSVDecoder(&bomReader{r: cr})
	}
	return newLineDecoder(cr, o.MaxRecordSize)
}

// ReadCount counts the bytes read through it (N), for a decoder that
// reads through a buffer of its own and knows what it consumed as
// N - Buffered.
type ReadCount struct {
	R io.Reader
	N int64
}

func (c *ReadCount) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.N += int64(n)
	return n, err
}

// CountingReader adds the bytes read through it to N.
func CountingReader(r io.Reader, n *atomic.Int64) io.Reader { return &countingReader{r: r, n: n} }

// ChunkSize is the size of the decoders' reads, for a reader of the same
// input that buffers its own.
const ChunkSize = chunkSize
