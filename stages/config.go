package stages

import (
	"fmt"
	"io"
	"time"
)

// Config is the validated `with:` block of one stage in a pipeline: every
// declared option has its value, or its default, of the option's Go type.
// The getters panic on an undeclared name or a wrong type, which is a bug
// in the stage, never a user mistake: the spec package has checked the
// values against the stage's Spec.
type Config struct {
	Stage string // the stage's name in the pipeline, for messages
	Dir   string // the pipeline file's directory; relative paths in options resolve against it
	// Timeout is the stage's limit per record (0: none). The runner applies
	// it to Process through ctx; a BatchStage applies it to each record.
	Timeout time.Duration
	// TimeoutSet says the pipeline set Timeout itself rather than leave
	// the stage's DefaultTimeout.
	TimeoutSet bool
	// Log is where a stage shows what is neither a record nor an error,
	// such as a plugin's own log lines, one whole line per Write; nil:
	// os.Stderr. It must be safe for concurrent use.
	Log    io.Writer
	values map[string]any
	set    map[string]bool
}

// NewConfig checks values against spec, fills in defaults and reports the
// first problem as an *OptionError. stage and dir fill Config's fields.
func NewConfig(spec Spec, stage, dir string, values map[string]any) (Config, error) {
	c := Config{Stage: stage, Dir: dir, values: map[string]any{}, set: map[string]bool{}}
	for name := range values {
		if _, ok := spec.Option(name); !ok {
			return c, &OptionError{Option: name, Err: fmt.Errorf("%s has no option %q", spec.Name, name)}
		}
	}
	for _, o := range spec.Options {
		v, ok := values[o.Name]
		switch {
		case ok:
			if err := checkValue(o, v); err != nil {
				return c, &OptionError{Option: o.Name, Err: err}
			}
			c.values[o.Name] = v
			c.set[o.Name] = true
		case o.Required:
			return c, &OptionError{Option: o.Name, Err: fmt.Errorf("%s needs option %s (%s)", spec.Name, o.Name, o.Doc)}
		case o.Default != nil:
			c.values[o.Name] = o.Default
		}
	}
	return c, nil
}

// Has reports whether the pipeline set option name (rather than leaving it
// to its default).
func (c Config) Has(name string) bool { return c.set[name] }

func get[T any](c Config, name string) T {
	v, ok := c.values[name]
	if !ok {
		var zero T
		return zero
	}
	t, ok := v.(T)
	if !ok {
		panic(fmt.Sprintf("stages: option %s is %T, not %T", name, v, t))
	}
	return t
}

// String returns a String option ("" when unset with no default).
func (c Config) String(name string) string { return get[string](c, name) }

// Int returns an Int option.
func (c Config) Int(name string) int { return get[int](c, name) }

// Float returns a Float option.
func (c Config) Float(name string) float64 { return get[float64](c, name) }

// Bool returns a Bool option.
func (c Config) Bool(name string) bool { return get[bool](c, name) }

// Duration returns a Duration option.
func (c Config) Duration(name string) time.Duration { return get[time.Duration](c, name) }

// Strings returns a Strings option.
func (c Config) Strings(name string) []string { return get[[]string](c, name) }

// Map returns a StringMap option.
func (c Config) Map(name string) map[string]string { return get[map[string]string](c, name) }
