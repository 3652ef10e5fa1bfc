package table

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime/debug"
	"slices"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/flowrun/flowrun/internal/jsontext"
	"github.com/flowrun/flowrun/stages"
)

func init() {
	stages.Register(stages.Spec{
		Name: "sort",
		Doc: "Sorts the records, stably: by the whole record, bytewise as LC_ALL=C sort does, or by the by fields of JSON " +
			"object records, whose values order as jq orders them. An external merge sort: past max_memory it sorts what it " +
			"holds in the background and spills it to a temporary file that has no name (nothing is left behind, even by a " +
			"kill), and merges the files at end of input as the stages after it take the records. It holds the Go runtime's " +
			"memory limit near max_memory unless GOMEMLIMIT is set.",
		Batch:      true,
		MaxWorkers: 1,
		Local:      true,
		Options: []stages.Option{
			{Name: "by", Type: stages.Strings, Default: []string{}, Doc: "the fields to sort JSON object records by, the first first; empty: the whole record"},
			{Name: "numeric", Type: stages.Bool, Default: false, Doc: "compare as numbers, exactly whatever their size (as sort -n), strings that hold one included; what is not a number comes first, in input order"},
			{Name: "reverse", Type: stages.Bool, Default: false, Doc: "largest first; records that compare equal keep their input order"},
			{Name: "unique", Type: stages.Bool, Default: false, Doc: "keep only the first record of each run of equal keys, like sort -u"},
			{Name: "max_memory", Type: stages.Size, Default: 256 << 20, Doc: "the memory the records may take before they spill to disk (64MiB, 1GiB)"},
			{Name: "temp_dir", Type: stages.String, Default: "", Doc: "where spilled runs go; empty: $TMPDIR or /tmp"},
		},
		Check: func(c stages.Config) error { _, err := newSort(c); return err },
		New: func(c stages.Config) (stages.Stage, error) {
			s, err := newSort(c)
			if err == nil {
				s.limited = holdMemory(s.mem)
			}
			return s, err
		},
	})
}

// entry is one record of the run in memory: its key and its text in the
// run's blocks, the first eight bytes of the key as a number (most
// comparisons end there), and its place in the input, which makes the
// order total and so the sort stable.
type entry struct {
	prefix     uint64
	blk, off   uint32
	klen, rlen uint32
	idx        uint32
}

const (
	entrySize  = 32       // bytes an entry takes in memory
	blockSize  = 1 << 20  // the records of a run are copied into blocks of this size
	chunkBytes = 64 << 10 // about what one Flush returns when it merges
	chunkRecs  = 1024
)

// run is a batch of records in memory.
type run struct {
	blocks [][]byte
	ents   []entry
}

func (r *run) key(e *entry, whole bool) []byte {
	b := r.blocks[e.blk]
	if whole {
		return b[e.off : e.off+e.rlen : e.off+e.rlen]
	}
	return b[e.off : e.off+e.klen]
}

func (r *run) rec(e *entry) []byte {
	b := r.blocks[e.blk]
	start := e.off + e.klen
	return b[start : start+e.rlen : start+e.rlen]
}

type sortStage struct {
	by      []string
	numeric bool
	reverse bool
	unique  bool
	whole   bool // the key is the record itself
	budget  int  // bytes a run may take; two may exist at once while one spills
	tempDir string

	cur  run
	used int
	free [][]byte // blocks a finished spill gave back
	vals [][]byte
	key  []byte

	spilling sync.WaitGroup
	written  run   // the run spilling, or spilled last: its blocks are free after spilling.Wait
	spillErr error // of the last spill; read after spilling.Wait
	files    []*os.File

	merge   *merger   // at end of input
	err     error     // sticky: a spill failed
	mem     memoryKey // for the process's memory limit
	limited bool      // counted in it
}

// memoryLimit keeps the Go runtime's soft memory limit at the max_memory
// of the sort stages that run, plus room for the rest of the pipeline,
// unless the user set one (GOMEMLIMIT). Without it the collector lets the
// heap grow to three times what is live (the CLI sets GOGC=200), and a
// sort's RSS would be twice its max_memory and more; with it, the
// collector works harder only when the heap nears the limit. A stage is
// counted once however many Stages are made of it (the CLI's preflight
// makes one before the run makes its own).
var memoryLimit struct {
	sync.Mutex
	stages map[memoryKey]int // Stages made of each sort stage
	total  int64             // the max_memory of those stages
	owned  bool              // the limit is ours to set
}

