package runner_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

// refTool runs a reference tool over stdin, skipping the test when it is
// missing, unless FLOWRUN_REQUIRE_SERVERS=1 (as .ci/run sets).
func refTool(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("FLOWRUN_REQUIRE_SERVERS") == "1" {
			t.Fatalf("%s is needed (FLOWRUN_REQUIRE_SERVERS=1): %v", name, err)
		}
		t.Skipf("%s is not installed", name)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, stderr.String())
	}
	return string(out)
}

// jsonValues decodes a stream of JSON values (JSON lines, or Miller's
// array output).
func jsonValues(t *testing.T, s string) []any {
	t.Helper()
	var vals []any
	dec := json.NewDecoder(strings.NewReader(s))
	for dec.More() {
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%v in %.200q", err, s)
		}
		if a, ok := v.([]any); ok && strings.HasPrefix(strings.TrimSpace(s), "[\n{") {
			vals = append(vals, a...)
			continue
		}
		vals = append(vals, v)
	}
	return vals
}

func sameJSON(t *testing.T, got, want string) {
	t.Helper()
	g, w := jsonValues(t, got), jsonValues(t, want)
	if len(g) != len(w) {
		t.Fatalf("%d records, the reference %d", len(g), len(w))
	}
	for i := range w {
		if !reflect.DeepEqual(g[i], w[i]) {
			t.Fatalf("record %d: %.300v, the reference %.300v", i+1, g[i], w[i])
		}
	}
}

// genDocument makes a JSON document: some metadata, then under key
// "3166-1" an array of n objects.
func genDocument(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	var b strings.Builder
	b.WriteString(`{"meta": {"source": "gen", "skip": [1, [2, {"deep": "x"}], "]"]},` + "\n" + `"3166-1": [` + "\n")
	for i := range n {
		if i > 0 {
			b.WriteString(",\n")
		}
		fmt.Fprintf(&b, `  {"alpha_2": "%c%c", "numeric": %d, "name": "Land \u00e9 %d", "area": %.2f, "tags": ["a", {"k": %d}]}`,
			'A'+r.IntN(26), 'A'+r.IntN(26), r.IntN(1000), i, r.Float64()*1e5, i%3)
	}
	b.WriteString("\n], \"after\": true}\n")
	return b.String()
}

