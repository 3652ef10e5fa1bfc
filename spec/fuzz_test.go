package spec_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowrun/flowrun/spec"
)

// FuzzParse checks that Parse never panics and returns either a Pipeline
// with stages or a non-empty Errors, each problem placed on a line. The
// seeds are every pipeline in testdata/spec.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("../testdata/spec/*/*.yaml")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "")
	}
	f.Add([]byte("stages: [{use: grep, with: {pattern: x}}]"), "stages.grep.workers=2")
	f.Add([]byte("stages: [{use: a.b}]"), "stages.a.b.with.x=1")
	f.Fuzz(func(t *testing.T, data []byte, set string) {
		var sets []string
		if set != "" {
			sets = strings.Split(set, "\n")
		}
		p, err := spec.Parse("f.yaml", data, spec.Options{Env: specEnv, Set: sets})
		if err == nil {
			if p == nil || len(p.Stages) == 0 {
				t.Fatalf("no error and no stages: %+v", p)
			}
			for _, st := range p.Stages {
				if st.Workers < 1 || st.Buffer < 1 || st.Retry.Attempts < 1 || st.Spec.New == nil {
					t.Fatalf("invalid stage accepted: %+v", st)
				}
			}
			_ = spec.Mermaid(p) + spec.DOT(p)
			return
		}
		if p != nil {
			t.Fatalf("a Pipeline along with errors: %v", err)
		}
		var es spec.Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error is %T, not a non-empty spec.Errors: %v", err, err)
		}
		for _, e := range es {
			if e.Pos.Line < 1 || e.Pos.Col < 1 || e.Msg == "" {
				t.Fatalf("badly placed error: %#v", e)
			}
		}
	})
}
