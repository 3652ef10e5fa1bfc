package stages

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/flowrun/flowrun/internal/hint"
	"regexp"
	"strings"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"
)

// compileExpr compiles an expr-lang expression over a record's fields.
//
// Two things differ from expr-lang's defaults, both because the variables
// are the fields of JSON records that someone else named. A bare name that
// is also a builtin's (type, len, all, count) is the record's field: only a
// call, len(tags), is the builtin. And a call of a function that is no
// builtin (uper(name)) is an error here, when the stage is made, rather
// than on every record: a JSON field can never hold a function.
func compileExpr(text, option string, opts ...expr.Option) (*vm.Program, error) {
	opts = append(opts, expr.Patch(&builtinFieldPatch{}), expr.Patch(exprIntPatch{}))
	opts = append(opts, exprIntFunctions...)
	prog, err := expr.Compile(text, opts...)
	if err != nil {
		var fe *file.Error
		if errors.As(err, &fe) {
			fe.Message = exprCompileWords(fe.Message)
		}
		return nil, &OptionError{Option: option, Err: err}
	}
	node := prog.Node()
	calls := exprCalls{}
	ast.Walk(&node, &calls)
	if calls.err != nil {
		return nil, &OptionError{Option: option, Err: calls.err.Bind(file.NewSource(text))}
	}
	return prog, nil
}

// exprCompileWords rewrites a message of expr-lang's compiler in JSON's
// terms: "invalid integer literal: strconv.ParseInt: parsing "1234…":
// value out of range" and "mismatched types []interface {} and
// []interface {}" are about a number and arrays.
func exprCompileWords(msg string) string {
	if _, rest, ok := strings.Cut(msg, "strconv.ParseInt: parsing "); ok {
		if lit, _, ok := strings.Cut(rest, ": value out of range"); ok {
			return fmt.Sprintf("integer literal %s is beyond 64 bits, which an expression cannot compute with", strings.Trim(lit, `"`))
		}
	}
	return jsonTypeWords(msg)
}

// builtinFieldPatch turns a bare identifier named like a builtin into the
// record field of that name, $env["type"], before the checker takes it for
// the builtin function.
type builtinFieldPatch struct{}

func (builtinFieldPatch) Visit(n *ast.Node) {
	id, ok := (*n).(*ast.IdentifierNode)
	if !ok {
		return
	}
	if _, isBuiltin := builtin.Index[id.Value]; !isBuiltin {
		return
	}
	field := &ast.MemberNode{Node: &ast.IdentifierNode{Value: "$env"}, Property: &ast.StringNode{Value: id.Value}}
	ast.Patch(n, field)
}

// exprCalls finds the first call of something that is not a builtin.
type exprCalls struct{ err *file.Error }

func (v *exprCalls) Visit(n *ast.Node) {
	call, ok := (*n).(*ast.CallNode)
	if !ok || v.err != nil {
		return
	}
	if id, ok := call.Callee.(*ast.IdentifierNode); ok && isExprIntFunction(id.Value) {
		return
	}
	msg := "calls a method, which record fields do not have"
	if id, ok := call.Callee.(*ast.IdentifierNode); ok {
		msg = fmt.Sprintf("unknown function %s", id.Value)
		if near := nearestName(id.Value, builtin.Names); near != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", near)
		}
	}
	v.err = &file.Error{Location: call.Location(), Message: msg}
}

// nearestName returns the name in names nearest to s when it is near
// enough to be a typo of it, or "".
func nearestName(s string, names []string) string {
	best, _ := hint.Nearest(s, names)
	return best
}

// exprFields returns the record fields the programs can read, or nil when
// one reads $env as a whole and so any field.
func exprFields(progs ...*vm.Program) map[string]bool {
	v := exprIdentifiers{names: map[string]bool{}, field: map[ast.Node]bool{}}
	for _, p := range progs {
		node := p.Node()
		ast.Walk(&node, &v)
	}
	for _, e := range v.envs {
		if !v.field[e] {
			return nil
		}
	}
	return v.names
}

type exprIdentifiers struct {
	names map[string]bool
	field map[ast.Node]bool // $env nodes seen as $env["name"], so not the whole env
	envs  []ast.Node        // every $env node
}

