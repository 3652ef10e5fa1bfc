package table

import (
	"context"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowrun/flowrun/internal/jsontext"
	"github.com/flowrun/flowrun/stages"
)

func init() {
	stages.Register(stages.Spec{
		Name: "aggregate",
		Doc: "Groups JSON object records by the by fields and emits one object per group, the by fields then the computed ones " +
			"(sorted by name), in order of first appearance: at end of input, or every N records or DURATION for endless sources. " +
			"Functions: count(), count(x), sum(x), avg(x), min(x), max(x), first(x), last(x), distinct(x), collect(x); x is a field " +
			"or an expr-lang expression over the fields, like max(len(name)). Null and missing values are skipped but by first, " +
			"last and collect; sum and avg take numbers and numeric strings (integers are summed exactly, past 64 bits too; a float " +
			"sum past float64's range fails its record); min and max order values as jq does, numbers exactly.",
		Batch:      true,
		MaxWorkers: 1,
		Local:      true,
		Options: []stages.Option{
			{Name: "by", Type: stages.Strings, Default: []string{}, Doc: "the fields to group by (a missing one is null); empty: one group of every record"},
			{Name: "compute", Type: stages.StringMap, Default: map[string]string{}, Doc: "output field to function, like {n: count(), total: sum(price)}; empty: the by fields alone, one record per group"},
			{Name: "every", Type: stages.Int, Default: 0, Doc: "emit the groups and start afresh every this many records; 0: at end of input"},
			{Name: "window", Type: stages.Duration, Default: time.Duration(0), Doc: "emit the groups and start afresh at the first record this long after the window opened, or after this long without a record; 0: at end of input"},
			{Name: "max_groups", Type: stages.Int, Default: 1_000_000, Doc: "the most groups held at once; one more is an error for the record that makes it"},
			{Name: "max_values", Type: stages.Int, Default: 100_000, Doc: "the most values distinct or collect hold per group"},
		},
		Check: func(c stages.Config) error { _, err := newAggregate(c); return err },
		New:   func(c stages.Config) (stages.Stage, error) { return newAggregate(c) },
	})
}

// An aggregate function.
const (
	fnCount = iota
	fnSum
	fnAvg
	fnMin
	fnMax
	fnFirst
	fnLast
	fnDistinct
	fnCollect
)

var fnNames = []string{"count", "sum", "avg", "min", "max", "first", "last", "distinct", "collect"}

var callRE = regexp.MustCompile(`(?s)^\s*([A-Za-z_]+)\s*\((.*)\)\s*$`)

// compute is one entry of the compute option.
type compute struct {
	name   string
	quoted []byte // `"name":`
	fn     int
	arg    argument
	hasArg bool // count(x) rather than count()
	at     int  // for a plain field: its index in the stage's names
}

// acc is one compute's state in one group.
type acc struct {
	n     int64 // values taken
	isum  int64
	fsum  float64
	float bool     // the sum is a float64: a value had a fraction or an exponent
	big   *big.Int // the sum of integers, once it left int64's range
	val   []byte   // min, max, first, last: the value's text
	list  []byte   // distinct, collect: "[v,v,..." so far
	seen  map[string]struct{}
}

type group struct {
	by   []byte // `"f":v,"g":w` of the first record
	accs []acc
}

type aggregateStage struct {
	by        []string
	byQuoted  [][]byte
	computes  []compute
	names     []string // fields read straight from the text: by, then plain arguments
	eval      *evaluator
	every     int
	window    time.Duration
	maxGroups int
	maxValues int

	groups map[string]*group
	order  []*group
	taken  int       // records taken since the last emission
	opened time.Time // when the window opened (its first record)

	vals  [][]byte
	key   []byte
	tmp   []byte
	args  [][]byte // per compute: its value for the record at hand
	bufs  [][]byte // per compute: the text of an expression's value
	nums  []float64
	ints  []int64
	kinds []int // of number
}

