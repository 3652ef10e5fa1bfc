package stages_test

import (
	"context"
	"fmt"

	"github.com/flowrun/flowrun/stages"
)

// Example_split runs a registered stage the way the runner does: look up
// its Spec, check the options of a pipeline's `with:` block, make one
// worker's Stage and hand it records.
func Example_split() {
	spec, _ := stages.Lookup("split")
	c, err := stages.NewConfig(spec, "words", ".", map[string]any{"sep": " "})
	if err != nil {
		fmt.Println(err)
		return
	}
	st, err := spec.New(c)
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := st.Process(context.Background(), []byte("to be  or not"), nil)
	for _, rec := range out {
		fmt.Printf("%q\n", rec)
	}
	fmt.Println(err)
	// Output:
	// "to"
	// "be"
	// "or"
	// "not"
	// <nil>
}

// Example_count shows a Flusher: count emits nothing per record and its
// total when its input ends.
func Example_count() {
	spec, _ := stages.Lookup("count")
	c, _ := stages.NewConfig(spec, "count", ".", nil)
	st, _ := spec.New(c)
	ctx := context.Background()
	var out [][]byte
	for _, rec := range []string{"a", "b", "c"} {
		out, _ = st.Process(ctx, []byte(rec), out[:0])
		fmt.Println("after", rec, "records out:", len(out))
	}
	out, _ = st.(stages.Flusher).Flush(ctx, out[:0])
	fmt.Printf("at the end: %s\n", out[0])
	// Output:
	// after a records out: 0
	// after b records out: 0
	// after c records out: 0
	// at the end: 3
}

// Example_optionError shows a mistake in a pipeline's options: the
// *OptionError names the option, so the spec package can point at its line.
func Example_optionError() {
	spec, _ := stages.Lookup("truncate")
	c, err := stages.NewConfig(spec, "short", ".", map[string]any{"max": 2, "ellipsis": "..."})
	if err == nil {
		err = spec.Check(c)
	}
	fmt.Println(err)
	// Output:
	// option ellipsis: "..." is 3 bytes, longer than max (2)
}
