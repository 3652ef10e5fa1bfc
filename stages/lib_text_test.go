package stages_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/flowrun/flowrun/stages"
)

// libNew makes one worker's Stage of the registered stage name, checking
// its options as the spec package does.
func libNew(t testing.TB, name string, with map[string]any) stages.Stage {
	t.Helper()
	spec, ok := stages.Lookup(name)
	if !ok {
		t.Fatalf("stage %q is not registered", name)
	}
	c, err := stages.NewConfig(spec, name, t.TempDir(), with)
	if err == nil && spec.Check != nil {
		err = spec.Check(c)
	}
	if err != nil {
		t.Fatalf("%s %v: %v", name, with, err)
	}
	st, err := spec.New(c)
	if err != nil {
		t.Fatalf("%s %v: New: %v", name, with, err)
	}
	return st
}

// libOptionError returns the error that NewConfig or Check reports for a
// stage configured with with.
func libOptionError(t testing.TB, name string, with map[string]any) error {
	t.Helper()
	spec, ok := stages.Lookup(name)
	if !ok {
		t.Fatalf("stage %q is not registered", name)
	}
	c, err := stages.NewConfig(spec, name, "", with)
	if err == nil && spec.Check != nil {
		err = spec.Check(c)
	}
	return err
}

// libProcess runs rec through st the way the runner does: rec is the
// runner's buffer, which it overwrites once Process returns, so the
// results are copied out at once.
func libProcess(st stages.Stage, buf []byte, rec string) ([]string, error) {
	buf = append(buf[:0], rec...)
	out, err := st.Process(context.Background(), buf, nil)
	got := libStrings(out)
	for i := range buf {
		buf[i] = '#'
	}
	return got, err
}

// libRun sends every record through st, then flushes it if it is a
// Flusher, and returns all the output records. It fails t on an error.
func libRun(t testing.TB, st stages.Stage, recs ...string) []string {
	t.Helper()
	var all []string
	buf := make([]byte, 0, 64)
	for i, rec := range recs {
		got, err := libProcess(st, buf, rec)
		if err != nil && !errors.Is(err, stages.ErrStop) {
			t.Fatalf("record %d %q: %v", i, rec, err)
		}
		all = append(all, got...)
	}
	if f, ok := st.(stages.Flusher); ok {
		out, err := f.Flush(context.Background(), nil)
		if err != nil {
			t.Fatalf("flush: %v", err)
		}
		all = append(all, libStrings(out)...)
	}
	return all
}

func libStrings(out [][]byte) []string {
	s := make([]string, len(out))
	for i, b := range out {
		s[i] = string(b)
	}
	return s
}

func libEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestLibStages runs each stage of this file over a few records.
func TestLibStages(t *testing.T) {
	tests := []libCase{
		{"split default comma", "split", nil, []string{"a,b,,c", ",", "x"}, []string{"a", "b", "c", "x"}},
		{"split keep empty", "split", map[string]any{"keep_empty": true}, []string{"a,,b,"}, []string{"a", "", "b", ""}},
		{"split keep empty no sep", "split", map[string]any{"keep_empty": true}, []string{""}, []string{""}},
		{"split multibyte sep", "split", map[string]any{"sep": "::"}, []string{"a::b:c::"}, []string{"a", "b:c"}},
		{"split newline", "split", map[string]any{"sep": "\n"}, []string{"l1\nl2\n"}, []string{"l1", "l2"}},
		{"split regex", "split", map[string]any{"sep": `\s*[,;]\s*`, "regex": true}, []string{"a , b;c  ;d"}, []string{"a", "b", "c", "d"}},
		{"split regex whitespace", "split", map[string]any{"sep": `\s+`, "regex": true}, []string{"  the quick\tfox "}, []string{"the", "quick", "fox"}},
		{"split regex keep empty", "split", map[string]any{"sep": `,`, "regex": true, "keep_empty": true}, []string{",a,,b"}, []string{"", "a", "", "b"}},

		{"template field", "template", map[string]any{"template": "{{.name}} is {{.age}}"}, []string{`{"name":"ann","age":41}`}, []string{"ann is 41"}},
		{"template big number kept", "template", map[string]any{"template": "{{.id}}"}, []string{`{"id":12345678901234567890}`}, []string{"12345678901234567890"}},
		{"template nested and json", "template", map[string]any{"template": `{{.a.b}} {{json .a}}`}, []string{`{"a":{"b":[1,"<x>"]}}`}, []string{`[1 <x>] {"b":[1,"<x>"]}`}},
		{"template text record", "template", map[string]any{"template": "<{{.}}>"}, []string{"plain text", `{"a":1} trailing`}, []string{"<plain text>", `<{"a":1} trailing>`}},
		{"template raw", "template", map[string]any{"template": "{{raw}}|{{.n}}"}, []string{`{ "n" : 1 }`}, []string{`{ "n" : 1 }|1`}},
		{"template json string", "template", map[string]any{"template": "[{{.}}]"}, []string{`"quoted"`}, []string{"[quoted]"}},
		{"template range", "template", map[string]any{"template": "{{range .}}{{.}};{{end}}"}, []string{`[1,2,3]`}, []string{"1;2;3;"}},
		{"template optional field", "template", map[string]any{"template": `{{with index . "x"}}{{.}}{{else}}none{{end}}`}, []string{`{"y":1}`, `{"x":2}`}, []string{"none", "2"}},

		{"truncate short kept", "truncate", map[string]any{"max": 5}, []string{"abc", "abcde"}, []string{"abc", "abcde"}},
		{"truncate cut", "truncate", map[string]any{"max": 3}, []string{"abcdef"}, []string{"abc"}},
		{"truncate ellipsis", "truncate", map[string]any{"max": 6, "ellipsis": "..."}, []string{"abcdefgh", "abcdef"}, []string{"abc...", "abcdef"}},
		{"truncate utf8", "truncate", map[string]any{"max": 4}, []string{"aé€x"}, []string{"aé"}},
		{"truncate utf8 ellipsis", "truncate", map[string]any{"max": 7, "ellipsis": "…"}, []string{"héllo wörld"}, []string{"hél…"}},
		{"truncate emoji", "truncate", map[string]any{"max": 3}, []string{"😀😀"}, []string{""}},
	}
	libRunCases(t, tests)
}

