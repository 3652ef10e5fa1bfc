package stages_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flowrun/stages"
)

// libbStage makes one worker's Stage of the registered stage name with the
// options with, running its Check first as the spec package does.
func libbStage(t testing.TB, name string, with map[string]any) stages.Stage {
	t.Helper()
	st, err := libbNewStage(name, with)
	if err != nil {
		t.Fatalf("%s %v: %v", name, with, err)
	}
	if c, ok := st.(io.Closer); ok {
		t.Cleanup(func() { c.Close() })
	}
	return st
}

func libbNewStage(name string, with map[string]any) (stages.Stage, error) {
	spec, ok := stages.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("no stage %q", name)
	}
	c, err := stages.NewConfig(spec, name, "", with)
	if err != nil {
		return nil, err
	}
	if spec.Check != nil {
		if err := spec.Check(c); err != nil {
			return nil, err
		}
	}
	return spec.New(c)
}

// libbRun processes rec and returns the records it emitted as strings.
func libbRun(st stages.Stage, rec string) ([]string, error) {
	out, err := st.Process(context.Background(), []byte(rec), nil)
	got := make([]string, len(out))
	for i, b := range out {
		got[i] = string(b)
	}
	return got, err
}

// libbCase is one record through one stage: want is what it emits, or
// wantErr a substring of its error, which must then be permanent.
type libbCase struct {
	name    string
	with    map[string]any
	rec     string
	want    []string
	wantErr string
}

