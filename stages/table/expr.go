package table

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/vm"

	"github.com/flowrun/flowrun/internal/jsontext"
	"github.com/flowrun/flowrun/stages"
)

// identifier matches an expression that is just a field's name, which is
// read straight from the record's text: its value keeps its JSON text
// (1.50 stays 1.50) and costs no decoding.
var identifier = regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*$`)

// argument is what an aggregate function is computed over: one field of
// the record, or an expr-lang expression over its fields.
type argument struct {
	field string      // a plain field name
	prog  *vm.Program // otherwise
	names []string    // the fields prog reads; nil: all of them ($env)
	text  string      // as written, for messages
}

func compileArgument(src string) (argument, error) {
	a := argument{text: strings.TrimSpace(src)}
	if m := identifier.FindStringSubmatch(src); m != nil {
		a.field = m[1]
		return a, nil
	}
	prog, err := expr.Compile(src)
	if err != nil {
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return a, fmt.Errorf("%s", msg)
	}
	a.prog = prog
	a.names = identifiers(prog)
	return a, nil
}

// identifiers returns the names an expression reads, or nil when it reads
// $env and so may read any field.
func identifiers(prog *vm.Program) []string {
	v := identVisitor{seen: map[string]bool{}}
	node := prog.Node()
	ast.Walk(&node, &v)
	if v.seen["$env"] {
		return nil
	}
	return v.names
}

type identVisitor struct {
	seen  map[string]bool
	names []string
}

func (v *identVisitor) Visit(n *ast.Node) {
	if id, ok := (*n).(*ast.IdentifierNode); ok && !v.seen[id.Value] {
		v.seen[id.Value] = true
		v.names = append(v.names, id.Value)
	}
}

// evaluator runs the expressions of one stage over a record: it decodes
// the fields they read once per record, into one reused map.
type evaluator struct {
	names []string // the fields any expression reads; nil with all
	all   bool
	env   map[string]any
	vals  [][]byte
	vm    vm.VM
}

func newEvaluator(args []argument) *evaluator {
	e := &evaluator{env: map[string]any{}}
	seen := map[string]bool{}
	for _, a := range args {
		if a.prog == nil {
			continue
		}
		if a.names == nil {
			e.all = true
		}
		for _, n := range a.names {
			if !seen[n] {
				seen[n] = true
				e.names = append(e.names, n)
			}
		}
	}
	return e
}

// load decodes the record's fields for the expressions.
func (e *evaluator) load(rec []byte) error {
	clear(e.env)
	if e.all {
		return jsontext.EachMember(rec, func(key []byte, escaped bool, _, value []byte) {
			k := string(key)
			if escaped {
				k, _ = jsontext.UnquoteKey(key)
			}
			e.env[k] = jsontext.Decode(value)
		})
	}
	var err error
	if e.vals, err = jsontext.Fields(rec, e.names, e.vals); err != nil {
		return err
	}
	for i, n := range e.names {
		if e.vals[i] != nil {
			e.env[n] = jsontext.Decode(e.vals[i])
		}
	}
	return nil
}

// run evaluates a's program and appends its result, as JSON text, to dst.
func (e *evaluator) run(a argument, dst []byte) ([]byte, error) {
	v, err := e.vm.Run(a.prog, e.env)
	if err != nil {
		msg, _, _ := strings.Cut(err.Error(), "\n")
		return dst, stages.Permanent(fmt.Errorf("%s: %s", a.text, msg))
	}
	if dst, err = jsontext.AppendValue(dst, v); err != nil {
		return dst, stages.Permanent(fmt.Errorf("%s: %w", a.text, err))
	}
	return dst, nil
}
