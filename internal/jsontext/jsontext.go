// Package jsontext scans and writes JSON text without encoding/json's
// reflection: for the stage families that read fields out of JSON object
// records and splice new ones in, and for the JSONL codec and the output
// writer, which check every record (Valid). It checks what it scans (a
// stage never emits part of a broken record) and knows nothing of stages,
// connectors or the runner.
//
// The scanner began as a copy of the one in package stages (lib_json.go),
// which the stages there still use until they move into families of their
// own.
package jsontext

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

// ErrNotObject is the error for a record that must be a JSON object and is
// some other JSON value.
var ErrNotObject = errors.New("record is not a JSON object")

// EachMember calls fn for each member of the JSON object rec, in order:
// key is the member's name between its quotes (escaped says it holds a
// backslash escape), member is its text from the key's opening quote to
// the end of its value, and value is the value's text. The whole record is
// checked to be well-formed JSON before fn is first called, so that a
// stage never emits part of a broken record.
func EachMember(rec []byte, fn func(key []byte, escaped bool, member, value []byte)) error {
	end, code := scanValue(rec, SkipSpace(rec, 0), 0)
	if code == 0 && SkipSpace(rec, end) != len(rec) {
		end, code = SkipSpace(rec, end), errAfter
	}
	if code != 0 {
		return code.at(rec, end)
	}
	i := SkipSpace(rec, 0)
	if rec[i] != '{' {
		return ErrNotObject
	}
	i = SkipSpace(rec, i+1)
	for rec[i] != '}' {
		keyStart := i
		keyEnd, _ := scanString(rec, i)
		key := rec[keyStart+1 : keyEnd-1]
		i = SkipSpace(rec, keyEnd)
		valStart := SkipSpace(rec, i+1) // past ':'
		valEnd, _ := scanValue(rec, valStart, 1)
		fn(key, bytes.IndexByte(key, '\\') >= 0, rec[keyStart:valEnd], rec[valStart:valEnd])
		i = SkipSpace(rec, valEnd)
		if rec[i] == ',' {
			i = SkipSpace(rec, i+1)
		}
	}
	return nil
}

// Valid says whether rec is one well-formed JSON value, with white space
// around it or not: what encoding/json.Valid says (FuzzValid holds them
// to it), about six times as fast, and without allocating when rec is
// not JSON (the output of a lines input written as JSONL is checked
// record by record, and fails every time).
func Valid(rec []byte) bool {
	end, code := scanValue(rec, SkipSpace(rec, 0), 0)
	return code == 0 && SkipSpace(rec, end) == len(rec)
}

func UnquoteKey(key []byte) (string, error) {
	var k string
	q := make([]byte, 0, len(key)+2)
	q = append(append(append(q, '"'), key...), '"')
	err := json.Unmarshal(q, &k)
	return k, err
}

// SyntaxError is a malformed JSON record, with the byte offset where
// the scanner gave up.
type SyntaxError struct {
	Off int
	Msg string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at offset %d: %s", e.Off, e.Msg)
}

// errCode is why a scan stopped, 0 when it did not: the scanner returns
// codes rather than errors so that Valid never builds a message. at makes
// the SyntaxError.
type errCode uint8

const (
	errEOF errCode = iota + 1
	errDepth
	errFieldName
	errColon
	errCommaBrace
	errCommaBracket
	errUnexpected
	errTrue
	errFalse
	errNull
	errShortU
	errBadU
	errBadEscape
	errControl
	errUnterminated
	errNumber
	errAfter
)

// at is the error of code at b[off].
func (code errCode) at(b []byte, off int) *SyntaxError {
	var msg string
	switch code {
	case errEOF:
		msg = "unexpected end of input"
	case errDepth:
		msg = "nested too deeply"
	case errFieldName:
		msg = "expected a field name"
	case errColon:
		msg = "expected ':' after a field name"
	case errCommaBrace:
		msg = "expected ',' or '}'"
	case errCommaBracket:
		msg = "expected ',' or ']'"
	case errUnexpected:
		msg = fmt.Sprintf("unexpected %q", b[off])
	case errTrue:
		msg = "invalid literal, expected true"
	case errFalse:
		msg = "invalid literal, expected false"
	case errNull:
		msg = "invalid literal, expected null"
	case errShortU:
		msg = "short \\u escape"
	case errBadU:
		msg = "bad \\u escape"
	case errBadEscape:
		msg = fmt.Sprintf("bad escape \\%c", b[off])
	case errControl:
		msg = "control character in string"
	case errUnterminated:
		msg = "unterminated string"
	case errNumber:
		msg = "invalid number"
	case errAfter:
		msg = "data after the value"
	}
	return &SyntaxError{Off: off, Msg: msg}
}

// scanMaxDepth bounds nesting, so a hostile record cannot exhaust the stack.
const scanMaxDepth = 10000

func SkipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// ScanValue checks the JSON value that starts at b[i] and returns the
// index just past it.
func ScanValue(b []byte, i, depth int) (int, error) {
	end, code := scanValue(b, i, depth)
	if code != 0 {
		return end, code.at(b, end)
	}
	return end, nil
}

