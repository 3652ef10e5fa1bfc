package table_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestLookup(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"users.csv":   "id,name,team\n1,ann,red\n2,bo,\"blue, dark\"\n2,dup,x\n3,short\n",
		"users.tsv":   "id\tname\n1\tann\\tthe\\\\first\n2\tbo\n",
		"users.jsonl": `{"id":1,"name":"ann"}` + "\n\n" + `{"id":"2","name":"bo","tags":[1]}` + "\n",
		"users.json":  `[{"id":1,"name":"ann"},{"id":2,"name":"bo"}]`,
		"users.txt":   "id\tname\n1\tann\n",
		"bom.csv":     "\ufeffid,name\n1,ann\n", // as spreadsheets save it
		"bom.jsonl":   "\ufeff" + `{"id":1,"name":"ann"}` + "\n",
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	in := []string{`{"uid":1,"x":true}`, `{"uid":"2"}`, `{"uid":9}`, `{"x":1}`}
	tests := []struct {
		name string
		with map[string]any
		want []string
	}{
		{"csv whole record, numbers match text", map[string]any{"file": "users.csv", "key": "id", "on": "uid", "as": "user"},
			[]string{`{"uid":1,"x":true,"user":{"id":"1","name":"ann","team":"red"}}`, `{"uid":"2","user":{"id":"2","name":"bo","team":"blue, dark"}}`, `{"uid":9}`, `{"x":1}`}},
		{"one field, drop missing", map[string]any{"file": "users.csv", "key": "id", "on": "uid", "field": "name", "missing": "drop"},
			[]string{`{"uid":1,"x":true,"name":"ann"}`, `{"uid":"2","name":"bo"}`}},
		{"tsv escapes", map[string]any{"file": "users.tsv", "key": "id", "on": "uid", "field": "name", "as": "who", "missing": "drop"},
			[]string{`{"uid":1,"x":true,"who":"ann\tthe\\first"}`, `{"uid":"2","who":"bo"}`}},
		{"jsonl", map[string]any{"file": "users.jsonl", "key": "id", "on": "uid", "as": "u", "missing": "drop"},
			[]string{`{"uid":1,"x":true,"u":{"id":1,"name":"ann"}}`, `{"uid":"2","u":{"id":"2","name":"bo","tags":[1]}}`}},
		{"json replaces in place", map[string]any{"file": "users.json", "key": "id", "on": "uid", "field": "name", "as": "x", "missing": "drop"},
			[]string{`{"uid":1,"x":"ann"}`, `{"uid":"2","x":"bo"}`}},
		{"format set, not from the extension", map[string]any{"file": "users.txt", "format": "tsv", "key": "id", "on": "uid", "as": "u", "missing": "drop"},
			[]string{`{"uid":1,"x":true,"u":{"id":"1","name":"ann"}}`}},
		{"csv with a byte-order mark", map[string]any{"file": "bom.csv", "key": "id", "on": "uid", "field": "name", "missing": "drop"},
			[]string{`{"uid":1,"x":true,"name":"ann"}`}},
		{"jsonl with a byte-order mark", map[string]any{"file": "bom.jsonl", "key": "id", "on": "uid", "field": "name", "missing": "drop"},
			[]string{`{"uid":1,"x":true,"name":"ann"}`}},
		{"short csv row padded", map[string]any{"file": "users.csv", "key": "id", "field": "team", "missing": "drop"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.with["file"] = filepath.Join(dir, tt.with["file"].(string))
			got := runStage(t, newStage(t, "lookup", tt.with), in...)
			if !reflect.DeepEqual(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
	st := newStage(t, "lookup", map[string]any{"file": filepath.Join(dir, "users.csv"), "key": "id", "on": "uid", "as": "u", "missing": "error"})
	if err := processErr(st, `{"uid":7}`); err == nil || !strings.Contains(err.Error(), "uid 7 is not in users.csv") || !isPermanent(err) {
		t.Errorf("missing: error: %v", err)
	}
	if got := runStage(t, newStage(t, "lookup", map[string]any{"file": filepath.Join(dir, "users.csv"), "key": "id", "field": "team"}), `{"id":3}`); got[0] != `{"id":3,"team":""}` {
		t.Errorf("short row: %q", got)
	}
}

// TestLookupOptions checks the errors that stop a run before it starts:
// exit 2 at the option's line.
func TestLookupOptions(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "big.jsonl"), []byte(strings.Repeat(`{"id":1}`+"\n", 200000)), 0o644)
	os.WriteFile(filepath.Join(dir, "bad.jsonl"), []byte(`{"id":1}`+"\n"+`{"name":2}`+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "ref.txt"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "object.json"), []byte(`{"id":1}`), 0o644)
	os.WriteFile(filepath.Join(dir, "cut.json"), []byte(`[{"id":1},`), 0o644)
	os.WriteFile(filepath.Join(dir, "two.json"), []byte(`[{"id":1}] [`), 0o644)
	tests := []struct {
		with string
		want string
	}{
		{`{file: DIR/nope.csv, key: id, as: u}`, `p.yaml:4:18: stage "lookup": option file: open ` + dir + `/nope.csv: no such file or directory`},
		{`{file: DIR/big.jsonl, key: id, as: u, max_size: 1MiB}`, `/big.jsonl is 1800000 bytes, more than max_size (1048576)`},
		{`{file: DIR/bad.jsonl, key: id, as: u}`, `/bad.jsonl: line 2: no field "id" (the key)`},
		{`{file: DIR/ref.txt, key: id, as: u}`, `p.yaml:4:18: option file: cannot tell the format of ` + dir + `/ref.txt from its extension; set format`},
		{`{file: DIR/object.json, key: id, as: u}`, `/object.json: want a JSON array of objects, not an object`},
		{`{file: DIR/cut.json, key: id, as: u}`, `/cut.json: at byte 10: unexpected EOF`},
		{`{file: DIR/two.json, key: id, as: u}`, `/two.json: at byte 12: data after the array`},
		{`{file: DIR/big.jsonl, key: id}`, `option as: lookup needs as (the field for the match), or field`},
		{`{file: DIR/big.jsonl, key: id, as: u, missing: skip}`, `option missing: "skip" is not one of keep, drop, error`},
	}
	for _, tt := range tests {
		t.Run(tt.with, func(t *testing.T) {
			with := strings.ReplaceAll(tt.with, "DIR", dir)
			_, stderr, code := runPipeline(t, "input: {format: jsonl}\nstages:\n  - use: lookup\n    with: "+with+"\n", "")
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, stderr, tt.want)
			}
		})
	}
}

