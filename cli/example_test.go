package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"

	"github.com/flowrun/flowrun/cli"
	"github.com/flowrun/flowrun/stages"
)

// reverse is a stage of a program's own: it reverses the bytes of each
// record.
func reverse(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	for i, j := 0, len(rec)-1; i < j; i, j = i+1, j-1 {
		rec[i], rec[j] = rec[j], rec[i]
	}
	return append(out, rec), nil
}

// A Go program registers its own stage and runs the flowrun CLI, which
// then knows the stage like a built-in: in pipelines, in `flowrun stages`
// and in validation. A real program's main would be:
//
//	func main() {
//		stages.Register(stages.Spec{Name: "reverse", ...})
//		os.Exit(cli.Main())
//	}
func Example_register() {
	stages.Register(stages.Spec{
		Name:  "example.reverse",
		Doc:   "Reverses the bytes of each record.",
		Batch: true, // cheap and in memory: the runner may batch records
		New:   func(stages.Config) (stages.Stage, error) { return stages.Func(reverse), nil },
	})

	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	pipeline := filepath.Join(dir, "p.yaml")
	os.WriteFile(pipeline, []byte("stages: [{use: example.reverse}, {use: upper}]\n"), 0o644)

	code := cli.Run(context.Background(), []string{"flowrun", "run", "-q", pipeline},
		strings.NewReader("flowrun\nlibrary\n"), os.Stdout, os.Stderr)
	os.Stdout.WriteString("exit " + string(rune('0'+code)) + "\n")
	// Output:
	// NURWOLF
	// YRARBIL
	// exit 0
}