// TestInputJSONDocument checks input format json against jq: streamed
// paths and one that gojq runs on the whole document.
func TestInputJSONDocument(t *testing.T) {
	doc := genDocument(2000)
	array := refTool(t, doc, "jq", "-c", `.["3166-1"]`)
	tests := []struct {
		name, sel, input, jq string
	}{
		{"nested array streams", `'.["3166-1"][]'`, doc, `.["3166-1"][]`},
		{"top-level array", `'.[]'`, array, `.[]`},
		{"one value", `.meta`, doc, `.meta`},
		{"the whole document", `.`, doc, `.`},
		{"missing key is null", `.nope`, doc, `.nope`},
		{"object values", `'.meta[]'`, doc, `.meta[]`},
		{"a jq query", `'.["3166-1"][] | select(.numeric > 500) | {name, n: .tags[1].k}'`, doc, `.["3166-1"][] | select(.numeric > 500) | {name, n: .tags[1].k}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runYAML(t, "input: {format: json, select: "+tt.sel+"}\noutput: {format: jsonl}\nstages: [{use: trim}]\n", tt.input)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, out, refTool(t, tt.input, "jq", "-c", tt.jq))
		})
	}
	// The streamed path holds one value at a time: a document far larger
	// than max_record_size goes through; the query, which must read it
	// whole, says why it cannot.
	big := genDocument(50000)
	out, _, err := runYAML(t, "input: {format: json, select: '.[\"3166-1\"][]', max_record_size: 64KiB}\nstages: [{use: trim}]\n", big)
	if err != nil || strings.Count(out, "\n") != 50000 {
		t.Errorf("streaming a %d-byte document with max_record_size 64KiB: %d records, %v", len(big), strings.Count(out, "\n"), err)
	}
	_, _, err = runYAML(t, "input: {format: json, select: '.[\"3166-1\"] | length', max_record_size: 64KiB}\nstages: [{use: trim}]\n", big)
	if err == nil || !strings.Contains(err.Error(), "longer than max_record_size") {
		t.Errorf("a query over a document past max_record_size: %v", err)
	}
	// A document broken after some values fails the run as a record
	// after them would: the values read before the break are in the
	// output, every time, not only when they beat the failure to it.
	for _, bad := range []struct{ sel, doc, want, out string }{
		{`'.[]'`, `{"a":1}` + "\n" + `[1,`, "data after the document", "1\n"},
		{`.`, `{"a":1} xx`, "invalid character 'x'", `{"a":1}` + "\n"},
		{`'.[]'`, `[1,`, "unexpected EOF", "1\n"},
		{`'.a[]'`, `{"a":[1],"b":`, "unexpected EOF", "1\n"},
		{`'.a'`, `{"a":1,"b":[}`, "invalid character", "1\n"},
		{`'.a[]'`, `{"b":1}`, "cannot iterate over null", ""},
		{`'.a[]'`, `{"a":3}`, "cannot iterate over a number", ""},
		{`'.a.b'`, `{"a":"x"}`, `cannot index a string with "b"`, ""},
	} {
		for range 20 {
			out, _, err := runYAML(t, "input: {format: json, select: "+bad.sel+"}\noutput: {format: jsonl}\nstages: [{use: trim, workers: 4}]\n", bad.doc)
			if err == nil || !strings.Contains(err.Error(), bad.want) || out != bad.out {
				t.Errorf("select %s over %s: output %q, error %v; want %q, error %q", bad.sel, bad.doc, out, err, bad.out, bad.want)
				break
			}
		}
	}
}

// TestInputJSONQueryNumbers checks that a select gojq runs keeps numbers
// as the document wrote them, as the streaming path does: integers past
// 2^53 exact (issue 8's rule for jq and map), 1.50 as 1.50.
func TestInputJSONQueryNumbers(t *testing.T) {
	doc := `[{"a": 12345678901234567890}, {"a": 1.50}, {"a": 9007199254740993}, {"a": -0}, {"a": 1e400}]`
	want := "12345678901234567890\n1.50\n9007199254740993\n-0\n1e400\n"
	for _, sel := range []string{`'.[] | .a'`, `'.[].a'`} {
		out, _, err := runYAML(t, "input: {format: json, select: "+sel+"}\noutput: {format: jsonl}\nstages: [{use: trim}]\n", doc)
		if err != nil || out != want {
			t.Errorf("select %s: %q, %v; want %q", sel, out, err, want)
		}
	}
}

// genTable makes rows of mixed values: numbers, words, empty fields,
// quotes and the delimiter inside quoted fields; some rows short or long.
func genTable(n int, sep string, ragged bool) string {
	r := rand.New(rand.NewPCG(3, 4))
	words := []string{"alpha", "Béta", "", "x y", "true", "false", "-12", "3.25", "1e5", "007"}
	var b strings.Builder
	b.WriteString(strings.Join([]string{"id", "name", "score", "note"}, sep) + "\n")
	for i := range n {
		cols := 4
		if ragged && i%7 == 3 {
			// At most one field more than the header: Miller 6.8 keeps only
			// the first extra field of a long row (its documentation, and
			// flowrun, key them all by number).
			cols = 2 + r.IntN(4)
		}
		fields := []string{fmt.Sprint(i)}
		for c := 1; c < cols; c++ {
			w := words[r.IntN(len(words))]
			if r.IntN(5) == 0 {
				w = `"` + w + sep + ` q""uote"`
			}
			fields = append(fields, w)
		}
		b.WriteString(strings.Join(fields, sep) + "\n")
		if i%50 == 0 {
			b.WriteString("# a comment line\n")
		}
	}
	return b.String()
}

// TestInputCSVDialects checks CSV dialects and typed values against
// Miller, which flowrun's ragged rows and implicit headers follow.
func TestInputCSVDialects(t *testing.T) {
	semi := genTable(500, ";", true)
	tests := []struct {
		name, csv, input string
		mlr              []string
	}{
		{"delimiter, comments, ragged", `{delimiter: ";", comment: "#", ragged: true}`, semi,
			[]string{"--icsv", "--ifs", ";", "--skip-comments", "--allow-ragged-csv-input", "-S", "--ojsonl", "cat"}},
		{"no header", `{delimiter: ";", comment: "#", ragged: true, header: false}`, semi,
			[]string{"--icsv", "--ifs", ";", "--skip-comments", "--allow-ragged-csv-input", "--implicit-csv-header", "-S", "--ojsonl", "cat"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := runYAML(t, "input: {format: csv, csv: "+tt.csv+"}\noutput: {format: jsonl}\nstages: [{use: trim}]\n", tt.input)
			if err != nil {
				t.Fatal(err)
			}
			sameJSON(t, out, refTool(t, tt.input, "mlr", tt.mlr...))
		})
	}
	// infer types numbers and booleans; 007 and 1e5 are JSON numbers
	// only as JSON writes them, so 007 stays a string.
	out, _, err := runYAML(t, "input: {format: csv, csv: {infer: true}}\noutput: {format: jsonl}\nstages: [{use: trim}]\n",
		"a,b,c,d,e,f\n-12,3.25,true,007,1e5,x\n")
	if want := `{"a":-12,"b":3.25,"c":true,"d":"007","e":1e5,"f":"x"}` + "\n"; err != nil || out != want {
		t.Errorf("infer: %q, %v; want %q", out, err, want)
	}
	// Without ragged a short row is the row's error, at its line.
	_, _, err = runYAML(t, "input: {format: csv, csv: {delimiter: ;}}\nstages: [{use: trim}]\n", "a;b\n1;2\n3\n")
	if err == nil || !strings.Contains(err.Error(), "line 3: 1 fields, the header has 2") {
		t.Errorf("short row: %v", err)
	}
	// lazy_quotes reads a stray quote as text.
	out, _, err = runYAML(t, "input: {format: csv, csv: {lazy_quotes: true}}\noutput: {format: jsonl}\nstages: [{use: trim}]\n", "a,b\nsay \"hi\",2\n")
	if want := `{"a":"say \"hi\"","b":"2"}` + "\n"; err != nil || out != want {
		t.Errorf("lazy_quotes: %q, %v; want %q", out, err, want)
	}
}

// TestTSV checks TSV in and out against Miller, escapes included.
func TestTSV(t *testing.T) {
	var recs strings.Builder
	r := rand.New(rand.NewPCG(5, 6))
	parts := []string{"a", "tab\there", "new\nline", `back\slash`, `\t literal`, "crlf\r\n", "é", ""}
	for i := range 300 {
		m := map[string]any{"id": fmt.Sprint(i), "text": parts[r.IntN(len(parts))] + parts[r.IntN(len(parts))], "more": parts[r.IntN(len(parts))]}
		b, _ := json.Marshal(m)
		recs.Write(b)
		recs.WriteByte('\n')
	}
	out, _, err := runYAML(t, "input: {format: jsonl}\noutput: {format: tsv}\nstages: [{use: trim}]\n", recs.String())
	if err != nil {
		t.Fatal(err)
	}
	if want := refTool(t, recs.String(), "mlr", "--ijsonl", "--otsv", "cat"); out != want {
		t.Fatalf("tsv output differs from mlr's:\n%.300q\n%.300q", out, want)
	}
	back, _, err := runYAML(t, "input: {format: tsv}\noutput: {format: jsonl}\nstages: [{use: trim}]\n", out)
	if err != nil {
		t.Fatal(err)
	}
	if back != recs.String() {
		t.Errorf("tsv round trip: %s", firstLineDiff(back, recs.String()))
	}
	sameJSON(t, back, refTool(t, out, "mlr", "--itsv", "--ojsonl", "-S", "cat"))
	// Output without a header, and csv with another delimiter.
	out, _, err = runYAML(t, "input: {format: jsonl}\noutput: {format: csv, csv: {delimiter: ;, header: false}}\nstages: [{use: trim}]\n", `{"a":"x;y","b":2}`+"\n")
	if want := "\"x;y\";2\n"; err != nil || out != want {
		t.Errorf("csv output dialect: %q, %v; want %q", out, err, want)
	}
}

func firstLineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) && i < len(bl); i++ {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d: %q, want %q", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("%d lines, want %d", len(al), len(bl))
}
