package stages

import (
	"bytes"
	"context"
	"encoding/binary"
	"math/rand/v2"
	"regexp"
	"time"
	"unicode/utf8"

	"golang.org/x/text/cases"
	"golang.org/x/text/language"
	"golang.org/x/text/transform"
)

func init() {
	Register(Spec{
		Name:  "trim",
		Doc:   "Removes leading and trailing white space (Unicode) from each record.",
		Batch: true,
		New:   func(Config) (Stage, error) { return trimStage{}, nil },
	})
	Register(Spec{
		Name:  "upper",
		Doc:   "Upper-cases each record with Unicode's full case mapping (ß becomes SS, as in Python and ICU); ASCII records are changed in place, and bytes that are not UTF-8 are kept.",
		Batch: true,
		New:   func(Config) (Stage, error) { return &upperStage{cases.Upper(language.Und)}, nil },
	})
	Register(Spec{
		Name:  "lower",
		Doc:   "Lower-cases each record with Unicode's full case mapping (İ becomes i̇, a final Σ becomes ς, as in Python and ICU); ASCII records are changed in place, and bytes that are not UTF-8 are kept.",
		Batch: true,
		New:   func(Config) (Stage, error) { return &lowerStage{cases.Lower(language.Und)}, nil },
	})
	Register(Spec{
		Name:  "grep",
		Doc:   "Keeps the records that match a regular expression (Go RE2 syntax), or with invert the ones that do not.",
		Batch: true,
		Options: []Option{
			{Name: "pattern", Type: String, Required: true, Doc: "the regular expression (RE2 syntax)"},
			{Name: "invert", Type: Bool, Default: false, Doc: "keep the records that do not match, like grep -v"},
		},
		Check: func(c Config) error { _, err := compile(c, "pattern"); return err },
		New: func(c Config) (Stage, error) {
			re, err := compile(c, "pattern")
			if err != nil {
				return nil, err
			}
			return grepStage{match: matcher(re), invert: c.Bool("invert")}, nil
		},
	})
	Register(Spec{
		Name:  "replace",
		Doc:   "Replaces every match of a regular expression; $1 or $${name} in the replacement stand for groups ($$ because ${...} in YAML values is an environment variable).",
		Batch: true,
		Options: []Option{
			{Name: "pattern", Type: String, Required: true, Doc: "the regular expression (RE2 syntax)"},
			{Name: "replacement", Type: String, Default: "", Doc: "the text for each match; $1 and $${name} expand groups"},
		},
		Check: func(c Config) error { _, err := compile(c, "pattern"); return err },
		New: func(c Config) (Stage, error) {
			re, err := compile(c, "pattern")
			if err != nil {
				return nil, err
			}
			repl := []byte(c.String("replacement"))
			return Func(func(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
				return append(out, re.ReplaceAll(rec, repl)), nil
			}), nil
		},
	})
	Register(Spec{
		Name: "sleep",
		Doc:  "Waits, then passes each record on unchanged: a stand-in for I/O in demos, tests and benchmarks.",
		Options: []Option{
			{Name: "duration", Type: Duration, Required: true, Doc: "how long to wait per record"},
			{Name: "jitter", Type: Duration, Default: time.Duration(0), Doc: "up to this much more, uniformly at random"},
		},
		New: func(c Config) (Stage, error) {
			d, jitter := c.Duration("duration"), c.Duration("jitter")
			return Func(func(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
				wait := d
				if jitter > 0 {
					wait += rand.N(jitter)
				}
				t := time.NewTimer(wait)
				defer t.Stop()
				select {
				case <-t.C:
					return append(out, rec), nil
				case <-ctx.Done():
					return out, context.Cause(ctx)
				}
			}), nil
		},
	})
}

// Func adapts a function to the Stage interface.
type Func func(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error)

// Process calls f.
func (f Func) Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	return f(ctx, rec, out)
}

// MapFunc adapts a function that turns a record into one record to the
// Mapper interface.
type MapFunc func(rec []byte) []byte

// Process appends f(rec).
func (f MapFunc) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	return append(out, f(rec)), nil
}

// Map returns f(rec).
func (f MapFunc) Map(rec []byte) []byte { return f(rec) }

// trim, upper and lower are types of their own rather than MapFuncs: one
// indirect call per record instead of two (BenchmarkPassThrough).
type trimStage struct{}

