package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/flowrun/flowrun/internal/jsontext"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/vm"
	"github.com/itchyny/gojq"
)

func init() {
	Register(Spec{
		Name:  "json.validate",
		Doc:   "Passes records that are valid JSON (with object, only JSON objects) and fails the others, naming the offset and the reason.",
		Batch: true,
		Options: []Option{
			{Name: "object", Type: Bool, Default: false, Doc: "also require each record to be a JSON object"},
		},
		New: func(c Config) (Stage, error) { return jsonValidateStage{object: c.Bool("object")}, nil },
	})
	Register(Spec{
		Name: "jq",
		Doc: "Runs a jq query (gojq) on each JSON record and emits each of its results as compact JSON: " +
			"none filters the record out, several fan it out. Object keys come out sorted; integers are exact, as in jq 1.7. " +
			"max_results bounds how many results a record gives, but only the timeout bounds how large one result grows ([range(1e9)]): " +
			"hence a default timeout.",
		Batch: true,
		// A single result is built whole before it is emitted, and nothing
		// but the clock can stop [range(1e9)]: gojq checks its context at
		// every step. Measured here, it builds about 65 MB a second of such
		// an array, so 5 s bounds it to a few hundred MB.
		DefaultTimeout: 5 * time.Second,
		Options: []Option{
			{Name: "query", Type: String, Required: true, Doc: "the jq program, like .user | {name, id}"},
			{Name: "raw", Type: Bool, Default: false, Doc: "emit string results without quotes, like jq -r"},
			{Name: "max_results", Type: Int, Default: 1_000_000, Doc: "the most results one record may give (range(1e9) must not take the memory)"},
		},
		Check: func(c Config) error {
			if n := c.Int("max_results"); n < 1 {
				return OptionErrorf("max_results", "must be at least 1, not %d", n)
			}
			_, err := compileJQ(c)
			return err
		},
		New: func(c Config) (Stage, error) {
			code, err := compileJQ(c)
			if err != nil {
				return nil, err
			}
			return &jqStage{code: code, raw: c.Bool("raw"), max: c.Int("max_results")}, nil
		},
	})
	Register(Spec{
		Name: "filter",
		Doc: "Keeps the JSON object records for which an expr-lang expression is true; " +
			"the record's fields are its variables: active && score > 50. " + exprFieldsDoc,
		Batch: true,
		Options: []Option{
			{Name: "expr", Type: String, Required: true, Doc: "a boolean expression over the record's fields (expr-lang syntax)"},
		},
		Check: func(c Config) error { _, err := compileExpr(c.String("expr"), "expr", expr.AsBool()); return err },
		New: func(c Config) (Stage, error) {
			prog, err := compileExpr(c.String("expr"), "expr", expr.AsBool())
			if err != nil {
				return nil, err
			}
			return &filterStage{prog: prog, names: exprFields(prog), env: map[string]any{}}, nil
		},
	})
	Register(Spec{
		Name: "map",
		Doc: "Rewrites JSON object records with expr-lang expressions over their fields: expr replaces the record with its JSON-encoded result; " +
			"fields sets the named fields (added at the end, or replaced in place) and keeps the rest of the record as it was. " + exprFieldsDoc,
		Batch: true,
		Options: []Option{
			{Name: "expr", Type: String, Doc: "an expression whose result becomes the record, like {id: id, name: upper(name)}"},
			{Name: "fields", Type: StringMap, Doc: "field name to expression, like {name_upper: upper(name)}; expressions see the record as it came in"},
			{Name: "raw", Type: Bool, Default: false, Doc: "with expr: emit a string result without quotes"},
		},
		Check: func(c Config) error { _, err := newMapStage(c); return err },
		New:   newMapStage,
	})
	Register(Spec{
		Name:  "pick",
		Doc:   "Keeps only the named top-level fields of each JSON object record, in the record's own order and text.",
		Batch: true,
		Options: []Option{
			{Name: "fields", Type: Strings, Required: true, Doc: "the fields to keep"},
		},
		Check: func(c Config) error { return checkFieldList(c) },
		New:   func(c Config) (Stage, error) { return newPickStage(c, true), nil },
	})
	Register(Spec{
		Name:  "drop",
		Doc:   "Removes the named top-level fields from each JSON object record, leaving the others in their order and text.",
		Batch: true,
		Options: []Option{
			{Name: "fields", Type: Strings, Required: true, Doc: "the fields to remove"},
		},
		Check: func(c Config) error { return checkFieldList(c) },
		New:   func(c Config) (Stage, error) { return newPickStage(c, false), nil },
	})
}