func newAggregate(c stages.Config) (*aggregateStage, error) {
	s := &aggregateStage{
		by:        c.Strings("by"),
		every:     c.Int("every"),
		window:    c.Duration("window"),
		maxGroups: c.Int("max_groups"),
		maxValues: c.Int("max_values"),
		groups:    map[string]*group{},
	}
	switch {
	case s.every < 0:
		return nil, stages.OptionErrorf("every", "is %d; it must be 0 or more", s.every)
	case s.every > 0 && s.window > 0:
		return nil, stages.OptionErrorf("window", "aggregate takes every or window, not both")
	case s.maxGroups < 1:
		return nil, stages.OptionErrorf("max_groups", "is %d; it must be at least 1", s.maxGroups)
	case s.maxValues < 1:
		return nil, stages.OptionErrorf("max_values", "is %d; it must be at least 1", s.maxValues)
	}
	for _, f := range s.by {
		if f == "" {
			return nil, stages.OptionErrorf("by", "a field name is empty")
		}
		s.byQuoted = append(s.byQuoted, append(jsontext.AppendString(nil, f), ':'))
	}
	s.names = append(s.names, s.by...)
	m := c.Map("compute")
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names) // a stable order of output fields, as map's fields have
	var args []argument
	for _, name := range names {
		if slices.Contains(s.by, name) {
			return nil, stages.OptionErrorf("compute", "%s is also a by field", name)
		}
		cp, err := parseCompute(name, m[name])
		if err != nil {
			return nil, stages.OptionErrorf("compute", "%s: %v", name, err)
		}
		if cp.hasArg && cp.arg.field != "" {
			cp.at = slices.Index(s.names, cp.arg.field)
			if cp.at < 0 {
				cp.at = len(s.names)
				s.names = append(s.names, cp.arg.field)
			}
		}
		if cp.arg.prog != nil {
			args = append(args, cp.arg)
		}
		s.computes = append(s.computes, cp)
	}
	if len(args) > 0 {
		s.eval = newEvaluator(args)
	}
	n := len(s.computes)
	s.args, s.bufs = make([][]byte, n), make([][]byte, n)
	s.nums, s.ints, s.kinds = make([]float64, n), make([]int64, n), make([]int, n)
	return s, nil
}

func parseCompute(name, src string) (compute, error) {
	cp := compute{name: name, quoted: append(jsontext.AppendString(nil, name), ':')}
	m := callRE.FindStringSubmatch(src)
	if m == nil {
		return cp, fmt.Errorf("%q is not a function call; want one of %s", src, strings.Join(fnForms(), ", "))
	}
	cp.fn = slices.Index(fnNames, m[1])
	if cp.fn < 0 {
		return cp, fmt.Errorf("unknown function %s; want one of %s", m[1], strings.Join(fnForms(), ", "))
	}
	if strings.TrimSpace(m[2]) == "" {
		if cp.fn != fnCount {
			return cp, fmt.Errorf("%s needs a field or an expression, like %s(price)", m[1], m[1])
		}
		return cp, nil
	}
	arg, err := compileArgument(m[2])
	if err != nil {
		return cp, fmt.Errorf("%s: %v", src, err)
	}
	cp.arg, cp.hasArg = arg, true
	return cp, nil
}

func fnForms() []string {
	forms := []string{"count()"}
	for _, f := range fnNames {
		forms = append(forms, f+"(x)")
	}
	return forms
}

// Process reads the record's by fields and arguments, checks them all,
// and only then folds them into its group: a record that fails leaves the
// groups as they were, so that a retry or a skip counts it once or never.
func (s *aggregateStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	var err error
	if s.vals, err = jsontext.Fields(rec, s.names, s.vals); err != nil {
		return out, stages.Permanent(err)
	}
	if s.eval != nil {
		if err := s.eval.load(rec); err != nil {
			return out, stages.Permanent(err)
		}
	}
	for i := range s.computes {
		cp := &s.computes[i]
		switch {
		case !cp.hasArg:
			s.args[i] = nil
		case cp.arg.prog != nil:
			if s.bufs[i], err = s.eval.run(cp.arg, s.bufs[i][:0]); err != nil {
				return out, err
			}
			s.args[i] = s.bufs[i]
		default:
			s.args[i] = s.vals[cp.at]
		}
		if (cp.fn == fnSum || cp.fn == fnAvg) && !isNull(s.args[i]) {
			switch s.kinds[i], s.nums[i], s.ints[i], _ = number(s.args[i]); s.kinds[i] {
			case notNumber:
				return out, stages.Permanent(fmt.Errorf("%s: %s(%s) is %s, not a number", cp.name, fnNames[cp.fn], cp.arg.text, excerpt(s.args[i])))
			case outOfRange:
				return out, stages.Permanent(fmt.Errorf("%s: %s(%s) is %s, beyond the range of a 64-bit float", cp.name, fnNames[cp.fn], cp.arg.text, excerpt(s.args[i])))
			}
		}
	}
	s.key = s.key[:0]
	for i := range s.by {
		s.key = append(canonical(s.key, s.vals[i]), 0) // no JSON text holds a NUL byte
	}
	g := s.groups[string(s.key)]
	if g == nil {
		if len(s.order) >= s.maxGroups {
			return out, stages.Permanent(fmt.Errorf("more than max_groups (%d) groups: this record would start another; raise max_groups, group by fewer fields or emit with every or window", s.maxGroups))
		}
		g = s.newGroup()
		s.groups[string(s.key)] = g
		s.order = append(s.order, g)
	}
	if err := s.fold(g); err != nil {
		return out, err
	}
	s.taken++
	switch {
	case s.every > 0 && s.taken >= s.every:
		out = s.emit(out)
	case s.window > 0:
		now := time.Now()
		if s.opened.IsZero() {
			s.opened = now
		} else if now.Sub(s.opened) >= s.window {
			out = s.emit(out)
		}
	}
	return out, nil
}

