package connect

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flowrun/flowrun/internal/hint"
	"github.com/flowrun/flowrun/internal/size"
)

// Type is the type of a connector option's value.
type Type int

// The option types a connector may declare.
const (
	String   Type = iota // Enum limits it
	Int                  // a whole number ≥ 0
	Bool                 // true or false
	Duration             // a Go duration: 250ms, 10s
	Size                 // bytes: 65536, 64KiB, 16MiB
)

var typeNames = [...]string{"string", "int", "bool", "duration", "size"}

func (t Type) String() string { return typeNames[t] }

// Direction says which way a connector is used.
type Direction int

// The directions, and Both for an option that serves either.
const (
	In   Direction = 1 << iota // input: a Source
	Out                        // output: a Sink
	Both = In | Out
)

func (d Direction) String() string {
	switch d {
	case In:
		return "input"
	case Out:
		return "output"
	}
	return "input, output"
}

// Option describes one option of a connector, given in the URL's query
// (?queue=jobs) or in the pipeline's input.with / output.with.
type Option struct {
	Name    string
	Type    Type
	Default string    // as written in a URL; "" for none
	Enum    []string  // for a String: the values allowed
	Use     Direction // where it applies
	Doc     string    // one sentence
}

// Spec is a connector: its URL schemes, its options, and how to open it.
// The one Spec drives validation, `flowrun connectors` and the README.
type Spec struct {
	Name    string   // "rabbitmq"
	Schemes []string // URL schemes that pick it: "amqp", "amqps"
	URL     string   // the URL's form, for the docs
	Doc     string   // one or two sentences: what it reads and writes, and its guarantee
	Options []Option
	// Check validates options that depend on each other (a list or a
	// stream, not both), without connecting. May be nil.
	Check func(p *Params, d Direction) error
	// Source and Sink open the connector; nil when it cannot be used
	// that way. They return an *Error when the broker cannot be reached
	// or refuses, within a few seconds.
	Source func(ctx context.Context, p *Params) (Source, error)
	Sink   func(ctx context.Context, p *Params) (Sink, error)
}

// Option returns the option named name.
func (s *Spec) Option(name string) (Option, bool) {
	for _, o := range s.Options {
		if o.Name == name {
			return o, true
		}
	}
	return Option{}, false
}

var registry = struct {
	sync.RWMutex
	byScheme map[string]*Spec
	all      []*Spec
}{byScheme: map[string]*Spec{}}

// Register adds a connector. It panics on a duplicate scheme or a spec
// that contradicts itself: both are programming errors found at start.
func Register(s Spec) {
	registry.Lock()
	defer registry.Unlock()
	if s.Name == "" || len(s.Schemes) == 0 {
		panic("connect: a connector needs a name and a scheme")
	}
	for _, o := range s.Options {
		if o.Use == 0 {
			panic(fmt.Sprintf("connect: %s option %q has no direction", s.Name, o.Name))
		}
		if o.Default != "" {
			if _, err := parseValue(o, o.Default); err != nil {
				panic(fmt.Sprintf("connect: %s option %q: default %v", s.Name, o.Name, err))
			}
		}
	}
	sp := &s
	for _, sc := range s.Schemes {
		if _, dup := registry.byScheme[sc]; dup {
			panic(fmt.Sprintf("connect: scheme %q registered twice", sc))
		}
		registry.byScheme[sc] = sp
	}
	registry.all = append(registry.all, sp)
	sort.Slice(registry.all, func(i, j int) bool { return registry.all[i].Name < registry.all[j].Name })
}

// All returns every registered connector, by name.
func All() []*Spec {
	registry.RLock()
	defer registry.RUnlock()
	return append([]*Spec(nil), registry.all...)
}

// Scheme returns what precedes "://" in s, or "" when s is not a URL
// (a path, a glob, "-").
func Scheme(s string) string {
	i := strings.Index(s, "://")
	if i <= 0 {
		return ""
	}
	for _, c := range s[:i] {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return ""
		}
	}
	return strings.ToLower(s[:i])
}

// Lookup returns the connector for a URL's scheme.
func Lookup(scheme string) (*Spec, bool) {
	registry.RLock()
	defer registry.RUnlock()
	s, ok := registry.byScheme[scheme]
	return s, ok
}

// OptionError is a bad connector option or URL. Option is "" when the
// URL itself is wrong.
type OptionError struct {
	Connector string
	Option    string
	Reason    string
}

func (e *OptionError) Error() string {
	if e.Option == "" {
		return fmt.Sprintf("%s: %s", e.Connector, e.Reason)
	}
	return fmt.Sprintf("%s option %q: %s", e.Connector, e.Option, e.Reason)
}

// Params are a connector's options for one use, checked against its spec.
type Params struct {
	Spec      *Spec
	Direction Direction
	// URL is the address with the options taken out of its query.
	URL *url.URL
	// Workers is the total of the pipeline's stage workers, from which
	// a source's default prefetch comes (DefaultPrefetch).
	Workers int
	values  map[string]string
}

// MinPrefetch is the least default prefetch of a broker source.
const MinPrefetch = 256

// DefaultPrefetch is a broker source's prefetch when its URL gives none,
// for a pipeline whose stages have workers workers in total: the
// unacked messages it may hold. It is at least MinPrefetch, since a
// message is acked only once its result is confirmed (a broker's fsync
// away): a prefetch of the workers alone leaves them idle for every
// confirm, and a durable broker does a few thousand messages a second
// that way instead of tens of thousands. Several consumers still share a
// queue, each holding at most its prefetch; for slow records (seconds
// each) that should be dealt out one by one, give prefetch = the workers.
func DefaultPrefetch(workers int) int {
	return max(workers, MinPrefetch)
}

