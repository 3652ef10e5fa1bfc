package codec

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/flowrun/flowrun/internal/jsontext"
)

// Encoder formats records in one output format into Buf, which its
// caller writes and empties: lines as they are; jsonl a record that is
// JSON as it is and any other as a JSON string; csv and tsv a JSON object
// record as a row, under a header of the first record's fields.
type Encoder struct {
	format   string
	lines    bool // format lines: records go out as they are, with no switch on format per record
	Buf      []byte
	header   []string        // csv, tsv: the columns, from the first record
	columns  map[string]bool // the header's names
	csvBuf   bytes.Buffer
	csvW     *csv.Writer
	fields   []string
	noHeader bool   // csv, tsv: write no header row
	tsvSep   string // tsv: the delimiter
}

// NewEncoder returns an encoder for format (lines, jsonl, csv or tsv) in
// dialect t. header, when not nil, is the header of the CSV or TSV being
// continued: the rows follow its columns, and no header is written.
func NewEncoder(format string, t Table, header []string) *Encoder {
	s := &Encoder{format: format, header: header}
	s.lines = format != "jsonl" && format != "csv" && format != "tsv"
	if format == "csv" {
		s.csvW = csv.NewWriter(&s.csvBuf)
	}
	s.setTable(t)
	return s
}

// Add formats one record into Buf. An error is about the record,
// not the output: it cannot be written in the output's format.
func (s *Encoder) Add(rec []byte) error {
	if s.lines {
		s.Buf = append(s.Buf, rec...)
		s.Buf = append(s.Buf, '\n')
		return nil
	}
	switch s.format {
	case "jsonl":
		if jsontext.Valid(rec) {
			s.Buf = append(s.Buf, rec...)
		} else {
			s.Buf = jsontext.AppendString(s.Buf, rec)
		}
	case "csv":
		if err := s.addCSV(rec); err != nil {
			return err
		}
	case "tsv":
		if err := s.addTSV(rec); err != nil {
			return err
		}
	default:
		s.Buf = append(s.Buf, rec...)
	}
	s.Buf = append(s.Buf, '\n')
	return nil
}

func (s *Encoder) addCSV(rec []byte) error {
	cols, vals, err := objectFields(rec)
	if err != nil {
		return fmt.Errorf("csv output needs JSON objects: %w", err)
	}
	if s.header == nil {
		s.header = cols
		if !s.noHeader {
			s.csvW.Write(cols)
		}
	}
	if s.columns == nil {
		s.columns = make(map[string]bool, len(s.header))
		for _, h := range s.header {
			s.columns[h] = true
		}
	}
	// A field the header lacks would be dropped without a word: it is the
	// record's error instead.
	for _, c := range cols {
		if !s.columns[c] {
			return fmt.Errorf("field %q is not a column of the CSV output (its header, from the first record, is %s): give every record the same fields, or write jsonl", c, strings.Join(s.header, ","))
		}
	}
	s.fields = s.fields[:0]
	for _, h := range s.header {
		s.fields = append(s.fields, vals[h])
	}
	s.csvW.Write(s.fields)
	s.csvW.Flush()
	out := s.csvBuf.Bytes()
	s.Buf = append(s.Buf, out[:len(out)-1]...) // add appends the newline
	s.csvBuf.Reset()
	return nil
}

// objectFields returns the keys of a JSON object in their order and each
// value as CSV text: strings bare, anything else as its JSON.
func objectFields(rec []byte) ([]string, map[string]string, error) {
	d := json.NewDecoder(bytes.NewReader(rec))
	d.UseNumber()
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return nil, nil, errors.New("record is not a JSON object")
	}
	var keys []string
	vals := map[string]string{}
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return nil, nil, err
		}
		k, _ := t.(string)
		var raw json.RawMessage
		if err := d.Decode(&raw); err != nil {
			return nil, nil, err
		}
		var s string
		if len(raw) > 0 && raw[0] == '"' && json.Unmarshal(raw, &s) == nil {
			vals[k] = s
		} else {
			vals[k] = string(raw)
		}
		keys = append(keys, k)
	}
	return keys, vals, nil
}