func (v *exprIdentifiers) Visit(n *ast.Node) {
	switch node := (*n).(type) {
	case *ast.IdentifierNode:
		if node.Value == "$env" {
			v.envs = append(v.envs, node)
		} else if !isExprIntFunction(node.Value) {
			v.names[node.Value] = true
		}
	case *ast.MemberNode:
		// Walk visits children first: the $env below is already in envs.
		if name, ok := envField(node); ok {
			v.field[node.Node] = true
			v.names[name] = true
		}
	}
}

// envField reports whether n is $env["name"] (or $env.name) with a constant
// name.
func envField(n *ast.MemberNode) (string, bool) {
	id, ok := n.Node.(*ast.IdentifierNode)
	if !ok || id.Value != "$env" {
		return "", false
	}
	s, ok := n.Property.(*ast.StringNode)
	if !ok {
		return "", false
	}
	return s.Value, true
}

// exprRunError turns an error of running prog on env into a message about
// the record: which field is missing or null, or what kind of JSON value
// was where another kind was needed, rather than the Go types and
// reflection that expr-lang reports.
func exprRunError(prog *vm.Program, env map[string]any, err error) string {
	msg := firstLine(err)
	fe, ok := err.(*file.Error)
	if !ok {
		return jsonTypeWords(msg)
	}
	msg = fe.Message
	if t, ok := strings.CutPrefix(msg, "invalid operation: bool("); ok {
		// filter's result, which must be true or false.
		kind := "a " + jsonKinds[strings.TrimSuffix(t, ")")]
		if kind == "a " {
			kind = "not a boolean"
		}
		if name, ok := fieldRef(prog.Node()); ok {
			return fmt.Sprintf("field %q is %s, not true or false", name, kind)
		}
		return fmt.Sprintf("the expression gives %s, not true or false", kind)
	}
	// The error is placed at an operator or a call: look at its operands.
	node := prog.Node()
	finder := exprNodeAt{from: fe.From}
	ast.Walk(&node, &finder)
	var suspects []string
	for _, at := range finder.found {
		for _, child := range exprOperands(at) {
			if name, ok := fieldRef(child); ok {
				suspects = append(suspects, name)
			}
		}
	}
	for _, name := range suspects {
		v, present := env[name]
		switch {
		case !present:
			return fmt.Sprintf("field %q is missing%s", name, neededKind(msg))
		case v == nil:
			return fmt.Sprintf("field %q is null%s", name, neededKind(msg))
		}
		if n, ok := v.(json.Number); ok {
			return fmt.Sprintf("field %q is %s, an integer beyond 64 bits, which an expression can pass on but not compute with", name, n)
		}
	}
	where := fmt.Sprintf(" (at %d:%d)", fe.Line, fe.Column+1)
	if m := exprIndexError(finder.found, env, msg); m != "" {
		return m + where
	}
	for _, name := range suspects {
		if kind := jsonKindOf(env[name]); strings.HasPrefix(msg, "interface conversion: interface {} is ") && kind != "" {
			return fmt.Sprintf("field %q is %s%s%s", name, kind, neededKind(msg), where)
		}
	}
	return jsonTypeWords(msg) + where
}

// exprIndexError says what is wrong with an index of the wrong kind, a[“k”]
// or o[1], which expr-lang reports as "invalid operation: int(string)" or
// with reflect's "reflect.Value.MapIndex: value of type int is not
// assignable to type string"; "" when msg is neither.
func exprIndexError(nodes []ast.Node, env map[string]any, msg string) string {
	var idx string
	if t, ok := strings.CutPrefix(msg, "invalid operation: int("); ok {
		idx = strings.TrimSuffix(t, ")")
	} else if t, ok := strings.CutPrefix(msg, "reflect.Value.MapIndex: value of type "); ok {
		idx, _, _ = strings.Cut(t, " ")
	} else {
		return ""
	}
	kind := jsonKinds[idx]
	switch kind {
	case "":
		kind = "a value of another kind"
	case "null":
	case "array", "object", "integer beyond 64 bits":
		kind = "an " + kind
	default:
		kind = "a " + kind
	}
	for _, n := range nodes {
		var of ast.Node
		switch n := n.(type) {
		case *ast.MemberNode:
			of = n.Node
		case *ast.SliceNode:
			of = n.Node
		default:
			continue
		}
		name, ok := fieldRef(of)
		if !ok {
			continue
		}
		switch env[name].(type) {
		case map[string]any:
			return fmt.Sprintf("field %q is an object, whose keys are strings: it cannot be indexed by %s", name, kind)
		case []any:
			return fmt.Sprintf("field %q is an array, indexed by numbers: it cannot be indexed by %s", name, kind)
		}
	}
	if strings.HasPrefix(msg, "reflect.") {
		return "an object's keys are strings: it cannot be indexed by " + kind
	}
	return "an array is indexed by numbers: it cannot be indexed by " + kind
}

