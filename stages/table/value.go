package table

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"strconv"

	"github.com/flowrun/flowrun/internal/jsontext"
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

// compareValues orders two values as jq does (numbers exactly, as jq 1.7
// compares the numbers it read), but for arrays and objects, which it
// orders by their JSON text.
func compareValues(a, b []byte) int {
	ra, rb := rank(a), rank(b)
	if ra != rb {
		return ra - rb
	}
	switch ra {
	case 3:
		return compareNumbers(a, b)
	case 4:
		return bytes.Compare(jsontext.Text(a), jsontext.Text(b))
	case 0, 1, 2:
		return 0
	}
	return bytes.Compare(a, b)
}

// The kinds of number sum and avg take.
const (
	notNumber = iota
	smallInt  // an integer int64 holds
	bigInt    // an integer past int64, kept exact in a big.Int
	floatNum  // any other number: a fraction, an exponent
	outOfRange
)

// number reads v as a number: a JSON number, or a string holding one (CSV
// fields are strings). It returns its kind, its value as a float64 and,
// for a smallInt, as an int64; text is the number's text (for a bigInt).
func number(v []byte) (kind int, f float64, i int64, text []byte) {
	if len(v) == 0 {
		return notNumber, 0, 0, nil
	}
	s := v
	if v[0] == '"' {
		s = bytes.TrimSpace(jsontext.Text(v))
	} else if rank(v) != 3 {
		return notNumber, 0, 0, nil
	}
	n, err := strconv.ParseInt(string(s), 10, 64)
	if err == nil {
		return smallInt, float64(n), n, s
	}
	f, ferr := strconv.ParseFloat(string(s), 64)
	switch {
	case errors.Is(err, strconv.ErrRange):
		return bigInt, f, 0, s // only digits and a sign: ParseInt said so
	case math.IsInf(f, 0) && ferr != nil:
		return outOfRange, 0, 0, s
	case ferr != nil || math.IsNaN(f) || math.IsInf(f, 0):
		return notNumber, 0, 0, nil
	}
	return floatNum, f, 0, s
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

// Number keys: bytes that compare as the numbers do, exactly, whatever
// their size (9007199254740993 > 9007199254740992, and
// 12345678901234567891 > 12345678901234567890, which float64s cannot tell
// apart), as sort -n and jq 1.7 compare them. A key is a sign class, then
// for a number that is neither zero nor infinite its decimal exponent (4
// bytes) and its significant digits (each 0x10 plus the digit) ended by
// 0x00; a negative number's exponent and digits are complemented, so that
// a larger magnitude sorts first. A key never is a prefix of another, so
// that keys of several fields can follow one another.
const (
	numNegInf = 0x01
	numNeg    = 0x02
	numZero   = 0x03
	numPos    = 0x04
	numPosInf = 0x05
)

// appendNumberKey appends the key of the number text spells: a decimal
// (an optional sign, digits with an optional point, an optional
// exponent) exactly, or any other form strconv.ParseFloat reads (Inf,
// hexadecimal) through its float64. ok is false for what is not a number,
// NaN included.
func appendNumberKey(b, text []byte) ([]byte, bool) {
	if k, ok := appendDecimalKey(b, text); ok {
		return k, true
	}
	f, err := strconv.ParseFloat(string(text), 64)
	switch {
	case err != nil && !math.IsInf(f, 0), math.IsNaN(f):
		return b, false
	case math.IsInf(f, 1):
		return append(b, numPosInf), true
	case math.IsInf(f, -1):
		return append(b, numNegInf), true
	}
	return appendDecimalKey(b, strconv.AppendFloat(nil, f, 'e', -1, 64))
}

func appendDecimalKey(b, s []byte) ([]byte, bool) {
	i, neg := 0, false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	// The digits, without leading zeros; point is how many of them come
	// before the decimal point.
	start := len(b) + 5 // past the class and the exponent
	b = append(b, numPos, 0, 0, 0, 0)
	digits, point, seen, dot := 0, 0, false, false
	for ; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			seen = true
			if c == '0' && digits == 0 {
				if dot {
					point--
				}
				continue
			}
			b = append(b, 0x10+c-'0')
			digits++
			if !dot {
				point++
			}
			continue
		case c == '.' && !dot:
			dot = true
			continue
		}
		break
	}
	if !seen {
		return b[:start-5], false
	}
	exp := int64(0)
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		eneg := false
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			eneg = s[i] == '-'
			i++
		}
		if i == len(s) {
			return b[:start-5], false
		}
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			if exp < 1<<40 {
				exp = exp*10 + int64(s[i]-'0')
			}
		}
		if eneg {
			exp = -exp
		}
	}
	if i != len(s) {
		return b[:start-5], false
	}
	if digits == 0 {
		return append(b[:start-5], numZero), true
	}
	for b[len(b)-1] == 0x10 { // trailing zeros say nothing
		b = b[:len(b)-1]
	}
	b = append(b, 0)
	// The exponent of the first significant digit, biased and held to 31
	// bits: numbers past 10^(2^30) in size all compare as the largest.
	e := min(max(exp+int64(point), -(1<<30)), 1<<30) + 1<<31
	binary.BigEndian.PutUint32(b[start-4:start], uint32(e))
	if neg {
		b[start-5] = numNeg
		for j := start - 4; j < len(b); j++ {
			b[j] = ^b[j]
		}
	}
	return b, true
}

// compareNumbers orders two JSON numbers exactly.
func compareNumbers(a, b []byte) int {
	var ba, bb [64]byte
	ka, _ := appendNumberKey(ba[:0], a)
	kb, _ := appendNumberKey(bb[:0], b)
	return bytes.Compare(ka, kb)
}