type memoryKey struct {
	dir, stage string
	mem        int
}

const memoryHeadroom = 32 << 20

func holdMemory(k memoryKey) bool {
	memoryLimit.Lock()
	defer memoryLimit.Unlock()
	if len(memoryLimit.stages) == 0 {
		memoryLimit.owned = debug.SetMemoryLimit(-1) == math.MaxInt64
		memoryLimit.stages = map[memoryKey]int{}
	}
	if !memoryLimit.owned {
		return false
	}
	if memoryLimit.stages[k]++; memoryLimit.stages[k] == 1 {
		memoryLimit.total += int64(k.mem)
		debug.SetMemoryLimit(memoryLimit.total + memoryHeadroom)
	}
	return true
}

func releaseMemory(k memoryKey) {
	memoryLimit.Lock()
	defer memoryLimit.Unlock()
	if memoryLimit.stages[k]--; memoryLimit.stages[k] > 0 {
		return
	}
	delete(memoryLimit.stages, k)
	memoryLimit.total -= int64(k.mem)
	if len(memoryLimit.stages) == 0 {
		debug.SetMemoryLimit(math.MaxInt64)
		return
	}
	debug.SetMemoryLimit(memoryLimit.total + memoryHeadroom)
}

func newSort(c stages.Config) (*sortStage, error) {
	s := &sortStage{
		by:      c.Strings("by"),
		numeric: c.Bool("numeric"),
		reverse: c.Bool("reverse"),
		unique:  c.Bool("unique"),
		tempDir: c.String("temp_dir"),
	}
	s.whole = len(s.by) == 0 && !s.numeric
	for _, f := range s.by {
		if f == "" {
			return nil, stages.OptionErrorf("by", "a field name is empty")
		}
	}
	mem := c.Int("max_memory")
	if mem < 1<<20 {
		return nil, stages.OptionErrorf("max_memory", "is %d bytes; it must be at least 1MiB", mem)
	}
	// Two runs may be in memory at once, and the collector lets the heap
	// grow to three times what is live (cli sets GOGC=200): a quarter of
	// max_memory per run keeps the stage's share of the peak RSS near
	// max_memory.
	s.budget, s.mem = mem/4, memoryKey{c.Dir, c.Stage, mem}
	if s.tempDir != "" {
		if st, err := os.Stat(s.tempDir); err != nil || !st.IsDir() {
			return nil, stages.OptionErrorf("temp_dir", "%s is not a directory", s.tempDir)
		}
	}
	return s, nil
}

func (s *sortStage) Process(_ context.Context, rec []byte, out [][]byte) ([][]byte, error) {
	if s.err != nil {
		return out, s.err
	}
	key, err := s.keyOf(rec)
	if err != nil {
		return out, err
	}
	n := len(key) + len(rec)
	if s.used+n+entrySize > s.budget && len(s.cur.ents) > 0 {
		if err := s.spill(); err != nil {
			return out, err
		}
	}
	if len(s.cur.ents) >= math.MaxUint32 {
		return out, errors.New("more than 4G records in one run; lower max_memory")
	}
	blk := s.room(n)
	b := s.cur.blocks[blk]
	off := len(b)
	b = append(append(b, key...), rec...)
	s.cur.blocks[blk] = b
	e := entry{blk: uint32(blk), off: uint32(off), klen: uint32(len(key)), rlen: uint32(len(rec)), idx: uint32(len(s.cur.ents))}
	if s.whole {
		e.klen = 0
	}
	if s.whole {
		e.prefix = prefixOf(b[off : off+n])
	} else {
		e.prefix = prefixOf(b[off : off+len(key)])
	}
	s.cur.ents = append(s.cur.ents, e)
	s.used += n + entrySize
	return out, nil
}

