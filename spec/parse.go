package spec

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/file"
	"github.com/flowrun/flowrun/stages"
)

// Limits on what Parse accepts: a pipeline is a small hand-written file,
// and a hostile one must fail fast rather than eat memory or stack.
const (
	MaxFileSize = 16 << 20 // bytes
	MaxDepth    = 32       // nesting of mappings and sequences
	// MaxTokens bounds the commas, colons and newlines in a file, which
	// bound the number of YAML nodes: yaml.v3 spends some 200 bytes on a
	// node, so 16 MiB of "a," would take 1.5 GiB. A pipeline of 10,000
	// stages has some 150,000.
	MaxTokens = 500_000
	// maxAliasErrors stops an alias bomb from also being an error bomb.
	maxAliasErrors = 10
)

// Defaults for a stage's retry policy.
const (
	DefaultAttempts   = 1
	DefaultBackoff    = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
)

// OnErrors are the on_error policies, for messages and hints.
var OnErrors = []string{string(Fail), string(Skip), string(DeadLetter)}

// Options tune Load and Parse.
type Options struct {
	// Env looks up ${VAR}; nil means os.LookupEnv.
	Env func(string) (string, bool)
	// Set overrides values before validation, as the CLI's --set does:
	// "stages.NAME.workers=4", "stages.NAME.with.pattern=x", "ordered=true",
	// "input.format=csv". A value is a scalar, ${VAR} expanded as in the
	// file; a Strings option set this way is a list of one. Everything after
	// "with." is the option's name, but for a StringMap option, whose
	// entries are set one by one: "stages.NAME.with.fields.x=upper(x)".
	Set []string
	// DeadLetter, when set, replaces the pipeline's dead_letter, as the
	// CLI's --dead-letter does; it satisfies a stage's on_error:
	// dead-letter like dead_letter: in the file.
	DeadLetter string
	// Worked says the pipeline is read by a worker (flowrun worker),
	// which writes no dead letters: it hands them to the run, whose
	// dead_letter (or --dead-letter) takes them. A stage's on_error:
	// dead-letter needs no dead_letter: there.
	Worked bool
}

// Stdin is the file name of a pipeline read from standard input (the
// CLI's "-"), as its errors show it.
const Stdin = "<stdin>"

// Load reads the pipeline file at path and parses it. Reading the file is
// the only I/O spec does.
func Load(path string, opts Options) (*Pipeline, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// One byte past the limit is enough for Parse to refuse the file.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	return Parse(path, data, opts)
}

// Parse parses and validates the pipeline in data, read from file. The
// error, if any, is an Errors holding every problem found.
//
// Pipeline.File is file as given and Pipeline.Dir its directory, against
// which stages resolve relative paths in their options. The input, output
// and dead_letter paths are kept as written: like any Unix tool's, they are
// relative to the working directory, and the CLI resolves them.
func Parse(file string, data []byte, opts Options) (*Pipeline, error) {
	p := &parser{file: file, env: opts.Env, sets: opts.Set, deadLetter: opts.DeadLetter, worked: opts.Worked, setNodes: map[*yaml.Node]int{}}
	if p.env == nil {
		p.env = os.LookupEnv
	}
	pl := p.parse(data)
	if len(p.errs) > 0 {
		p.errs.sort()
		return nil, p.errs
	}
	return pl, nil
}

const setFile = "--set"

type parser struct {
	file       string
	env        func(string) (string, bool)
	sets       []string
	deadLetter string             // Options.DeadLetter
	worked     bool               // Options.Worked
	setNodes   map[*yaml.Node]int // nodes an override put in the tree: its index in sets
	errs       Errors
}

func (p *parser) errorAt(pos Pos, format string, args ...any) {
	p.errs = append(p.errs, Error{Pos: pos, Msg: fmt.Sprintf(format, args...)})
}

// errorf reports a problem at n, or at the --set override that put n there.
func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	if i, ok := p.setNodes[n]; ok {
		p.errorAt(Pos{File: setFile, Line: i + 1, Col: 1}, "%s: %s", p.sets[i], fmt.Sprintf(format, args...))
		return
	}
	p.errorAt(p.pos(n), format, args...)
}

