package spec

import (
	"fmt"
	"strings"
)

// Mermaid renders the pipeline's stage graph as a Mermaid flowchart: the
// input, each stage labelled with its workers and buffer and where it runs
// under --broker ("remote": on workers anywhere; "run process": it holds
// records across calls or must see every record), the output, and a
// dashed edge to the dead-letter file from each stage that sends there.
func Mermaid(p *Pipeline) string {
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, "#quot;") + `"` }
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	fmt.Fprintf(&b, "    in[/%s/]\n", q(inputLabel(p)))
	for i, st := range p.Stages {
		fmt.Fprintf(&b, "    s%d[%s]\n", i+1, q(stageLabel(st)))
	}
	fmt.Fprintf(&b, "    out[/%s/]\n", q(outputLabel(p)))
	if p.DeadLetter != "" {
		fmt.Fprintf(&b, "    dl[(%s)]\n", q(p.DeadLetter+" (dead letters)"))
	}
	prev := "in"
	for i := range p.Stages {
		fmt.Fprintf(&b, "    %s --> s%d\n", prev, i+1)
		prev = fmt.Sprintf("s%d", i+1)
	}
	fmt.Fprintf(&b, "    %s --> out\n", prev)
	for _, from := range deadLetterSources(p) {
		fmt.Fprintf(&b, "    %s -. dead-letter .-> dl\n", from)
	}
	return b.String()
}

// DOT renders the same graph as Mermaid in Graphviz's DOT language.
func DOT(p *Pipeline) string {
	q := func(s string) string {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
	}
	var b strings.Builder
	fmt.Fprintf(&b, "digraph %s {\n", q(p.Name))
	b.WriteString("    rankdir=LR;\n    node [shape=box];\n")
	fmt.Fprintf(&b, "    in [label=%s, shape=parallelogram];\n", q(inputLabel(p)))
	for i, st := range p.Stages {
		fmt.Fprintf(&b, "    s%d [label=%s];\n", i+1, q(stageLabel(st)))
	}
	fmt.Fprintf(&b, "    out [label=%s, shape=parallelogram];\n", q(outputLabel(p)))
	if p.DeadLetter != "" {
		fmt.Fprintf(&b, "    dl [label=%s, shape=cylinder];\n", q(p.DeadLetter+" (dead letters)"))
	}
	prev := "in"
	for i := range p.Stages {
		fmt.Fprintf(&b, "    %s -> s%d;\n", prev, i+1)
		prev = fmt.Sprintf("s%d", i+1)
	}
	fmt.Fprintf(&b, "    %s -> out;\n", prev)
	for _, from := range deadLetterSources(p) {
		fmt.Fprintf(&b, "    %s -> dl [style=dashed, label=\"dead-letter\"];\n", from)
	}
	b.WriteString("}\n")
	return b.String()
}

func inputLabel(p *Pipeline) string  { return fmt.Sprintf("%s (%s)", p.Input.From, p.Input.Format) }
func outputLabel(p *Pipeline) string { return fmt.Sprintf("%s (%s)", p.Output.To, p.Output.Format) }

func stageLabel(st Stage) string {
	workers := "workers"
	if st.Workers == 1 {
		workers = "worker"
	}
	where := "remote"
	if st.Spec.IsLocal(st.Config) {
		where = "run process"
	}
	return fmt.Sprintf("%s (%s) x%d %s, buffer %d, %s", st.Name, st.Use, st.Workers, workers, st.Buffer, where)
}

// deadLetterSources returns the graph ids of the nodes whose failed
// records go to the dead-letter file.
func deadLetterSources(p *Pipeline) []string {
	if p.DeadLetter == "" {
		return nil
	}
	var ids []string
	if p.Input.OnError == DeadLetter {
		ids = append(ids, "in")
	}
	for i, st := range p.Stages {
		if st.OnError == DeadLetter {
			ids = append(ids, fmt.Sprintf("s%d", i+1))
		}
	}
	return ids
}