// TestLookupJQ joins generated records against a JSON reference and
// compares with jq's INDEX.
func TestLookupJQ(t *testing.T) {
	needTool(t, "jq")
	dir := t.TempDir()
	var ref strings.Builder
	ref.WriteString("[")
	for i := range 50 {
		if i > 0 {
			ref.WriteString(",")
		}
		ref.WriteString(`{"i":` + itoa(i*7) + `,"label":"L` + itoa(i) + `"}`)
	}
	ref.WriteString("]")
	refPath := filepath.Join(dir, "ref.json")
	os.WriteFile(refPath, []byte(ref.String()), 0o644)
	data := genRecords(5000, 9)
	out, stderr, code := runPipeline(t, "input: {format: jsonl}\noutput: {format: jsonl}\nstages:\n  - use: lookup\n    workers: 3\n    with: {file: "+refPath+", key: i, field: label, as: lab}\n", data, "--set", "ordered=true")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	want := tool(t, data, "jq", "-c", "--slurpfile", "ref", refPath, `INDEX($ref[0][]; .i) as $m | if $m[.i|tostring] then . + {lab: $m[.i|tostring].label} else . end`)
	sameRecords(t, decodeLines(t, out), decodeLines(t, want), nil)
}

func itoa(i int) string { return strconv.Itoa(i) }
