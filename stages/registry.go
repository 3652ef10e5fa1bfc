package stages

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flowrun/flowrun/internal/size"
)

// Type is the type of a stage option's value.
type Type int

// The option types a stage may declare. The spec package decodes YAML into
// them; `flowrun stages` prints their names.
const (
	String    Type = iota // a string; Enum limits it
	Int                   // a whole number
	Float                 // a number
	Bool                  // true or false
	Duration              // a Go duration: 250ms, 10s, 1m30s
	Strings               // a list of strings (a scalar is a list of one)
	StringMap             // a map of string to string
	Size                  // a number of bytes: 65536, 64KiB, 16MiB, 1GiB (or KB, MB, GB); an int
)

var typeNames = [...]string{"string", "int", "float", "bool", "duration", "[string]", "{string: string}", "size"}

func (t Type) String() string { return typeNames[t] }

// Parse converts a scalar's text to a value of type t: string, int,
// float64, bool, time.Duration or []string (a list of one). A StringMap has
// no scalar form.
func (t Type) Parse(s string) (any, error) {
	switch t {
	case String:
		return s, nil
	case Int:
		n, err := strconv.Atoi(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", s)
		}
		return n, nil
	case Float:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return f, nil
	case Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", s)
		}
		return b, nil
	case Duration:
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not a duration (like 250ms, 10s, 1m30s)", s)
		}
		if d < 0 {
			return nil, fmt.Errorf("duration %q is negative", s)
		}
		return d, nil
	case Strings:
		return []string{s}, nil
	case Size:
		return ParseSize(s)
	}
	return nil, fmt.Errorf("a %s has no scalar form", t)
}

// ParseSize reads a size in bytes: "4096", "64KiB", "16MiB", "1GiB" (or
// the decimal KB, MB, GB), with an optional space before the unit. It is
// how a Size option and the pipeline's own sizes (max_record_size) read,
// and the file connector's (internal/size has the one parser).
func ParseSize(s string) (int, error) { return size.Parse(s) }

// Option describes one key of a stage's `with:` block.
type Option struct {
	Name     string
	Type     Type
	Default  any // of the Go type Type.Parse returns; nil: no default
	Required bool
	Enum     []string // for a String: the values allowed
	Doc      string   // one sentence
}

// Spec describes a stage: its name, its options and how to make it. The
// one Spec drives validation of a pipeline, `flowrun stages` and the
// README's stage table.
type Spec struct {
	Name    string
	Doc     string // what the stage does, in a sentence or two
	Options []Option

	// Batch says Process is a cheap in-memory transform that never blocks:
	// the runner may then hand the stage's workers many records at a time.
	// A stage that waits (on I/O, a process, a clock) leaves it false, so
	// that every idle worker can take the next record (fair dispatch).
	Batch bool

	// BatchIf, when set, decides Batch for one configuration: hash with
	// a thousand rounds is no longer cheap, and its workers should take
	// records one at a time.
	BatchIf func(Config) bool

	// MaxWorkers, when positive, caps the stage's workers: a stage that must
	// see every record (count, dedupe, take) says 1.
	MaxWorkers int

	// Local says the stage holds records across calls or must see every
	// record (batch, count, dedupe, take, aggregate, sort): with --broker
	// it runs in the run process, never on a worker elsewhere. LocalIf,
	// when set, decides it for one configuration (sample with a seed).
	// A stage with MaxWorkers 1 is local whatever these say.
	Local   bool
	LocalIf func(Config) bool

	// DefaultTimeout is the stage's timeout per record when the pipeline
	// sets none: a plugin that stops answering is then reported as
	// stalled instead of hanging the run without a word.
	DefaultTimeout time.Duration

	// Check, when set, validates a Config without side effects (it compiles
	// a regexp or a query); spec calls it before anything runs. An error
	// naming an option should be an *OptionError.
	Check func(Config) error

	// New makes the Stage for one worker. It may start resources (a
	// process, a WASM instance) that the Stage releases in Close if it
	// implements io.Closer.
	New func(Config) (Stage, error)
}

