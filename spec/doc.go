// Package spec turns a pipeline's YAML into a typed, validated Pipeline.
//
// Every problem found is reported as file:line:col: message, all of them at
// once, before anything runs. spec reads the file and nothing else: it
// starts no goroutines and no processes. It asks the stages registry for
// stage names and their options, so that one declaration of an option
// drives validation, documentation and the stage itself.
package spec