// pos is where n is: in the file, or the --set that put it there.
func (p *parser) pos(n *yaml.Node) Pos {
	if i, ok := p.setNodes[n]; ok {
		return Pos{File: setFile, Line: i + 1, Col: 1}
	}
	return Pos{File: p.file, Line: max(n.Line, 1), Col: max(n.Column, 1)}
}

func (p *parser) parse(data []byte) *Pipeline {
	top := Pos{File: p.file, Line: 1, Col: 1}
	if len(data) > MaxFileSize {
		p.errorAt(top, "the file is larger than %d MiB: not a pipeline", MaxFileSize>>20)
		return nil
	}
	if n := bytes.Count(data, []byte(",")) + bytes.Count(data, []byte(":")) + bytes.Count(data, []byte("\n")); n > MaxTokens {
		p.errorAt(top, "the file holds more than %d commas, colons and lines: not a pipeline", MaxTokens)
		return nil
	}
	root := p.document(data)
	if root == nil {
		return nil
	}
	if !p.hostile(root) {
		return nil
	}
	if root.Kind != yaml.MappingNode {
		if isNull(root) {
			p.errorAt(top, "the file is empty: a pipeline needs at least stages:")
		} else {
			p.errorf(root, "a pipeline is a mapping (name:, input:, stages: ...), not %s", kindName(root))
		}
		return nil
	}
	p.applySets(root)
	return p.pipeline(root)
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document decodes the one YAML document in data, reporting syntax errors
// and any second document.
func (p *parser) document(data []byte) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			p.errorAt(Pos{File: p.file, Line: 1, Col: 1}, "the file is empty: a pipeline needs at least stages:")
		} else {
			p.syntaxError(data, err)
		}
		return nil
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		p.syntaxError(data, err)
		return nil
	default:
		p.errorf(&extra, "a second YAML document: a pipeline file holds exactly one (remove the ---)")
		return nil
	}
	if len(doc.Content) == 0 {
		p.errorAt(Pos{File: p.file, Line: 1, Col: 1}, "the file is empty: a pipeline needs at least stages:")
		return nil
	}
	return doc.Content[0]
}

// syntaxError reports a YAML syntax error. yaml.v3 gives only a line, and
// for tabs often the wrong one, so a tab in indentation is looked for and
// reported where it is.
func (p *parser) syntaxError(data []byte, err error) {
	msg, line := strings.TrimPrefix(err.Error(), "yaml: "), 1
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if strings.Contains(msg, "tab") || strings.Contains(msg, "cannot start any token") {
		if l, c, ok := findIndentTab(data, line); ok {
			p.errorAt(Pos{File: p.file, Line: l, Col: c}, "tab character in indentation: YAML indents with spaces only")
			return
		}
	}
	if v, ok := flowVarCause(data); ok {
		p.errorAt(Pos{File: p.file, Line: v.line, Col: v.col}, "YAML syntax: %s (inside {...} or [...], YAML takes the { of ${ for a brace: "+
			"quote the value, %q, or write the mapping a key a line)", msg, v.value)
		return
	}
	p.errorAt(Pos{File: p.file, Line: line, Col: 1}, "YAML syntax: %s", msg)
}

// flowVar is a ${ that stands unquoted inside a flow collection ({...}
// or [...]), where YAML takes its { for the start of a mapping:
// `{Authorization: Bearer ${TOKEN}}` is a syntax error in YAML itself,
// which yaml.v3 reports at the line where the collection began.
type flowVar struct {
	line, col   int
	offset, end int    // of the $ and of the variable's } in the file (or of the line's end)
	value       string // the plain value it stands in, as far as the variable's }
}

// flowVarCause says which ${ in a flow collection made data a YAML syntax
// error: the first, when the file parses once they are all made harmless.
func flowVarCause(data []byte) (flowVar, bool) {
	vars := findFlowVars(data)
	if len(vars) == 0 {
		return flowVar{}, false
	}
	fixed := bytes.Clone(data)
	for _, v := range vars {
		fixed[v.offset+1] = '(' // $(NAME): no braces, the same length
		if fixed[v.end] == '}' {
			fixed[v.end] = ')'
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(fixed))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return vars[0], true
		}
		if err != nil {
			return flowVar{}, false
		}
	}
}

