package codec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/itchyny/gojq"
)

// jsonDocDecoder reads a whole JSON document (input format json) and
// yields the values select picks as records, compact. A path of object
// keys that may end in [] (.items[], .["3166-1"][]) is followed as the
// document streams by, one value in memory at a time, so a top-level
// array of any length is fine; any other jq path reads the whole document
// (up to max_record_size) and runs gojq on it.
type jsonDocDecoder struct {
	r       io.Reader
	dec     *json.Decoder
	steps   []string // object keys down to the value
	iter    bool     // the path ends in []: its elements are the records
	code    *gojq.Code
	results gojq.Iter // of code, once the document is read
	max     int
	state   int // docStart, docIter, docQuery, docDone
	obj     bool
	open    int // the objects descend entered, which finish closes
	n       int64
	buf     bytes.Buffer
	err     error // select does not compile (a Pipeline not made by spec)
}

const (
	docStart = iota
	docIter
	docQuery
	docDone
)

// streamPath matches the paths that stream: steps of .name or ["name"],
// then an optional [].
var (
	streamPath = regexp.MustCompile(`^\s*\.?((?:(?:\.?[A-Za-z_][A-Za-z0-9_]*)|(?:\.?\[\s*"(?:[^"\\]|\\.)*"\s*\]))*)\s*(\.?\[\s*\])?\s*$`)
	streamStep = regexp.MustCompile(`\.?([A-Za-z_][A-Za-z0-9_]*)|\.?\[\s*("(?:[^"\\]|\\.)*")\s*\]`)
)

func newJSONDocDecoder(r io.Reader, sel string, maxRecord int) *jsonDocDecoder {
	d := &jsonDocDecoder{r: r, max: maxRecord}
	if sel == "" {
		sel = "."
	}
	if m := streamPath.FindStringSubmatch(sel); m != nil && !strings.HasPrefix(strings.TrimSpace(sel), "..") {
		for _, s := range streamStep.FindAllStringSubmatch(m[1], -1) {
			key := s[1]
			if s[2] != "" {
				json.Unmarshal([]byte(s[2]), &key) // the regexp matched a JSON string
			}
			d.steps = append(d.steps, key)
		}
		d.iter = m[2] != ""
		d.dec = json.NewDecoder(r)
		d.dec.UseNumber()
		return d
	}
	q, err := gojq.Parse(sel) // spec checked it
	if err == nil {
		d.code, err = gojq.Compile(q)
	}
	if err != nil {
		d.err = fmt.Errorf("select: %w", err)
	}
	return d
}

func (d *jsonDocDecoder) Consumed() int64 {
	if d.dec == nil {
		return 0
	}
	return d.dec.InputOffset()
}

func (d *jsonDocDecoder) Next(max int, out []Record) ([]Record, error) {
	switch d.state {
	case docDone:
		return out, io.EOF
	case docQuery:
		return d.query(max, out)
	case docStart:
		d.state = docDone
		if d.err != nil {
			return out, d.err
		}
		if d.code != nil {
			d.state = docQuery
			return d.query(max, out)
		}
		if err := d.descend(); err != nil {
			if errors.Is(err, errMissing) {
				if d.iter {
					return out, fmt.Errorf("select: cannot iterate over null (the document has no %s)", pathText(d.steps))
				}
				return append(out, d.record([]byte("null"))), d.finish()
			}
			return out, err
		}
		if !d.iter {
			var raw json.RawMessage
			if err := d.dec.Decode(&raw); err != nil {
				return out, d.syntax(err)
			}
			return append(out, d.record(raw)), d.finish()
		}
		t, err := d.dec.Token()
		if err != nil {
			return out, d.syntax(err)
		}
		switch t {
		case json.Delim('['):
		case json.Delim('{'):
			d.obj = true
		default:
			return out, fmt.Errorf("select: cannot iterate over %s at %s", kindOf(t), pathText(d.steps))
		}
		d.state = docIter
	}
	for len(out) < max {
		if !d.dec.More() {
			if _, err := d.dec.Token(); err != nil { // the closing bracket
				return out, d.syntax(err)
			}
			d.state = docDone
			return out, d.finish()
		}
		if d.obj {
			if _, err := d.dec.Token(); err != nil {
				return out, d.syntax(err)
			}
		}
		var raw json.RawMessage
		if err := d.dec.Decode(&raw); err != nil {
			return out, d.syntax(err)
		}
		out = append(out, d.record(raw))
		if b, ok := d.dec.Buffered().(*bytes.Reader); ok && b.Len() == 0 {
			break // the next value would wait on a read: pass these on now
		}
	}
	return out, nil
}

