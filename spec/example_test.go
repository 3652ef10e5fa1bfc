package spec_test

import (
	"fmt"

	"github.com/flowrun/flowrun/spec"
)

func ExampleParse() {
	yaml := []byte(`
stages:
  - use: uper
    worker: 4
`)
	_, err := spec.Parse("shout.yaml", yaml, spec.Options{})
	fmt.Println(err)
	// Output:
	// shout.yaml:3:10: unknown stage "uper" (did you mean "upper"?)
	// shout.yaml:4:5: unknown key "worker" in a stage (did you mean "workers"?)
}

func ExampleParse_set() {
	yaml := []byte("stages: [{name: shout, use: upper}]\n")
	p, err := spec.Parse("shout.yaml", yaml, spec.Options{Set: []string{"stages.shout.workers=4"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(spec.Mermaid(p))
	// Output:
	// flowchart LR
	//     in[/"stdin (lines)"/]
	//     s1["shout (upper) x4 workers, buffer 256, remote"]
	//     out[/"stdout (lines)"/]
	//     in --> s1
	//     s1 --> out
}
