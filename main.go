// Command flowrun runs dataflow pipelines declared in YAML. See README.md.
package main

import (
	"os"

	"github.com/flowrun/flowrun/cli"
)

func main() {
	os.Exit(cli.Main())
}
