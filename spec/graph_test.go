package spec_test

import (
	"path/filepath"
	"testing"

	"github.com/flowrun/flowrun/spec"
)

func TestGraph(t *testing.T) {
	tests := []struct {
		file, ext string
		render    func(*spec.Pipeline) string
	}{
		{"full", "mmd", spec.Mermaid},
		{"full", "dot", spec.DOT},
		{"minimal", "mmd", spec.Mermaid},
		{"minimal", "dot", spec.DOT},
	}
	for _, tt := range tests {
		t.Run(tt.file+"."+tt.ext, func(t *testing.T) {
			got := tt.render(specGood(t, tt.file))
			golden := filepath.Join("..", "testdata", "spec", "graph", tt.file+"."+tt.ext)
			specGolden(t, golden, got)
		})
	}
}

func TestGraphQuoting(t *testing.T) {
	p := &spec.Pipeline{
		Name:   `a "quoted" \ name`,
		Input:  spec.Input{From: `in "1".txt`, Format: "lines"},
		Output: spec.Output{To: "stdout", Format: "lines"},
		Stages: []spec.Stage{{Name: "s", Use: "upper", Workers: 2, Buffer: 8}},
	}
	wantDOT := `digraph "a \"quoted\" \\ name" {
    rankdir=LR;
    node [shape=box];
    in [label="in \"1\".txt (lines)", shape=parallelogram];
    s1 [label="s (upper) x2 workers, buffer 8"];
    out [label="stdout (lines)", shape=parallelogram];
    in -> s1;
    s1 -> out;
}
`
	if got := spec.DOT(p); got != wantDOT {
		t.Errorf("DOT:\n%s\nwant:\n%s", got, wantDOT)
	}
	wantMermaid := `flowchart LR
    in[/"in #quot;1#quot;.txt (lines)"/]
    s1["s (upper) x2 workers, buffer 8"]
    out[/"stdout (lines)"/]
    in --> s1
    s1 --> out
`
	if got := spec.Mermaid(p); got != wantMermaid {
		t.Errorf("Mermaid:\n%s\nwant:\n%s", got, wantMermaid)
	}
}
