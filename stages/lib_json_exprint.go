package stages

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/builtin"
	"github.com/expr-lang/expr/vm/runtime"
)

// expr-lang computes with Go's int, which wraps around: 9223372036854775807
// + 1 is -9223372036854775808, a silent change of a record's number. The
// operations that can leave 64 bits (+, -, *, unary -, abs, sum, and int of
// a float) are rewritten into calls of the checked functions below, which
// do as expr-lang does but for an integer result that does not fit, an
// error for the record; so is %, whose division by zero would be Go's
// "runtime error: integer divide by zero". The names cannot be typed in an
// expression, so no record field hides them.
const (
	exprAdd = "·add"
	exprSub = "·sub"
	exprMul = "·mul"
	exprNeg = "·neg"
	exprAbs = "·abs"
	exprSum = "·sum"
	exprInt = "·int"
	exprMod = "·mod"
)

func intOverflow(format string, args ...any) error {
	return fmt.Errorf("the integer result of "+format+" is beyond 64 bits", args...)
}

// exprIntFunctions are the checked functions, as expr options.
var exprIntFunctions = []expr.Option{
	expr.Function(exprAdd, func(p ...any) (any, error) { return checkedAdd(p[0], p[1]) }),
	expr.Function(exprSub, func(p ...any) (any, error) {
		if a, ok := p[0].(int); ok {
			if b, ok := p[1].(int); ok {
				c := a - b
				if (a^b)&(a^c) < 0 {
					return nil, intOverflow("%d - %d", a, b)
				}
				return c, nil
			}
		}
		return runtime.Subtract(p[0], p[1]), nil
	}),
	expr.Function(exprMul, func(p ...any) (any, error) {
		if a, ok := p[0].(int); ok {
			if b, ok := p[1].(int); ok {
				if a == 0 || b == 0 {
					return 0, nil
				}
				c := a * b
				if c/b != a || (a == -1 && b == math.MinInt) || (b == -1 && a == math.MinInt) {
					return nil, intOverflow("%d * %d", a, b)
				}
				return c, nil
			}
		}
		return runtime.Multiply(p[0], p[1]), nil
	}),
	expr.Function(exprMod, func(p ...any) (any, error) {
		// Go's message for this is "runtime error: integer divide by zero".
		if b, ok := p[1].(int); ok && b == 0 {
			return nil, fmt.Errorf("%v %% 0: the remainder of a division by zero", p[0])
		}
		return runtime.Modulo(p[0], p[1]), nil
	}),
	expr.Function(exprNeg, func(p ...any) (any, error) {
		if a, ok := p[0].(int); ok && a == math.MinInt {
			return nil, intOverflow("-(%d)", a)
		}
		return runtime.Negate(p[0]), nil
	}),
	expr.Function(exprAbs, func(p ...any) (any, error) {
		if a, ok := p[0].(int); ok && a == math.MinInt {
			return nil, intOverflow("abs(%d)", a)
		}
		return builtin.Abs(p[0]), nil
	}),
	expr.Function(exprSum, func(p ...any) (any, error) {
		v := reflect.ValueOf(p[0])
		if v.Kind() != reflect.Slice && v.Kind() != reflect.Array {
			return nil, fmt.Errorf("sum of %s, not an array", jsonKindOf(p[0]))
		}
		var acc any = 0
		for i := range v.Len() {
			var err error
			if acc, err = checkedAdd(v.Index(i).Interface(), acc); err != nil {
				return nil, err
			}
		}
		return acc, nil
	}),
	expr.Function(exprInt, func(p ...any) (any, error) {
		// 2^63 is exact as a float64; int of anything from it on (or of a
		// NaN) is not defined in Go and gives math.MinInt here.
		if f, ok := p[0].(float64); ok && !(f >= -(1<<63) && f < 1<<63) {
			return nil, intOverflow("int(%g)", f)
		}
		if str, ok := p[0].(string); ok {
			// expr-lang says "invalid operation: int(abc)".
			i, err := strconv.Atoi(str)
			if errors.Is(err, strconv.ErrRange) {
				return nil, fmt.Errorf("the string %q holds an integer beyond 64 bits", str)
			} else if err != nil {
				return nil, fmt.Errorf("the string %q is not an integer", str)
			}
			return i, nil
		}
		return builtin.Int(p[0]), nil
	}),
}

func checkedAdd(x, y any) (any, error) {
	if a, ok := x.(int); ok {
		if b, ok := y.(int); ok {
			c := a + b
			if (a^c)&(b^c) < 0 {
				return nil, intOverflow("%d + %d", a, b)
			}
			return c, nil
		}
	}
	return runtime.Add(x, y), nil
}

// exprIntPatch rewrites the operations that can overflow into calls of the
// checked functions, where their operands may be integers.
type exprIntPatch struct{}

func (exprIntPatch) Visit(n *ast.Node) {
	var fn string
	var args []ast.Node
	switch node := (*n).(type) {
	case *ast.BinaryNode:
		fn = map[string]string{"+": exprAdd, "-": exprSub, "*": exprMul, "%": exprMod}[node.Operator]
		if fn == "" || !mayBeInt(node.Left) || !mayBeInt(node.Right) {
			return
		}
		args = []ast.Node{node.Left, node.Right}
	case *ast.UnaryNode:
		if node.Operator != "-" || !mayBeInt(node.Node) {
			return
		}
		if _, literal := node.Node.(*ast.IntegerNode); literal {
			return // -5: a literal's negation always fits
		}
		fn, args = exprNeg, []ast.Node{node.Node}
	case *ast.BuiltinNode:
		switch {
		case node.Name == "abs" && len(node.Arguments) == 1:
			fn = exprAbs
		case node.Name == "int" && len(node.Arguments) == 1:
			fn = exprInt
		case node.Name == "sum" && len(node.Arguments) == 1:
			fn = exprSum
		case node.Name == "sum" && len(node.Arguments) == 2:
			// sum(xs, f) is sum(map(xs, f)).
			mapped := &ast.BuiltinNode{Name: "map", Arguments: node.Arguments}
			mapped.SetLocation(node.Location())
			fn, args = exprSum, []ast.Node{mapped}
		}
		if fn != "" && args == nil {
			args = node.Arguments
		}
	}
	if fn == "" {
		return
	}
	call := &ast.CallNode{Callee: &ast.IdentifierNode{Value: fn}, Arguments: args}
	ast.Patch(n, call)
}

// mayBeInt reports whether n's type, as the checker sees it, may be an int
// at run time: an int, or a value whose type only the record says.
func mayBeInt(n ast.Node) bool {
	t := n.Type()
	return t == nil || t.Kind() == reflect.Interface || t.Kind() == reflect.Int
}

// isExprIntFunction reports whether name is one of the checked functions.
func isExprIntFunction(name string) bool {
	switch name {
	case exprAdd, exprSub, exprMul, exprMod, exprNeg, exprAbs, exprSum, exprInt:
		return true
	}
	return false
}