func (s *aggregateStage) newGroup() *group {
	g := &group{accs: make([]acc, len(s.computes))}
	for i := range s.by {
		if i > 0 {
			g.by = append(g.by, ',')
		}
		g.by = append(g.by, s.byQuoted[i]...)
		g.by = canonical(g.by, s.vals[i])
	}
	return g
}

// fold adds the record's values to g. Only distinct and collect can fail
// (max_values), and they check before they change anything.
func (s *aggregateStage) fold(g *group) error {
	for i := range s.computes {
		cp, a, v := &s.computes[i], &g.accs[i], s.args[i]
		if (cp.fn == fnDistinct || cp.fn == fnCollect) && a.n >= int64(s.maxValues) {
			if cp.fn == fnCollect || !s.seenValue(a, v) {
				return stages.Permanent(fmt.Errorf("%s: %s(%s) would hold more than max_values (%d) values in group {%s}", cp.name, fnNames[cp.fn], cp.arg.text, s.maxValues, g.by))
			}
		}
		if (cp.fn == fnSum || cp.fn == fnAvg) && !isNull(v) && (a.float || s.kinds[i] == floatNum) {
			if math.IsInf(a.floatSum()+s.nums[i], 0) {
				return stages.Permanent(fmt.Errorf("%s: %s(%s) would pass the range of a 64-bit float with %s in group {%s}", cp.name, fnNames[cp.fn], cp.arg.text, excerpt(v), g.by))
			}
		}
	}
	for i := range s.computes {
		cp, a, v := &s.computes[i], &g.accs[i], s.args[i]
		switch cp.fn {
		case fnCount:
			if !cp.hasArg || !isNull(v) {
				a.n++
			}
		case fnSum, fnAvg:
			if isNull(v) {
				continue
			}
			a.n++
			switch {
			case a.float:
				a.fsum += s.nums[i]
			case s.kinds[i] == floatNum:
				a.fsum, a.float = a.floatSum()+s.nums[i], true
				a.big = nil
			case s.kinds[i] == smallInt && a.big == nil:
				if sum, overflow := addInt(a.isum, s.ints[i]); !overflow {
					a.isum = sum
					continue
				}
				a.big = new(big.Int).SetInt64(a.isum)
				a.big.Add(a.big, big.NewInt(s.ints[i]))
			default: // exact past int64
				if a.big == nil {
					a.big = new(big.Int).SetInt64(a.isum)
				}
				a.big.Add(a.big, s.bigValue(i))
			}
		case fnMin, fnMax:
			if isNull(v) {
				continue
			}
			c := 0
			if a.val != nil {
				c = compareValues(v, a.val)
			}
			if a.val == nil || (cp.fn == fnMin && c < 0) || (cp.fn == fnMax && c > 0) {
				a.val = append(a.val[:0], v...)
			}
		case fnFirst:
			if a.n == 0 {
				a.val = canonical(nil, v)
			}
			a.n++
		case fnLast:
			a.val = canonical(a.val[:0], v)
			a.n++
		case fnDistinct:
			if isNull(v) || s.seenValue(a, v) {
				continue
			}
			if a.seen == nil {
				a.seen = map[string]struct{}{}
			}
			k := canonical(nil, v)
			a.seen[string(k)] = struct{}{}
			a.list = appendItem(a.list, k)
			a.n++
		case fnCollect:
			a.list = appendItem(a.list, canonical(nil, v))
			a.n++
		}
	}
	return nil
}