// scanValue is ScanValue; on an error, the index is where it stopped.
func scanValue(b []byte, i, depth int) (int, errCode) {
	if i >= len(b) {
		return i, errEOF
	}
	switch c := b[i]; {
	case c == '"':
		return scanString(b, i)
	case c == '{' || c == '[':
		if depth >= scanMaxDepth {
			return i, errDepth
		}
		closer, errClose := byte('}'), errCommaBrace
		if c == '[' {
			closer, errClose = ']', errCommaBracket
		}
		i = SkipSpace(b, i+1)
		if i < len(b) && b[i] == closer {
			return i + 1, 0
		}
		for {
			var code errCode
			if c == '{' {
				if i >= len(b) || b[i] != '"' {
					return i, errFieldName
				}
				if i, code = scanString(b, i); code != 0 {
					return i, code
				}
				i = SkipSpace(b, i)
				if i >= len(b) || b[i] != ':' {
					return i, errColon
				}
				i = SkipSpace(b, i+1)
			}
			if i, code = scanValue(b, i, depth+1); code != 0 {
				return i, code
			}
			i = SkipSpace(b, i)
			switch {
			case i < len(b) && b[i] == ',':
				i = SkipSpace(b, i+1)
			case i < len(b) && b[i] == closer:
				return i + 1, 0
			default:
				return i, errClose
			}
		}
	case c == '-' || (c >= '0' && c <= '9'):
		return scanNumber(b, i)
	case c == 't':
		return scanLiteral(b, i, "true", errTrue)
	case c == 'f':
		return scanLiteral(b, i, "false", errFalse)
	case c == 'n':
		return scanLiteral(b, i, "null", errNull)
	}
	return i, errUnexpected
}

func scanLiteral(b []byte, i int, lit string, code errCode) (int, errCode) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, code
	}
	return i + len(lit), 0
}

func scanString(b []byte, i int) (int, errCode) {
	start := i
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, 0
		case c == '\\':
			i++
			if i >= len(b) {
				break
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(b) {
					return i, errShortU
				}
				for _, h := range b[i+1 : i+5] {
					if !('0' <= h && h <= '9' || 'a' <= h && h <= 'f' || 'A' <= h && h <= 'F') {
						return i, errBadU
					}
				}
				i += 4
			default:
				return i, errBadEscape
			}
		case c < 0x20:
			return i, errControl
		}
	}
	return start, errUnterminated
}

func scanNumber(b []byte, i int) (int, errCode) {
	start := i
	digits := func() bool {
		j := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > j
	}
	if b[i] == '-' {
		i++
	}
	if i < len(b) && b[i] == '0' {
		i++
	} else if !digits() {
		return start, errNumber
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return start, errNumber
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return start, errNumber
		}
	}
	return i, 0
}

// AppendValue appends v's JSON encoding to b. The common scalar types
// skip encoding/json's reflection; the rest go through it, without HTML
// escaping.
func AppendValue(b []byte, v any) ([]byte, error) {
	switch v := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case string:
		return AppendString(b, v), nil
	case bool:
		return strconv.AppendBool(b, v), nil
	case int:
		return strconv.AppendInt(b, int64(v), 10), nil
	case int64:
		return strconv.AppendInt(b, v, 10), nil
	case float64:
		return AppendFloat(b, v)
	case json.Number:
		return append(b, v...), nil // an integer beyond 64 bits, as it came
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return b, err
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...), nil
}

// AppendFloat formats f as encoding/json does.
func AppendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return b, fmt.Errorf("%v has no JSON form", f)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	n := len(b)
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9, as encoding/json does
		if m := len(b) - n; m >= 4 && b[len(b)-4] == 'e' && b[len(b)-3] == '-' && b[len(b)-2] == '0' {
			b[len(b)-2] = b[len(b)-1]
			b = b[:len(b)-1]
		}
	}
	return b, nil
}

// AppendString appends s as a JSON string, for stages
// that write JSON without encoding/json's reflection. Unlike encoding/json
// it leaves <, > and & alone: the output is data, not HTML. Invalid UTF-8
// becomes U+FFFD, as with encoding/json.
func AppendString[T string | []byte](b []byte, s T) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(string(s[i:min(i+utf8.UTFMax, len(s))]))
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			start = i + 1
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Decode decodes one well-formed JSON value as encoding/json
// does into an any, the common scalars without its reflection.
func Decode(v []byte) any {
	switch v[0] {
	case 't':
		return true
	case 'f':
		return false
	case 'n':
		return nil
	case '"':
		if s := v[1 : len(v)-1]; bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
			return string(s)
		}
	default:
		if f, err := strconv.ParseFloat(string(v), 64); err == nil {
			return f
		}
	}
	var x any
	json.Unmarshal(v, &x) // v is well-formed: EachMember checked it
	return x
}

// Text returns the content of the JSON string value v (quotes included),
// decoded; v must be well-formed, as EachMember checks. Without escapes it
// is a sub-slice of v.
func Text(v []byte) []byte {
	s := v[1 : len(v)-1]
	if bytes.IndexByte(s, '\\') < 0 {
		return s
	}
	var str string
	json.Unmarshal(v, &str) // well-formed: checked by the scan
	return []byte(str)
}

// Fields returns the values of the named top-level fields of the JSON
// object rec, in the order of names, each nil when rec lacks it (a later
// member of the same name wins, as in encoding/json). vals is reused.
func Fields(rec []byte, names []string, vals [][]byte) ([][]byte, error) {
	vals = vals[:0]
	for range names {
		vals = append(vals, nil)
	}
	err := EachMember(rec, func(key []byte, escaped bool, _, value []byte) {
		k := string(key) // no allocation: compared, not kept
		if escaped {
			u, err := UnquoteKey(key)
			if err != nil {
				return
			}
			k = u
		}
		for i, n := range names {
			if n == k {
				vals[i] = value
			}
		}
	})
	return vals, err
}