// Prefetch is the source's prefetch option, or DefaultPrefetch of the
// pipeline's workers.
func (p *Params) Prefetch() int {
	if n := p.Int("prefetch"); n > 0 {
		return n
	}
	return DefaultPrefetch(p.Workers)
}

// Parse checks raw (a connector URL, or a path, a glob or - for the file
// connector) and with (the pipeline's input.with
// or output.with, which override the query) against the connector's spec
// for use in direction d. Nothing is connected.
func Parse(raw string, with map[string]string, d Direction) (*Params, error) {
	scheme := Scheme(raw)
	plain := scheme == ""
	if plain {
		scheme = "file" // a path, a glob or -: the file connector's
	}
	s, ok := Lookup(scheme)
	if !ok {
		return nil, &OptionError{Connector: scheme, Reason: fmt.Sprintf("no connector for %q URLs; `flowrun connectors` lists them", scheme+"://")}
	}
	u := &url.URL{Path: raw} // as written: a glob's ? is no query, a % no escape
	if !plain {
		var err error
		if u, err = url.Parse(raw); err != nil {
			return nil, &OptionError{Connector: s.Name, Reason: "bad URL: " + strings.TrimPrefix(err.Error(), "parse ")}
		}
	}
	if d == In && s.Source == nil || d == Out && s.Sink == nil {
		return nil, &OptionError{Connector: s.Name, Reason: "cannot be used as " + d.String()}
	}
	p := &Params{Spec: s, Direction: d, Workers: 1, values: map[string]string{}}
	q := u.Query()
	for k, vs := range q {
		p.values[k] = vs[len(vs)-1]
	}
	for k, v := range with {
		p.values[k] = v
	}
	for k, v := range p.values {
		o, ok := s.Option(k)
		if !ok {
			names := make([]string, len(s.Options))
			for i, o := range s.Options {
				names[i] = o.Name
			}
			return nil, &OptionError{Connector: s.Name, Option: k, Reason: "no such option" + Hint(k, names)}
		}
		if o.Use&d == 0 {
			return nil, &OptionError{Connector: s.Name, Option: k, Reason: "applies to " + o.Use.String() + " only"}
		}
		if _, err := parseValue(o, v); err != nil {
			return nil, &OptionError{Connector: s.Name, Option: k, Reason: err.Error()}
		}
	}
	u.RawQuery = ""
	p.URL = u
	if s.Check != nil {
		if err := s.Check(p, d); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Check says what is wrong with v as the option's value, or nil.
func (o Option) Check(v string) error {
	_, err := parseValue(o, v)
	return err
}

func parseValue(o Option, v string) (any, error) {
	switch o.Type {
	case Int:
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not a whole number ≥ 0", v)
		}
		return n, nil
	case Bool:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", v)
		}
		return b, nil
	case Size:
		n, err := size.Parse(v)
		if err != nil {
			return nil, err
		}
		return n, nil
	case Duration:
		dur, err := time.ParseDuration(v)
		if err != nil || dur < 0 {
			return nil, fmt.Errorf("%q is not a duration (like 250ms, 10s)", v)
		}
		return dur, nil
	}
	if len(o.Enum) > 0 {
		for _, e := range o.Enum {
			if v == e {
				return v, nil
			}
		}
		return nil, fmt.Errorf("%q is not one of %s", v, strings.Join(o.Enum, ", "))
	}
	return v, nil
}

// Has reports whether the option was given.
func (p *Params) Has(name string) bool { _, ok := p.values[name]; return ok }

func (p *Params) value(name string) any {
	o, ok := p.Spec.Option(name)
	if !ok {
		panic(fmt.Sprintf("connect: %s has no option %q", p.Spec.Name, name))
	}
	v, given := p.values[name]
	if !given {
		v = o.Default
	}
	if v == "" && o.Type != String {
		return nil
	}
	x, _ := parseValue(o, v) // checked by Parse
	return x
}

// String returns a string option, or its default.
func (p *Params) String(name string) string {
	if x, ok := p.value(name).(string); ok {
		return x
	}
	return ""
}

// Int returns an int or size option, or its default (0 when it has none).
func (p *Params) Int(name string) int {
	x, _ := p.value(name).(int)
	return x
}

// Bool returns a bool option, or its default.
func (p *Params) Bool(name string) bool {
	x, _ := p.value(name).(bool)
	return x
}

// Duration returns a duration option, or its default.
func (p *Params) Duration(name string) time.Duration {
	x, _ := p.value(name).(time.Duration)
	return x
}

// Broker names the place for messages: the connector and its URL with
// any password masked and without the query.
func (p *Params) Broker() string {
	return p.Spec.Name + " " + Redact(p.URL)
}

// Redact returns u as text with its password masked.
func Redact(u *url.URL) string {
	c := *u
	c.RawQuery = ""
	return c.Redacted()
}

// Hint returns ` (did you mean "x"?)` for the candidate closest to s, or ""
// when none is close enough to be a likely typo.
func Hint(s string, candidates []string) string { return hint.DidYouMean(s, candidates) }

// Open opens raw for input: Parse, then the connector's Source.
func OpenSource(ctx context.Context, raw string, with map[string]string, workers int) (Source, *Params, error) {
	p, err := Parse(raw, with, In)
	if err != nil {
		return nil, nil, err
	}
	p.Workers = max(workers, 1)
	s, err := p.Spec.Source(ctx, p)
	return s, p, err
}

// OpenSink opens raw for output: Parse, then the connector's Sink.
func OpenSink(ctx context.Context, raw string, with map[string]string) (Sink, *Params, error) {
	p, err := Parse(raw, with, Out)
	if err != nil {
		return nil, nil, err
	}
	s, err := p.Spec.Sink(ctx, p)
	return s, p, err
}
