package stages

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
)

func init() {
	Register(Spec{
		Name:  "base64.encode",
		Doc:   "Encodes each record as base64 text with padding (RFC 4648), in the URL alphabet with url.",
		Batch: true,
		Options: []Option{
			{Name: "url", Type: Bool, Default: false, Doc: "use the URL and file name alphabet (- and _ for + and /)"},
		},
		New: func(c Config) (Stage, error) { return base64Stage{enc: base64Encoding(c)}, nil },
	})
	Register(Spec{
		Name: "base64.decode",
		Doc: "Decodes each record from base64 text, padded or not, in the URL alphabet with url; " +
			"a record that is not base64 is an error that retrying cannot fix.",
		Batch: true,
		Options: []Option{
			{Name: "url", Type: Bool, Default: false, Doc: "expect the URL and file name alphabet (- and _ for + and /)"},
		},
		New: func(c Config) (Stage, error) {
			return base64Stage{enc: base64Encoding(c).WithPadding(base64.NoPadding), decode: true}, nil
		},
	})
	Register(Spec{
		Name: "hash",
		// Many rounds make each record costly: records then go to
		// workers one at a time, so that every worker is busy.
		BatchIf: func(c Config) bool { return c.Int("rounds") <= 64 },
		Doc: "Replaces each record with the hex digest of its bytes or, with field, adds the digest to the JSON object " +
			"record as that field (replacing the field's value if it is there).",
		Batch: true,
		Options: []Option{
			{Name: "algo", Type: String, Default: "sha256", Enum: []string{"sha256", "sha1", "md5", "xxh64"}, Doc: "the hash function; xxh64 is fast but not cryptographic"},
			{Name: "field", Type: String, Default: "", Doc: "the field of a JSON object record to put the digest in"},
			{Name: "rounds", Type: Int, Default: 1, Doc: "hash the digest again, rounds times in all (key stretching; a CPU-bound load for benchmarks)"},
		},
		Check: func(c Config) error {
			if n := c.Int("rounds"); n < 1 || n > maxHashRounds {
				return OptionErrorf("rounds", "rounds must be from 1 to %d, not %d", maxHashRounds, n)
			}
			return nil
		},
		New: func(c Config) (Stage, error) {
			return &hashStage{h: newHash(c.String("algo")), field: c.String("field"), rounds: c.Int("rounds")}, nil
		},
	})
	Register(Spec{
		Name:  "gzip",
		Doc:   "Compresses each record into a gzip member of its own (binary records: follow with base64.encode for a text output).",
		Batch: true,
		Options: []Option{
			{Name: "level", Type: Int, Default: -1, Doc: "1 (fastest) to 9 (smallest), 0 for none, -1 for the default (6), -2 for Huffman only"},
		},
		Check: func(c Config) error { _, err := newGzipStage(c); return err },
		New:   func(c Config) (Stage, error) { return newGzipStage(c) },
	})
	Register(Spec{
		Name: "gunzip",
		Doc: "Decompresses each record, a gzip stream; a record that is not gzip, or that is corrupt, " +
			"is an error that retrying cannot fix.",
		Batch: true,
		Options: []Option{
			{Name: "max_size", Type: Int, Default: 1 << 30, Doc: "the most bytes a record may decompress to, against gzip bombs; decompressing stops there, and a worker never holds more"},
		},
		Check: func(c Config) error { _, err := newGunzipStage(c); return err },
		New:   func(c Config) (Stage, error) { return newGunzipStage(c) },
	})
}

func base64Encoding(c Config) *base64.Encoding {
	if c.Bool("url") {
		return base64.URLEncoding
	}
	return base64.StdEncoding
}

type base64Stage struct {
	enc    *base64.Encoding
	decode bool // enc has no padding then: padding is stripped before decoding
}

func (s base64Stage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if !s.decode {
		return append(out, s.enc.AppendEncode(nil, rec)), nil
	}
	// Padding is optional on input, so strip it and decode unpadded.
	for len(rec) > 0 && rec[len(rec)-1] == '=' {
		rec = rec[:len(rec)-1]
	}
	b, err := s.enc.AppendDecode(nil, rec)
	if err != nil {
		return out, Permanent(fmt.Errorf("not base64: %w", err))
	}
	return append(out, b), nil
}