func findFlowVars(data []byte) []flowVar {
	var vars []flowVar
	depth := 0
	var quote byte // the quote of the scalar being read, or 0
	offset := 0    // of the line in data
	for i, l := range bytes.Split(data, []byte("\n")) {
		start := 0 // where the current plain value begins
	scan:
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case quote == '"' && c == '\\':
				j++
			case quote == '\'' && c == '\'' && j+1 < len(l) && l[j+1] == '\'':
				j++
			case quote != 0:
				if c == quote {
					quote = 0
				}
			case c == '#' && (j == 0 || l[j-1] == ' ' || l[j-1] == '\t'):
				break scan
			case (c == '"' || c == '\'') && startsScalar(l[:j]):
				quote = c
			case c == '{' || c == '[':
				depth++
				start = j + 1
			case c == '}' || c == ']':
				depth = max(depth-1, 0)
			case c == ',' || c == ':' && (j+1 == len(l) || l[j+1] == ' '):
				start = j + 1
			case c == '$' && depth > 0 && j+1 < len(l) && l[j+1] == '{':
				end := bytes.IndexByte(l[j:], '}')
				if end < 0 {
					end = len(l) - j - 1
				}
				vars = append(vars, flowVar{line: i + 1, col: j + 1, offset: offset + j, end: offset + j + end, value: string(bytes.TrimSpace(l[start : j+end+1]))})
			}
		}
		offset += len(l) + 1
	}
	return vars
}

// startsScalar says whether a quote after before opens a quoted scalar,
// rather than standing inside a plain one (don't).
func startsScalar(before []byte) bool {
	t := bytes.TrimRight(before, " \t")
	return len(t) == 0 || strings.IndexByte(":,[{-?", t[len(t)-1]) >= 0
}

// findIndentTab returns the position of a tab in the leading white space of
// a line, preferring the one nearest near.
func findIndentTab(data []byte, near int) (line, col int, ok bool) {
	best := -1
	for i, l := range bytes.Split(data, []byte("\n")) {
		indent := len(l) - len(bytes.TrimLeft(l, " \t"))
		c := bytes.IndexByte(l[:indent], '\t')
		if c < 0 {
			continue
		}
		if d := abs(i + 1 - near); best < 0 || d < best {
			best, line, col, ok = d, i+1, c+1, true
		}
	}
	return line, col, ok
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}

// hostile reports aliases and nesting deeper than MaxDepth, walking the
// tree without recursion. Aliases are refused outright: a pipeline has no
// use for them, and refusing them makes alias bombs impossible.
func (p *parser) hostile(root *yaml.Node) bool {
	type item struct {
		n     *yaml.Node
		depth int
	}
	aliases := 0
	stack := []item{{root, 1}}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch {
		case it.n.Kind == yaml.AliasNode:
			if aliases++; aliases <= maxAliasErrors {
				p.errorf(it.n, "YAML aliases (*%s) are not supported: write the value out", it.n.Value)
			}
		case it.depth > MaxDepth:
			p.errorf(it.n, "nested more than %d levels deep", MaxDepth)
			return false
		default:
			// Pushed last to first, so that the file is walked in order.
			for i := len(it.n.Content) - 1; i >= 0; i-- {
				stack = append(stack, item{it.n.Content[i], it.depth + 1})
			}
		}
	}
	if aliases > maxAliasErrors {
		p.errorAt(p.pos(root), "%d more YAML aliases not shown", aliases-maxAliasErrors)
	}
	return aliases == 0
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

func kindName(n *yaml.Node) string {
	switch {
	case isNull(n):
		return "empty"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.AliasNode:
		return "an alias"
	}
	return fmt.Sprintf("the scalar %q", n.Value)
}

// field is one key of a mapping and its value.
type field struct{ key, val *yaml.Node }

// mapping returns the keys of the mapping n, reporting a non-mapping,
// duplicate keys and keys not in known (with a hint). A null n is an empty
// mapping. what names n in messages.
func (p *parser) mapping(n *yaml.Node, what string, known []string) (map[string]field, bool) {
	return p.mappingQuiet(n, what, known, nil)
}

