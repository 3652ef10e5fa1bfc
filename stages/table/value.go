package table

import (
	"bytes"
	"math"
	"strconv"

	"github.com/flowrun/flowrun/stages/internal/jsontext"
)

// The values aggregate and sort work on are JSON texts, well-formed (the
// record's scan checked them); nil stands for a missing field.

// rank orders the kinds of JSON value as jq does: null < false < true <
// numbers < strings < arrays < objects.
func rank(v []byte) int {
	if len(v) == 0 {
		return 0
	}
	switch c := v[0]; {
	case c == 'n':
		return 0
	case c == 'f':
		return 1
	case c == 't':
		return 2
	case c == '"':
		return 4
	case c == '[':
		return 5
	case c == '{':
		return 6
	}
	return 3
}

func isNull(v []byte) bool { return len(v) == 0 || v[0] == 'n' }

// compareValues orders two values as jq does, but for arrays and objects,
// which it orders by their JSON text.
func compareValues(a, b []byte) int {
	ra, rb := rank(a), rank(b)
	if ra != rb {
		return ra - rb
	}
	switch ra {
	case 3:
		x, _ := strconv.ParseFloat(string(a), 64)
		y, _ := strconv.ParseFloat(string(b), 64)
		switch {
		case x < y:
			return -1
		case x > y:
			return 1
		}
		return 0
	case 4:
		return bytes.Compare(jsontext.Text(a), jsontext.Text(b))
	case 0, 1, 2:
		return 0
	}
	return bytes.Compare(a, b)
}

// number reads v as a number: a JSON number, or a string holding one (CSV
// fields are strings). isInt says it is a whole number that int64 holds
// exactly, in i.
func number(v []byte) (f float64, i int64, isInt, ok bool) {
	if len(v) == 0 {
		return 0, 0, false, false
	}
	s := v
	if v[0] == '"' {
		s = bytes.TrimSpace(jsontext.Text(v))
	} else if rank(v) != 3 {
		return 0, 0, false, false
	}
	if n, err := strconv.ParseInt(string(s), 10, 64); err == nil {
		return float64(n), n, true, true
	}
	f, err := strconv.ParseFloat(string(s), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, 0, false, false
	}
	return f, 0, false, true
}

// canonical appends v's text for keying: a string's escapes are decoded
// and written again the one way AppendString writes them, so that "\u0061"
// and "a" are one key. A missing value is null.
func canonical(b, v []byte) []byte {
	switch {
	case len(v) == 0:
		return append(b, "null"...)
	case v[0] == '"' && bytes.IndexByte(v, '\\') >= 0:
		return jsontext.AppendString(b, jsontext.Text(v))
	}
	return append(b, v...)
}