func newHash(algo string) hash.Hash {
	switch algo {
	case "sha1":
		return sha1.New()
	case "md5":
		return md5.New()
	case "xxh64":
		return xxhash.New()
	}
	return sha256.New()
}

// maxHashRounds bounds rounds: a billion SHA-256 rounds is minutes a record.
const maxHashRounds = 10_000_000

type hashStage struct {
	h      hash.Hash
	sum    []byte // scratch for the digest, never emitted
	field  string
	rounds int
}

func (s *hashStage) Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	s.h.Reset()
	s.h.Write(rec)
	s.sum = s.h.Sum(s.sum[:0])
	for i := 1; i < s.rounds; i++ {
		if i%4096 == 0 && ctx.Err() != nil { // many rounds take long: a timeout must stop them
			return out, context.Cause(ctx)
		}
		s.h.Reset()
		s.h.Write(s.sum)
		s.sum = s.h.Sum(s.sum[:0])
	}
	if s.field == "" {
		n := hex.EncodedLen(len(s.sum))
		if len(rec) >= n {
			// rec is ours and hashed: its bytes can hold the digest.
			hex.Encode(rec, s.sum)
			return append(out, rec[:n:n]), nil
		}
		return append(out, hex.AppendEncode(nil, s.sum)), nil
	}
	start, end, err := jsonMemberValue(rec, s.field)
	if err != nil {
		return out, Permanent(err)
	}
	digest := make([]byte, 0, hex.EncodedLen(len(s.sum))+2)
	digest = append(hex.AppendEncode(append(digest, '"'), s.sum), '"')
	if start >= 0 {
		return append(out, spliceBytes(rec, start, end, digest)), nil
	}
	// Add the field before the closing brace, which end points at.
	member := make([]byte, 0, len(s.field)+len(digest)+4)
	if !jsonObjectEmpty(rec) {
		member = append(member, ',')
	}
	member = append(AppendJSONString(member, s.field), ':')
	member = append(member, digest...)
	return append(out, spliceBytes(rec, end, end, member)), nil
}

// spliceBytes returns a new slice: rec with rec[start:end] replaced by b.
func spliceBytes(rec []byte, start, end int, b []byte) []byte {
	r := make([]byte, 0, len(rec)-(end-start)+len(b))
	r = append(r, rec[:start]...)
	r = append(r, b...)
	return append(r, rec[end:]...)
}

// jsonObjectEmpty reports whether rec, a valid JSON object, has no members.
func jsonObjectEmpty(rec []byte) bool {
	obj := bytes.TrimSpace(rec)
	return len(bytes.TrimSpace(obj[1:len(obj)-1])) == 0
}

// jsonMemberValue finds the top-level member called name of the JSON object
// rec. It returns the span of the member's value in rec or, when there is no
// such member, start = -1 and end = the offset of the object's closing
// brace. An error says what makes rec not exactly one JSON object.
func jsonMemberValue(rec []byte, name string) (start, end int, err error) {
	if !json.Valid(rec) {
		return -1, -1, fmt.Errorf("record is not a JSON object: %w", jsonSyntaxError(rec))
	}
	i := jsonSkipSpace(rec, 0)
	if rec[i] != '{' {
		return -1, -1, fmt.Errorf("record is not a JSON object: it is %s", jsonKind(rec[i]))
	}
	// rec is valid JSON, so the scan needs to find boundaries only.
	i = jsonSkipSpace(rec, i+1)
	for rec[i] != '}' {
		keyEnd := jsonStringEnd(rec, i)
		key := rec[i+1 : keyEnd-1]
		match := string(key) == name
		if !match && bytes.IndexByte(key, '\\') >= 0 {
			var k string
			json.Unmarshal(rec[i:keyEnd], &k) // valid, so no error
			match = k == name
		}
		i = jsonSkipSpace(rec, keyEnd) // at the colon
		valueStart := jsonSkipSpace(rec, i+1)
		valueEnd := jsonValueEnd(rec, valueStart)
		if match {
			return valueStart, valueEnd, nil
		}
		i = jsonSkipSpace(rec, valueEnd) // at a comma or the closing brace
		if rec[i] == ',' {
			i = jsonSkipSpace(rec, i+1)
		}
	}
	return -1, i, nil
}

// jsonSyntaxError says why rec, which json.Valid rejects, is not JSON.
func jsonSyntaxError(rec []byte) error {
	var v json.RawMessage
	if err := json.Unmarshal(rec, &v); err != nil {
		return err
	}
	return errors.New("not valid JSON")
}