// jsonKindOf names the JSON kind of a decoded value, with its article.
func jsonKindOf(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int, float64, json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return ""
}

// exprNodeAt collects the nodes that start at an offset.
type exprNodeAt struct {
	from  int
	found []ast.Node
}

func (v *exprNodeAt) Visit(n *ast.Node) {
	if (*n).Location().From == v.from {
		v.found = append(v.found, *n)
	}
}

// exprOperands returns n and the nodes n operates on.
func exprOperands(n ast.Node) []ast.Node {
	nodes := []ast.Node{n}
	switch n := n.(type) {
	case *ast.BinaryNode:
		nodes = append(nodes, n.Left, n.Right)
	case *ast.UnaryNode:
		nodes = append(nodes, n.Node)
	case *ast.BuiltinNode:
		nodes = append(nodes, n.Arguments...)
	case *ast.CallNode:
		nodes = append(nodes, n.Arguments...)
	case *ast.MemberNode:
		nodes = append(nodes, n.Node)
	case *ast.SliceNode:
		nodes = append(nodes, n.Node)
	case *ast.ConditionalNode:
		nodes = append(nodes, n.Cond)
	}
	return nodes
}

// fieldRef reports whether n reads a top-level field of the record.
func fieldRef(n ast.Node) (string, bool) {
	switch n := n.(type) {
	case *ast.IdentifierNode:
		return n.Value, n.Value != "$env" && !isExprIntFunction(n.Value)
	case *ast.MemberNode:
		return envField(n)
	}
	return "", false
}

// neededKind says what kind of value msg says was needed, as ", not a
// number", or "": msg is "interface conversion: interface {} is nil, not
// string" or "invalid operation: <nil> > int".
func neededKind(msg string) string {
	var t string
	if _, after, ok := strings.Cut(msg, ", not "); ok {
		t = after
	} else if rest, ok := strings.CutPrefix(msg, "invalid operation: "); ok {
		ops := strings.Fields(rest)
		if len(ops) != 3 {
			return ""
		}
		t = ops[2]
		if t == "<nil>" {
			t = ops[0]
		}
	}
	switch {
	case strings.HasPrefix(t, "float") || strings.HasPrefix(t, "uint") || strings.HasPrefix(t, "int"):
		return ", not a number"
	case t == "string":
		return ", not a string"
	case t == "bool":
		return ", not a boolean"
	case strings.HasPrefix(t, "[]"):
		return ", not an array"
	case strings.HasPrefix(t, "map["):
		return ", not an object"
	}
	return ""
}

// goTypeWords matches the Go types in expr-lang's messages.
var goTypeWords = regexp.MustCompile(`map\[string\]interface \{\}|\[\]interface \{\}|interface \{\}|json\.Number|time\.Time|time\.Duration|<nil>|\b(?:float64|int|bool|nil)\b`)

var jsonKinds = map[string]string{
	"map[string]interface {}": "object",
	"[]interface {}":          "array",
	"interface {}":            "value",
	"json.Number":             "integer beyond 64 bits",
	"string":                  "string",
	"time.Time":               "date",
	"time.Duration":           "duration",
	"float64":                 "number",
	"int":                     "number",
	"bool":                    "boolean",
	"<nil>":                   "null",
	"nil":                     "null",
}

// jsonTypeWords rewrites a message from expr-lang in JSON's terms.
func jsonTypeWords(msg string) string {
	if strings.Contains(msg, "reflect:") || strings.Contains(msg, "reflect.") {
		return "a value of the wrong kind (null, or a field that is missing) was used"
	}
	msg = strings.ReplaceAll(msg, "interface conversion: interface {} is ", "a value is ")
	return goTypeWords.ReplaceAllStringFunc(msg, func(t string) string { return jsonKinds[t] })
}
