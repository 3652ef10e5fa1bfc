package table_test

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flowrun/flowrun/stages"
)

func TestAggregate(t *testing.T) {
	recs := []string{
		`{"k":"a","v":1,"name":"ann"}`,
		`{"k":"b","v":2.5,"name":"bo"}`,
		`{"k":"a","v":"3","name":"cécile"}`,
		`{"k":"\u0061","v":null,"name":"ann"}`,
		`{"v":4,"name":"dee"}`,
	}
	tests := []struct {
		name string
		with map[string]any
		in   []string
		want []string
	}{
		{"count by key, first appearance order", map[string]any{"by": []string{"k"}, "compute": map[string]string{"n": "count()"}}, recs,
			[]string{`{"k":"a","n":3}`, `{"k":"b","n":1}`, `{"k":null,"n":1}`}},
		{"no by: one group", map[string]any{"compute": map[string]string{"n": "count()", "total": "sum(v)"}}, recs,
			[]string{`{"n":5,"total":10.5}`}},
		{"sum of ints stays an int, numeric strings count", map[string]any{"by": []string{"k"}, "compute": map[string]string{"s": "sum(v)", "c": "count(v)", "avg": "avg(v)"}}, recs,
			[]string{`{"k":"a","avg":2,"c":2,"s":4}`, `{"k":"b","avg":2.5,"c":1,"s":2.5}`, `{"k":null,"avg":4,"c":1,"s":4}`}},
		{"min max by jq order", map[string]any{"compute": map[string]string{"lo": "min(v)", "hi": "max(v)", "first": "min(name)"}}, recs,
			[]string{`{"first":"ann","hi":"3","lo":1}`}},
		{"min max exact past float64", map[string]any{"compute": map[string]string{"lo": "min(v)", "hi": "max(v)"}},
			[]string{`{"v":9007199254740993}`, `{"v":9007199254740992}`, `{"v":-12345678901234567890}`, `{"v":-12345678901234567891}`, `{"v":1e400}`, `{"v":2e400}`},
			[]string{`{"hi":2e400,"lo":-12345678901234567891}`}},
		{"sum exact past int64", map[string]any{"by": []string{"k"}, "compute": map[string]string{"s": "sum(v)"}},
			[]string{`{"k":1,"v":9223372036854775807}`, `{"k":1,"v":1}`, `{"k":1,"v":-1}`, `{"k":2,"v":12345678901234567890}`, `{"k":2,"v":"1"}`, `{"k":3,"v":-9223372036854775808}`, `{"k":3,"v":-1}`},
			[]string{`{"k":1,"s":9223372036854775807}`, `{"k":2,"s":12345678901234567891}`, `{"k":3,"s":-9223372036854775809}`}},
		{"expressions", map[string]any{"by": []string{"k"}, "compute": map[string]string{"longest": "max(len(name))", "up": "first(upper(name))"}}, recs,
			[]string{`{"k":"a","longest":6,"up":"ANN"}`, `{"k":"b","longest":2,"up":"BO"}`, `{"k":null,"longest":3,"up":"DEE"}`}},
		{"first last distinct collect", map[string]any{"by": []string{"k"}, "compute": map[string]string{"f": "first(v)", "l": "last(v)", "d": "distinct(name)", "all": "collect(v)"}}, recs,
			[]string{`{"k":"a","all":[1,"3",null],"d":["ann","cécile"],"f":1,"l":null}`, `{"k":"b","all":[2.5],"d":["bo"],"f":2.5,"l":2.5}`, `{"k":null,"all":[4],"d":["dee"],"f":4,"l":4}`}},
		{"by alone: the distinct keys", map[string]any{"by": []string{"k"}}, recs,
			[]string{`{"k":"a"}`, `{"k":"b"}`, `{"k":null}`}},
		{"two by fields", map[string]any{"by": []string{"a", "b"}, "compute": map[string]string{"n": "count()"}},
			[]string{`{"a":1,"b":2}`, `{"a":1,"b":3}`, `{"b":2,"a":1}`}, []string{`{"a":1,"b":2,"n":2}`, `{"a":1,"b":3,"n":1}`}},
		{"every", map[string]any{"by": []string{"k"}, "compute": map[string]string{"n": "count()"}, "every": 2}, recs,
			[]string{`{"k":"a","n":1}`, `{"k":"b","n":1}`, `{"k":"a","n":2}`, `{"k":null,"n":1}`}},
		{"empty input", map[string]any{"compute": map[string]string{"n": "count()"}}, nil, nil},
		{"empty group values", map[string]any{"compute": map[string]string{"a": "avg(x)", "m": "min(x)", "s": "sum(x)", "d": "distinct(x)"}}, []string{`{}`},
			[]string{`{"a":null,"d":[],"m":null,"s":0}`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runStage(t, newStage(t, "aggregate", tt.with), tt.in...)
			if !reflect.DeepEqual(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestAggregateBadRecords(t *testing.T) {
	tests := []struct {
		with map[string]any
		rec  string
		want string
	}{
		{map[string]any{"by": []string{"k"}}, `[1]`, "not a JSON object"},
		{map[string]any{"by": []string{"k"}}, `{"k":1`, "invalid JSON"},
		{map[string]any{"compute": map[string]string{"s": "sum(v)"}}, `{"v":"abc"}`, `s: sum(v) is "abc", not a number`},
		{map[string]any{"compute": map[string]string{"s": "sum(v)"}}, `{"v":[1]}`, `not a number`},
		{map[string]any{"compute": map[string]string{"s": "max(v / 0 + x)"}}, `{"v":1,"x":"a"}`, `v / 0 + x`},
		{map[string]any{"compute": map[string]string{"s": "sum(v)"}}, `{"v":1e400}`, `s: sum(v) is 1e400, beyond the range of a 64-bit float`},
	}
	for _, tt := range tests {
		t.Run(tt.rec, func(t *testing.T) {
			err := processErr(newStage(t, "aggregate", tt.with), tt.rec)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !isPermanent(err) {
				t.Errorf("error %v, want a permanent one saying %q", err, tt.want)
			}
		})
	}
	// A record that fails leaves the groups as they were.
	st := newStage(t, "aggregate", map[string]any{"compute": map[string]string{"n": "count()", "s": "sum(v)"}})
	if err := processErr(st, `{"v":"x"}`); err == nil {
		t.Fatal("no error")
	}
	if got := runStage(t, st, `{"v":1}`); !reflect.DeepEqual(got, []string{`{"n":1,"s":1}`}) {
		t.Errorf("after a failed record: %q", got)
	}
	// A sum that would overflow float64 fails its record, not the sum
	// (which was written as null).
	st = newStage(t, "aggregate", map[string]any{"compute": map[string]string{"s": "sum(v)"}})
	if err := processErr(st, `{"v":1e308}`); err != nil {
		t.Fatal(err)
	}
	if err := processErr(st, `{"v":1e308}`); err == nil || !strings.Contains(err.Error(), "would pass the range of a 64-bit float") {
		t.Errorf("sum past float64: %v", err)
	}
	if got := flushAll(t, st); !reflect.DeepEqual(got, []string{`{"s":1e+308}`}) {
		t.Errorf("after the sum past float64: %q", got)
	}
	st = newStage(t, "aggregate", map[string]any{"by": []string{"k"}, "max_groups": 2})
	runStage(t, st) // flush nothing
	for _, r := range []string{`{"k":1}`, `{"k":2}`, `{"k":1}`} {
		if err := processErr(st, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := processErr(st, `{"k":3}`); err == nil || !strings.Contains(err.Error(), "more than max_groups (2)") {
		t.Errorf("past max_groups: %v", err)
	}
}

// TestAggregateOptions checks that bad options stop the pipeline before
// it runs, exit 2, at the option's line and column.
func TestAggregateOptions(t *testing.T) {
	tests := []struct {
		with string
		want string
	}{
		{`{compute: {n: "cnt()"}}`, `p.yaml:4:21: option compute: n: unknown function cnt; want one of count()`},
		{`{compute: {n: "sum()"}}`, `p.yaml:4:21: option compute: n: sum needs a field or an expression`},
		{`{compute: {n: "sum(x +)"}}`, `p.yaml:4:21: option compute: n: sum(x +): unexpected token EOF`},
		{`{compute: {n: "count"}}`, `p.yaml:4:21: option compute: n: "count" is not a function call`},
		{`{by: [k], compute: {k: "count()"}}`, `p.yaml:4:30: option compute: k is also a by field`},
		{`{every: -1}`, `p.yaml:4:19: option every: is -1; it must be 0 or more`},
		{`{every: 2, window: 1s}`, `p.yaml:4:30: option window: aggregate takes every or window, not both`},
		{`{max_groups: 0}`, `p.yaml:4:24: option max_groups: is 0`},
		{`{by: 3s, windw: 1s}`, `p.yaml:4:20: unknown option "windw" for stage aggregate (did you mean "window"?)`},
	}
	for _, tt := range tests {
		t.Run(tt.with, func(t *testing.T) {
			_, stderr, code := runPipeline(t, "input: {format: jsonl}\nstages:\n  - use: aggregate\n    with: "+tt.with+"\n", "")
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q", code, stderr, tt.want)
			}
		})
	}
}

// genRecords makes n JSON records with a key of few values, a second key,
// a number that is an int or a float, and a name.
func genRecords(n int, seed uint64) string {
	r := rand.New(rand.NewPCG(seed, 1))
	keys := []string{"alpha", "beta", "gamma", "delta", "épsilon", "ζeta", "eta", "theta"}
	words := []string{"x", "yy", "zzz", "wörd", "a longer name", ""}
	var b strings.Builder
	for i := range n {
		v := any(r.IntN(1000) - 500)
		if i%3 == 0 {
			v = float64(r.IntN(100000))/100 - 300
		}
		rec := map[string]any{"k": keys[r.IntN(len(keys))], "g": r.IntN(4), "v": v, "name": words[r.IntN(len(words))], "i": i}
		line, _ := json.Marshal(rec)
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

func decodeLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	dec := json.NewDecoder(strings.NewReader(s))
	for dec.More() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("%v in %q", err, s[:min(len(s), 200)])
		}
		recs = append(recs, m)
	}
	return recs
}

// sameRecords compares records field by field, numbers within a rounding
// error (the tools print floats each their own way).
func sameRecords(t *testing.T, got, want []map[string]any, rename map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%d records, the reference has %d", len(got), len(want))
	}
	for i := range want {
		for wk, wv := range want[i] {
			k := wk
			if r, ok := rename[wk]; ok {
				k = r
			}
			gv, ok := got[i][k]
			if !ok {
				t.Errorf("record %d: no field %s (reference %s: %v)", i+1, k, wk, wv)
				continue
			}
			if !sameValue(gv, wv) {
				t.Errorf("record %d field %s: %v, the reference says %v", i+1, k, gv, wv)
			}
		}
	}
}

func sameValue(a, b any) bool {
	x, ok1 := a.(float64)
	y, ok2 := b.(float64)
	if ok1 && ok2 {
		return x == y || math.Abs(x-y) <= 1e-9*math.Max(math.Abs(x), math.Abs(y))
	}
	return reflect.DeepEqual(a, b)
}

// TestAggregateMiller checks count and the numeric functions against
// Miller's count -g and stats1 on generated records.
func TestAggregateMiller(t *testing.T) {
	needTool(t, "mlr")
	data := genRecords(20000, 1)
	out, stderr, code := runPipeline(t, `
input: {format: jsonl}
output: {format: jsonl}
stages:
  - use: aggregate
    with: {by: [k], compute: {count: count()}}
`, data)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	ref := tool(t, data, "mlr", "--ijsonl", "--ojsonl", "count", "-g", "k")
	sameRecords(t, decodeLines(t, out), decodeLines(t, ref), nil)

	out, stderr, code = runPipeline(t, `
input: {format: jsonl}
output: {format: jsonl}
stages:
  - use: aggregate
    with:
      by: [k, g]
      compute: {n: count(v), s: sum(v), mean: avg(v), lo: min(v), hi: max(v)}
`, data)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	ref = tool(t, data, "mlr", "--ijsonl", "--ojsonl", "stats1", "-a", "count,sum,mean,min,max", "-f", "v", "-g", "k,g")
	sameRecords(t, decodeLines(t, out), decodeLines(t, ref), map[string]string{
		"v_count": "n", "v_sum": "s", "v_mean": "mean", "v_min": "lo", "v_max": "hi"})
	if n := len(decodeLines(t, ref)); n != 32 {
		t.Errorf("%d groups, want 8 keys × 4", n)
	}
}

// TestAggregateJQ checks distinct, collect and an expression against jq.
func TestAggregateJQ(t *testing.T) {
	needTool(t, "jq")
	data := genRecords(3000, 2)
	out, stderr, code := runPipeline(t, `
input: {format: jsonl}
output: {format: jsonl}
stages:
  - use: aggregate
    with: {by: [k], compute: {names: distinct(name), ids: collect(i), longest: max(len(name))}}
`, data)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	// jq's group_by sorts the groups; unique sorts the values: order both.
	ref := tool(t, data, "jq", "-s", "-c", `group_by(.k)[] | {k: .[0].k, names: (map(.name) | unique), ids: map(.i), longest: (map(.name | length) | max)}`)
	got := decodeLines(t, out)
	for _, g := range got {
		names := g["names"].([]any)
		strs := make([]string, len(names))
		for i, n := range names {
			strs[i] = n.(string)
		}
		g["names"] = sortedAny(strs)
	}
	want := decodeLines(t, ref)
	byKey := map[any]map[string]any{}
	for _, g := range got {
		byKey[g["k"]] = g
	}
	var ordered []map[string]any
	for _, w := range want {
		ordered = append(ordered, byKey[w["k"]])
	}
	if len(got) != len(want) {
		t.Fatalf("%d groups, jq has %d", len(got), len(want))
	}
	sameRecords(t, ordered, want, nil)
}

func sortedAny(s []string) []any {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	out := make([]any, len(s))
	for i, x := range s {
		out[i] = x
	}
	return out
}

// TestAggregateWindow checks that a window closes at the first record
// that comes window or more after it opened, that record included, and
// that the stage asks to be flushed after window without a record.
func TestAggregateWindow(t *testing.T) {
	st := newStage(t, "aggregate", map[string]any{"by": []string{"k"}, "compute": map[string]string{"n": "count()"}, "window": 2 * time.Millisecond})
	if idler, ok := st.(stages.Idler); !ok || idler.IdleAfter() != 2*time.Millisecond {
		t.Fatalf("aggregate with window is not an Idler of 2ms")
	}
	var got []string
	for i, rec := range []string{`{"k":1}`, `{"k":2}`, `{"k":1}`} {
		if i == 2 {
			time.Sleep(10 * time.Millisecond) // the window has passed, whatever the clock does
		}
		out, err := st.Process(context.Background(), []byte(rec), nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, texts(out)...)
	}
	if want := []string{`{"k":1,"n":2}`, `{"k":2,"n":1}`}; !reflect.DeepEqual(got, want) {
		t.Errorf("window: %q, want %q", got, want)
	}
	if rest := flushAll(t, st); len(rest) != 0 {
		t.Errorf("after the window closed, flush gave %q", rest)
	}
	if idle := newStage(t, "aggregate", nil); idle.(stages.Idler).IdleAfter() != 0 {
		t.Errorf("aggregate without window asks for idle flushes")
	}
}