// mappingQuiet is mapping, but leaves the unknown keys for which quiet
// says so to its caller to report.
func (p *parser) mappingQuiet(n *yaml.Node, what string, known []string, quiet func(*yaml.Node) bool) (map[string]field, bool) {
	fields := map[string]field{}
	if isNull(n) {
		return fields, true
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "%s must be a mapping, not %s", what, kindName(n))
		return fields, false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, "a key in %s must be a plain name, not %s", what, kindName(k))
			continue
		}
		if first, dup := fields[k.Value]; dup {
			p.errorf(k, "duplicate key %q (first at line %d)", k.Value, first.key.Line)
			continue
		}
		if known != nil && !contains(known, k.Value) {
			if quiet == nil || !quiet(k) {
				p.errorf(k, "unknown key %q in %s%s", k.Value, what, hintOrList(k.Value, known))
			}
			continue
		}
		fields[k.Value] = field{k, v}
	}
	return fields, true
}

// hintOrList suggests the closest of known or, failing that, lists them
// when they are few enough to read.
func hintOrList(s string, known []string) string {
	if h := DidYouMean(s, known); h != "" {
		return h
	}
	if len(known) == 0 || len(known) > 12 {
		return ""
	}
	return " (one of: " + strings.Join(known, ", ") + ")"
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scalar returns the value of the scalar n with ${VAR} expanded.
func (p *parser) scalar(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) {
		p.errorf(n, "%s must be a value, not %s", what, kindName(n))
		return "", false
	}
	s, err := expand(n.Value, p.env)
	if err != nil {
		p.errorf(n, "%s: %v", what, err)
		return "", false
	}
	return s, true
}

func (p *parser) nonEmpty(n *yaml.Node, what string) (string, bool) {
	s, ok := p.scalar(n, what)
	if ok && s == "" {
		p.errorf(n, "%s is empty", what)
		return "", false
	}
	return s, ok
}

func (p *parser) intAtLeast(n *yaml.Node, what string, least int) (int, bool) {
	s, ok := p.scalar(n, what)
	if !ok {
		return 0, false
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		p.errorf(n, "%s: %q is not a whole number", what, s)
		return 0, false
	}
	if v < least {
		p.errorf(n, "%s must be at least %d, not %d", what, least, v)
		return 0, false
	}
	return v, true
}

func (p *parser) duration(n *yaml.Node, what string, positive bool) (time.Duration, bool) {
	s, ok := p.scalar(n, what)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		p.errorf(n, "%s: %q is not a duration (like 250ms, 10s, 1m30s)", what, s)
		return 0, false
	case positive && d <= 0:
		p.errorf(n, "%s must be more than 0, not %s", what, s)
		return 0, false
	case d < 0:
		p.errorf(n, "%s must not be negative: %s", what, s)
		return 0, false
	}
	return d, true
}

func (p *parser) boolean(n *yaml.Node, what string) (bool, bool) {
	s, ok := p.scalar(n, what)
	if !ok {
		return false, false
	}
	v, err := strconv.ParseBool(s)
	if err != nil {
		p.errorf(n, "%s: %q is not true or false", what, s)
		return false, false
	}
	return v, true
}

func (p *parser) enum(n *yaml.Node, what string, allowed []string) (string, bool) {
	s, ok := p.scalar(n, what)
	if !ok {
		return "", false
	}
	if !contains(allowed, s) {
		p.errorf(n, "%s: %q is not one of %s%s", what, s, strings.Join(allowed, ", "), DidYouMean(s, allowed))
		return "", false
	}
	return s, true
}

var (
	// tests holds the pipeline's test cases, for `flowrun test`; a run
	// ignores it.
	topKeys    = []string{"name", "input", "output", "ordered", "reorder_window", "dead_letter", "stages", "tests"}
	inputKeys  = []string{"from", "format", "max_record_size", "on_error", "csv", "select", "with"}
	outputKeys = []string{"to", "format", "csv", "with"}
	stageKeys  = []string{"name", "use", "workers", "buffer", "timeout", "retry", "on_error", "with"}
	retryKeys  = []string{"attempts", "backoff", "max_backoff"}
)