// room returns the block that has n bytes free, adding one if need be.
func (s *sortStage) room(n int) int {
	if k := len(s.cur.blocks) - 1; k >= 0 && cap(s.cur.blocks[k])-len(s.cur.blocks[k]) >= n {
		return k
	}
	var b []byte
	switch {
	case n > blockSize:
		b = make([]byte, 0, n)
	case len(s.free) > 0:
		b = s.free[len(s.free)-1][:0]
		s.free = s.free[:len(s.free)-1]
	default:
		b = make([]byte, 0, blockSize)
	}
	s.cur.blocks = append(s.cur.blocks, b)
	return len(s.cur.blocks) - 1
}

func prefixOf(key []byte) uint64 {
	var p [8]byte
	copy(p[:], key)
	return binary.BigEndian.Uint64(p[:])
}

// keyOf returns the record's sort key, bytes that compare as the records
// must (see appendKey); for a whole-record sort, the record itself.
func (s *sortStage) keyOf(rec []byte) ([]byte, error) {
	if s.whole {
		return nil, nil
	}
	s.key = s.key[:0]
	if len(s.by) == 0 {
		s.key = appendRecordNumberKey(s.key, bytes.TrimSpace(rec))
		return s.key, nil
	}
	var err error
	if s.vals, err = jsontext.Fields(rec, s.by, s.vals); err != nil {
		return nil, stages.Permanent(err)
	}
	for _, v := range s.vals {
		s.key = s.appendKey(s.key, v)
	}
	return s.key, nil
}

// Key bytes: a tag per value in jq's order of kinds, then a number as
// eight bytes that compare as the numbers do, or text with its zero bytes
// escaped (0 → 0 1) and a terminator (0 0), so that a shorter text sorts
// first and the next field's bytes never mix into this one's.
const (
	tagNaN    = 0x01 // numeric, and not a number
	tagNull   = 0x02
	tagFalse  = 0x03
	tagTrue   = 0x04
	tagNumber = 0x05
	tagString = 0x06
	tagArray  = 0x07
	tagObject = 0x08
)

func (s *sortStage) appendKey(b, v []byte) []byte {
	if s.numeric {
		text := v
		if len(v) > 0 && v[0] == '"' {
			text = bytes.TrimSpace(jsontext.Text(v))
		}
		if rank(v) == 3 || rank(v) == 4 {
			if k, ok := appendNumberKey(append(b, tagNumber), text); ok {
				return k
			}
		}
		if !isNull(v) {
			return append(b, tagNaN)
		}
	}
	switch rank(v) {
	case 0:
		return append(b, tagNull)
	case 1:
		return append(b, tagFalse)
	case 2:
		return append(b, tagTrue)
	case 3:
		k, _ := appendNumberKey(append(b, tagNumber), v) // a JSON number: a decimal
		return k
	case 4:
		return appendText(append(b, tagString), jsontext.Text(v))
	case 5:
		return appendText(append(b, tagArray), v)
	}
	return appendText(append(b, tagObject), v)
}

// appendRecordNumberKey is the key of a whole record with numeric: its
// number, or, when it is none, a tag that sorts before every number.
func appendRecordNumberKey(b, text []byte) []byte {
	if k, ok := appendNumberKey(append(b, tagNumber), text); ok {
		return k
	}
	return append(b, tagNaN)
}

func appendText(b, t []byte) []byte {
	for {
		i := bytes.IndexByte(t, 0)
		if i < 0 {
			break
		}
		b = append(append(b, t[:i]...), 0, 1)
		t = t[i+1:]
	}
	return append(append(b, t...), 0, 0)
}

// cmp orders two keys, largest first with reverse; 0 means equal keys.
func (s *sortStage) cmp(a, b []byte) int {
	c := bytes.Compare(a, b)
	if s.reverse {
		return -c
	}
	return c
}

func (s *sortStage) sortRun(r *run) {
	slices.SortFunc(r.ents, func(a, b entry) int {
		if a.prefix != b.prefix {
			if (a.prefix < b.prefix) != s.reverse {
				return -1
			}
			return 1
		}
		if c := s.cmp(r.key(&a, s.whole), r.key(&b, s.whole)); c != 0 {
			return c
		}
		return int(a.idx) - int(b.idx)
	})
}

