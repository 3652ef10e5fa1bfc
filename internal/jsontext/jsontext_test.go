package jsontext

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// validCases are the seeds of FuzzValid and the table of TestValid:
// each is judged by encoding/json.Valid.
var validCases = []string{
	``, ` `, `{}`, ` {} `, "\t[]\r\n", `{"a":1}`, `{"a":1,}`, `{"a" 1}`, `{1:2}`, `[1,2`, `[1 2]`,
	`"x"`, `"x`, `"\"`, `"\\"`, `"\u00e9"`, `"\u00g9"`, `"\u00e"`, `"\q"`, "\"a\x01b\"", "\"a\x7fb\"",
	"\"\xff\xfe\"", "\xef\xbb\xbf{}", `0`, `-0`, `01`, `-`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e`, `1e-`,
	`-1.5e-10`, `true`, `tru`, `truex`, `false`, `null`, `nul`, `nullnull`, `{} {}`, `[]]`, `{"a":[{"b":null}]}`,
	`{"id":2,"name":"name-2","score":74.5,"tags":["a","b"],"active":true}`, `not json`, `1 2`,
	strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
	strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
	strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000),
	strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001),
}

func TestValid(t *testing.T) {
	for _, c := range validCases {
		if got, want := Valid([]byte(c)), json.Valid([]byte(c)); got != want {
			t.Errorf("Valid(%.40q) = %t, encoding/json says %t", c, got, want)
		}
	}
}

// FuzzValid holds Valid to encoding/json.Valid, and ScanValue's error to
// Valid's answer.
func FuzzValid(f *testing.F) {
	for _, c := range validCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, want := Valid(b), json.Valid(b)
		if got != want {
			t.Fatalf("Valid(%q) = %t, encoding/json says %t", b, got, want)
		}
		end, err := ScanValue(b, SkipSpace(b, 0), 0)
		if scanned := err == nil && SkipSpace(b, end) == len(b); scanned != want {
			t.Fatalf("ScanValue(%q) = %d, %v; encoding/json.Valid says %t", b, end, err, want)
		}
	})
}

// TestScanValueErrors pins the messages a stage shows for a broken record.
func TestScanValueErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{``, "invalid JSON at offset 0: unexpected end of input"},
		{`{"a" 1}`, "invalid JSON at offset 5: expected ':' after a field name"},
		{`{1:2}`, "invalid JSON at offset 1: expected a field name"},
		{`{"a":1 "b"}`, "invalid JSON at offset 7: expected ',' or '}'"},
		{`[1 2]`, "invalid JSON at offset 3: expected ',' or ']'"},
		{`[x]`, `invalid JSON at offset 1: unexpected 'x'`},
		{`tru`, "invalid JSON at offset 0: invalid literal, expected true"},
		{`fals`, "invalid JSON at offset 0: invalid literal, expected false"},
		{`nul`, "invalid JSON at offset 0: invalid literal, expected null"},
		{`"\u12"`, `invalid JSON at offset 2: short \u escape`},
		{`"\u12zz"`, `invalid JSON at offset 2: bad \u escape`},
		{`"\q"`, `invalid JSON at offset 2: bad escape \q`},
		{"\"a\x01\"", "invalid JSON at offset 2: control character in string"},
		{`"abc`, "invalid JSON at offset 0: unterminated string"},
		{`-x`, "invalid JSON at offset 0: invalid number"},
		{strings.Repeat("[", 10001), "invalid JSON at offset 10000: nested too deeply"},
	}
	for _, tt := range tests {
		_, err := ScanValue([]byte(tt.in), 0, 0)
		if err == nil || err.Error() != tt.want {
			t.Errorf("ScanValue(%.30q): %v, want %s", tt.in, err, tt.want)
		}
	}
	err := EachMember([]byte(`{"a":1} x`), func([]byte, bool, []byte, []byte) {})
	if want := "invalid JSON at offset 8: data after the value"; err == nil || err.Error() != want {
		t.Errorf("EachMember with data after the object: %v, want %s", err, want)
	}
}

// TestValidAllocates checks that Valid allocates nothing, on JSON or not.
func TestValidAllocates(t *testing.T) {
	for _, c := range []string{`{"a":[1,"x",true]}`, `not json`, `"\q"`, `[1 2]`} {
		if n := testing.AllocsPerRun(100, func() { Valid([]byte(c)) }); n != 0 {
			t.Errorf("Valid(%q) allocates %.0f times", c, n)
		}
	}
}

// BenchmarkValid measures Valid against encoding/json.Valid on W2's
// records (bench/): the JSONL reader and the output writer check every
// record with it.
func BenchmarkValid(b *testing.B) {
	var recs [][]byte
	for i := range 1000 {
		recs = append(recs, fmt.Appendf(nil, `{"id":%d,"name":"name-%d","score":%d.5,"tags":["a","b"],"active":%t}`, i, i%1000, (i*37)%100, i%2 == 0))
	}
	size := int64(len(bytes.Join(recs, nil)))
	for _, v := range []struct {
		name  string
		valid func([]byte) bool
	}{{"jsontext", Valid}, {"encoding-json", json.Valid}} {
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(size)
			for b.Loop() {
				for _, r := range recs {
					if !v.valid(r) {
						b.Fatal("not valid")
					}
				}
			}
		})
	}
}
