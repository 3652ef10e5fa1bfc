package spec_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/flowrun/flowrun/spec"
)

// BenchmarkParse10kStages measures a pipeline far larger than any written
// by hand, to keep validation linear in the number of stages.
func BenchmarkParse10kStages(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("stages:\n")
	for i := range 10000 {
		fmt.Fprintf(&sb, "  - name: s%d\n    use: grep\n    workers: 2\n    with: {pattern: \"x%d\"}\n", i, i)
	}
	data := []byte(sb.String())
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := spec.Parse("many.yaml", data, spec.Options{}); err != nil {
			b.Fatal(err)
		}
	}
}
