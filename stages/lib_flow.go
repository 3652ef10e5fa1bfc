package stages

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"golang.org/x/time/rate"
)

func init() {
	Register(Spec{
		Name: "dedupe",
		Doc: "Drops a record whose key (the whole record, or the JSON text of one field) is among the last window " +
			"distinct keys seen; it remembers their 64-bit hashes in 16 to 24 bytes each, and is exact but for a hash collision (odds about window²/2^65).",
		Batch:      true,
		MaxWorkers: 1,
		Local:      true,
		Options: []Option{
			{Name: "key", Type: String, Default: "", Doc: "a top-level field of JSON object records to compare by; empty: the whole record"},
			{Name: "window", Type: Int, Default: 100000, Doc: "how many distinct keys to remember"},
		},
		Check: func(c Config) error { _, err := newDedupeStage(c); return err },
		New:   func(c Config) (Stage, error) { return newDedupeStage(c) },
	})
	Register(Spec{
		Name:       "take",
		Doc:        "Passes the first n records on, then stops the input: the records still in flight are dropped.",
		Batch:      true,
		MaxWorkers: 1,
		Local:      true,
		Options: []Option{
			{Name: "n", Type: Int, Required: true, Doc: "how many records to pass"},
		},
		Check: func(c Config) error { _, err := newTakeStage(c); return err },
		New:   func(c Config) (Stage, error) { return newTakeStage(c) },
	})
	Register(Spec{
		Name: "sample",
		Doc: "Keeps each record with probability rate; with seed the choice is repeatable (each worker draws " +
			"the same sequence, so one worker gives the same output every run).",
		Batch: true,
		// With a seed, one sequence of draws decides which records go: it
		// must see them all, in the run process.
		LocalIf: func(c Config) bool { return c.Has("seed") },
		Options: []Option{
			{Name: "rate", Type: Float, Required: true, Doc: "the probability to keep a record, more than 0 and at most 1"},
			{Name: "seed", Type: Int, Doc: "the seed of the random sequence; unset: a new one every run"},
		},
		Check: func(c Config) error { _, err := newSampleStage(c); return err },
		New:   func(c Config) (Stage, error) { return newSampleStage(c) },
	})
	Register(Spec{
		Name: "batch",
		Doc: "Gathers size records into one JSON array record: a record that is JSON (but not a JSON string) as is, any " +
			"other as a JSON string; a partial batch goes out after max_wait without input and at end of input.",
		Batch:      true,
		MaxWorkers: 1,
		Local:      true,
		Options: []Option{
			{Name: "size", Type: Int, Default: 100, Doc: "records per batch"},
			{Name: "max_wait", Type: Duration, Default: time.Second, Doc: "emit a partial batch after this long without a record; 0: only at end of input"},
		},
		Check: func(c Config) error { _, err := newBatchStage(c); return err },
		New: func(c Config) (Stage, error) {
			s, err := newBatchStage(c)
			if err != nil || s.maxWait == 0 {
				return s, err
			}
			return batchIdler{s}, nil
		},
	})
	Register(Spec{
		Name: "unbatch",
		Doc: "Splits a JSON array record into one record per element: a string element as its text, unquoted, any " +
			"other as its JSON text; it undoes batch exactly.",
		Batch: true,
		New:   func(Config) (Stage, error) { return Func(unbatch), nil },
	})
	Register(Spec{
		Name: "rate_limit",
		Doc: "Passes records on at most per_second a second on average, in bursts of at most burst; it waits, " +
			"and has one worker so that the limit holds for the whole stage.",
		MaxWorkers: 1,
		Local:      true,
		Options: []Option{
			{Name: "per_second", Type: Float, Required: true, Doc: "records a second, on average (0.5: one every 2s)"},
			{Name: "burst", Type: Int, Default: 1, Doc: "how many records may pass at once after a quiet spell"},
		},
		Check: func(c Config) error { _, err := newRateLimitStage(c); return err },
		New:   func(c Config) (Stage, error) { return newRateLimitStage(c) },
	})
	Register(Spec{
		Name: "count",
		Doc: "Swallows the records and emits their number, in decimal, at end of input; with every, also a running " +
			"total every that many records.",
		Batch:      true,
		MaxWorkers: 1,
		Local:      true,
		Options: []Option{
			{Name: "every", Type: Int, Default: 0, Doc: "emit the running total every this many records; 0: only at the end"},
		},
		Check: func(c Config) error { _, err := newCountStage(c); return err },
		New:   func(c Config) (Stage, error) { return newCountStage(c) },
	})
}

// dedupeStage forgets keys in the order it first saw them. ring holds their
// hashes in that order; slots is a hash set over ring (open addressing with
// linear probing), each slot 1 + an index into ring, 0 when empty. Storing
// 4-byte indices rather than 8-byte hashes, with the table at most half
// full, costs 8 to 16 bytes a key, where a Go map costs about 50.
type dedupeStage struct {
	key    string
	window int
	ring   []uint64
	oldest int // ring's oldest entry, once ring is full
	slots  []uint32
}

