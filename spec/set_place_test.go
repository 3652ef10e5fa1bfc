package spec_test

import (
	"testing"

	"github.com/flowrun/flowrun/spec"
	"github.com/flowrun/flowrun/stages"
)

func init() {
	stages.Register(stages.Spec{
		Name:    "spectest.fields",
		Doc:     "Refuses an entry of fields whose value is bad, naming its key first, as map does.",
		Options: []stages.Option{{Name: "fields", Type: stages.StringMap, Doc: "name: value"}},
		Check: func(c stages.Config) error {
			for k, v := range c.Map("fields") {
				if v == "bad" {
					return stages.OptionErrorf("fields", "%s: cannot compile %q", k, v)
				}
			}
			return nil
		},
		New: func(stages.Config) (stages.Stage, error) { return nil, nil },
	})
}

// TestSetErrorsAtTheirPlace: a --set's mistake is said at that --set, and
// one in the file at its line: a bad entry of a mapping option set by
// --set was blamed at the file's fields:, a line the user never wrote
// wrong; and --set stages.NAME=V said there was no stage NAME, listing
// NAME.
func TestSetErrorsAtTheirPlace(t *testing.T) {
	const file = "stages:\n  - name: m\n    use: spectest.fields\n    with:\n      fields: {a: good, b: GOOD}\n"
	tests := []struct {
		name, yaml string
		sets       []string
		want       string
	}{
		{"an entry set by --set", file, []string{"stages.m.with.fields.y=bad"},
			"--set stages.m.with.fields.y=bad: option fields: y: cannot compile \"bad\"\n"},
		{"an entry of the file", "stages:\n  - name: m\n    use: spectest.fields\n    with:\n      fields: {a: good, b: bad}\n", []string{"stages.m.with.fields.y=good"},
			"p.yaml:5:15: option fields: b: cannot compile \"bad\"\n"},
		{"a whole stage", file, []string{"stages.m=1"},
			"--set stages.m=1: want stages.NAME.KEY=VALUE: a --set changes one value of one stage\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := spec.Parse("p.yaml", []byte(tt.yaml), spec.Options{Set: tt.sets})
			if got := specErrorText(t, err); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