// setTable gives the encoder the output's dialect: csv's delimiter and
// header, or tsv.
func (s *Encoder) setTable(t Table) {
	s.noHeader = t.NoHeader
	if s.format == "csv" && t.Delimiter != 0 {
		s.csvW.Comma = t.Delimiter
	}
	s.tsvSep = "\t"
	if t.Delimiter != 0 {
		s.tsvSep = string(t.Delimiter)
	}
}

// addTSV writes a JSON object record as a TSV row, Miller's escapes in
// its fields; the columns are the first record's, as with csv.
func (s *Encoder) addTSV(rec []byte) error {
	cols, vals, err := objectFields(rec)
	if err != nil {
		return fmt.Errorf("tsv output needs JSON objects: %w", err)
	}
	if s.header == nil {
		s.header = cols
		if !s.noHeader {
			if err := s.appendTSV(cols); err != nil {
				s.header = nil
				return err
			}
			s.Buf = append(s.Buf, '\n')
		}
	}
	if s.columns == nil {
		s.columns = make(map[string]bool, len(s.header))
		for _, h := range s.header {
			s.columns[h] = true
		}
	}
	for _, c := range cols {
		if !s.columns[c] {
			return fmt.Errorf("field %q is not a column of the TSV output (its header, from the first record, is %s): give every record the same fields, or write jsonl", c, strings.Join(s.header, s.tsvSep))
		}
	}
	s.fields = s.fields[:0]
	for _, h := range s.header {
		s.fields = append(s.fields, vals[h])
	}
	return s.appendTSV(s.fields)
}

// appendTSV appends a row. TSV escapes a tab but has no quoting, so a
// field holding another delimiter could only be written as two fields:
// it is the record's error instead (Miller refuses any delimiter but the
// tab for TSV).
func (s *Encoder) appendTSV(fields []string) error {
	start := len(s.Buf)
	for i, f := range fields {
		if i > 0 {
			s.Buf = append(s.Buf, s.tsvSep...)
		}
		if s.tsvSep != "\t" && strings.Contains(f, s.tsvSep) {
			s.Buf = s.Buf[:start]
			return fmt.Errorf("field %q holds the TSV output's delimiter %q, which TSV cannot escape (it has no quoting): write csv with that delimiter, which quotes it, or keep tsv's tab", f, s.tsvSep)
		}
		if strings.ContainsAny(f, "\t\n\r\\") {
			f = tsvEscape.Replace(f)
		}
		s.Buf = append(s.Buf, f...)
	}
	return nil
}

// Header reads the header row of the CSV or TSV in dialect t that an
// Encoder is to continue (an output appended to, a run resumed), as the
// Encoder wrote it: in t's delimiter, TSV's escapes undone. It is nil when
// r is empty, which gets a header as a new output would, and when t has
// no header row: the columns are then the first record's again, as they
// were for the run that began the file.
func Header(r io.Reader, format string, t Table) ([]string, error) {
	if t.NoHeader {
		return nil, nil
	}
	if format == "tsv" {
		line, err := bufio.NewReader(r).ReadString('\n')
		if line == "" {
			if err == io.EOF {
				err = nil
			}
			return nil, err
		}
		sep := "\t"
		if t.Delimiter != 0 {
			sep = string(t.Delimiter)
		}
		header := strings.Split(strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r"), sep)
		for i, h := range header {
			if strings.IndexByte(h, '\\') >= 0 {
				header[i] = tsvUnescape.Replace(h)
			}
		}
		return header, nil
	}
	cr := csv.NewReader(r)
	if t.Delimiter != 0 {
		cr.Comma = t.Delimiter
	}
	header, err := cr.Read()
	if err == io.EOF {
		return nil, nil
	}
	return header, err
}
