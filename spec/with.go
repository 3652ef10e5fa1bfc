package spec

import (
	"errors"
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flowrun/stages"
)

// with decodes a stage's with: block against its Spec, builds its Config
// and runs the Spec's Check. with.key is nil when the stage has no with:.
func (p *parser) with(stageNode *yaml.Node, with field, st *Stage, dir string) {
	spec := st.Spec
	values := map[string]any{}
	nodes := map[string]*yaml.Node{} // option name to its value, for messages
	ok := true
	if with.key != nil {
		f, isMap := p.mapping(with.val, "with", nil)
		ok = isMap
		names := optionNames(spec)
		// Walk the keys in file order, so that errors come out in order too.
		for _, k := range keysInOrder(with.val, f) {
			x := f[k]
			opt, known := spec.Option(k)
			if !known {
				ok = false
				if len(names) == 0 {
					p.errorf(x.key, "stage %s takes no options, not %q", spec.Name, k)
				} else {
					p.errorf(x.key, "unknown option %q for stage %s%s", k, spec.Name, hintOrList(k, names))
				}
				continue
			}
			v, good := p.optionValue(x.val, opt)
			if !good {
				ok = false
				continue
			}
			values[k], nodes[k] = v, x.val
		}
	}
	if !ok {
		return
	}
	// Errors about an option that is not there go to with:, or to the
	// stage when it has no with: at all.
	blame := stageNode
	if with.key != nil {
		blame = with.key
	}
	cfg, err := stages.NewConfig(spec, st.Name, dir, values)
	if err != nil {
		// Every value has been checked against its option, so what is left
		// is a required option that is missing.
		var oe *stages.OptionError
		if errors.As(err, &oe) {
			if n, ok := nodes[oe.Option]; ok {
				blame = n
			}
			err = oe.Err
		}
		p.errorf(blame, "%v", err)
		return
	}
	cfg.Timeout = st.Timeout
	for i := 0; i+1 < len(stageNode.Content); i += 2 {
		if stageNode.Content[i].Value == "timeout" {
			cfg.TimeoutSet = true
		}
	}
	st.Config = cfg
	st.OptionPos = map[string]Pos{}
	for name, n := range nodes {
		st.OptionPos[name] = p.pos(n)
	}
	if spec.Check == nil {
		return
	}
	if err := check(spec, cfg); err != nil {
		var oe *stages.OptionError
		if errors.As(err, &oe) {
			if n, ok := nodes[oe.Option]; ok {
				blame = p.entry(n, oe.Err)
			}
			p.errorf(blame, "%v", oe)
			return
		}
		p.errorf(blame, "stage %s: %v", st.Name, err)
	}
}

// entry is the entry of the mapping option n that err is about, when
// err starts with its key ("y: unknown function f") and a --set put it
// there, else n: an entry set by --set stages.m.with.fields.y=… is blamed
// at that --set, not at the file's fields:.
func (p *parser) entry(n *yaml.Node, err error) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return n
	}
	for j := 0; j+1 < len(n.Content); j += 2 {
		if _, set := p.setNodes[n.Content[j+1]]; set && strings.HasPrefix(err.Error(), n.Content[j].Value+": ") {
			return n.Content[j+1]
		}
	}
	return n
}

// check runs spec.Check. A panic in it is a bug in the stage, but the
// user gets an error rather than a crash.
func check(spec stages.Spec, cfg stages.Config) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("checking the options of %s panicked (a bug in the stage): %v", spec.Name, r)
		}
	}()
	return spec.Check(cfg)
}

func optionNames(spec stages.Spec) []string {
	names := make([]string, len(spec.Options))
	for i, o := range spec.Options {
		names[i] = o.Name
	}
	return names
}

// keysInOrder returns the keys of f in the order the mapping n holds them.
func keysInOrder(n *yaml.Node, f map[string]field) []string {
	keys := make([]string, 0, len(f))
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if x, ok := f[k.Value]; ok && x.key == k {
			keys = append(keys, k.Value)
		}
	}
	return keys
}

// optionValue decodes n as a value of opt's Type.
func (p *parser) optionValue(n *yaml.Node, opt stages.Option) (any, bool) {
	what := "option " + opt.Name
	switch opt.Type {
	case stages.Strings:
		if n.Kind != yaml.SequenceNode {
			s, ok := p.scalar(n, what)
			return []string{s}, ok
		}
		list := make([]string, 0, len(n.Content))
		ok := true
		for _, e := range n.Content {
			s, good := p.scalar(e, what)
			ok = ok && good
			list = append(list, s)
		}
		return list, ok
	case stages.StringMap:
		if isNull(n) || n.Kind != yaml.MappingNode {
			p.errorf(n, "%s must be a mapping of names to values, not %s", what, kindName(n))
			return nil, false
		}
		f, ok := p.mapping(n, what, nil)
		m := make(map[string]string, len(f))
		for k, x := range f {
			s, good := p.scalar(x.val, what+"."+k)
			ok = ok && good
			m[k] = s
		}
		return m, ok
	}
	if opt.Type == stages.String && isNull(n) {
		// "replacement:" with nothing after it means the empty string.
		return "", true
	}
	s, ok := p.scalar(n, what)
	if !ok {
		return nil, false
	}
	v, err := opt.Type.Parse(s)
	if err != nil {
		p.errorf(n, "%s: %v", what, err)
		return nil, false
	}
	if opt.Type == stages.String && len(opt.Enum) > 0 && !contains(opt.Enum, s) {
		p.errorf(n, "%s: %q is not one of %s%s", what, s, strings.Join(opt.Enum, ", "), DidYouMean(s, opt.Enum))
		return nil, false
	}
	return v, true
}
