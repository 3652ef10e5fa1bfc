package table

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/flowrun/flowrun/internal/jsontext"
	"github.com/flowrun/flowrun/stages"
)

func init() {
	stages.Register(stages.Spec{
		Name: "lookup",
		Doc: "Joins each JSON object record against a reference file (JSON lines, CSV or TSV with a header, or a JSON array " +
			"of objects), loaded once per run and shared by the workers: the reference record whose key equals the record's " +
			"on field (compared as text, so 42 matches \"42\"; the first of equal keys wins), or its field, goes under as, " +
			"at the end of the record or in place of a field of that name.",
		Batch: true,
		Options: []stages.Option{
			{Name: "file", Type: stages.String, Required: true, Doc: "the reference file, relative to the pipeline's directory"},
			{Name: "key", Type: stages.String, Required: true, Doc: "the reference records' field to match"},
			{Name: "on", Type: stages.String, Default: "", Doc: "the record's field to match with key; empty: the same name as key"},
			{Name: "as", Type: stages.String, Default: "", Doc: "the field that receives the match; empty: field's name"},
			{Name: "field", Type: stages.String, Default: "", Doc: "add only this field of the matching reference record; empty: all of it"},
			{Name: "format", Type: stages.String, Default: "auto", Enum: []string{"auto", "jsonl", "csv", "tsv", "json"}, Doc: "the file's format; auto: from its extension (.jsonl, .ndjson, .csv, .tsv, .json)"},
			{Name: "missing", Type: stages.String, Default: "keep", Enum: []string{"keep", "drop", "error"}, Doc: "a record with no match: pass it on unchanged, drop it, or fail it"},
			{Name: "max_size", Type: stages.Size, Default: 256 << 20, Doc: "the largest reference file to hold in memory"},
		},
		Check: func(c stages.Config) error { _, err := lookupOptions(c); return err },
		New:   newLookup,
	})
}

type lookupOpts struct {
	path, format, key, field string
	maxSize                  int
}

func lookupOptions(c stages.Config) (lookupOpts, error) {
	o := lookupOpts{path: c.String("file"), format: c.String("format"), key: c.String("key"), field: c.String("field"), maxSize: c.Int("max_size")}
	if !filepath.IsAbs(o.path) {
		o.path = filepath.Join(c.Dir, o.path)
	}
	if o.format == "auto" {
		switch strings.ToLower(filepath.Ext(o.path)) {
		case ".jsonl", ".ndjson":
			o.format = "jsonl"
		case ".csv":
			o.format = "csv"
		case ".tsv":
			o.format = "tsv"
		case ".json":
			o.format = "json"
		default:
			return o, stages.OptionErrorf("file", "cannot tell the format of %s from its extension; set format", c.String("file"))
		}
	}
	switch {
	case o.key == "":
		return o, stages.OptionErrorf("key", "is empty")
	case c.String("as") == "" && o.field == "":
		return o, stages.OptionErrorf("as", "lookup needs as (the field for the match), or field")
	}
	return o, nil
}

// refTable is a loaded reference file: key text to the JSON text that
// goes into matching records. It is shared by the workers of a run and
// read only.
type refTable struct {
	rows map[string][]byte
	refs int
}

// tables holds the reference files of the runs in progress: each is read
// by the first worker's New and dropped by the last one's Close (the
// runner makes every worker before the first record and closes them after
// the last), so a file is read once per run, and afresh by the next run.
var tables = struct {
	sync.Mutex
	m map[lookupOpts]*refTable
}{m: map[lookupOpts]*refTable{}}

type lookupStage struct {
	opts    lookupOpts
	table   *refTable
	on      []string
	as      []byte // `"as":`
	asName  string
	missing string
	vals    [][]byte
	key     []byte
	closed  bool
}

