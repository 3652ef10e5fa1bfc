package codec

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/flowrun/flowrun/internal/jsontext"
)

// csvDecoder turns CSV rows into JSON objects keyed by the header row.
type csvDecoder struct {
	br     *bufio.Reader
	r      *csv.Reader
	header []string
	keys   [][]byte // the header names as JSON strings
	read   *ReadCount
}

func newCSVDecoder(r io.Reader) *csvDecoder {
	rc := &ReadCount{R: r}
	br := bufio.NewReaderSize(rc, chunkSize) // csv.NewReader reads through br itself, so Buffered is exact
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1 // checked here, so the error names the line
	return &csvDecoder{br: br, r: cr, read: rc}
}

func (d *csvDecoder) Consumed() int64 { return d.read.N - int64(d.br.Buffered()) }

func (d *csvDecoder) Next(max int, out []Record) ([]Record, error) {
	for len(out) < max {
		row, err := d.r.Read()
		if err == io.EOF {
			return out, io.EOF
		}
		var line int
		if err == nil && len(row) > 0 {
			line, _ = d.r.FieldPos(0)
		}
		var perr *csv.ParseError
		switch {
		case errors.As(err, &perr):
			out = append(out, Record{Line: int64(perr.StartLine), Err: fmt.Errorf("line %d: %v", perr.StartLine, perr.Err)})
		case err != nil:
			return out, err
		case d.header == nil:
			d.header = append([]string(nil), row...)
			for _, h := range d.header {
				d.keys = append(d.keys, jsontext.AppendString(nil, h))
			}
			if len(d.header) == 0 {
				return out, fmt.Errorf("line %d: empty header row", line)
			}
			continue
		case len(row) != len(d.header):
			out = append(out, Record{Line: int64(line), Data: []byte(strings.Join(row, ",")),
				Err: fmt.Errorf("line %d: %d fields, the header has %d", line, len(row), len(d.header))})
		default:
			out = append(out, Record{Line: int64(line), Data: d.object(row)})
		}
		if d.br.Buffered() == 0 {
			break // the next row would wait on a read: pass these on now
		}
	}
	return out, nil
}

func (d *csvDecoder) object(row []string) []byte {
	n := 2
	for i, f := range row {
		n += len(d.keys[i]) + len(f) + 4
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, f := range row {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, d.keys[i]...)
		b = append(b, ':')
		b = jsontext.AppendString(b, f)
	}
	return append(b, '}')
}

// tableDecoder turns the rows of CSV in a dialect, or of TSV, into JSON
// objects, as Miller does: keyed by the header row or, without one, by
// the columns' numbers from 1; with ragged, a short row is padded with
// empty values and a long one's extra fields are keyed by their numbers;
// with infer, numbers and booleans are typed.
type tableDecoder struct {
	br      *bufio.Reader
	read    *ReadCount
	cr      *csv.Reader // csv; nil for tsv
	tsv     bool
	dialect Table
	sep     string
	max     int
	line    int // tsv: lines read
	header  []string
	keys    [][]byte
	row     []string
}

func newTableDecoder(r io.Reader, tsv bool, t Table, maxRecord int) *tableDecoder {
	rc := &ReadCount{R: r}
	d := &tableDecoder{read: rc, br: bufio.NewReaderSize(rc, chunkSize), tsv: tsv, dialect: t, max: maxRecord}
	if tsv {
		d.sep = "\t"
		if t.Delimiter != 0 {
			d.sep = string(t.Delimiter)
		}
		return d
	}
	d.cr = csv.NewReader(d.br)
	d.cr.ReuseRecord = true
	d.cr.FieldsPerRecord = -1
	d.cr.LazyQuotes = t.LazyQuotes
	d.cr.Comment = t.Comment
	if t.Delimiter != 0 {
		d.cr.Comma = t.Delimiter
	}
	return d
}

func (d *tableDecoder) Consumed() int64 { return d.read.N - int64(d.br.Buffered()) }

