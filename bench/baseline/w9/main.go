// Command w9 is the hand-written baseline for workload W9: count the JSON
// lines by their name field, groups in order of first appearance, as a
// good engineer would write it with the standard library: a Scanner,
// encoding/json into a typed struct, a map and a slice for the order.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "w9:", err)
		os.Exit(1)
	}
}

func run() error {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<30)
	counts := map[string]int{}
	var order []string
	for in.Scan() {
		var r struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(in.Bytes(), &r); err != nil {
			return err
		}
		if _, ok := counts[r.Name]; !ok {
			order = append(order, r.Name)
		}
		counts[r.Name]++
	}
	if err := in.Err(); err != nil {
		return err
	}
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	for _, k := range order {
		name, _ := json.Marshal(k)
		fmt.Fprintf(out, "{\"name\":%s,\"count\":%d}\n", name, counts[k])
	}
	return out.Flush()
}