func (s *aggregateStage) seenValue(a *acc, v []byte) bool {
	if a.seen == nil {
		return false
	}
	s.tmp = canonical(s.tmp[:0], v)
	_, ok := a.seen[string(s.tmp)]
	return ok
}

func appendItem(list, v []byte) []byte {
	if len(list) == 0 {
		list = append(list, '[')
	} else {
		list = append(list, ',')
	}
	return append(list, v...)
}

// floatSum is the sum so far as a float64.
func (a *acc) floatSum() float64 {
	switch {
	case a.float:
		return a.fsum
	case a.big != nil:
		f, _ := new(big.Float).SetInt(a.big).Float64()
		return f
	}
	return float64(a.isum)
}

// bigValue is the integer argument of compute i as a big.Int.
func (s *aggregateStage) bigValue(i int) *big.Int {
	if s.kinds[i] == smallInt {
		return big.NewInt(s.ints[i])
	}
	_, _, _, text := number(s.args[i])
	n, _ := new(big.Int).SetString(string(text), 10) // number checked its digits
	return n
}

func addInt(a, b int64) (int64, bool) {
	c := a + b
	return c, (c > a) != (b > 0)
}

// Held is 0, as count's is: aggregate emits only when it has folded in
// every record it took (at the end, every or window) and then holds
// nothing, so the runner claims exactly the records its groups stood for.
// Saying how many records the groups stand for would have the runner keep
// a number per record, memory that grows with the input.
func (s *aggregateStage) Held() int { return 0 }

// IdleAfter is the window: groups are not kept from an endless source
// that went quiet.
func (s *aggregateStage) IdleAfter() time.Duration { return s.window }

// Flush emits every group.
func (s *aggregateStage) Flush(_ context.Context, out [][]byte) ([][]byte, error) {
	return s.emit(out), nil
}

func (s *aggregateStage) emit(out [][]byte) [][]byte {
	for _, g := range s.order {
		b := make([]byte, 0, len(g.by)+16*len(s.computes)+2)
		b = append(b, '{')
		b = append(b, g.by...)
		for i := range s.computes {
			if len(b) > 1 {
				b = append(b, ',')
			}
			b = append(b, s.computes[i].quoted...)
			b = s.result(b, &s.computes[i], &g.accs[i])
		}
		out = append(out, append(b, '}'))
	}
	clear(s.groups)
	clear(s.order)
	s.order = s.order[:0]
	s.taken = 0
	s.opened = time.Time{}
	return out
}

func (s *aggregateStage) result(b []byte, cp *compute, a *acc) []byte {
	switch cp.fn {
	case fnCount:
		return strconv.AppendInt(b, a.n, 10)
	case fnSum:
		switch {
		case a.float:
			return appendFloat(b, a.fsum)
		case a.big != nil:
			return a.big.Append(b, 10)
		}
		return strconv.AppendInt(b, a.isum, 10)
	case fnAvg:
		if a.n == 0 {
			return append(b, "null"...)
		}
		if a.big != nil {
			q, _ := new(big.Float).Quo(new(big.Float).SetInt(a.big), new(big.Float).SetInt64(a.n)).Float64()
			return appendFloat(b, q)
		}
		return appendFloat(b, a.floatSum()/float64(a.n))
	case fnMin, fnMax, fnFirst, fnLast:
		if a.val == nil {
			return append(b, "null"...)
		}
		return append(b, a.val...)
	}
	if len(a.list) == 0 {
		return append(b, "[]"...)
	}
	return append(append(b, a.list...), ']')
}

// appendFloat writes f as encoding/json would, and a sum that overflowed
// to an infinity as null, which JSON has instead.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	b, _ = jsontext.AppendFloat(b, f)
	return b
}

// excerpt quotes the start of a value for a message.
func excerpt(v []byte) string {
	const n = 40
	if len(v) > n {
		return string(v[:n]) + "…"
	}
	return string(v)
}

var (
	_ stages.Holder = (*aggregateStage)(nil)
	_ stages.Idler  = (*aggregateStage)(nil)
)