func (p *parser) pipeline(root *yaml.Node) *Pipeline {
	pl := &Pipeline{
		Name:   defaultName(p.file),
		File:   p.file,
		Dir:    filepath.Dir(p.file),
		Input:  Input{From: "stdin", Format: DefaultFormat, MaxRecordSize: DefaultMaxRecordSize, OnError: Fail},
		Output: Output{To: "stdout", Format: DefaultFormat},
	}
	f, _ := p.mapping(root, "the pipeline", topKeys)
	if x, ok := f["name"]; ok {
		if s, ok := p.nonEmpty(x.val, "name"); ok {
			pl.Name = s
		}
	}
	var deadLetterUsers []*yaml.Node
	if x, ok := f["input"]; ok {
		if n := p.input(x.val, &pl.Input); n != nil {
			deadLetterUsers = append(deadLetterUsers, n)
		}
	}
	if x, ok := f["output"]; ok {
		p.output(x.val, &pl.Output)
	}
	if x, ok := f["ordered"]; ok {
		pl.Ordered, _ = p.boolean(x.val, "ordered")
	}
	if x, ok := f["reorder_window"]; ok {
		pl.ReorderWindow, _ = p.intAtLeast(x.val, "reorder_window", 1)
	}
	if x, ok := f["dead_letter"]; ok {
		// An empty value leaves it unset, so that ${DL:-} makes it optional.
		pl.DeadLetter, _ = p.scalar(x.val, "dead_letter")
		pl.DeadLetterPos = p.pos(x.val)
	}
	x, ok := f["stages"]
	switch {
	case !ok:
		p.errorAt(p.pos(root), "the pipeline has no stages: (a list of stages, each with use:)")
	case isNull(x.val) || x.val.Kind == yaml.SequenceNode && len(x.val.Content) == 0:
		p.errorf(x.key, "stages is empty: a pipeline needs at least one stage")
	case x.val.Kind != yaml.SequenceNode:
		p.errorf(x.val, "stages must be a list of stages, not %s", kindName(x.val))
	default:
		pl.Stages = make([]Stage, 0, len(x.val.Content))
		names := map[string]int{} // stage name to the line that declares it
		for _, n := range x.val.Content {
			st, nameNode, onError := p.stage(n, pl.Dir)
			if onError != nil {
				deadLetterUsers = append(deadLetterUsers, onError)
			}
			if st.Name == "" {
				continue
			}
			if line, dup := names[st.Name]; dup {
				p.errorf(nameNode, "stage name %q is taken by the stage at line %d: give this one a different name:", st.Name, line)
				continue
			}
			names[st.Name] = st.Pos.Line
			pl.Stages = append(pl.Stages, st)
		}
	}
	if p.deadLetter != "" {
		pl.DeadLetter, pl.DeadLetterPos = p.deadLetter, Pos{}
	}
	if pl.DeadLetter == "" && !p.worked {
		for _, n := range deadLetterUsers {
			p.errorf(n, "on_error: dead-letter needs a dead_letter: FILE at the top of the pipeline (or --dead-letter FILE)")
		}
	}
	return pl
}

// defaultName is the name of a pipeline without name:, its file's base
// name.
func defaultName(file string) string {
	if file == Stdin {
		return "stdin"
	}
	return strings.TrimSuffix(filepath.Base(file), filepath.Ext(file))
}

// input fills in, and returns the on_error node when it says dead-letter.
func (p *parser) input(n *yaml.Node, in *Input) (deadLetter *yaml.Node) {
	f, _ := p.mapping(n, "input", inputKeys)
	if x, ok := f["from"]; ok {
		if s, ok := p.nonEmpty(x.val, "from"); ok {
			in.From, in.Pos = p.filePath(x.val, "from", s), p.pos(x.val)
		}
	}
	if x, ok := f["format"]; ok {
		if s, ok := p.enum(x.val, "format", Formats); ok {
			in.Format = s
		}
	}
	if x, ok := f["max_record_size"]; ok {
		if s, ok := p.scalar(x.val, "max_record_size"); ok {
			size, err := stages.ParseSize(s)
			if err != nil {
				p.errorf(x.val, "max_record_size: %v", err)
			}
			in.MaxRecordSize = size
		}
	}
	if x, ok := f["csv"]; ok {
		in.CSV = p.table(x, "input.csv", in.Format, true)
	}
	if x, ok := f["select"]; ok {
		in.Select = p.selectPath(x, in.Format)
	}
	if x, ok := f["with"]; ok {
		in.With, in.WithPos = p.connectorWith(x, in.From, "input", connect.In)
	}
	if x, ok := f["on_error"]; ok {
		if s, ok := p.enum(x.val, "on_error", OnErrors); ok {
			in.OnError = OnError(s)
			if in.OnError == DeadLetter {
				return x.val
			}
		}
	}
	return nil
}

