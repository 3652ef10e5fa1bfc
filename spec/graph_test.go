package spec_test

import (
	"path/filepath"
	"strings"
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
    s1 [label="s (upper) x2 workers, buffer 8, remote"];
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
    s1["s (upper) x2 workers, buffer 8, remote"]
    out[/"stdout (lines)"/]
    in --> s1
    s1 --> out
`
	if got := spec.Mermaid(p); got != wantMermaid {
		t.Errorf("Mermaid:\n%s\nwant:\n%s", got, wantMermaid)
	}
}

// TestGraphWhereStagesRun: the graph says which stages run on workers
// under --broker and which in the run process, from the stage registry.
func TestGraphWhereStagesRun(t *testing.T) {
	p, err := spec.Parse("p.yaml", []byte(`stages:
  - use: upper
  - use: dedupe
  - {name: any, use: sample, with: {rate: 0.5}}
  - {name: seeded, use: sample, with: {rate: 0.5, seed: 1}}
  - {use: batch}
`), spec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := spec.Mermaid(p)
	for _, want := range []string{
		`"upper (upper) x1 worker, buffer 256, remote"`,
		`"dedupe (dedupe) x1 worker, buffer 256, run process"`,
		`"any (sample) x1 worker, buffer 256, remote"`,
		`"seeded (sample) x1 worker, buffer 256, run process"`,
		`"batch (batch) x1 worker, buffer 256, run process"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("graph lacks %s:\n%s", want, got)
		}
	}
}