func (trimStage) Map(rec []byte) []byte {
	r := bytes.TrimSpace(rec)
	return r[:len(r):len(r)] // capped: the rest of rec is not for the next stage to write into
}
func (s trimStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	return append(out, s.Map(rec)), nil
}

// upperStage and lowerStage map text that is not ASCII with x/text/cases
// rather than bytes.ToUpper: the standard library maps one rune to one
// rune (ß stays ß, İ becomes a plain i), where every other tool a user
// compares with applies Unicode's SpecialCasing and the final-sigma rule.
// A Caser keeps state, so each worker has its own.
type upperStage struct{ caser cases.Caser }

func (s *upperStage) Map(rec []byte) []byte { return mapASCII(rec, 'a', 'z', s.mapCase) }
func (s *upperStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	return append(out, s.Map(rec)), nil
}

type lowerStage struct{ caser cases.Caser }

func (s *upperStage) mapCase(rec []byte) []byte { return mapCase(s.caser, rec) }
func (s *lowerStage) mapCase(rec []byte) []byte { return mapCase(s.caser, rec) }

// mapCase maps rec in one call of Transform into room enough for the
// whole result. Caser.Bytes starts with room for len(rec) bytes, and when
// a mapping grows the text (İ, 2 bytes, lowers to i̇, 3) it runs out and
// goes on in a second call that has lost the context of the first: a
// later final Σ then lowers to σ, not ς ("İstanbul ΟΔΟΣ"). No character
// maps to more than three times its bytes (ΐ: 2 bytes, upper 6).
func mapCase(c cases.Caser, rec []byte) []byte {
	for room := 3*len(rec) + utf8.UTFMax; ; room *= 2 {
		c.Reset()
		dst := make([]byte, room)
		n, _, err := c.Transform(dst, rec, true)
		if err == nil {
			return dst[:n:n]
		}
		if err != transform.ErrShortDst {
			return c.Bytes(rec)
		}
	}
}

func (s *lowerStage) Map(rec []byte) []byte { return mapASCII(rec, 'A', 'Z', s.mapCase) }
func (s *lowerStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	return append(out, s.Map(rec)), nil
}

// mapASCII flips the case of the letters in [lo, hi] in place when rec is
// all ASCII, which needs no allocation; otherwise it returns slow(rec).
// It works eight bytes at a time (BenchmarkCase: about four times the
// byte loop on 27-byte records); a word that is not ASCII hands the whole
// record to slow, which gives the same result for the part already done.
func mapASCII(rec []byte, lo, hi byte, slow func([]byte) []byte) []byte {
	const (
		ones = 0x0101010101010101
		high = 0x8080808080808080
	)
	// Per byte b < 0x80: b+below has its high bit set when b >= lo, and
	// b+above when b > hi; no byte carries into the next.
	below := ones * uint64(0x80-lo)
	above := ones * uint64(0x80-hi-1)
	i := 0
	for ; i+8 <= len(rec); i += 8 {
		w := binary.LittleEndian.Uint64(rec[i:])
		if w&high != 0 {
			return slow(rec)
		}
		letters := (w + below) &^ (w + above) & high
		binary.LittleEndian.PutUint64(rec[i:], w^letters>>2) // 0x80>>2: the case bit
	}
	for ; i < len(rec); i++ {
		c := rec[i]
		if c >= 0x80 {
			return slow(rec)
		}
		if c >= lo && c <= hi {
			rec[i] = c ^ 0x20 // ASCII letters differ in case by this one bit
		}
	}
	return rec
}

func compile(c Config, option string) (*regexp.Regexp, error) {
	re, err := regexp.Compile(c.String(option))
	if err != nil {
		return nil, &OptionError{Option: option, Err: err}
	}
	return re, nil
}

// matcher returns a fast matcher for re: a pattern that is a plain literal
// is a bytes.Contains, which is several times faster than the regexp
// engine on short records.
func matcher(re *regexp.Regexp) func([]byte) bool {
	if lit, complete := re.LiteralPrefix(); complete {
		b := []byte(lit)
		return func(rec []byte) bool { return bytes.Contains(rec, b) }
	}
	return re.Match
}

type grepStage struct {
	match  func([]byte) bool
	invert bool
}

func (g grepStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if g.match(rec) != g.invert {
		out = append(out, rec)
	}
	return out, nil
}