func libbRunCases(t *testing.T, stage string, cases []libbCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := libbStage(t, stage, tc.with)
			got, err := libbRun(st, tc.rec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				if !errors.Is(err, stages.ErrPermanent) {
					t.Errorf("error %v is not permanent", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") || len(got) != len(tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestJSONValidate(t *testing.T) {
	libbRunCases(t, "json.validate", []libbCase{
		{name: "object", rec: `{"a": [1, 2]}`, want: []string{`{"a": [1, 2]}`}},
		{name: "number", rec: `42`, want: []string{`42`}},
		{name: "object required", with: map[string]any{"object": true}, rec: ` {"a":1}`, want: []string{` {"a":1}`}},
		{name: "array not object", with: map[string]any{"object": true}, rec: `[1]`, wantErr: "not a JSON object"},
		{name: "truncated", rec: `{"a": [1, 2}`, wantErr: "offset 11"},
		{name: "trailing", rec: `{} {}`, wantErr: "offset"},
		{name: "empty", rec: ``, wantErr: "invalid JSON"},
	})
}

func TestJQ(t *testing.T) {
	libbRunCases(t, "jq", []libbCase{
		{name: "field", with: map[string]any{"query": ".user.name"}, rec: `{"user":{"name":"ann"}}`, want: []string{`"ann"`}},
		{name: "raw", with: map[string]any{"query": ".user.name", "raw": true}, rec: `{"user":{"name":"ann"}}`, want: []string{`ann`}},
		{name: "raw leaves non-strings", with: map[string]any{"query": ".n", "raw": true}, rec: `{"n":1.5}`, want: []string{`1.5`}},
		{name: "fan out", with: map[string]any{"query": ".[]"}, rec: `[1,"a",null]`, want: []string{`1`, `"a"`, `null`}},
		{name: "filter out", with: map[string]any{"query": "select(.n > 1)"}, rec: `{"n":1}`, want: []string{}},
		{name: "keys sorted, compact", with: map[string]any{"query": "{z: .a, a: .b}"}, rec: `{"a": 1, "b": "<&>"}`, want: []string{`{"a":"<&>","z":1}`}},
		{name: "big integer exact", with: map[string]any{"query": ".id"}, rec: `{"id": 12345678901234567890}`, want: []string{`12345678901234567890`}},
		{name: "integer past 2^53 exact", with: map[string]any{"query": ".a + 1"}, rec: `{"a": 9007199254740993}`, want: []string{`9007199254740994`}},
		{name: "integer past 64 bits computed exactly", with: map[string]any{"query": ".a + 1"}, rec: `{"a": 12345678901234567890}`, want: []string{`12345678901234567891`}},
		{name: "1e400 passed on as it came", with: map[string]any{"query": ".a"}, rec: `{"a": 1e400}`, want: []string{`1e400`}},
		{name: "1e400 computed is an error", with: map[string]any{"query": ".a + 1"}, rec: `{"a": 1e400}`, wantErr: "beyond the range of a 64-bit float"},
		{name: "infinite is an error", with: map[string]any{"query": "[infinite]"}, rec: `null`, wantErr: "beyond the range"},
		{name: "halt stops quietly", with: map[string]any{"query": "1, halt, 2"}, rec: `null`, want: []string{`1`}},
		{name: "not JSON", with: map[string]any{"query": "."}, rec: `{"a":`, wantErr: "decode JSON"},
		{name: "data after value", with: map[string]any{"query": "."}, rec: `{} x`, wantErr: "data after the value"},
		{name: "runtime error", with: map[string]any{"query": ".a.b"}, rec: `{"a":3}`, wantErr: "jq: "},
		{name: "error function", with: map[string]any{"query": `error("bad row")`}, rec: `{}`, wantErr: "bad row"},
	})
}

func TestFilter(t *testing.T) {
	w := map[string]any{"expr": "active && score > 50"}
	libbRunCases(t, "filter", []libbCase{
		{name: "kept", with: w, rec: `{"active":true,"score":51,"name":"a"}`, want: []string{`{"active":true,"score":51,"name":"a"}`}},
		{name: "low score", with: w, rec: `{"active":true,"score":50}`, want: []string{}},
		{name: "inactive", with: w, rec: `{"active":false,"score":99}`, want: []string{}},
		{name: "string functions", with: map[string]any{"expr": `name startsWith "a" && len(tags) == 2`}, rec: `{"name":"ann","tags":["x","y"]}`, want: []string{`{"name":"ann","tags":["x","y"]}`}},
		{name: "missing field with default", with: map[string]any{"expr": "(score ?? 0) > 1"}, rec: `{}`, want: []string{}},
		{name: "not an object", with: w, rec: `[1,2]`, wantErr: "not a JSON object"},
		{name: "null", with: w, rec: `null`, wantErr: "not a JSON object"},
		{name: "broken JSON", with: w, rec: `{"active":`, wantErr: "invalid JSON at offset 10"},
		{name: "env", with: map[string]any{"expr": `$env["a b"] == "x"`}, rec: `{"a b":"x"}`, want: []string{`{"a b":"x"}`}},
		{name: "nested and closures", with: map[string]any{"expr": `address.city == "Paris" && any(tags, # == "b")`},
			rec: `{"tags":["a","b"],"address":{"city":"Paris"}}`, want: []string{`{"tags":["a","b"],"address":{"city":"Paris"}}`}},
		{name: "escaped key and value", with: map[string]any{"expr": `name == "a\"b"`}, rec: `{"n\u0061me":"a\"b"}`, want: []string{`{"n\u0061me":"a\"b"}`}},
		{name: "duplicate key last wins", with: map[string]any{"expr": `n == 2`}, rec: `{"n":1,"n":2}`, want: []string{`{"n":1,"n":2}`}},
		{name: "type mismatch", with: w, rec: `{"active":true,"score":"high"}`, wantErr: "filter: invalid operation: string > number (at 1:17)"},
		{name: "integer past 2^53 exact", with: map[string]any{"expr": "id == 9007199254740993"}, rec: `{"id":9007199254740992}`, want: []string{}},
		{name: "integer past 64 bits passes", with: map[string]any{"expr": "id != nil"}, rec: `{"id":12345678901234567890}`, want: []string{`{"id":12345678901234567890}`}},
		{name: "integer past 64 bits in arithmetic", with: map[string]any{"expr": "id > 1"}, rec: `{"id":12345678901234567890}`, wantErr: `field "id" is 12345678901234567890, an integer beyond 64 bits`},
		{name: "1e400", with: map[string]any{"expr": "x > 1"}, rec: `{"x":1e400}`, wantErr: `field "x": the number 1e400 is beyond the range of a 64-bit float`},
		{name: "1e-400", with: map[string]any{"expr": "x > 1"}, rec: `{"x":1e-400}`, wantErr: `beyond the range`},
		{name: "modulo of integers", with: map[string]any{"expr": "n % 2 == 1"}, rec: `{"n":7}`, want: []string{`{"n":7}`}},
		{name: "field missing", with: w, rec: `{"active":true}`, wantErr: `filter: field "score" is missing, not a number`},
		{name: "field null", with: w, rec: `{"active":true,"score":null}`, wantErr: `filter: field "score" is null, not a number`},
		{name: "field null in a call", with: map[string]any{"expr": `upper(name) == "A"`}, rec: `{"name":null}`, wantErr: `filter: field "name" is null, not a string`},
		{name: "field of the wrong kind", with: map[string]any{"expr": `not ok`}, rec: `{"ok":1}`, wantErr: `filter: field "ok" is a number, not a boolean`},
		{name: "field null in len", with: map[string]any{"expr": `len(tags) > 0`}, rec: `{"tags":null}`, wantErr: `filter: field "tags" is null`},
		{name: "field not a boolean", with: map[string]any{"expr": `ok`}, rec: `{"ok":1}`, wantErr: `filter: field "ok" is a number, not true or false`},
		{name: "result not a boolean", with: map[string]any{"expr": `ok ?? 1`}, rec: `{}`, wantErr: `filter: the expression gives a number, not true or false`},
		{name: "field named type", with: map[string]any{"expr": `type == "user"`}, rec: `{"type":"user"}`, want: []string{`{"type":"user"}`}},
		{name: "fields named len and all", with: map[string]any{"expr": `all && len > 2 && len(name) == 1`}, rec: `{"all":true,"len":3,"name":"x"}`, want: []string{`{"all":true,"len":3,"name":"x"}`}},
		{name: "field with a hyphen", with: map[string]any{"expr": `$env["first-name"] == "ann"`}, rec: `{"first-name":"ann","x":1}`, want: []string{`{"first-name":"ann","x":1}`}},
	})
}

func TestMap(t *testing.T) {
	libbRunCases(t, "map", []libbCase{
		{name: "fields append", with: map[string]any{"fields": map[string]string{"name_upper": "upper(name)"}},
			rec: `{"id": 7, "name": "ann", "score": 1.50}`, want: []string{`{"id": 7,"name": "ann","score": 1.50,"name_upper":"ANN"}`}},
		{name: "fields replace in place", with: map[string]any{"fields": map[string]string{"score": "score * 2", "b": "true", "a": "nil"}},
			rec: `{"score":2,"id":12345678901234567890}`, want: []string{`{"score":4,"id":12345678901234567890,"a":null,"b":true}`}},
		{name: "fields see the record as it came", with: map[string]any{"fields": map[string]string{"x": "y", "y": "x"}},
			rec: `{"x":1,"y":2}`, want: []string{`{"x":2,"y":1}`}},
		{name: "fields escape strings", with: map[string]any{"fields": map[string]string{"s": `"q\"<\n" + name`}},
			rec: `{"name":"é\u0001"}`, want: []string{`{"name":"é\u0001","s":"q\"<\né\u0001"}`}},
		{name: "fields on empty object", with: map[string]any{"fields": map[string]string{"n": "1 + 1"}},
			rec: ` { } `, want: []string{`{"n":2}`}},
		{name: "expr object", with: map[string]any{"expr": `{"id": id, "big": score > 1}`},
			rec: `{"id": 3, "score": 2}`, want: []string{`{"big":true,"id":3}`}},
		{name: "expr string", with: map[string]any{"expr": `name + "!"`}, rec: `{"name":"a"}`, want: []string{`"a!"`}},
		{name: "expr raw string", with: map[string]any{"expr": `name + "!"`, "raw": true}, rec: `{"name":"a"}`, want: []string{`a!`}},
		{name: "expr float", with: map[string]any{"expr": `x / 4`}, rec: `{"x":1}`, want: []string{`0.25`}},
		{name: "not an object", with: map[string]any{"expr": "1"}, rec: `"s"`, wantErr: "not a JSON object"},
		{name: "bad value", with: map[string]any{"fields": map[string]string{"u": "upper(n)"}}, rec: `{"n":1}`, wantErr: "field u"},
		{name: "NaN", with: map[string]any{"expr": "x / 0.0 * 0"}, rec: `{"x":0}`, wantErr: "no JSON form"},
		{name: "integers exact", with: map[string]any{"expr": `{"a": a, "b": b, "c": c}`},
			rec: `{"a":12345678901234567890,"b":9007199254740993,"c":-0}`, want: []string{`{"a":12345678901234567890,"b":9007199254740993,"c":-0}`}},
		{name: "integers exact in fields", with: map[string]any{"fields": map[string]string{"b": "a", "c": "d + 1", "e": "f"}},
			rec:  `{"a":12345678901234567890,"d":9007199254740993,"f":[100000000000000000000000000000001]}`,
			want: []string{`{"a":12345678901234567890,"d":9007199254740993,"f":[100000000000000000000000000000001],"b":12345678901234567890,"c":9007199254740994,"e":[100000000000000000000000000000001]}`}},
		{name: "1e400 is an error", with: map[string]any{"expr": `{"a": a}`}, rec: `{"a":1e400}`, wantErr: "beyond the range of a 64-bit float"},
		{name: "1e400 nested is an error", with: map[string]any{"expr": `{"a": a}`}, rec: `{"a":[1e400]}`, wantErr: "beyond the range of a 64-bit float"},
		{name: "1e400 in a field not read passes", with: map[string]any{"fields": map[string]string{"b": "1"}}, rec: `{"a":1e400}`, want: []string{`{"a":1e400,"b":1}`}},
		{name: "field missing", with: map[string]any{"fields": map[string]string{"u": "upper(name)"}}, rec: `{}`, wantErr: `map: field u: field "name" is missing, not a string`},
	})
}

func TestPickDrop(t *testing.T) {
	rec := `{"id":1, "name":"a,}\"b", "nested":{"x":[1,{"y":"}"}]}, "na\u006de2":true}`
	cases := []struct {
		stage, name string
		fields      []string
		rec, want   string
		wantErr     string
	}{
		{"pick", "order of the record", []string{"nested", "id"}, rec, `{"id":1,"nested":{"x":[1,{"y":"}"}]}}`, ""},
		{"pick", "numbers exact", []string{"a", "b", "c"}, `{"a":12345678901234567890,"b":9007199254740993,"c":1e400,"d":1}`, `{"a":12345678901234567890,"b":9007199254740993,"c":1e400}`, ""},
		{"pick", "escaped key", []string{"name2"}, rec, `{"na\u006de2":true}`, ""},
		{"pick", "none present", []string{"zzz"}, rec, `{}`, ""},
		{"drop", "keeps the rest", []string{"nested", "id"}, rec, `{"name":"a,}\"b","na\u006de2":true}`, ""},
		{"drop", "all", []string{"id"}, `{ "id" : 1 }`, `{}`, ""},
		{"pick", "not an object", []string{"id"}, `[1]`, "", "not a JSON object"},
		{"pick", "unterminated", []string{"id"}, `{"id":"x}`, "", "offset 6"},
		{"drop", "bad number", []string{"id"}, `{"id":01}`, "", "offset 7"},
		{"drop", "trailing comma", []string{"id"}, `{"id":1,}`, "", "expected a field name"},
		{"drop", "trailing data", []string{"id"}, `{"id":1} {}`, "", "data after"},
	}
	for _, tc := range cases {
		t.Run(tc.stage+"/"+tc.name, func(t *testing.T) {
			libbRunCases(t, tc.stage, []libbCase{{name: "run", with: map[string]any{"fields": tc.fields}, rec: tc.rec, want: []string{tc.want}, wantErr: tc.wantErr}})
		})
	}
}

func TestLibJSONOptionErrors(t *testing.T) {
	cases := []struct {
		stage, option string
		with          map[string]any
	}{
		{"jq", "query", map[string]any{"query": ".a | "}},
		{"jq", "query", map[string]any{"query": "undefined_fn(1)"}},
		{"filter", "expr", map[string]any{"expr": "a &&"}},
		{"filter", "expr", map[string]any{"expr": `"not a bool"`}},
		{"filter", "expr", map[string]any{"expr": `uper(name) == "A"`}},
		{"filter", "expr", map[string]any{"expr": `name.trim() == "A"`}},
		{"map", "expr", map[string]any{"expr": `{"a": nosuch(1)}`}},
		{"map", "fields", map[string]any{"fields": map[string]string{"a": "frobnicate(x)"}}},
		{"map", "expr", map[string]any{"expr": "upper("}},
		{"map", "expr", map[string]any{}},
		{"map", "fields", map[string]any{"expr": "1", "fields": map[string]string{"a": "1"}}},
		{"map", "fields", map[string]any{"fields": map[string]string{"a": "1 +"}}},
		{"pick", "fields", map[string]any{"fields": []string{}}},
		{"drop", "fields", map[string]any{}},
	}
	for _, tc := range cases {
		t.Run(tc.stage+"/"+tc.option, func(t *testing.T) {
			_, err := libbNewStage(tc.stage, tc.with)
			var oe *stages.OptionError
			if !errors.As(err, &oe) || oe.Option != tc.option {
				t.Fatalf("error %v, want an *OptionError for %s", err, tc.option)
			}
		})
	}
}

// BenchmarkStageJSON measures the JSON stages on a typical JSONL record,
// the W2 workload's shape.
func BenchmarkStageJSON(b *testing.B) {
	rec := []byte(`{"id":12345,"name":"alice smith","email":"alice@example.com","active":true,"score":73.5,"tags":["a","b"],"address":{"city":"Paris","zip":"75001"}}`)
	cases := []struct {
		name, stage string
		with        map[string]any
	}{
		{"jq", "jq", map[string]any{"query": "{id, name}"}},
		{"filter", "filter", map[string]any{"expr": "active && score > 50"}},
		{"map", "map", map[string]any{"fields": map[string]string{"name_upper": "upper(name)"}}},
		{"map_expr", "map", map[string]any{"expr": `{"id": id, "name": upper(name)}`}},
		{"pick", "pick", map[string]any{"fields": []string{"id", "name"}}},
		{"validate", "json.validate", nil},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			st := libbStage(b, bc.stage, bc.with)
			ctx := context.Background()
			var out [][]byte
			buf := make([]byte, len(rec))
			b.SetBytes(int64(len(rec)))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf, rec)
				var err error
				if out, err = st.Process(ctx, buf, out[:0]); err != nil || len(out) != 1 {
					b.Fatalf("%d records, error %v", len(out), err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

// TestExprUnknownFunction checks that a call of a function expr-lang does
// not have is found when the stage is made, with a suggestion, rather
// than on every record.
func TestExprUnknownFunction(t *testing.T) {
	_, err := libbNewStage("filter", map[string]any{"expr": `uper(name) == "A"`})
	if err == nil || !strings.Contains(err.Error(), "unknown function uper (did you mean upper?)") {
		t.Fatalf("error %v, want one naming uper and suggesting upper", err)
	}
}

// TestJQOneHugeResult checks that a single result that grows without
// end, which max_results cannot bound, is bounded by time: jq has a
// default timeout, and a timeout stops the query.
func TestJQOneHugeResult(t *testing.T) {
	spec, _ := stages.Lookup("jq")
	if spec.DefaultTimeout <= 0 {
		t.Errorf("jq has no default timeout: nothing bounds [range(1e9)]")
	}
	st := libbStage(t, "jq", map[string]any{"query": "[range(1e9)] | length"})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := st.Process(ctx, []byte("null"), nil)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, stages.ErrPermanent) {
		t.Fatalf("error %v, want the deadline, retryable", err)
	}
}

// TestExprIntegerOverflow: expr-lang's int arithmetic wraps around, so
// 9223372036854775807 + 1 came out as -9223372036854775808, a silent change
// of a number; it must be an error for the record, and what fits must
// still compute exactly.
func TestExprIntegerOverflow(t *testing.T) {
	const max = `{"x":9223372036854775807,"n":-9223372036854775808,"f":1e30,"a":[9223372036854775807,1]}`
	cases := []libbCase{
		{name: "add", with: map[string]any{"expr": "x + 1"}, rec: max, wantErr: "beyond 64 bits"},
		{name: "subtract", with: map[string]any{"expr": "n - 1"}, rec: max, wantErr: "beyond 64 bits"},
		{name: "multiply", with: map[string]any{"expr": "x * 2"}, rec: max, wantErr: "beyond 64 bits"},
		{name: "multiply by -1", with: map[string]any{"expr": "n * -1"}, rec: max, wantErr: "beyond 64 bits"},
		{name: "negate", with: map[string]any{"expr": "-n"}, rec: max, wantErr: "beyond 64 bits"},
		{name: "abs", with: map[string]any{"expr": "abs(n)"}, rec: max, wantErr: "beyond 64 bits"},
		{name: "sum", with: map[string]any{"expr": "sum(a)"}, rec: max, wantErr: "beyond 64 bits"},
		{name: "sum with a map", with: map[string]any{"expr": "sum(a, # * 1)"}, rec: max, wantErr: "beyond 64 bits"},
		{name: "in a closure", with: map[string]any{"expr": "reduce(a, #acc + #)"}, rec: max, wantErr: "beyond 64 bits"},
		{name: "remainder of a division by zero", with: map[string]any{"expr": "x % (n - n)"}, rec: max, wantErr: "9223372036854775807 % 0: the remainder of a division by zero"},
		{name: "int of a string", with: map[string]any{"expr": `int("12abc")`}, rec: `{}`, wantErr: `the string "12abc" is not an integer`},
		{name: "int of a long string", with: map[string]any{"expr": `int("99999999999999999999")`}, rec: `{}`, wantErr: `the string "99999999999999999999" holds an integer beyond 64 bits`},
		{name: "literals", with: map[string]any{"expr": "9223372036854775807 + 1"}, rec: `{}`, wantErr: "beyond 64 bits"},
		{name: "int of a float too large", with: map[string]any{"expr": "int(f)"}, rec: max, wantErr: "beyond 64 bits"},
		{name: "exact at the edge", with: map[string]any{"expr": "[x - 1 + 1, n + 1 - 1, -(n + 1), abs(n + 1), x * 1, sum([x, -1]), int(9.0e18), int(\"-42\"), 2.5 + 1, -1.5, \"a\" + \"b\", x % 10]"},
			rec: max, want: []string{`[9223372036854775807,-9223372036854775808,9223372036854775807,9223372036854775807,9223372036854775807,9223372036854775806,9000000000000000000,-42,3.5,-1.5,"ab",7]`}},
	}
	libbRunCases(t, "map", cases)
	libbRunCases(t, "filter", []libbCase{
		{name: "filter add", with: map[string]any{"expr": "x + 1 < 0"}, rec: max, wantErr: "beyond 64 bits"},
	})
}

// TestExprCompileMessages: an expression refused before the run says why in
// JSON's terms, not in Go's or strconv's.
func TestExprCompileMessages(t *testing.T) {
	for _, tc := range []struct{ expr, want string }{
		{"x == 12345678901234567890", "integer literal 12345678901234567890 is beyond 64 bits"},
		{"[1] + [2]", "mismatched types array and array"},
		{"let f = 1; f()", "number is not callable"},
	} {
		_, err := libbNewStage("filter", map[string]any{"expr": tc.expr})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.expr, err, tc.want)
		}
		for _, internal := range []string{"strconv", "interface {}", "int is"} {
			if err != nil && strings.Contains(err.Error(), internal) {
				t.Errorf("%s: error %q says %q", tc.expr, err, internal)
			}
		}
	}
}

// TestExprIndexMessages: indexing a value by the wrong kind of key says so
// in JSON's terms, not with reflect's "reflect.Value.MapIndex: value of
// type int is not assignable to type string" or "int(string)".
func TestExprIndexMessages(t *testing.T) {
	const rec = `{"a":[1,2],"o":{"k":1},"n":null,"s":"x"}`
	libbRunCases(t, "map", []libbCase{
		{name: "object by a number", with: map[string]any{"expr": "o[1]"}, rec: rec, wantErr: "field \"o\" is an object, whose keys are strings: it cannot be indexed by a number"},
		{name: "array by a string", with: map[string]any{"expr": `a["k"]`}, rec: rec, wantErr: "field \"a\" is an array, indexed by numbers: it cannot be indexed by a string"},
		{name: "array by a name", with: map[string]any{"expr": "a.k"}, rec: rec, wantErr: "field \"a\" is an array, indexed by numbers: it cannot be indexed by a string"},
		{name: "slice to null", with: map[string]any{"expr": "a[0:n]"}, rec: rec, wantErr: "field \"a\" is an array, indexed by numbers: it cannot be indexed by null"},
		{name: "a date", with: map[string]any{"expr": `now() + s`}, rec: rec, wantErr: "invalid operation: date + string"},
	})
}