// exprFieldsDoc is what filter and map say about fields and numbers.
const exprFieldsDoc = `A field named like a function (type, len, all) is the field; one whose name is not an identifier is $env["first-name"]. ` +
	"Integers are exact (one beyond 64 bits can be passed on but not computed with); a number beyond a float64's range, like 1e400, is an error for its record, " +
	"as are a missing or null field where a value is needed, and calling a function expr-lang does not have is an error before the run."

// errRecordNotObject is the error for a record that must be a JSON object and is
// some other JSON value.
var errRecordNotObject = errors.New("record is not a JSON object")

type jsonValidateStage struct{ object bool }

func (s jsonValidateStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if !json.Valid(rec) {
		// Unmarshal checks the syntax of the whole input before it decodes,
		// so an empty struct is enough to learn the offset.
		var v struct{}
		err := json.Unmarshal(rec, &v)
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			// Offset counts the bytes read, the bad one included; say
			// where the bad byte is, as pick and drop do.
			off := syn.Offset
			if off > 0 && off <= int64(len(rec)) && !strings.Contains(syn.Error(), "end of JSON input") {
				off--
			}
			return out, Permanent(fmt.Errorf("invalid JSON at offset %d: %v", off, syn))
		}
		return out, Permanent(fmt.Errorf("invalid JSON: %v", err))
	}
	if s.object {
		if i := jsontext.SkipSpace(rec, 0); i == len(rec) || rec[i] != '{' {
			return out, Permanent(errRecordNotObject)
		}
	}
	return append(out, rec), nil
}

// jqFinite checks that a result holds no infinite number: gojq would
// write one as 1.7976931348623157e+308, silently another number, where it
// came from a number too large for a float64 (1e400 + 1) or from
// infinite. JSON has no infinity, and a record error says so.
func jqFinite(v any) error {
	switch v := v.(type) {
	case float64:
		if math.IsInf(v, 0) {
			return errors.New("a result is a number beyond the range of a 64-bit float (like 1e400), which JSON cannot carry")
		}
	case []any:
		for _, e := range v {
			if err := jqFinite(e); err != nil {
				return err
			}
		}
	case map[string]any:
		for _, e := range v {
			if err := jqFinite(e); err != nil {
				return err
			}
		}
	}
	return nil
}

func compileJQ(c Config) (*gojq.Code, error) {
	q, err := gojq.Parse(c.String("query"))
	if err != nil {
		return nil, &OptionError{Option: "query", Err: err}
	}
	code, err := gojq.Compile(q)
	if err != nil {
		return nil, &OptionError{Option: "query", Err: err}
	}
	return code, nil
}

type jqStage struct {
	code *gojq.Code
	raw  bool
	max  int // results per record
}

func (s *jqStage) Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	// json.Number keeps integers beyond 2^53 exact; gojq computes with them.
	d := json.NewDecoder(bytes.NewReader(rec))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return out, Permanent(fmt.Errorf("decode JSON: %w", err))
	}
	if off := jsontext.SkipSpace(rec, int(d.InputOffset())); off != len(rec) {
		return out, Permanent(fmt.Errorf("decode JSON: data after the value at offset %d", off))
	}
	iter := s.code.RunWithContext(ctx, v)
	first := len(out)
	for {
		r, ok := iter.Next()
		if !ok {
			return out, nil
		}
		if len(out)-first >= s.max {
			return out, Permanent(fmt.Errorf("jq: more than max_results (%d) results for one record", s.max))
		}
		if err, ok := r.(error); ok {
			var halt *gojq.HaltError
			if errors.As(err, &halt) && halt.Value() == nil {
				return out, nil // halt: stop quietly with what was emitted
			}
			if ctx.Err() != nil {
				return out, err
			}
			return out, Permanent(fmt.Errorf("jq: %w", err))
		}
		if str, ok := r.(string); ok && s.raw {
			out = append(out, []byte(str))
			continue
		}
		if err := jqFinite(r); err != nil {
			return out, Permanent(fmt.Errorf("jq: %w", err))
		}
		b, err := gojq.Marshal(r)
		if err != nil {
			return out, Permanent(fmt.Errorf("jq: encode result: %w", err))
		}
		out = append(out, b)
	}
}

// exprEnv decodes the JSON object rec into env, which it clears first:
// reusing one map per worker saves its allocation on every record. When
// names is not nil only those fields are decoded, the others skipped: an
// expression names few of a record's fields, and decoding is most of the
// cost of filter and map.
func exprEnv(rec []byte, env map[string]any, names map[string]bool) error {
	clear(env)
	var bad error
	err := eachMember(rec, func(key []byte, escaped bool, _, value []byte) {
		var k string
		switch {
		case escaped:
			var err error
			if k, err = jsontext.UnquoteKey(key); err != nil || names != nil && !names[k] {
				return
			}
		case names != nil && !names[string(key)]: // no allocation: the compiler sees the lookup
			return
		default:
			k = string(key)
		}
		v, err := decodeJSONValue(value)
		if err != nil && bad == nil {
			bad = Permanent(fmt.Errorf("field %q: %w", k, err))
		}
		env[k] = v
	})
	if err != nil {
		return err
	}
	return bad
}