// jsonKind names the kind of JSON value that starts with c.
func jsonKind(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func jsonSkipSpace(b []byte, i int) int {
	for i < len(b) && isJSONSpace(b[i]) {
		i++
	}
	return i
}

// jsonStringEnd returns the offset just past the string that opens at
// b[i], in valid JSON.
func jsonStringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// jsonValueEnd returns the offset just past the value that starts at b[i],
// in valid JSON.
func jsonValueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		return jsonStringEnd(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = jsonStringEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	}
	for i < len(b) && !isJSONSpace(b[i]) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
		i++
	}
	return i
}

type gzipStage struct {
	zw       *gzip.Writer
	sizeHint int
}

func newGzipStage(c Config) (*gzipStage, error) {
	zw, err := gzip.NewWriterLevel(io.Discard, c.Int("level"))
	if err != nil {
		return nil, &OptionError{Option: "level", Err: err}
	}
	return &gzipStage{zw: zw}, nil
}

func (s *gzipStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	var buf bytes.Buffer
	buf.Grow(s.sizeHint)
	s.zw.Reset(&buf)
	if _, err := s.zw.Write(rec); err != nil {
		return out, fmt.Errorf("gzip: %w", err)
	}
	if err := s.zw.Close(); err != nil {
		return out, fmt.Errorf("gzip: %w", err)
	}
	s.sizeHint = buf.Len()
	return append(out, buf.Bytes()), nil
}

type gunzipStage struct {
	zr      *gzip.Reader // nil until the first record
	src     bytes.Reader
	maxSize int
	spare   [][]byte // for readLimited
}

func newGunzipStage(c Config) (*gunzipStage, error) {
	s := &gunzipStage{maxSize: c.Int("max_size")}
	if s.maxSize < 1 {
		return nil, OptionErrorf("max_size", "is %d; it must be at least 1", s.maxSize)
	}
	return s, nil
}

func (s *gunzipStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	s.src.Reset(rec)
	defer s.src.Reset(nil) // rec is the runner's once Process returns
	var err error
	if s.zr == nil {
		s.zr, err = gzip.NewReader(&s.src)
	} else {
		err = s.zr.Reset(&s.src)
	}
	if err != nil {
		return out, Permanent(fmt.Errorf("gunzip: %w", gunzipErr(err, true)))
	}
	// A gzip member ends with its length, mod 2^32: a record that tells
	// the truth is read into one buffer of that size. A record that lies,
	// or holds several members, is read on in chunks; either way no more
	// than max_size+1 bytes are ever held (a bytes.Buffer doubling past
	// max_size held 4 GB for 1 GiB).
	size := int64(-1)
	if n := len(rec); n >= 18 {
		size = int64(binary.LittleEndian.Uint32(rec[n-4:]))
	}
	data, err := readLimited(s.zr, int64(s.maxSize), size, &s.spare)
	s.src.Reset(nil)
	var tooLarge errTooLarge
	switch {
	case errors.As(err, &tooLarge):
		return out, Permanent(fmt.Errorf("gunzip: record decompresses to more than max_size (%d bytes)", s.maxSize))
	case err != nil:
		return out, Permanent(fmt.Errorf("gunzip: %w", gunzipErr(err, false)))
	}
	return append(out, data), nil
}

// gunzipErr says in words what is wrong with a record that compress/gzip
// fails on ("EOF", "gzip: invalid header", "flate: corrupt input before
// offset 13"), keeping the error it wraps; atStart says the error came
// from reading the first header.
func gunzipErr(err error, atStart bool) error {
	var corrupt flate.CorruptInputError
	var text string
	switch {
	case atStart && errors.Is(err, io.EOF):
		text = "the record is empty, not gzip"
	case atStart && (errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF)):
		text = "the record is not gzip (it does not start with a gzip header)"
	case errors.Is(err, gzip.ErrHeader):
		// Multistream: another member was expected after the first.
		text = "the record goes on after a gzip member with bytes that are not gzip"
	case errors.Is(err, io.ErrUnexpectedEOF):
		text = "the gzip stream is cut short, or followed by bytes that are not gzip"
	case errors.As(err, &corrupt), errors.Is(err, gzip.ErrChecksum):
		text = "the gzip stream is corrupt (" + err.Error() + ")"
	default:
		return err
	}
	return &fileText{text, err}
}