func newLookup(c stages.Config) (stages.Stage, error) {
	o, err := lookupOptions(c)
	if err != nil {
		return nil, err
	}
	s := &lookupStage{opts: o, missing: c.String("missing"), asName: c.String("as")}
	if s.asName == "" {
		s.asName = o.field
	}
	on := c.String("on")
	if on == "" {
		on = o.key
	}
	s.on = []string{on}
	s.as = append(jsontext.AppendString(nil, s.asName), ':')
	tables.Lock()
	defer tables.Unlock()
	t := tables.m[o]
	if t == nil {
		rows, err := loadReference(o, c.String("file"))
		if err != nil {
			return nil, err
		}
		t = &refTable{rows: rows}
		tables.m[o] = t
	}
	t.refs++
	s.table = t
	return s, nil
}

// Close lets go of the reference table; the last worker's Close drops it.
func (s *lookupStage) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	tables.Lock()
	defer tables.Unlock()
	if s.table.refs--; s.table.refs == 0 {
		delete(tables.m, s.opts)
	}
	return nil
}

func loadReference(o lookupOpts, name string) (map[string][]byte, error) {
	f, err := os.Open(o.path)
	if err != nil {
		return nil, stages.OptionErrorf("file", "%v", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, stages.OptionErrorf("file", "%v", err)
	}
	if st.Size() > int64(o.maxSize) {
		return nil, stages.OptionErrorf("file", "%s is %d bytes, more than max_size (%d): lookup holds its reference in memory", name, st.Size(), o.maxSize)
	}
	// A file that is not regular (a FIFO, /dev/stdin) has no size to
	// check first: reading stops one byte past max_size.
	lr := &io.LimitedReader{R: f, N: int64(o.maxSize) + 1}
	rows, err := readReference(o, name, lr)
	if err == nil && lr.N == 0 {
		return nil, stages.OptionErrorf("file", "%s is more than max_size (%d bytes): lookup holds its reference in memory", name, o.maxSize)
	}
	return rows, err
}

// readReference reads the rows of the reference file, past a UTF-8
// byte-order mark at its start (spreadsheets write one before a CSV's
// header, which would hide the key's column).
func readReference(o lookupOpts, name string, f io.Reader) (map[string][]byte, error) {
	rows := map[string][]byte{}
	add := func(where string, rec []byte) error {
		vals, err := jsontext.Fields(rec, []string{o.key, o.field}, nil)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", name, where, err)
		}
		if vals[0] == nil {
			return fmt.Errorf("%s: %s: no field %q (the key)", name, where, o.key)
		}
		k := string(keyText(nil, vals[0]))
		if _, dup := rows[k]; dup {
			return nil // the first wins
		}
		v := rec
		if o.field != "" {
			if v = vals[1]; v == nil {
				v = []byte("null")
			}
		}
		rows[k] = bytes.Clone(v)
		return nil
	}
	r := bufio.NewReaderSize(f, 64<<10)
	if bom, _ := r.Peek(3); string(bom) == "\ufeff" {
		r.Discard(3)
	}
	switch o.format {
	case "jsonl":
		line := 0
		for {
			b, err := r.ReadBytes('\n')
			if len(bytes.TrimSpace(b)) > 0 {
				line++
				if aerr := add(fmt.Sprintf("line %d", line), bytes.TrimSpace(b)); aerr != nil {
					return nil, stages.OptionErrorf("file", "%v", aerr)
				}
			} else if len(b) > 0 {
				line++
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, stages.OptionErrorf("file", "%s: %v", name, err)
			}
		}
	case "json":
		// Element by element, so that the file is held once, as rows.
		dec := json.NewDecoder(r)
		bad := func(err error) error {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return stages.OptionErrorf("file", "%s: at byte %d: %v", name, dec.InputOffset(), err)
		}
		t, err := dec.Token()
		if err != nil {
			return nil, bad(err)
		}
		if t != json.Delim('[') {
			return nil, stages.OptionErrorf("file", "%s: want a JSON array of objects, not %s", name, jsonKind(t))
		}
		for i := 0; dec.More(); i++ {
			var rec json.RawMessage
			if err := dec.Decode(&rec); err != nil {
				return nil, bad(err)
			}
			if err := add(fmt.Sprintf("element %d", i), rec); err != nil {
				return nil, stages.OptionErrorf("file", "%v", err)
			}
		}
		if _, err := dec.Token(); err != nil {
			return nil, bad(err)
		}
		if _, err := dec.Token(); err != io.EOF {
			if err == nil {
				err = errors.New("data after the array")
			}
			return nil, bad(err)
		}
	case "csv", "tsv":
		next := csvRows(r, o.format == "tsv")
		header, err := next()
		if err != nil {
			return nil, stages.OptionErrorf("file", "%s: header: %v", name, err)
		}
		for line := 2; ; line++ {
			row, err := next()
			if err == io.EOF {
				break
			}
			if err != nil {
				return nil, stages.OptionErrorf("file", "%s: %v", name, err)
			}
			b := []byte{'{'}
			for i, h := range header {
				if i > 0 {
					b = append(b, ',')
				}
				b = append(jsontext.AppendString(b, h), ':')
				v := ""
				if i < len(row) {
					v = row[i]
				}
				b = jsontext.AppendString(b, v)
			}
			if err := add(fmt.Sprintf("row %d", line), append(b, '}')); err != nil {
				return nil, stages.OptionErrorf("file", "%v", err)
			}
		}
	}
	return rows, nil
}

