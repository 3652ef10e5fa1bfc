package spec

import (
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flowrun/stages"
)

// applySets puts each Options.Set override into the tree rooted at the
// mapping root, so that it is validated like the file's own values. The
// nodes it adds are recorded in p.setNodes, which places their errors at
// the override.
//
// A path is dot-separated keys. Stage names may hold dots themselves, so
// stages.NAME.KEY takes the longest stage name that fits, and with.OPTION
// takes the rest of the path as the option's name, unless it is
// with.MAP.KEY for a mapping option MAP of the stage (map's fields.x,
// exec's env.HOME), which sets that one entry.
func (p *parser) applySets(root *yaml.Node) {
	if len(p.sets) == 0 {
		return
	}
	byName := p.stagesByName(root)
	for i, s := range p.sets {
		at := Pos{File: setFile, Line: i + 1, Col: 1}
		path, value, ok := strings.Cut(s, "=")
		if !ok {
			p.errorAt(at, "%s: want PATH=VALUE, like stages.NAME.workers=4", s)
			continue
		}
		m, keys := root, strings.Split(path, ".")
		if _, isStage := byName[strings.TrimPrefix(path, "stages.")]; path == "stages" || keys[0] == "stages" && isStage {
			p.errorAt(at, "%s: want stages.NAME.KEY=VALUE: a --set changes one value of one stage", s)
			continue
		}
		if keys[0] == "stages" {
			rest := strings.TrimPrefix(path, "stages.")
			name := ""
			for n := range byName {
				if strings.HasPrefix(rest, n+".") && len(n) > len(name) {
					name = n
				}
			}
			if name == "" {
				want, _, _ := strings.Cut(rest, ".")
				p.errorAt(at, "%s: no stage named %q%s", s, want, hintOrList(want, sortedKeys(byName)))
				continue
			}
			m, rest = byName[name], strings.TrimPrefix(rest, name+".")
			if opt, isWith := strings.CutPrefix(rest, "with."); isWith {
				keys = withKeys(m, opt, p.env)
			} else {
				keys = strings.Split(rest, ".")
			}
		}
		if contains(keys, "") {
			p.errorAt(at, "%s: empty key in the path", s)
			continue
		}
		p.set(i, m, keys, value)
	}
}

// withKeys is the path below a stage's mapping st for the option path
// opt: with and the option, or with, a StringMap option and its entry.
func withKeys(st *yaml.Node, opt string, env func(string) (string, bool)) []string {
	var use string
	for j := 0; j+1 < len(st.Content); j += 2 {
		if st.Content[j].Value == "use" && st.Content[j+1].Kind == yaml.ScalarNode {
			use, _ = expand(st.Content[j+1].Value, env)
		}
	}
	sp, ok := stages.Lookup(use)
	if _, isOption := sp.Option(opt); !ok || isOption {
		return []string{"with", opt}
	}
	for _, o := range sp.Options {
		if entry, isEntry := strings.CutPrefix(opt, o.Name+"."); isEntry && o.Type == stages.StringMap {
			return []string{"with", o.Name, entry}
		}
	}
	return []string{"with", opt}
}

// set sets keys (a path below the mapping m) to value, making mappings on
// the way as needed.
func (p *parser) set(i int, m *yaml.Node, keys []string, value string) {
	for depth, k := range keys {
		var val *yaml.Node
		for j := 0; j+1 < len(m.Content); j += 2 {
			if m.Content[j].Kind == yaml.ScalarNode && m.Content[j].Value == k {
				val = m.Content[j+1]
			}
		}
		last := depth == len(keys)-1
		if val == nil {
			key := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: k}
			val = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			p.setNodes[key], p.setNodes[val] = i, i
			m.Content = append(m.Content, key, val)
		}
		if last {
			// Overwrite the node in place: its parent keeps pointing at it.
			*val = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
			p.setNodes[val] = i
			return
		}
		switch {
		case isNull(val):
			*val = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: val.Line, Column: val.Column}
		case val.Kind != yaml.MappingNode:
			p.errorAt(Pos{File: setFile, Line: i + 1, Col: 1}, "%s: %s is %s, which has no keys", p.sets[i], strings.Join(keys[:depth+1], "."), kindName(val))
			return
		}
		m = val
	}
}

// stagesByName maps the name of each stage in the tree (its name:, or its
// use:) to its mapping node; the first stage of a name wins, as the
// duplicate is an error anyway.
func (p *parser) stagesByName(root *yaml.Node) map[string]*yaml.Node {
	byName := map[string]*yaml.Node{}
	var list *yaml.Node
	for j := 0; j+1 < len(root.Content); j += 2 {
		if root.Content[j].Value == "stages" {
			list = root.Content[j+1]
		}
	}
	if list == nil || list.Kind != yaml.SequenceNode {
		return byName
	}
	for _, st := range list.Content {
		if st.Kind != yaml.MappingNode {
			continue
		}
		var name, use string
		for j := 0; j+1 < len(st.Content); j += 2 {
			v := st.Content[j+1]
			if v.Kind != yaml.ScalarNode {
				continue
			}
			// A name that fails to expand is reported by validation; here
			// the raw text will do.
			s, err := expand(v.Value, p.env)
			if err != nil {
				s = v.Value
			}
			switch st.Content[j].Value {
			case "name":
				name = s
			case "use":
				use = s
			}
		}
		if name == "" {
			name = use
		}
		if _, dup := byName[name]; !dup && name != "" {
			byName[name] = st
		}
	}
	return byName
}

func sortedKeys(m map[string]*yaml.Node) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