func (d *tableDecoder) Next(max int, out []Record) ([]Record, error) {
	for len(out) < max {
		row, line, err := d.readRow()
		if err == io.EOF {
			return out, io.EOF
		}
		var perr *csv.ParseError
		switch {
		case errors.As(err, &perr):
			out = append(out, Record{Line: int64(perr.StartLine), Err: fmt.Errorf("line %d: %v", perr.StartLine, perr.Err)})
		case err != nil:
			if row == nil {
				return out, err
			}
			out = append(out, Record{Line: int64(line), Data: []byte(strings.Join(row, d.sepText())), Err: err})
		case d.header == nil && !d.dialect.NoHeader:
			d.header = append([]string(nil), row...)
			if len(d.header) == 0 || len(d.header) == 1 && d.header[0] == "" {
				return out, fmt.Errorf("line %d: empty header row", line)
			}
			for _, h := range d.header {
				d.keys = append(d.keys, jsontext.AppendString(nil, h))
			}
			continue
		case d.header == nil:
			// No header: the columns are numbered after the first row,
			// which is data, as Miller's --implicit-csv-header does.
			for i := range row {
				d.header = append(d.header, strconv.Itoa(i+1))
				d.keys = append(d.keys, jsontext.AppendString(nil, d.header[i]))
			}
			out = append(out, Record{Line: int64(line), Data: d.object(row)})
		case !d.dialect.Ragged && len(row) != len(d.header):
			out = append(out, Record{Line: int64(line), Data: []byte(strings.Join(row, d.sepText())),
				Err: fmt.Errorf("line %d: %d fields, the header has %d (input.csv ragged: true pads or numbers them)", line, len(row), len(d.header))})
		default:
			out = append(out, Record{Line: int64(line), Data: d.object(row)})
		}
		if d.br.Buffered() == 0 {
			break // the next row would wait on a read: pass these on now
		}
	}
	return out, nil
}

func (d *tableDecoder) sepText() string {
	if d.tsv {
		return d.sep
	}
	return string(d.cr.Comma)
}

// readRow returns the next row and the line it starts on.
func (d *tableDecoder) readRow() ([]string, int, error) {
	if !d.tsv {
		row, err := d.cr.Read()
		line := 0
		if err == nil && len(row) > 0 {
			line, _ = d.cr.FieldPos(0)
		}
		return row, line, err
	}
	for {
		b, err := d.br.ReadSlice('\n')
		for err == bufio.ErrBufferFull {
			// A line longer than the buffer: gather it, up to max.
			long := append([]byte(nil), b...)
			for err == bufio.ErrBufferFull && len(long) <= d.max {
				b, err = d.br.ReadSlice('\n')
				long = append(long, b...)
			}
			b = long
			if len(b) > d.max {
				for err == bufio.ErrBufferFull {
					_, err = d.br.ReadSlice('\n')
				}
				d.line++
				return []string{}, d.line, fmt.Errorf("line %d: longer than max_record_size (%d bytes)", d.line, d.max)
			}
		}
		if len(b) == 0 && err != nil {
			return nil, d.line, err
		}
		d.line++
		if err != nil && err != io.EOF {
			return nil, d.line, err
		}
		text := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if text == "" || d.dialect.Comment != 0 && strings.HasPrefix(text, string(d.dialect.Comment)) {
			if err == io.EOF {
				return nil, d.line, io.EOF
			}
			continue
		}
		d.row = d.row[:0]
		for _, f := range strings.Split(text, d.sep) {
			if strings.IndexByte(f, '\\') >= 0 {
				f = tsvUnescape.Replace(f)
			}
			d.row = append(d.row, f)
		}
		return d.row, d.line, nil
	}
}

// Miller's TSV escapes: a field holds no tab or line break, and a
// backslash before t, n, r or another backslash stands for it.
var (
	tsvUnescape = strings.NewReplacer(`\t`, "\t", `\n`, "\n", `\r`, "\r", `\\`, `\`)
	tsvEscape   = strings.NewReplacer("\t", `\t`, "\n", `\n`, "\r", `\r`, `\`, `\\`)
)

func (d *tableDecoder) object(row []string) []byte {
	b := make([]byte, 0, 16*len(row)+2)
	b = append(b, '{')
	for i, f := range row {
		if i > 0 {
			b = append(b, ',')
		}
		if i < len(d.keys) {
			b = append(b, d.keys[i]...)
		} else {
			b = jsontext.AppendString(b, strconv.Itoa(i+1))
		}
		b = append(b, ':')
		b = d.value(b, f)
	}
	if d.dialect.Ragged {
		for i := len(row); i < len(d.keys); i++ {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(append(b, d.keys[i]...), `:""`...)
		}
	}
	return append(b, '}')
}

// value writes a field as a JSON string or, with infer, as the number or
// boolean it spells: JSON's own number syntax, true and false.
func (d *tableDecoder) value(b []byte, f string) []byte {
	if d.dialect.Infer && isJSONNumber(f) || d.dialect.Infer && (f == "true" || f == "false") {
		return append(b, f...)
	}
	return jsontext.AppendString(b, f)
}

func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - j
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case digits() == 0:
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}