// decodeJSONValue decodes one well-formed JSON value as encoding/json
// does into an any, the common scalars without its reflection, but for
// numbers: an integer that fits in 64 bits is an int, exactly, a larger one
// stays a json.Number, its text, so that it comes out as it came in; other
// numbers are float64s, and one beyond a float64's range is an error rather
// than a silent infinity or zero.
func decodeJSONValue(v []byte) (any, error) {
	switch v[0] {
	case 't':
		return true, nil
	case 'f':
		return false, nil
	case 'n':
		return nil, nil
	case '"':
		if s := v[1 : len(v)-1]; bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
			return string(s), nil
		}
	case '{', '[':
	default:
		return decodeJSONNumber(v)
	}
	d := json.NewDecoder(bytes.NewReader(v))
	d.UseNumber()
	var x any
	d.Decode(&x) // v is well-formed: eachMember checked it
	return jsonNumbers(x)
}

// decodeJSONNumber decodes the well-formed JSON number v.
func decodeJSONNumber(v []byte) (any, error) {
	if !bytes.ContainsAny(v, ".eE") {
		n, err := strconv.ParseInt(string(v), 10, 64)
		switch {
		case err != nil:
			return json.Number(v), nil
		case n == 0 && v[0] == '-':
			return math.Copysign(0, -1), nil
		}
		return int(n), nil
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || f == 0 && bytes.ContainsAny(mantissa(v), "123456789") {
		return nil, fmt.Errorf("the number %s is beyond the range of a 64-bit float", v)
	}
	return f, nil
}

// mantissa is the JSON number v without its exponent.
func mantissa(v []byte) []byte {
	if i := bytes.IndexAny(v, "eE"); i >= 0 {
		return v[:i]
	}
	return v
}

// jsonNumbers replaces the json.Numbers in x, decoded with UseNumber, as
// decodeJSONNumber does.
func jsonNumbers(x any) (any, error) {
	switch x := x.(type) {
	case json.Number:
		return decodeJSONNumber([]byte(x))
	case []any:
		for i, e := range x {
			var err error
			if x[i], err = jsonNumbers(e); err != nil {
				return nil, err
			}
		}
	case map[string]any:
		for k, e := range x {
			v, err := jsonNumbers(e)
			if err != nil {
				return nil, err
			}
			x[k] = v
		}
	}
	return x, nil
}

type filterStage struct {
	prog  *vm.Program
	names map[string]bool
	vm    vm.VM
	env   map[string]any
}

func (s *filterStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if err := exprEnv(rec, s.env, s.names); err != nil {
		return out, err
	}
	keep, err := s.vm.Run(s.prog, s.env)
	if err != nil {
		return out, Permanent(fmt.Errorf("filter: %s", exprRunError(s.prog, s.env, err)))
	}
	if keep.(bool) {
		out = append(out, rec)
	}
	return out, nil
}

// mapField is one entry of map's fields option.
type mapField struct {
	name   string
	quoted []byte // name as a JSON string
	prog   *vm.Program
}

type mapStage struct {
	prog   *vm.Program // for expr
	raw    bool
	fields []mapField // for fields, sorted by name
	names  map[string]bool
	index  map[string]int
	vm     vm.VM
	env    map[string]any
	vals   [][]byte // per field: its encoded value, for the record at hand
	seen   []bool
}

func newMapStage(c Config) (Stage, error) {
	s := &mapStage{raw: c.Bool("raw"), env: map[string]any{}}
	switch {
	case c.Has("expr") && c.Has("fields"):
		return nil, OptionErrorf("fields", "map takes expr or fields, not both")
	case c.Has("expr"):
		prog, err := compileExpr(c.String("expr"), "expr")
		if err != nil {
			return nil, err
		}
		s.prog = prog
		s.names = exprFields(prog)
		return s, nil
	case len(c.Map("fields")) > 0:
		fields := c.Map("fields")
		names := make([]string, 0, len(fields))
		for name := range fields {
			names = append(names, name)
		}
		sort.Strings(names) // new fields are appended in a stable order
		s.index = map[string]int{}
		for _, name := range names {
			prog, err := compileExpr(fields[name], "fields")
			if err != nil {
				return nil, OptionErrorf("fields", "%s: %v", name, errors.Unwrap(err))
			}
			s.index[name] = len(s.fields)
			s.fields = append(s.fields, mapField{name: name, quoted: AppendJSONString(nil, name), prog: prog})
		}
		progs := make([]*vm.Program, len(s.fields))
		for i, f := range s.fields {
			progs[i] = f.prog
		}
		s.names = exprFields(progs...)
		s.vals = make([][]byte, len(s.fields))
		s.seen = make([]bool, len(s.fields))
		return s, nil
	}
	return nil, OptionErrorf("expr", "map needs expr (the new record) or fields (fields to set)")
}

func (s *mapStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if err := exprEnv(rec, s.env, s.names); err != nil {
		return out, err
	}
	if s.prog != nil {
		v, err := s.vm.Run(s.prog, s.env)
		if err != nil {
			return out, Permanent(fmt.Errorf("map: %s", exprRunError(s.prog, s.env, err)))
		}
		if str, ok := v.(string); ok && s.raw {
			return append(out, []byte(str)), nil
		}
		b, err := jsontext.AppendValue(nil, v)
		if err != nil {
			return out, Permanent(fmt.Errorf("map: %w", err))
		}
		return append(out, b), nil
	}
	size := len(rec)
	for i, f := range s.fields {
		v, err := s.vm.Run(f.prog, s.env)
		if err != nil {
			return out, Permanent(fmt.Errorf("map: field %s: %s", f.name, exprRunError(f.prog, s.env, err)))
		}
		if s.vals[i], err = jsontext.AppendValue(s.vals[i][:0], v); err != nil {
			return out, Permanent(fmt.Errorf("map: field %s: %w", f.name, err))
		}
		s.seen[i] = false
		size += len(f.quoted) + len(s.vals[i]) + 2
	}
	// Splice the new values into the record's text rather than encode the
	// decoded map: the other fields keep their order, their number
	// formatting and their precision, and it is faster.
	b := make([]byte, 0, size)
	b = append(b, '{')
	first := true
	err := eachMember(rec, func(key []byte, escaped bool, member, _ []byte) {
		if !first {
			b = append(b, ',')
		}
		first = false
		if i, ok := s.lookup(key, escaped); ok {
			s.seen[i] = true
			b = append(b, s.fields[i].quoted...)
			b = append(b, ':')
			b = append(b, s.vals[i]...)
			return
		}
		b = append(b, member...)
	})
	if err != nil {
		return out, err
	}
	for i, f := range s.fields {
		if s.seen[i] {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, f.quoted...)
		b = append(b, ':')
		b = append(b, s.vals[i]...)
	}
	return append(out, append(b, '}')), nil
}

func (s *mapStage) lookup(key []byte, escaped bool) (int, bool) {
	if escaped {
		k, err := jsontext.UnquoteKey(key)
		if err != nil {
			return 0, false
		}
		i, ok := s.index[k]
		return i, ok
	}
	i, ok := s.index[string(key)] // no allocation: the compiler sees the lookup
	return i, ok
}

func checkFieldList(c Config) error {
	if len(c.Strings("fields")) == 0 {
		return OptionErrorf("fields", "needs at least one field name")
	}
	return nil
}

type pickStage struct {
	fields map[string]bool
	keep   bool // pick keeps the named fields; drop keeps the others
}

func newPickStage(c Config, keep bool) *pickStage {
	s := &pickStage{fields: map[string]bool{}, keep: keep}
	for _, f := range c.Strings("fields") {
		s.fields[f] = true
	}
	return s
}

func (s *pickStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	b := make([]byte, 1, len(rec))
	b[0] = '{'
	err := eachMember(rec, func(key []byte, escaped bool, member, _ []byte) {
		var named bool
		if escaped {
			k, err := jsontext.UnquoteKey(key)
			named = err == nil && s.fields[k]
		} else {
			named = s.fields[string(key)]
		}
		if named != s.keep {
			return
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, member...)
	})
	if err != nil {
		return out, err
	}
	return append(out, append(b, '}')), nil
}

// eachMember is jsontext.EachMember with the stage errors the runner
// knows: a malformed record cannot be fixed by another attempt.
func eachMember(rec []byte, fn func(key []byte, escaped bool, member, value []byte)) error {
	err := jsontext.EachMember(rec, fn)
	if errors.Is(err, jsontext.ErrNotObject) {
		return Permanent(errRecordNotObject)
	}
	return Permanent(err)
}

// isJSONObject reports whether rec, past leading space, opens a JSON object.
func isJSONObject(rec []byte) bool {
	i := jsontext.SkipSpace(rec, 0)
	return i < len(rec) && rec[i] == '{'
}

// firstLine is an expr error's message without the lines that follow it
// (the expression again, with a caret): a record's error is one line.
func firstLine(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return msg
}