// Option returns the option called name.
func (s *Spec) Option(name string) (Option, bool) {
	for _, o := range s.Options {
		if o.Name == name {
			return o, true
		}
	}
	return Option{}, false
}

// OptionError is an error about one option of a stage's configuration; the
// spec package reports it at that option's line and column.
type OptionError struct {
	Option string
	Err    error
}

func (e *OptionError) Error() string { return fmt.Sprintf("option %s: %v", e.Option, e.Err) }
func (e *OptionError) Unwrap() error { return e.Err }

// OptionErrorf returns an *OptionError for option name.
func OptionErrorf(name, format string, args ...any) error {
	return &OptionError{Option: name, Err: fmt.Errorf(format, args...)}
}

var registry = struct {
	sync.RWMutex
	specs map[string]Spec
}{specs: map[string]Spec{}}

// Register adds a stage to the registry. Built-in stages register in init;
// a Go program embedding flowrun registers its own before running the CLI.
// Register panics if the name is taken or the Spec is malformed: both are
// programming errors, not user errors.
func Register(s Spec) {
	if s.Name == "" || s.New == nil {
		panic("stages: Register needs a Name and a New")
	}
	seen := map[string]bool{}
	for _, o := range s.Options {
		if seen[o.Name] {
			panic("stages: " + s.Name + ": option " + o.Name + " declared twice")
		}
		seen[o.Name] = true
		if o.Default != nil {
			if err := checkValue(o, o.Default); err != nil {
				panic("stages: " + s.Name + ": default of " + o.Name + ": " + err.Error())
			}
		}
	}
	registry.Lock()
	defer registry.Unlock()
	if _, dup := registry.specs[s.Name]; dup {
		panic("stages: Register called twice for " + s.Name)
	}
	registry.specs[s.Name] = s
}

// Lookup returns the Spec of the stage called name.
func Lookup(name string) (Spec, bool) {
	registry.RLock()
	defer registry.RUnlock()
	s, ok := registry.specs[name]
	return s, ok
}

// All returns every registered stage, sorted by name.
func All() []Spec {
	registry.RLock()
	defer registry.RUnlock()
	all := make([]Spec, 0, len(registry.specs))
	for _, s := range registry.specs {
		all = append(all, s)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Name < all[j].Name })
	return all
}

// Names returns the names of every registered stage, sorted.
func Names() []string {
	all := All()
	names := make([]string, len(all))
	for i, s := range all {
		names[i] = s.Name
	}
	return names
}

// checkValue reports whether v has the Go type that o's Type promises.
func checkValue(o Option, v any) error {
	ok := false
	switch o.Type {
	case String:
		var s string
		s, ok = v.(string)
		if ok && len(o.Enum) > 0 && !contains(o.Enum, s) {
			return fmt.Errorf("%q is not one of %s", s, strings.Join(o.Enum, ", "))
		}
	case Int, Size:
		_, ok = v.(int)
	case Float:
		_, ok = v.(float64)
	case Bool:
		_, ok = v.(bool)
	case Duration:
		_, ok = v.(time.Duration)
	case Strings:
		_, ok = v.([]string)
	case StringMap:
		_, ok = v.(map[string]string)
	}
	if !ok {
		return fmt.Errorf("%v (%T) is not a %s", v, v, o.Type)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Batched says whether the runner may hand the stage's workers records in
// batches, for the configuration c (see Spec.Batch and Spec.BatchIf).
func (s *Spec) Batched(c Config) bool {
	if s.BatchIf != nil {
		return s.BatchIf(c)
	}
	return s.Batch
}

// IsLocal says whether the stage must run in the run process, for the
// configuration c (see Spec.Local): otherwise --broker may run it on
// workers anywhere.
func (s *Spec) IsLocal(c Config) bool {
	return s.Local || s.MaxWorkers == 1 || s.LocalIf != nil && s.LocalIf(c)
}
