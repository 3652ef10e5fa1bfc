package codec_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/flowrun/flowrun/connect/codec"
)

// TestEncoder formats records in each output format: lines as they are,
// jsonl a record that is not JSON as a string, csv and tsv a JSON object
// as a row under the first record's fields (or a header being continued),
// with the dialect's delimiter and TSV's escapes.
func TestEncoder(t *testing.T) {
	tests := []struct {
		name, format string
		table        codec.Table
		header       []string
		recs         []string
		want         string
		err          string // of the last record
	}{
		{"lines", "lines", codec.Table{}, nil, []string{"a b", `{"x":1}`, ""}, "a b\n{\"x\":1}\n\n", ""},
		{"jsonl", "jsonl", codec.Table{}, nil, []string{`{"x": 1}`, `not "json"`, "[1,2]"}, "{\"x\": 1}\n\"not \\\"json\\\"\"\n[1,2]\n", ""},
		{"csv", "csv", codec.Table{}, nil, []string{`{"a":1,"b":"x,y"}`, `{"b":"z","a":null}`}, "a,b\n1,\"x,y\"\nnull,z\n", ""},
		{"csv dialect", "csv", codec.Table{Delimiter: ';', NoHeader: true}, nil, []string{`{"a":1,"b":2}`}, "1;2\n", ""},
		{"csv continued", "csv", codec.Table{}, []string{"b", "a"}, []string{`{"a":1,"b":2}`}, "2,1\n", ""},
		{"csv new field", "csv", codec.Table{}, nil, []string{`{"a":1}`, `{"a":2,"c":3}`}, "a\n1\n",
			`field "c" is not a column of the CSV output (its header, from the first record, is a): give every record the same fields, or write jsonl`},
		{"csv not an object", "csv", codec.Table{}, nil, []string{`[1]`}, "", "csv output needs JSON objects: record is not a JSON object"},
		{"tsv", "tsv", codec.Table{}, nil, []string{`{"a":"x\ty","b":"1\\2"}`}, "a\tb\nx\\ty\t1\\\\2\n", ""},
		{"tsv delimiter in a field", "tsv", codec.Table{Delimiter: ';'}, nil, []string{`{"a":"1","b":"2"}`, `{"a":"x;y","b":"3"}`}, "a;b\n1;2\n",
			`field "x;y" holds the TSV output's delimiter ";", which TSV cannot escape (it has no quoting): write csv with that delimiter, which quotes it, or keep tsv's tab`},
		{"tsv delimiter in a column name", "tsv", codec.Table{Delimiter: ';'}, nil, []string{`{"a;b":"1"}`}, "",
			`field "a;b" holds the TSV output's delimiter ";", which TSV cannot escape (it has no quoting): write csv with that delimiter, which quotes it, or keep tsv's tab`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := codec.NewEncoder(tt.format, tt.table, tt.header)
			var err error
			for _, r := range tt.recs {
				err = e.Add([]byte(r))
			}
			if got := string(e.Buf); got != tt.want {
				t.Errorf("wrote %q, want %q", got, tt.want)
			}
			got := ""
			if err != nil {
				got = err.Error()
			}
			if (tt.err == "") != (err == nil) || !strings.Contains(got, tt.err) {
				t.Errorf("error %q, want %q", got, tt.err)
			}
		})
	}
}

// BenchmarkEncoder formats W1's and W2's records, the output's per-record
// cost.
func BenchmarkEncoder(b *testing.B) {
	for _, c := range []struct{ format, rec string }{
		{"lines", "REC-000123 ALPHA BETA"},
		{"jsonl", `{"id":2,"name":"name-2","score":74.5,"tags":["a","b"],"active":true,"name_upper":"NAME-2"}`},
	} {
		b.Run(c.format, func(b *testing.B) {
			e := codec.NewEncoder(c.format, codec.Table{}, nil)
			rec := []byte(c.rec)
			b.SetBytes(int64(1000 * (len(rec) + 1)))
			for b.Loop() {
				for range 1000 {
					e.Add(rec)
				}
				e.Buf = e.Buf[:0]
			}
		})
	}
}

// TestHeaderContinues encodes records, reads the header back from what
// was written, and continues in a second encoder: the two together must
// write what one encoder writes (a run resumed, or one appending to its
// output, ends with the file an uninterrupted run writes). TSV's header
// was not read back, nor a CSV's in its delimiter, and a file without a
// header row had its first row taken for one.
func TestHeaderContinues(t *testing.T) {
	recs := []string{`{"a b":"x\ty","c|d;e":"1,\"2\"","\\":"\\n"}`, `{"a b":"p","c|d;e":"q","\\":"r"}`, `{"\\":"s","a b":"t","c|d;e":"u"}`}
	for _, c := range []struct {
		format string
		table  codec.Table
	}{
		{"csv", codec.Table{}}, {"csv", codec.Table{Delimiter: ';'}}, {"csv", codec.Table{NoHeader: true}},
		{"tsv", codec.Table{}}, {"tsv", codec.Table{Delimiter: ':'}}, {"tsv", codec.Table{NoHeader: true}},
	} {
		whole := codec.NewEncoder(c.format, c.table, nil)
		for _, r := range recs {
			if err := whole.Add([]byte(r)); err != nil {
				t.Fatal(err)
			}
		}
		first := codec.NewEncoder(c.format, c.table, nil)
		first.Add([]byte(recs[0]))
		header, err := codec.Header(bytes.NewReader(first.Buf), c.format, c.table)
		if err != nil {
			t.Fatalf("%s %+v: %v", c.format, c.table, err)
		}
		rest := codec.NewEncoder(c.format, c.table, header)
		for _, r := range recs[1:] {
			if err := rest.Add([]byte(r)); err != nil {
				t.Errorf("%s %+v: continuing header %q: %v", c.format, c.table, header, err)
			}
		}
		if got := string(first.Buf) + string(rest.Buf); got != string(whole.Buf) {
			t.Errorf("%s %+v: continued output\n%q, want\n%q", c.format, c.table, got, whole.Buf)
		}
	}
	if h, err := codec.Header(strings.NewReader(""), "tsv", codec.Table{}); h != nil || err != nil {
		t.Errorf("an empty TSV's header is %q, %v; want none", h, err)
	}
}