// dedupeMaxWindow keeps ring indices (plus one) within a slot's uint32.
const dedupeMaxWindow = 1 << 30

func newDedupeStage(c Config) (*dedupeStage, error) {
	s := &dedupeStage{key: c.String("key"), window: c.Int("window"), slots: make([]uint32, 16)}
	if s.window < 1 || s.window > dedupeMaxWindow {
		return nil, OptionErrorf("window", "is %d; it must be from 1 to %d", s.window, dedupeMaxWindow)
	}
	return s, nil
}

func (s *dedupeStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	k := rec
	if s.key != "" {
		start, end, err := jsonMemberValue(rec, s.key)
		if err != nil {
			return out, Permanent(err)
		}
		if start < 0 {
			return out, Permanent(fmt.Errorf("record has no field %q", s.key))
		}
		k = rec[start:end]
	}
	h := xxhash.Sum64(k)
	slot, dup := s.find(h)
	if dup {
		return out, nil
	}
	if len(s.ring) < s.window {
		s.ring = append(s.ring, h)
		if 2*len(s.ring) > len(s.slots) {
			s.grow()
			slot, _ = s.find(h)
		}
		s.slots[slot] = uint32(len(s.ring))
		return append(out, rec), nil
	}
	old, _ := s.find(s.ring[s.oldest])
	s.remove(old)
	s.ring[s.oldest] = h
	slot, _ = s.find(h) // the removal may have moved the free slot
	s.slots[slot] = uint32(s.oldest + 1)
	s.oldest = (s.oldest + 1) % s.window
	return append(out, rec), nil
}

// find returns the slot holding h, or the empty slot where h would go.
func (s *dedupeStage) find(h uint64) (slot int, found bool) {
	mask := len(s.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		v := s.slots[i]
		if v == 0 {
			return i, false
		}
		if s.ring[v-1] == h {
			return i, true
		}
	}
}

// remove empties slot i and shifts back the entries probed past it, so
// that the table needs no tombstones.
func (s *dedupeStage) remove(i int) {
	mask := len(s.slots) - 1
	for j := (i + 1) & mask; s.slots[j] != 0; j = (j + 1) & mask {
		home := int(s.ring[s.slots[j]-1]) & mask
		// The entry at j may fill the hole at i if i lies between its
		// home and j, cyclically.
		if (j-home)&mask >= (j-i)&mask {
			s.slots[i] = s.slots[j]
			i = j
		}
	}
	s.slots[i] = 0
}

func (s *dedupeStage) grow() {
	s.slots = make([]uint32, 2*len(s.slots))
	mask := len(s.slots) - 1
	for idx, h := range s.ring {
		i := int(h) & mask
		for s.slots[i] != 0 {
			i = (i + 1) & mask
		}
		s.slots[i] = uint32(idx + 1)
	}
}

type takeStage struct {
	n, taken int
	stopped  bool
}

func newTakeStage(c Config) (*takeStage, error) {
	s := &takeStage{n: c.Int("n")}
	if s.n < 0 {
		return nil, OptionErrorf("n", "is %d; it must be 0 or more", s.n)
	}
	return s, nil
}

// Process returns ErrStop once, with the n-th record, and filters out the
// records that were already in flight behind it.
func (s *takeStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if s.taken < s.n {
		s.taken++
		out = append(out, rec)
	}
	if s.taken < s.n || s.stopped {
		return out, nil
	}
	s.stopped = true
	return out, ErrStop
}

type sampleStage struct {
	rate float64
	rng  *rand.Rand
}

func newSampleStage(c Config) (*sampleStage, error) {
	r := c.Float("rate")
	if !(r > 0 && r <= 1) { // also rejects NaN
		return nil, OptionErrorf("rate", "is %v; it must be more than 0 and at most 1", r)
	}
	seed := rand.Uint64()
	if c.Has("seed") {
		seed = uint64(c.Int("seed"))
	}
	return &sampleStage{rate: r, rng: rand.New(rand.NewPCG(seed, 0))}, nil
}

func (s *sampleStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if s.rng.Float64() < s.rate {
		out = append(out, rec)
	}
	return out, nil
}

// batchStage writes the JSON array as the records come, so that each
// record is copied once, into the array that is emitted.
type batchStage struct {
	size    int
	maxWait time.Duration
	array   []byte // "[" and the elements so far; nil when n is 0
	n       int
	capHint int // the length of the last array emitted
}

// batchIdler is a batchStage with a max_wait.
type batchIdler struct{ *batchStage }

// IdleAfter returns max_wait.
func (b batchIdler) IdleAfter() time.Duration { return b.maxWait }

func newBatchStage(c Config) (*batchStage, error) {
	s := &batchStage{size: c.Int("size"), maxWait: c.Duration("max_wait")}
	if s.size < 1 {
		return nil, OptionErrorf("size", "is %d; it must be at least 1", s.size)
	}
	return s, nil
}