// spill hands the run in memory to a goroutine that sorts it and writes
// it to a temporary file, and starts a new run: while one run spills the
// next fills, on the other core. It waits for the spill before it, so
// that at most two runs are ever in memory.
func (s *sortStage) spill() error {
	s.spilling.Wait()
	s.free = append(s.free, s.written.blocks...)
	s.written.blocks = nil
	if s.spillErr != nil {
		s.err = s.spillErr
		return s.err
	}
	f, err := tempFile(s.tempDir)
	if err != nil {
		s.err = fmt.Errorf("sort: spill to disk: %w", err)
		return s.err
	}
	s.files = append(s.files, f)
	ents := s.written.ents[:0] // the last spill's, done with
	if cap(ents) == 0 {
		ents = make([]entry, 0, len(s.cur.ents))
	}
	s.written = s.cur
	s.cur = run{ents: ents}
	s.used = 0
	s.spilling.Add(1)
	r := &s.written
	go func() {
		defer s.spilling.Done()
		s.spillErr = s.writeRun(f, r)
	}()
	return nil
}

// tempFile opens a file that has no name: it lives as long as it is
// open, and nothing is left behind however the process ends, even by
// kill -9. Linux's O_TMPFILE makes it so from the start; elsewhere the
// file is removed at once, which leaves a moment for a kill to beat.
func tempFile(dir string) (*os.File, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	if f, err := os.OpenFile(dir, os.O_RDWR|unix.O_TMPFILE, 0o600); err == nil {
		return f, nil
	}
	f, err := os.CreateTemp(dir, "flowrun-sort-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}

func (s *sortStage) writeRun(f *os.File, r *run) error {
	s.sortRun(r)
	w := bufio.NewWriterSize(f, 256<<10)
	var hdr []byte
	var last []byte
	for i := range r.ents {
		e := &r.ents[i]
		key := r.key(e, s.whole)
		if s.unique && i > 0 && bytes.Equal(key, last) {
			continue
		}
		last = key
		hdr = binary.AppendUvarint(binary.AppendUvarint(hdr[:0], uint64(e.klen)), uint64(e.rlen))
		w.Write(hdr)
		if !s.whole {
			w.Write(key)
		}
		w.Write(r.rec(e))
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("sort: spill to disk: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("sort: spill to disk: %w", err)
	}
	return nil
}

// Held is 0, as count's is: a sort emits nothing before the end of input,
// when the runner claims every record it took in. Saying how many it
// holds would have the runner keep a number per record, memory that grows
// with the input.
func (s *sortStage) Held() int { return 0 }

// Flush starts the merge at the first call and returns its next piece.
func (s *sortStage) Flush(ctx context.Context, out [][]byte) ([][]byte, error) {
	if s.merge == nil {
		s.spilling.Wait()
		if s.err == nil && s.spillErr != nil {
			s.err = s.spillErr
		}
		if s.err != nil {
			return out, s.err
		}
		if err := s.startMerge(); err != nil {
			return out, err
		}
	}
	if err := ctx.Err(); err != nil {
		return out, context.Cause(ctx)
	}
	out, err := s.merge.next(out)
	if err != nil {
		s.err = err
	}
	return out, err
}

// More says whether the merge has more to give.
func (s *sortStage) More() bool { return s.err == nil && s.merge != nil && !s.merge.done() }

// startMerge sorts the run in memory, in two halves at once when it is
// big, and sets a merge over the spilled runs (oldest first) and those
// halves: the order of sources breaks ties, which keeps the merge stable.
func (s *sortStage) startMerge() error {
	m := &merger{s: s}
	for _, f := range s.files {
		bufSize := max(4<<10, min(64<<10, s.budget/(2*len(s.files))))
		m.srcs = append(m.srcs, &source{file: bufio.NewReaderSize(f, bufSize)})
	}
	r := &s.cur
	if n := len(r.ents); n > 0 {
		if n < 1<<14 {
			s.sortRun(r)
			m.srcs = append(m.srcs, &source{mem: r, ents: r.ents})
		} else {
			lo, hi := &run{blocks: r.blocks, ents: r.ents[:n/2]}, &run{blocks: r.blocks, ents: r.ents[n/2:]}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() { defer wg.Done(); s.sortRun(lo) }()
			s.sortRun(hi)
			wg.Wait()
			m.srcs = append(m.srcs, &source{mem: lo, ents: lo.ents}, &source{mem: hi, ents: hi.ents})
		}
	}
	for i, src := range m.srcs {
		src.order = i
		if err := src.advance(s.whole); err != nil {
			return err
		}
		if !src.eof {
			m.heap = append(m.heap, src)
		}
	}
	m.init()
	s.merge = m
	return nil
}

// source is one sorted run being merged: a spilled file or a sorted part
// of the run in memory. key and rec are its current record.
type source struct {
	order    int
	file     *bufio.Reader
	mem      *run
	ents     []entry
	key, rec []byte
	eof      bool
	buf      []byte // the file's current record
}

func (src *source) advance(whole bool) error {
	if src.mem != nil {
		if len(src.ents) == 0 {
			src.eof = true
			return nil
		}
		e := &src.ents[0]
		src.key, src.rec = src.mem.key(e, whole), src.mem.rec(e)
		src.ents = src.ents[1:]
		return nil
	}
	klen, err := binary.ReadUvarint(src.file)
	if err == io.EOF {
		src.eof = true
		return nil
	}
	rlen, err2 := binary.ReadUvarint(src.file)
	if err != nil || err2 != nil {
		return fmt.Errorf("sort: read a spilled run: %v", errors.Join(err, err2))
	}
	n := int(klen + rlen)
	if cap(src.buf) < n {
		src.buf = make([]byte, n)
	}
	src.buf = src.buf[:n]
	if _, err := io.ReadFull(src.file, src.buf); err != nil {
		return fmt.Errorf("sort: read a spilled run: %w", err)
	}
	src.key, src.rec = src.buf[:klen], src.buf[klen:]
	if whole {
		src.key = src.rec
	}
	return nil
}

// merger is a k-way merge over a binary heap of sources.
type merger struct {
	s     *sortStage
	srcs  []*source
	heap  []*source
	last  []byte // the last key emitted, for unique
	first bool   // something was emitted
}

func (m *merger) less(a, b *source) bool {
	if c := m.s.cmp(a.key, b.key); c != 0 {
		return c < 0
	}
	return a.order < b.order
}

func (m *merger) init() {
	for i := len(m.heap)/2 - 1; i >= 0; i-- {
		m.down(i)
	}
}

func (m *merger) down(i int) {
	h := m.heap
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		j := l
		if r := l + 1; r < len(h) && m.less(h[r], h[l]) {
			j = r
		}
		if !m.less(h[j], h[i]) {
			return
		}
		h[i], h[j] = h[j], h[i]
		i = j
	}
}

func (m *merger) done() bool { return len(m.heap) == 0 }

// next appends the next piece of the merge to out. A record from memory
// goes out as it is (the stage never touches its block again); one from a
// file is copied into a buffer of the piece's own.
func (m *merger) next(out [][]byte) ([][]byte, error) {
	var buf []byte
	size := 0
	for n := 0; len(m.heap) > 0 && n < chunkRecs && size < chunkBytes; {
		src := m.heap[0]
		dup := m.s.unique && m.first && bytes.Equal(src.key, m.last)
		if !dup {
			rec := src.rec
			if src.file != nil {
				if cap(buf)-len(buf) < len(rec) {
					buf = make([]byte, 0, max(chunkBytes, len(rec)))
				}
				start := len(buf)
				buf = append(buf, rec...)
				rec = buf[start:len(buf):len(buf)]
			}
			out = append(out, rec)
			n++
			size += len(rec)
			if m.s.unique {
				m.last = append(m.last[:0], src.key...)
				m.first = true
			}
		}
		if err := src.advance(m.s.whole); err != nil {
			return out, err
		}
		if src.eof {
			last := len(m.heap) - 1
			m.heap[0] = m.heap[last]
			m.heap = m.heap[:last]
		}
		m.down(0)
	}
	return out, nil
}

// Close waits for a spill in progress and closes the spilled runs' files,
// which frees their space.
func (s *sortStage) Close() error {
	if s.limited {
		s.limited = false
		releaseMemory(s.mem)
	}
	s.spilling.Wait()
	for _, f := range s.files {
		f.Close()
	}
	s.files = nil
	return nil
}

var (
	_ stages.Drainer = (*sortStage)(nil)
	_ stages.Holder  = (*sortStage)(nil)
)
