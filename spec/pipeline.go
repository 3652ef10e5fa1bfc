package spec

import (
	"fmt"
	"time"

	"github.com/flowrun/flowrun/connect"
	"github.com/flowrun/flowrun/connect/file"
	"github.com/flowrun/flowrun/stages"
)

// Defaults for what a pipeline leaves out.
const (
	DefaultWorkers       = 1
	DefaultBuffer        = 256     // records per stage input queue
	DefaultMaxRecordSize = 1 << 30 // 1 GiB: a line longer than this is an error, not an out-of-memory
	DefaultFormat        = "lines"
	MaxWorkers           = 4096 // per stage: a typo of 100000000 must not exhaust memory
)

// Formats an input may have, those of the file connector's registry spec
// (connect/file, which `flowrun connectors` documents): json is a whole
// JSON document (see Input.Select).
var Formats = formats(connect.In)

// OutputFormats an output may have.
var OutputFormats = formats(connect.Out)

// formats are the file connector's formats for direction d: its format
// option's values, less those its check refuses that way.
func formats(d connect.Direction) []string {
	sp, _ := connect.Lookup(file.Scheme)
	o, _ := sp.Option("format")
	var list []string
	for _, f := range o.Enum {
		if _, err := connect.Parse("file:///dev/null?format="+f, nil, d); err == nil {
			list = append(list, f)
		}
	}
	return list
}

// Pipeline is a validated pipeline definition.
type Pipeline struct {
	Name    string
	File    string // the YAML file it came from, as given
	Dir     string // that file's directory: relative paths resolve against it
	Input   Input
	Output  Output
	Ordered bool
	// ReorderWindow bounds, in records handed out by the input, how far
	// the output may run ahead of the oldest unfinished record when
	// Ordered is set. 0 lets the runner choose from the buffers.
	ReorderWindow int
	// DeadLetter is the JSONL file that records go to when their stage's
	// on_error is dead-letter; "" when no stage needs one.
	DeadLetter    string
	DeadLetterPos Pos // where dead_letter: says so; zero when not in the file
	Stages        []Stage
}

// Input says where records come from.
type Input struct {
	From          string // "stdin", a path or a glob
	Format        string // lines | jsonl | csv | tsv | json
	MaxRecordSize int    // bytes; a longer record is an input error
	CSV           Table  // the csv or tsv dialect (input.csv)
	Select        string // for json: the jq path of the values that are the records; "" is "."
	OnError       OnError
	Pos           Pos // where from: is; zero when the file has none
	// With are the options of a broker input's connector (input.with),
	// checked against its registry spec; they override from:'s query.
	// WithPos says where each key is.
	With    map[string]string
	WithPos map[string]Pos
}

// Output says where records go.
type Output struct {
	To     string // "stdout" or a path
	Format string // lines | jsonl | csv | tsv
	CSV    Table  // the csv or tsv dialect (output.csv)
	Pos    Pos    // where to: is; zero when the file has none
	// With are the options of a broker output's connector (output.with),
	// like Input.With.
	With    map[string]string
	WithPos map[string]Pos
}

// Stage is one stage of a pipeline, its options checked against its Spec.
type Stage struct {
	Name    string // unique within the pipeline; defaults to Use
	Use     string // the registered stage
	Workers int
	Buffer  int           // capacity of the stage's input queue, in records
	Timeout time.Duration // per attempt on a record; 0: none
	Retry   Retry
	OnError OnError
	Spec    stages.Spec
	Config  stages.Config
	Pos     Pos // where the stage is declared
	// OptionPos says where each option given in with: is, for errors
	// found only when the stage is made (a plugin that is not there).
	OptionPos map[string]Pos
}

// Retry is a stage's retry policy. Attempts counts the first try: 1 (the
// default) means no retry. The wait before attempt n+1 is Backoff × 2^(n-1)
// with full jitter, at most MaxBackoff.
type Retry struct {
	Attempts   int
	Backoff    time.Duration
	MaxBackoff time.Duration
}

// OnError is what happens to a record whose attempts are exhausted.
type OnError string

// The on_error policies.
const (
	Fail       OnError = "fail"        // the run fails (exit 1)
	Skip       OnError = "skip"        // the record is dropped and counted
	DeadLetter OnError = "dead-letter" // the record goes to the dead-letter file
)

// Pos is a place in a file.
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string {
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}
