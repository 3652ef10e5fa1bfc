package codec

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"unicode/utf8"
)

// fuzzReader hands out its data in reads whose sizes come from steps, so
// that a decoder meets record boundaries at every place in a read.
type fuzzReader struct {
	data  []byte
	steps []byte
	i     int
}

func (r *fuzzReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.steps) > 0 {
		n = int(r.steps[r.i%len(r.steps)])%97 + 1
		r.i++
	}
	n = min(n, len(p), len(r.data))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// fuzzDecode reads every item of a decoder, asking for between 1 and 64
// records a call as steps say. It fails the test if the decoder does not
// end with io.EOF within a bound proportional to the input.
func fuzzDecode(t *testing.T, dec Decoder, steps []byte, size int) []Record {
	t.Helper()
	var all []Record
	for call := 0; ; call++ {
		if call > 4*size+16 {
			t.Fatalf("decoder made no progress after %d calls", call)
		}
		max := 64
		if len(steps) > 0 {
			max = int(steps[call%len(steps)])%64 + 1
		}
		items, err := dec.Next(max, nil)
		if len(items) > max {
			t.Fatalf("next(%d) returned %d items", max, len(items))
		}
		// Copy: the contract lets records share the decoder's chunks,
		// but never be overwritten by later reads.
		all = append(all, items...)
		if err == io.EOF {
			return all
		}
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
	}
}

// fuzzLines is the model of the lines format: records split on '\n', a
// '\r' before it dropped, a last line without '\n' kept.
func fuzzLines(data []byte) [][]byte {
	if len(data) == 0 {
		return nil
	}
	parts := bytes.Split(data, []byte("\n"))
	if len(parts[len(parts)-1]) == 0 {
		parts = parts[:len(parts)-1]
	}
	for i, p := range parts {
		parts[i] = bytes.TrimSuffix(p, []byte("\r"))
	}
	return parts
}

func FuzzLineDecoder(f *testing.F) {
	f.Add([]byte("a\nb\n"), []byte{1}, uint16(0))
	f.Add([]byte("a\r\nb"), []byte{}, uint16(0))
	f.Add([]byte("\xff\x00\n\n\r\n\r"), []byte{2, 3}, uint16(0))
	f.Add([]byte("short\n"+strings.Repeat("x", 300)+"\nafter\n"), []byte{7, 50}, uint16(100))
	f.Add([]byte(strings.Repeat("y", 200)), []byte{}, uint16(10))
	f.Fuzz(func(t *testing.T, data, steps []byte, limit uint16) {
		max := int(limit)
		if max == 0 {
			max = 1 << 30
		}
		var n atomic.Int64
		snapshot := bytes.Clone(data)
		dec := NewDecoder(&fuzzReader{data: data, steps: steps}, Options{Format: "lines", MaxRecordSize: max}, &n)
		got := fuzzDecode(t, dec, steps, len(data))
		if n.Load() != int64(len(data)) {
			t.Errorf("counted %d bytes read of %d", n.Load(), len(data))
		}
		want := fuzzLines(snapshot)
		if len(got) != len(want) {
			t.Fatalf("%d items, want %d: %+v", len(got), len(want), got)
		}
		for i, it := range got {
			if it.Line != int64(i+1) {
				t.Fatalf("item %d says line %d", i, it.Line)
			}
			if it.Err != nil {
				// A line past the limit is an error naming its line; one
				// within it never is.
				if len(want[i]) <= max-1 {
					t.Fatalf("line %d (%d bytes, limit %d): %v", i+1, len(want[i]), max, it.Err)
				}
				if prefix := fmt.Sprintf("line %d: record longer than max_record_size", i+1); !strings.HasPrefix(it.Err.Error(), prefix) {
					t.Fatalf("error %q does not start %q", it.Err, prefix)
				}
				continue
			}
			if !bytes.Equal(it.Data, want[i]) {
				t.Fatalf("line %d: %q, want %q", i+1, it.Data, want[i])
			}
			if cap(it.Data) != len(it.Data) {
				t.Fatalf("line %d: cap %d > len %d: a stage appending would overwrite the next record", i+1, cap(it.Data), len(it.Data))
			}
		}
	})
}

