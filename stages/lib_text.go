package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"strings"
	"text/template"
	"unicode/utf8"
)

func init() {
	Register(Spec{
		Name: "split",
		Doc: "Splits each record into several on a separator (a comma unless sep says otherwise, or a regular expression with regex); " +
			"empty parts are dropped unless keep_empty is set.",
		Batch: true,
		Options: []Option{
			{Name: "sep", Type: String, Default: ",", Doc: "the separator; with regex, an RE2 regular expression"},
			{Name: "regex", Type: Bool, Default: false, Doc: "treat sep as a regular expression"},
			{Name: "keep_empty", Type: Bool, Default: false, Doc: "emit empty parts too, as empty records"},
		},
		Check: func(c Config) error { _, err := newSplitStage(c); return err },
		New:   func(c Config) (Stage, error) { return newSplitStage(c) },
	})
	Register(Spec{
		Name: "template",
		Doc: "Rewrites each record with a Go text/template: dot is the record decoded as JSON ({{.name}} for a field) or, " +
			"when it is not JSON, the record's text; {{raw}} is always the text and {{json .x}} writes a value as JSON.",
		Batch: true,
		Options: []Option{
			{Name: "template", Type: String, Required: true, Doc: "the Go text/template; a missing field is an error for the record"},
		},
		Check: func(c Config) error {
			_, err := parseRecordTemplate(c, func() string { return "" })
			return err
		},
		New: func(c Config) (Stage, error) {
			s := &templateStage{}
			t, err := parseRecordTemplate(c, s.rawText)
			if err != nil {
				return nil, err
			}
			s.tmpl = t
			return s, nil
		},
	})
	Register(Spec{
		Name: "truncate",
		Doc: "Cuts each record to at most max bytes, never inside a UTF-8 sequence; a record that is cut ends with " +
			"ellipsis, which counts towards max.",
		Batch: true,
		Options: []Option{
			{Name: "max", Type: Int, Required: true, Doc: "the most bytes a record may keep, ellipsis included"},
			{Name: "ellipsis", Type: String, Default: "", Doc: "what a cut record ends with, such as \"…\""},
		},
		Check: func(c Config) error { _, err := newTruncateStage(c); return err },
		New:   func(c Config) (Stage, error) { return newTruncateStage(c) },
	})
}

type splitStage struct {
	sep       []byte
	re        *regexp.Regexp // when sep is a regular expression
	keepEmpty bool
}

func newSplitStage(c Config) (*splitStage, error) {
	s := &splitStage{sep: []byte(c.String("sep")), keepEmpty: c.Bool("keep_empty")}
	if c.Bool("regex") {
		re, err := compile(c, "sep")
		if err != nil {
			return nil, err
		}
		s.re = re
		return s, nil
	}
	if len(s.sep) == 0 {
		return nil, OptionErrorf("sep", "is empty; set a separator such as \",\" or \"\\t\"")
	}
	return s, nil
}

// Process appends sub-slices of rec, so splitting costs no copy.
func (s *splitStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if s.re != nil {
		start := 0
		for _, m := range s.re.FindAllIndex(rec, -1) {
			if m[1] == 0 || m[0] == len(rec) {
				// An empty match at either end separates nothing.
				continue
			}
			out = s.part(out, rec[start:m[0]])
			start = m[1]
		}
		return s.part(out, rec[start:]), nil
	}
	for {
		i := bytes.Index(rec, s.sep)
		if i < 0 {
			return s.part(out, rec), nil
		}
		out = s.part(out, rec[:i:i])
		rec = rec[i+len(s.sep):]
	}
}

func (s *splitStage) part(out [][]byte, p []byte) [][]byte {
	if len(p) == 0 && !s.keepEmpty {
		return out
	}
	return append(out, p[:len(p):len(p)]) // capped: a stage appending to one part must not write into the next
}

// parseRecordTemplate parses the template option, with raw as its raw
// function. missingkey=error makes a misspelt field name fail the record
// instead of printing "<no value>".
func parseRecordTemplate(c Config, raw func() string) (*template.Template, error) {
	if c.String("template") == "" {
		return nil, OptionErrorf("template", "is empty: every record would become an empty one")
	}
	t, err := template.New(c.Stage).
		Option("missingkey=error").
		Funcs(template.FuncMap{"raw": raw, "json": templateJSON}).
		Parse(c.String("template"))
	if err != nil {
		return nil, &OptionError{Option: "template", Err: err}
	}
	return t, nil
}

// templateJSON encodes v as compact JSON. It does not escape <, > and &
// as json.Marshal does: a template makes data, not HTML.
func templateJSON(v any) (string, error) {
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(b.String(), "\n"), nil
}

type templateStage struct {
	tmpl     *template.Template
	raw      []byte // the record being executed, for the raw function
	sizeHint int
}

func (s *templateStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	// Each worker has its own template, whose raw function reads s.raw.
	s.raw = rec
	var buf bytes.Buffer
	buf.Grow(s.sizeHint)
	err := s.tmpl.Execute(&buf, decodeTemplateDot(rec))
	s.raw = nil
	if err != nil {
		return out, Permanent(err) // text/template's errors say "template: " already
	}
	s.sizeHint = buf.Len()
	return append(out, buf.Bytes()), nil
}

func (s *templateStage) rawText() string { return string(s.raw) }

// decodeTemplateDot returns rec decoded as one JSON value, numbers kept as
// written (json.Number), or rec's text when it is not exactly one JSON value.
func decodeTemplateDot(rec []byte) any {
	dec := json.NewDecoder(bytes.NewReader(rec))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return string(rec)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return string(rec)
	}
	return v
}

type truncateStage struct {
	max      int
	ellipsis []byte
}

func newTruncateStage(c Config) (*truncateStage, error) {
	s := &truncateStage{max: c.Int("max"), ellipsis: []byte(c.String("ellipsis"))}
	if s.max < 1 {
		return nil, OptionErrorf("max", "is %d; it must be at least 1", s.max)
	}
	if len(s.ellipsis) > s.max {
		return nil, OptionErrorf("ellipsis", "%q is %d bytes, longer than max (%d)", s.ellipsis, len(s.ellipsis), s.max)
	}
	return s, nil
}

// Process cuts rec in place: the ellipsis overwrites bytes that are dropped.
func (s *truncateStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if len(rec) <= s.max {
		return append(out, rec), nil
	}
	cut := s.max - len(s.ellipsis)
	// A UTF-8 sequence has at most UTFMax-1 continuation bytes; more in a
	// row are not text, and any cut among them is as good as another.
	for i := 0; i < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(rec[cut]); i++ {
		cut--
	}
	n := copy(rec[cut:], s.ellipsis)
	return append(out, rec[:cut+n:cut+n]), nil
}
