package spec

import (
	"unicode/utf8"

	"github.com/itchyny/gojq"
)

// Table is the dialect of a csv or tsv input or output: the keys under
// input.csv and output.csv. Its zero value is RFC 4180 CSV with a header
// row (for tsv, Miller's TSV: tab-separated, with \t, \n, \r and \\
// escapes and no quoting).
type Table struct {
	Delimiter  rune // 0: ',' for csv, tab for tsv
	NoHeader   bool // header: false: no header row; columns are named 1, 2, …
	Ragged     bool // short rows are padded with empty values, long rows get extra numbered keys (Miller's --allow-ragged-csv-input)
	Comment    rune // lines starting with it are skipped; 0: none
	LazyQuotes bool // a quote may appear in an unquoted field, and a non-doubled quote in a quoted one
	Infer      bool // input: numbers and booleans become JSON numbers and booleans, not strings
}

var (
	tableInputKeys  = []string{"delimiter", "header", "ragged", "comment", "lazy_quotes", "infer"}
	tableOutputKeys = []string{"delimiter", "header"}
)

// table decodes input.csv or output.csv. format is the input's or
// output's, already decoded: the dialect applies to csv and tsv only.
func (p *parser) table(x field, what, format string, input bool) Table {
	var t Table
	keys := tableOutputKeys
	if input {
		keys = tableInputKeys
	}
	f, ok := p.mapping(x.val, what, keys)
	if !ok {
		return t
	}
	if format != "csv" && format != "tsv" {
		p.errorf(x.key, "%s applies to format csv or tsv, not %s", what, format)
		return t
	}
	char := func(name string) rune {
		y, ok := f[name]
		if !ok {
			return 0
		}
		s, ok := p.scalar(y.val, what+"."+name)
		if !ok {
			return 0
		}
		if s == `\t` {
			s = "\t"
		}
		r, size := utf8.DecodeRuneInString(s)
		if size == 0 || size != len(s) || r == '"' || r == '\r' || r == '\n' || r == utf8.RuneError {
			p.errorf(y.val, "%s.%s must be one character other than a quote or a line break, not %q", what, name, s)
			return 0
		}
		return r
	}
	flag := func(name string) bool {
		y, ok := f[name]
		if !ok {
			return false
		}
		v, _ := p.boolean(y.val, what+"."+name)
		return v
	}
	t.Delimiter, t.Comment = char("delimiter"), char("comment")
	if y, ok := f["header"]; ok {
		if v, ok := p.boolean(y.val, what+".header"); ok {
			t.NoHeader = !v
		}
	}
	t.Ragged, t.LazyQuotes, t.Infer = flag("ragged"), flag("lazy_quotes"), flag("infer")
	if t.Delimiter != 0 && t.Delimiter == t.Comment {
		p.errorf(f["comment"].val, "%s.comment must differ from the delimiter", what)
	}
	return t
}

// selectPath decodes input.select, which only format json takes.
func (p *parser) selectPath(x field, format string) string {
	s, ok := p.nonEmpty(x.val, "select")
	if !ok {
		return ""
	}
	if format != "json" {
		p.errorf(x.key, "select applies to format json (a whole JSON document), not %s", format)
		return ""
	}
	q, err := gojq.Parse(s)
	if err == nil {
		// Compiling finds what parsing cannot: a function or a variable
		// that does not exist (.[] | foo).
		_, err = gojq.Compile(q)
	}
	if err != nil {
		p.errorf(x.val, "select: %v", err)
		return ""
	}
	return s
}