func FuzzJSONLDecoder(f *testing.F) {
	f.Add([]byte("{\"a\":1}\n\n  \n[1,2]\r\nnot json\n\"s\""), []byte{3})
	f.Add([]byte("{\"a\":\n1}\n"), []byte{})
	f.Add([]byte("\xff\n{}"), []byte{1, 2})
	f.Fuzz(func(t *testing.T, data, steps []byte) {
		var n atomic.Int64
		snapshot := bytes.Clone(data)
		got := fuzzDecode(t, NewDecoder(&fuzzReader{data: data, steps: steps}, Options{Format: "jsonl", MaxRecordSize: 1 << 30}, &n), steps, len(data))
		var want []Record
		for i, l := range fuzzLines(snapshot) {
			if len(bytes.TrimSpace(l)) == 0 {
				continue
			}
			it := Record{Data: l, Line: int64(i + 1)}
			if !json.Valid(l) {
				it.Err = fmt.Errorf("line %d: not valid JSON", i+1)
			}
			want = append(want, it)
		}
		if len(got) != len(want) {
			t.Fatalf("%d items, want %d", len(got), len(want))
		}
		for i := range got {
			g, w := got[i], want[i]
			if g.Line != w.Line || !bytes.Equal(g.Data, w.Data) || (g.Err == nil) != (w.Err == nil) {
				t.Fatalf("item %d: %+v, want %+v", i, g, w)
			}
			if g.Err != nil && g.Err.Error() != w.Err.Error() {
				t.Fatalf("item %d: error %q, want %q", i, g.Err, w.Err)
			}
		}
	})
}

// fuzzCSVItems decodes CSV and describes each item as text, for
// comparing two decodings.
func fuzzCSVItems(t *testing.T, data, steps []byte) []string {
	var n atomic.Int64
	items := fuzzDecode(t, NewDecoder(&fuzzReader{data: bytes.Clone(data), steps: steps}, Options{Format: "csv", MaxRecordSize: 1 << 30}, &n), steps, len(data))
	out := make([]string, len(items))
	for i, it := range items {
		if it.Err != nil {
			out[i] = fmt.Sprintf("%d error %v", it.Line, it.Err)
			continue
		}
		out[i] = fmt.Sprintf("%d %s", it.Line, it.Data)
	}
	return out
}

func FuzzCSVDecoder(f *testing.F) {
	f.Add([]byte("a,b\n1,2\n\"x,y\",\"q\"\"\"\n"), []byte{1})
	f.Add([]byte("a,b\n1\n1,2,3\n\"open\n"), []byte{5})
	f.Add([]byte("h\n\"multi\nline\"\n\xff\x00\n"), []byte{})
	f.Add([]byte("a,a\n1,2\r\n"), []byte{2})
	f.Fuzz(func(t *testing.T, data, steps []byte) {
		got := fuzzCSVItems(t, data, steps)
		// The records must not depend on how the input was cut into reads.
		if whole := fuzzCSVItems(t, data, nil); strings.Join(got, "\n") != strings.Join(whole, "\n") {
			t.Fatalf("reads of sizes %v give\n%q\nwhole reads give\n%q", steps, got, whole)
		}
		// Every row after the header is an item; each good one is a JSON
		// object of the row's fields under the header's names.
		r := csv.NewReader(bytes.NewReader(data))
		r.FieldsPerRecord = -1
		var header []string
		i := 0
		for {
			row, err := r.Read()
			if err == io.EOF {
				break
			}
			if err == nil && header == nil {
				header = row
				continue
			}
			if i >= len(got) {
				t.Fatalf("row %d (%q, %v) has no item; items %q", i, row, err, got)
			}
			var line int
			if perr, ok := err.(*csv.ParseError); ok {
				line = perr.StartLine
			} else if err == nil {
				line, _ = r.FieldPos(0)
			}
			if want := fmt.Sprintf("%d ", line); !strings.HasPrefix(got[i], want) {
				t.Fatalf("item %d %q does not name line %d", i, got[i], line)
			}
			if err == nil && len(row) == len(header) {
				var obj map[string]string
				data := strings.SplitN(got[i], " ", 2)[1]
				if jerr := json.Unmarshal([]byte(data), &obj); jerr != nil {
					t.Fatalf("item %d %q is not a JSON object of strings: %v", i, got[i], jerr)
				}
				for k, h := range header {
					if v, ok := obj[fuzzValid(h)]; !ok || (v != fuzzValid(row[k]) && !fuzzDupKey(header, h)) {
						t.Fatalf("item %d %q: field %q is %q, want %q", i, got[i], h, v, row[k])
					}
				}
			} else if !strings.Contains(got[i], " error line ") {
				t.Fatalf("row %q (%v) did not give an error: %q", row, err, got[i])
			}
			i++
		}
		if i != len(got) {
			t.Fatalf("%d rows, %d items: %q", i, len(got), got)
		}
	})
}

// fuzzDupKey says the header names h twice (or names two invalid UTF-8
// names alike), so that the JSON object keeps only one of the values.
func fuzzDupKey(header []string, h string) bool {
	n := 0
	for _, x := range header {
		if fuzzValid(x) == fuzzValid(h) {
			n++
		}
	}
	return n > 1
}

// fuzzValid replaces each invalid byte of s with U+FFFD, as encoding/json
// does when it writes a string.
func fuzzValid(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
