package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/flowrun/flowrun/stages"
)

// TestStageDocExamplesAreYAML parses every {...} or [...] example that a
// stage's documentation gives after "like": `flowrun stages` must not show
// a form that is a YAML syntax error (${VAR} unquoted in a flow mapping).
func TestStageDocExamplesAreYAML(t *testing.T) {
	n := 0
	for _, s := range stages.All() {
		docs := []string{s.Doc}
		for _, o := range s.Options {
			docs = append(docs, o.Doc)
		}
		for _, doc := range docs {
			for _, ex := range flowExamples(doc) {
				n++
				var v any
				if err := yaml.Unmarshal([]byte("x: "+ex), &v); err != nil {
					t.Errorf("stage %s: the example %s is not YAML: %v", s.Name, ex, err)
				}
			}
		}
	}
	if n < 3 {
		t.Fatalf("found only %d examples: has the docs' wording changed?", n)
	}
}

// flowExamples returns the bracketed text after each "like " in doc, up to
// the bracket that closes it (quotes are respected).
func flowExamples(doc string) []string {
	var out []string
	for rest := doc; ; {
		i := strings.Index(rest, "like ")
		if i < 0 {
			return out
		}
		rest = rest[i+len("like "):]
		if rest == "" || (rest[0] != '{' && rest[0] != '[') {
			continue
		}
		depth, quote := 0, byte(0)
		for j := 0; j < len(rest); j++ {
			switch c := rest[j]; {
			case quote != 0:
				if c == quote {
					quote = 0
				}
			case c == '"' || c == '\'':
				quote = c
			case c == '{' || c == '[':
				depth++
			case c == '}' || c == ']':
				if depth--; depth == 0 {
					out = append(out, rest[:j+1])
					rest = rest[j+1:]
					j = len(rest)
				}
			}
		}
	}
}

// TestReadmeYAMLIsYAML parses every ```yaml block of README.md: an example
// a user copies must not be a YAML syntax error.
func TestReadmeYAMLIsYAML(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(data), "```yaml\n")[1:]
	if len(blocks) == 0 {
		t.Fatal("README.md has no ```yaml block")
	}
	for i, b := range blocks {
		b, _, _ = strings.Cut(b, "```")
		var v any
		if err := yaml.Unmarshal([]byte(b), &v); err != nil {
			t.Errorf("README.md's yaml block %d is not YAML: %v\n%s", i+1, err, b)
		}
	}
}