var errMissing = errors.New("missing")

// finish reads the rest of the document past the selected values, so that
// a broken or doubled document is an error, and returns io.EOF when it is
// whole.
func (d *jsonDocDecoder) finish() error {
	for ; d.open > 0; d.open-- {
		for d.dec.More() {
			if _, err := d.dec.Token(); err != nil { // a key
				return d.syntax(err)
			}
			if err := d.skip(); err != nil {
				return err
			}
		}
		if _, err := d.dec.Token(); err != nil {
			return d.syntax(err)
		}
	}
	if _, err := d.dec.Token(); err != io.EOF {
		if err == nil {
			return fmt.Errorf("the JSON document at byte %d: data after the document (one document is read; for JSON lines use format jsonl)", d.dec.InputOffset())
		}
		return d.syntax(err)
	}
	return io.EOF
}

// descend walks the document to the value at steps.
func (d *jsonDocDecoder) descend() error {
	for i, key := range d.steps {
		t, err := d.dec.Token()
		if err != nil {
			return d.syntax(err)
		}
		if t == nil {
			return errMissing // .a of null is null, as in jq
		}
		if t != json.Delim('{') {
			return fmt.Errorf("select: cannot index %s with %q at %s", kindOf(t), key, pathText(d.steps[:i]))
		}
		d.open++
		found := false
		for d.dec.More() {
			kt, err := d.dec.Token()
			if err != nil {
				return d.syntax(err)
			}
			if kt == key {
				found = true
				break
			}
			if err := d.skip(); err != nil {
				return err
			}
		}
		if !found {
			return errMissing
		}
	}
	return nil
}

// skip passes over one value token by token, so that a large value beside
// the path is never held whole.
func (d *jsonDocDecoder) skip() error {
	depth := 0
	for {
		t, err := d.dec.Token()
		if err != nil {
			return d.syntax(err)
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

func (d *jsonDocDecoder) record(raw []byte) Record {
	d.n++
	d.buf.Reset()
	it := Record{Line: d.n}
	if err := json.Compact(&d.buf, raw); err != nil {
		it.Err = err
		return it
	}
	if d.buf.Len() > d.max {
		it.Data = bytes.Clone(d.buf.Bytes()[:min(d.buf.Len(), 256)])
		it.Truncated = true
		it.Err = fmt.Errorf("value %d: longer than max_record_size (%d bytes)", d.n, d.max)
		return it
	}
	it.Data = bytes.Clone(d.buf.Bytes())
	return it
}

// query reads the whole document and runs select on it with gojq; its
// results are taken max at a time, as the streaming path's, so that a
// select that makes many (.[] | range(1e8)) holds few at once.
func (d *jsonDocDecoder) query(max int, out []Record) ([]Record, error) {
	if d.results == nil {
		data, err := io.ReadAll(io.LimitReader(d.r, int64(d.max)+1))
		if err != nil {
			return out, err
		}
		if len(data) > d.max {
			return out, fmt.Errorf("the JSON document is longer than max_record_size (%d bytes), which a select that does not stream (not a path like .items[]) must read whole", d.max)
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var doc any
		if err := dec.Decode(&doc); err != nil {
			return out, fmt.Errorf("the JSON document: %w", err)
		}
		// gojq takes json.Numbers as they are: integers past 2^53 stay
		// exact and 1.50 comes out as 1.50, as on the streaming path (and
		// in jq 1.7).
		d.results = d.code.Run(doc)
	}
	for len(out) < max {
		v, ok := d.results.Next()
		if !ok {
			d.state = docDone
			return out, io.EOF
		}
		if err, ok := v.(error); ok {
			d.state = docDone
			return out, fmt.Errorf("select: %w", err)
		}
		b, err := gojq.Marshal(v)
		if err != nil {
			d.state = docDone
			return out, fmt.Errorf("select: %w", err)
		}
		out = append(out, d.record(b))
	}
	return out, nil
}

func (d *jsonDocDecoder) syntax(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("the JSON document at byte %d: %w", d.dec.InputOffset(), err)
}

func kindOf(t json.Token) string {
	switch t.(type) {
	case json.Delim:
		if t == json.Delim('[') {
			return "an array"
		}
		return "an object"
	case string:
		return "a string"
	case json.Number, float64:
		return "a number"
	case bool:
		return "a boolean"
	}
	return "null"
}

func pathText(steps []string) string {
	if len(steps) == 0 {
		return "."
	}
	var b strings.Builder
	for _, s := range steps {
		k, _ := json.Marshal(s)
		fmt.Fprintf(&b, "[%s]", k)
	}
	return "." + b.String()
}