// TestLibBadOptions checks that every stage of part A reports a bad option
// as an *OptionError naming that option, before anything runs.
func TestLibBadOptions(t *testing.T) {
	tests := []struct {
		stage  string
		with   map[string]any
		option string
		want   string // in the message
	}{
		{"split", map[string]any{"sep": ""}, "sep", "empty"},
		{"split", map[string]any{"sep": "(", "regex": true}, "sep", "missing closing )"},
		{"split", map[string]any{"sep": 1}, "sep", "not a string"},
		{"split", map[string]any{"separator": ","}, "separator", "no option"},
		{"template", nil, "template", "needs option template"},
		{"template", map[string]any{"template": "{{.name"}, "template", "unclosed action"},
		{"template", map[string]any{"template": "{{nosuchfunc .}}"}, "template", `"nosuchfunc" not defined`},
		{"truncate", map[string]any{"max": 0}, "max", "at least 1"},
		{"truncate", map[string]any{"max": 2, "ellipsis": "..."}, "ellipsis", "longer than max"},
		{"dedupe", map[string]any{"window": 0}, "window", "from 1 to"},
		{"dedupe", map[string]any{"window": 1 << 31}, "window", "from 1 to"},
		{"take", map[string]any{"n": -1}, "n", "0 or more"},
		{"take", nil, "n", "needs option n"},
		{"sample", map[string]any{"rate": 0.0}, "rate", "more than 0"},
		{"sample", map[string]any{"rate": 1.5}, "rate", "at most 1"},
		{"batch", map[string]any{"size": 0}, "size", "at least 1"},
		{"rate_limit", map[string]any{"per_second": 0.0}, "per_second", "more than 0"},
		{"rate_limit", map[string]any{"per_second": 10.0, "burst": 0}, "burst", "at least 1"},
		{"count", map[string]any{"every": -5}, "every", "0 or more"},
		{"hash", map[string]any{"algo": "crc32"}, "algo", "not one of"},
		{"gzip", map[string]any{"level": 12}, "level", "invalid compression level"},
		{"gunzip", map[string]any{"max_size": 0}, "max_size", "at least 1"},
		{"base64.decode", map[string]any{"url": "yes"}, "url", "not a bool"},
	}
	for _, tt := range tests {
		t.Run(tt.stage+"/"+tt.option, func(t *testing.T) {
			err := libOptionError(t, tt.stage, tt.with)
			var oe *stages.OptionError
			if !errors.As(err, &oe) {
				t.Fatalf("%s %v: error %v (%T), want an *OptionError", tt.stage, tt.with, err, err)
			}
			if oe.Option != tt.option || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s %v: error %q on option %q, want option %q and %q", tt.stage, tt.with, err, oe.Option, tt.option, tt.want)
			}
		})
	}
}