func (p *parser) output(n *yaml.Node, out *Output) {
	f, _ := p.mapping(n, "output", outputKeys)
	if x, ok := f["to"]; ok {
		if s, ok := p.nonEmpty(x.val, "to"); ok {
			out.To, out.Pos = p.filePath(x.val, "to", s), p.pos(x.val)
		}
	}
	if x, ok := f["format"]; ok {
		if s, ok := p.enum(x.val, "format", OutputFormats); ok {
			out.Format = s
		}
	}
	if x, ok := f["csv"]; ok {
		out.CSV = p.table(x, "output.csv", out.Format, false)
	}
	if x, ok := f["with"]; ok {
		out.With, out.WithPos = p.connectorWith(x, out.To, "output", connect.Out)
	}
}

// filePath returns the path of a file:// URL in from: or to:, which is
// read and written as that path; anything else as it is.
func (p *parser) filePath(n *yaml.Node, key, s string) string {
	path, isFile, err := file.Path(s)
	if !isFile {
		return s
	}
	if err != nil {
		p.errorf(n, "%s: %v", key, err)
	}
	return path
}

// connectorWith reads input.with or output.with, the options of the
// connector that url (from: or to:) names, and checks them against its
// spec in the registry: a key it does not know, or a value of the wrong
// type, is blamed where it is written. What is wrong with the URL itself
// is left to the run's check of it, which also sees -i and -o.
func (p *parser) connectorWith(x field, url, what string, d connect.Direction) (map[string]string, map[string]Pos) {
	f, ok := p.mapping(x.val, what+".with", nil)
	if !ok || len(f) == 0 {
		return nil, nil
	}
	sp, known := connect.Lookup(connect.Scheme(url))
	if !known {
		p.errorf(x.key, "%s.with sets a connector's options, and %s is not a broker URL (amqp://, nats://, redis://: `flowrun connectors` lists them)", what, url)
		return nil, nil
	}
	with := make(map[string]string, len(f))
	pos := make(map[string]Pos, len(f))
	keys := map[string]field{}
	for k, kv := range f {
		v, ok := p.scalar(kv.val, what+".with."+k)
		if !ok {
			continue
		}
		with[k], pos[k], keys[k] = v, p.pos(kv.key), kv
	}
	names := make([]string, len(sp.Options))
	for i, o := range sp.Options {
		names[i] = o.Name
	}
	// Each option alone first, so that every mistake is reported, each
	// at its key or its value.
	bad := false
	for k, kv := range keys {
		o, ok := sp.Option(k)
		switch {
		case !ok:
			p.errorf(kv.key, "%s.with: %s has no option %q%s", what, sp.Name, k, hintOrList(k, names))
		case o.Use&d == 0:
			p.errorf(kv.key, "%s.with: %s option %q applies to %s only", what, sp.Name, k, o.Use)
		default:
			if err := o.Check(with[k]); err != nil {
				p.errorf(kv.val, "%s.with: %s option %q: %v", what, sp.Name, k, err)
				break
			}
			continue
		}
		bad = true
	}
	if bad {
		return nil, nil
	}
	// Then together with the URL: options that depend on each other.
	if _, err := connect.Parse(url, with, d); err != nil {
		var oe *connect.OptionError
		if errors.As(err, &oe) && oe.Option != "" {
			if kv, ok := keys[oe.Option]; ok {
				p.errorf(kv.key, "%s.with: %s", what, err)
			}
		}
	}
	return with, pos
}