func (s *batchStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if !utf8.Valid(rec) {
		// A JSON string would replace the bad bytes, and unbatch could not
		// give the record back.
		return out, Permanent(errors.New("record is not UTF-8 text; base64.encode binary records before batch"))
	}
	if s.n == 0 {
		s.array = append(make([]byte, 0, max(s.capHint, len(rec)+2)), '[')
	} else {
		s.array = append(s.array, ',')
	}
	if bareJSON(rec) {
		s.array = append(s.array, rec...)
	} else {
		s.array = AppendJSONString(s.array, rec)
	}
	s.n++
	if s.n == s.size {
		out = s.emit(out)
	}
	return out, nil
}

// Flush emits the partial batch, if any.
// Held is how many records the partial batch holds.
func (s *batchStage) Held() int { return s.n }

func (s *batchStage) Flush(_ context.Context, out [][]byte) ([][]byte, error) {
	if s.n > 0 {
		out = s.emit(out)
	}
	return out, nil
}

func (s *batchStage) emit(out [][]byte) [][]byte {
	out = append(out, append(s.array, ']'))
	s.capHint = len(s.array) + 1
	s.array, s.n = nil, 0
	return out
}

// bareJSON reports whether rec can go into a JSON array as it is and come
// out of unbatch unchanged: one JSON value, not a string (unbatch unquotes
// strings), without white space around it (a decoder drops that).
func bareJSON(rec []byte) bool {
	if len(rec) == 0 || rec[0] == '"' || isJSONSpace(rec[0]) || isJSONSpace(rec[len(rec)-1]) {
		return false
	}
	return json.Valid(rec)
}

func isJSONSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// unbatch appends sub-slices of rec but for strings with escapes, which it
// must decode.
func unbatch(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if !json.Valid(rec) {
		return out, Permanent(fmt.Errorf("record is not a JSON array: %w", jsonSyntaxError(rec)))
	}
	i := jsonSkipSpace(rec, 0)
	if rec[i] != '[' {
		return out, Permanent(fmt.Errorf("record is not a JSON array: it is %s", jsonKind(rec[i])))
	}
	// rec is valid JSON, so the scan needs to find boundaries only.
	i = jsonSkipSpace(rec, i+1)
	for rec[i] != ']' {
		end := jsonValueEnd(rec, i)
		elem := rec[i:end]
		switch {
		case elem[0] != '"':
		case bytes.IndexByte(elem, '\\') < 0:
			elem = elem[1 : len(elem)-1]
		default:
			var s string
			json.Unmarshal(elem, &s) // valid, so no error
			elem = []byte(s)
		}
		out = append(out, elem[:len(elem):len(elem)]) // capped: see the Stage contract
		i = jsonSkipSpace(rec, end)                   // at a comma or the closing bracket
		if rec[i] == ',' {
			i = jsonSkipSpace(rec, i+1)
		}
	}
	return out, nil
}

type rateLimitStage struct{ lim *rate.Limiter }

func newRateLimitStage(c Config) (*rateLimitStage, error) {
	perSecond, burst := c.Float("per_second"), c.Int("burst")
	if !(perSecond > 0) || perSecond > 1e9 {
		return nil, OptionErrorf("per_second", "is %v; it must be more than 0 and at most 1e9", perSecond)
	}
	if burst < 1 {
		return nil, OptionErrorf("burst", "is %d; it must be at least 1", burst)
	}
	return &rateLimitStage{lim: rate.NewLimiter(rate.Limit(perSecond), burst)}, nil
}

func (s *rateLimitStage) Process(ctx context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if err := s.lim.Wait(ctx); err != nil {
		return out, fmt.Errorf("waiting for the rate limit: %w", err)
	}
	return append(out, rec), nil
}

type countStage struct {
	every, n int
	reported bool // the running total was just emitted
}

func newCountStage(c Config) (*countStage, error) {
	s := &countStage{every: c.Int("every")}
	if s.every < 0 {
		return nil, OptionErrorf("every", "is %d; it must be 0 or more", s.every)
	}
	return s, nil
}

func (s *countStage) Process(_ context.Context, _ []byte, out [][]byte) ([][]byte, error) {
	s.n++
	s.reported = s.every > 0 && s.n%s.every == 0
	if s.reported {
		out = append(out, strconv.AppendInt(nil, int64(s.n), 10))
	}
	return out, nil
}

// Flush emits the total, unless the last record's running total said it.
// Held is 0: count keeps a number, not records, and what it emits at the
// end stands for the records it took in then.
func (s *countStage) Held() int { return 0 }

func (s *countStage) Flush(_ context.Context, out [][]byte) ([][]byte, error) {
	if !s.reported {
		out = append(out, strconv.AppendInt(nil, int64(s.n), 10))
	}
	return out, nil
}