// TestLibBadRecords checks that a record a stage cannot handle is an error
// saying what is wrong, permanent when retrying cannot help.
func TestLibBadRecords(t *testing.T) {
	tests := []struct {
		stage string
		with  map[string]any
		rec   string
		want  string // in the message
	}{
		{"template", map[string]any{"template": "{{.name}}"}, `{"nom":"x"}`, `no entry for key "name"`},
		{"template", map[string]any{"template": "{{.name}}"}, `not json`, `can't evaluate field name`},
		{"base64.decode", nil, "aGVsbG8*", "illegal base64 data at input byte 7"},
		{"base64.decode", map[string]any{"url": true}, "a+b/", "illegal base64 data at input byte 1"},
		{"gunzip", nil, "plain text", "the record is not gzip"},
		{"gunzip", nil, "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", "the gzip stream is cut short"},
		{"hash", map[string]any{"field": "h"}, `[1,2]`, `record is not a JSON object: it is an array`},
		{"hash", map[string]any{"field": "h"}, `{"a":1`, `record is not a JSON object: unexpected end of JSON input`},
		{"hash", map[string]any{"field": "h"}, `{"a":1,}`, `record is not a JSON object: invalid character '}'`},
		{"hash", map[string]any{"field": "h"}, `{"a":1} {}`, `invalid character '{' after top-level value`},
		{"dedupe", map[string]any{"key": "id"}, `{"name":1}`, `record has no field "id"`},
		{"dedupe", map[string]any{"key": "id"}, `id=1`, `record is not a JSON object`},
		{"unbatch", nil, `{"a":1}`, `record is not a JSON array: it is an object`},
		{"unbatch", nil, `[1,2`, `record is not a JSON array: unexpected end of JSON input`},
		{"unbatch", nil, `"[1]"`, `record is not a JSON array: it is a string`},
		{"unbatch", nil, ``, `record is not a JSON array: unexpected end of JSON input`},
		{"unbatch", nil, `[1] x`, `invalid character 'x' after top-level value`},
		{"unbatch", nil, `plain`, `record is not a JSON array: invalid character 'p'`},
		{"batch", nil, "\xff\xfe", `not UTF-8`},
	}
	for _, tt := range tests {
		t.Run(tt.stage+"/"+tt.rec, func(t *testing.T) {
			st := libNew(t, tt.stage, tt.with)
			out, err := libProcess(st, nil, tt.rec)
			if err == nil {
				t.Fatalf("%s %v over %q = %q, want an error", tt.stage, tt.with, tt.rec, out)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s over %q: error %q, want it to say %q", tt.stage, tt.rec, err, tt.want)
			}
			if !errors.Is(err, stages.ErrPermanent) {
				t.Errorf("%s over %q: error %q is not permanent", tt.stage, tt.rec, err)
			}
		})
	}
}

// TestLibTruncateUTF8 cuts a text of mixed widths at every max and checks
// that each result is valid UTF-8, a prefix of the text and as long as it
// can be.
func TestLibTruncateUTF8(t *testing.T) {
	const text = "aé€😀b€é😀"
	for max := 1; max <= len(text)+1; max++ {
		for _, ellipsis := range []string{"", ".", "…"} {
			if len(ellipsis) > max {
				continue
			}
			st := libNew(t, "truncate", map[string]any{"max": max, "ellipsis": ellipsis})
			got := libRun(t, st, text)[0]
			body, cut := strings.CutSuffix(got, ellipsis)
			switch {
			case len(got) > max:
				t.Errorf("max %d: %q is %d bytes", max, got, len(got))
			case !utf8.ValidString(got):
				t.Errorf("max %d: %q is not valid UTF-8", max, got)
			case len(text) <= max && got != text:
				t.Errorf("max %d: %q changed, it fitted", max, got)
			case len(text) > max && (!cut || !strings.HasPrefix(text, body)):
				t.Errorf("max %d ellipsis %q: %q is not a prefix and the ellipsis", max, ellipsis, got)
			case len(text) > max && max-len(got) >= utf8.UTFMax:
				t.Errorf("max %d: %q is shorter than it need be", max, got)
			}
		}
	}
}

// libCase is one row of a stage table: a stage with options, the records
// in and the records it must give.
type libCase struct {
	name  string
	stage string
	with  map[string]any
	in    []string
	want  []string
}

// libRunCases runs each case as a subtest.
func libRunCases(t *testing.T, tests []libCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := libRun(t, libNew(t, tt.stage, tt.with), tt.in...)
			if !libEqual(got, tt.want) {
				t.Errorf("%s %v over %q = %q, want %q", tt.stage, tt.with, tt.in, got, tt.want)
			}
		})
	}
}