var stageName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// stage decodes one stage. It returns the stage (Name "" when it has
// none), the node to blame for a duplicate name, and its on_error node when
// that says dead-letter.
func (p *parser) stage(n *yaml.Node, dir string) (st Stage, nameNode, deadLetter *yaml.Node) {
	st = Stage{
		Workers: DefaultWorkers,
		Buffer:  DefaultBuffer,
		Retry:   Retry{Attempts: DefaultAttempts, Backoff: DefaultBackoff, MaxBackoff: DefaultMaxBackoff},
		OnError: Fail,
		Pos:     p.pos(n),
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "a stage must be a mapping with use: (like - use: upper), not %s", kindName(n))
		return st, nil, nil
	}
	// A key that is an option of the stage belongs under with:; say so
	// rather than list the stage keys.
	var useSpec stages.Spec
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := n.Content[i], n.Content[i+1]; k.Value == "use" && v.Kind == yaml.ScalarNode {
			if name, err := expand(v.Value, p.env); err == nil {
				useSpec, _ = stages.Lookup(name)
			}
		}
	}
	f, _ := p.mappingQuiet(n, "a stage", stageKeys, func(k *yaml.Node) bool {
		if _, ok := useSpec.Option(k.Value); !ok {
			return false
		}
		p.errorf(k, "%s is an option of %s: put it under with: (with: {%s: ...})", k.Value, useSpec.Name, k.Value)
		return true
	})
	known := false
	if x, ok := f["use"]; ok {
		if s, ok := p.nonEmpty(x.val, "use"); ok {
			st.Use, nameNode = s, x.val
			if st.Spec, known = stages.Lookup(s); !known {
				p.errorf(x.val, "unknown stage %q%s", s, DidYouMean(s, stages.Names()))
			}
		}
	} else {
		p.errorf(n, "the stage has no use: (the registered stage to run, like use: upper)")
	}
	st.Name = st.Use
	if x, ok := f["name"]; ok {
		st.Name, nameNode = "", x.val
		if s, ok := p.nonEmpty(x.val, "name"); ok {
			if stageName.MatchString(s) {
				st.Name = s
			} else {
				p.errorf(x.val, "stage name %q may hold only letters, digits, _, . and - (it is used on the command line)", s)
			}
		}
	}
	if x, ok := f["workers"]; ok {
		w, ok := runtime.NumCPU(), true // workers: auto, one per core, for CPU-bound stages
		if v, err := expand(x.val.Value, p.env); x.val.Kind != yaml.ScalarNode || err != nil || v != "auto" {
			w, ok = p.intAtLeast(x.val, "workers", 1)
		}
		if ok && w > MaxWorkers {
			p.errorf(x.val, "workers: %d is more than %d: each worker is a goroutine with its own stage, made before anything runs", w, MaxWorkers)
			ok = false
		}
		if ok {
			st.Workers = w
			if known && st.Spec.MaxWorkers > 0 && w > st.Spec.MaxWorkers {
				p.errorf(x.val, "workers: stage %s runs at most %d, not %d", st.Use, st.Spec.MaxWorkers, w)
			}
		}
	}
	if x, ok := f["buffer"]; ok {
		if b, ok := p.intAtLeast(x.val, "buffer", 1); ok {
			st.Buffer = b
		}
	}
	if x, ok := f["timeout"]; ok {
		st.Timeout, _ = p.duration(x.val, "timeout", false) // 0: none, not even the stage's default
	} else if known {
		st.Timeout = st.Spec.DefaultTimeout
	}
	if x, ok := f["retry"]; ok {
		p.retry(x.val, &st.Retry)
	}
	if x, ok := f["on_error"]; ok {
		if s, ok := p.enum(x.val, "on_error", OnErrors); ok {
			st.OnError = OnError(s)
			if st.OnError == DeadLetter {
				deadLetter = x.val
			}
		}
	}
	if known {
		var with field
		if x, ok := f["with"]; ok {
			with = x
		}
		p.with(n, with, &st, dir)
	} else if x, ok := f["with"]; ok {
		p.mapping(x.val, "with", nil)
	}
	return st, nameNode, deadLetter
}

func (p *parser) retry(n *yaml.Node, r *Retry) {
	f, _ := p.mapping(n, "retry", retryKeys)
	if x, ok := f["attempts"]; ok {
		if a, ok := p.intAtLeast(x.val, "attempts", 1); ok {
			r.Attempts = a
		}
	}
	if x, ok := f["backoff"]; ok {
		if d, ok := p.duration(x.val, "backoff", false); ok {
			r.Backoff = d
			// A backoff beyond the default cap raises the cap, rather
			// than making every long backoff also spell out max_backoff.
			r.MaxBackoff = max(r.MaxBackoff, d)
		}
	}
	if x, ok := f["max_backoff"]; ok {
		if d, ok := p.duration(x.val, "max_backoff", false); ok {
			r.MaxBackoff = d
			if d < r.Backoff {
				p.errorf(x.val, "max_backoff %s is less than backoff %s", d, r.Backoff)
			}
		}
	}
}
