// Package cli is flowrun's command line: it parses flags, loads a pipeline
// with spec, runs it with runner and maps the outcome to an exit code. It
// is a package, not just main, so that a Go program which registers its
// own stages can run the very same CLI:
//
//	func main() {
//		stages.Register(myStage)
//		os.Exit(cli.Main())
//	}
//
// One file per command; each only wires flags and calls a function that
// does the work and returns an error.
package cli