// jsonKind names the kind of value a JSON token starts.
func jsonKind(t json.Token) string {
	switch t := t.(type) {
	case json.Delim:
		if t == '{' {
			return "an object"
		}
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "a value"
}

// csvRows reads CSV, or TSV with Miller's escapes (\t, \n, \r, \\).
func csvRows(r *bufio.Reader, tsv bool) func() ([]string, error) {
	if !tsv {
		cr := csv.NewReader(r)
		cr.FieldsPerRecord = -1 // short rows are padded
		return cr.Read
	}
	unescape := strings.NewReplacer(`\t`, "\t", `\n`, "\n", `\r`, "\r", `\\`, `\`)
	return func() ([]string, error) {
		line, err := r.ReadString('\n')
		if line == "" && err != nil {
			return nil, err
		}
		line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		fields := strings.Split(line, "\t")
		for i, f := range fields {
			if strings.IndexByte(f, '\\') >= 0 {
				fields[i] = unescape.Replace(f)
			}
		}
		return fields, nil
	}
}

// keyText is what keys compare by: a string's text, any other value's
// JSON text, so that 42 and "42" (a CSV field) match.
func keyText(b, v []byte) []byte {
	if len(v) > 0 && v[0] == '"' {
		return append(b, jsontext.Text(v)...)
	}
	return append(b, v...)
}

var errNoMatch = errors.New("no match")

func (s *lookupStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	var err error
	if s.vals, err = jsontext.Fields(rec, s.on, s.vals); err != nil {
		return out, stages.Permanent(err)
	}
	var match []byte
	if v := s.vals[0]; v != nil {
		s.key = keyText(s.key[:0], v)
		match = s.table.rows[string(s.key)]
	}
	if match == nil {
		switch s.missing {
		case "drop":
			return out, nil
		case "error":
			if s.vals[0] == nil {
				return out, stages.Permanent(fmt.Errorf("lookup: record has no field %q", s.on[0]))
			}
			return out, stages.Permanent(fmt.Errorf("lookup: %s %s is not in %s: %w", s.on[0], excerpt(s.vals[0]), filepath.Base(s.opts.path), errNoMatch))
		}
		return append(out, rec), nil
	}
	b := make([]byte, 0, len(rec)+len(s.as)+len(match)+1)
	b = append(b, '{')
	replaced := false
	jsontext.EachMember(rec, func(key []byte, escaped bool, member, _ []byte) {
		k := string(key)
		if escaped {
			k, _ = jsontext.UnquoteKey(key)
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		if k == s.asName && !replaced {
			replaced = true
			b = append(append(b, s.as...), match...)
			return
		}
		b = append(b, member...)
	}) // rec was scanned by Fields
	if !replaced {
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(append(b, s.as...), match...)
	}
	return append(out, append(b, '}')), nil
}
