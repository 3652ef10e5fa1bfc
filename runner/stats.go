package runner

import (
	"math/bits"
	"strconv"
	"sync/atomic"
	"time"
)

// counters are one stage's live numbers. Workers add to them once per
// batch, not per record; the progress display reads them.
type counters struct {
	in, out, errors, retries, skipped, dead atomic.Int64
	redelivered                             atomic.Int64 // by the broker, of a remote stage's pieces
	// unanswered are the records a remote stage sent to the broker whose
	// results had not come when it stopped (an abort).
	unanswered atomic.Int64
	unsent     atomic.Int64 // and those never sent
	busyNanos  atomic.Int64
	busy       atomic.Int32 // workers inside Process now

	// hist is live, so that the page and the metrics show latencies
	// while the run goes: a worker adds to it once per batch.
	hist histogram
}

// histogram counts latencies in buckets a sixteenth of a power of two
// wide (about 4% resolution), from 1ns to hours, in fixed memory. Its
// counts are atomic: workers add to it while readers read it.
type histogram struct {
	counts [64 * 16]atomic.Int64
	total  atomic.Int64
}

func bucketOf(d time.Duration) int {
	ns := uint64(max(d, 1))
	e := bits.Len64(ns) - 1 // 2^e <= ns
	var sub uint64
	if e >= 4 {
		sub = (ns >> (e - 4)) & 15
	} else {
		sub = (ns << (4 - e)) & 15
	}
	return e*16 + int(sub)
}

// bucketValue is the middle of bucket i.
func bucketValue(i int) time.Duration {
	e, sub := i/16, uint64(i%16)
	if e >= 4 {
		return time.Duration((32 + 2*sub + 1) << (e - 4) / 2)
	}
	return time.Duration((16 + sub) >> (4 - e))
}

// add records n records that took d each.
func (h *histogram) add(d time.Duration, n int64) {
	h.counts[bucketOf(d)].Add(n)
	h.total.Add(n)
}

// quantile returns the latency below which a fraction q of records fall.
func (h *histogram) quantile(q float64) time.Duration {
	total := h.total.Load()
	if total == 0 {
		return 0
	}
	rank := int64(q*float64(total-1)) + 1
	var seen int64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return bucketValue(i)
		}
	}
	return 0
}

// Latencies reads a stage's live latency histogram: how long its records
// took each, measured per batch (a batch's time shared by its records).
type Latencies struct{ h *histogram }

// Quantile returns the latency below which a fraction q of the records
// so far fall, within about 4%; 0 before any record.
func (l Latencies) Quantile(q float64) time.Duration {
	if l.h == nil {
		return 0
	}
	return l.h.quantile(q)
}

// Cumulative returns, for each of the ascending bounds, how many records
// took at most that long, and how many records there were in all: the
// buckets of a Prometheus histogram. A record counts against a bound by
// the middle of its bucket.
func (l Latencies) Cumulative(bounds []time.Duration) (counts []uint64, total uint64) {
	counts = make([]uint64, len(bounds))
	if l.h == nil {
		return counts, 0
	}
	b := 0
	for i := range l.h.counts {
		c := uint64(l.h.counts[i].Load())
		if c == 0 {
			continue
		}
		for b < len(bounds) && bucketValue(i) > bounds[b] {
			counts[b] = total
			b++
		}
		total += c
	}
	for ; b < len(bounds); b++ {
		counts[b] = total
	}
	return counts, total
}

// StageStats is one stage's summary.
type StageStats struct {
	Name         string `json:"name"`
	Use          string `json:"use"`
	Workers      int    `json:"workers"`
	In           int64  `json:"in"`
	Out          int64  `json:"out"`
	Errors       int64  `json:"errors"`  // failed attempts, retried or not
	Retries      int64  `json:"retries"` // attempts after the first
	Skipped      int64  `json:"skipped"`
	DeadLettered int64  `json:"dead_lettered"`
	// Remote says the stage ran on workers through the broker;
	// Redelivered counts the pieces of its input the broker delivered
	// again (a worker died or outlived the ack wait).
	Remote      bool  `json:"remote,omitempty"`
	Redelivered int64 `json:"redelivered,omitempty"`
	// Unanswered counts the records sent to the stage's workers through
	// the broker whose results had not come when the run ended (it was
	// aborted: a second signal, or no worker left to drain them): they
	// are in no other count, neither in nor out. A journaled run leaves
	// them on the broker for --resume.
	Unanswered int64 `json:"unanswered,omitempty"`
	// Unsent counts the records that were in the run, on their way to
	// the broker, when it was aborted: in no other count either.
	Unsent int64    `json:"unsent,omitempty"`
	Busy   Duration `json:"busy_seconds"` // summed over workers
	P50    Duration `json:"p50_seconds"`  // per record
	P99    Duration `json:"p99_seconds"`
}

// Summary is what a run did, as `--stats` writes it.
type Summary struct {
	Pipeline string       `json:"pipeline"`
	Elapsed  Duration     `json:"elapsed_seconds"`
	Input    InputStats   `json:"input"`
	Output   OutputStats  `json:"output"`
	Stages   []StageStats `json:"stages"`
	// Workers are the worker processes that took part in a run on a
	// broker (the run's own first); a remote stage's Workers are the
	// slots they had for it.
	Workers []WorkerStats `json:"workers,omitempty"`
	Stopped bool          `json:"stopped"` // by a signal: the input was cut short
	// Dropped counts the records that were in the run's queues, between
	// its stages or before the output, when it was aborted (a second
	// signal): in no other count.
	Dropped int64  `json:"dropped,omitempty"`
	Closed  bool   `json:"output_closed"` // the output's reader went away
	Failed  string `json:"error,omitempty"`
}

// InputStats counts what the input read.
type InputStats struct {
	Records      int64 `json:"records"`
	Bytes        int64 `json:"bytes"`
	Errors       int64 `json:"errors"` // records that could not be decoded
	Skipped      int64 `json:"skipped"`
	DeadLettered int64 `json:"dead_lettered"`
	// Unread is how many records were read from the input but never
	// handed to the first stage, because the run was stopped (a signal, a
	// take, a failure) first: they were not processed, and a journal does
	// not count them as done.
	Unread int64 `json:"unread"`
	// Resumed is what a run resumed from a journal found done before it.
	Resumed ResumedStats `json:"resumed"`
}

// ResumedStats counts the input records a resumed run skipped as done by
// the runs before it, and how many of them those runs dead-lettered (they
// are in the dead-letter file, and make the run exit 3 as a run never
// interrupted would).
type ResumedStats struct {
	Records      int64 `json:"records"`
	DeadLettered int64 `json:"dead_lettered"`
}

// OutputStats counts what the output wrote.
type OutputStats struct {
	Records int64 `json:"records"`
	Bytes   int64 `json:"bytes"`
}

// Skipped is how many records were skipped, anywhere.
func (s *Summary) Skipped() int64 {
	n := s.Input.Skipped
	for _, st := range s.Stages {
		n += st.Skipped
	}
	return n
}

// DeadLettered is how many records went to the dead-letter file.
func (s *Summary) DeadLettered() int64 {
	n := s.Input.DeadLettered + s.Input.Resumed.DeadLettered
	for _, st := range s.Stages {
		n += st.DeadLettered
	}
	return n
}

// Duration is a time.Duration that JSON writes as seconds.
type Duration time.Duration

// MarshalJSON writes d in seconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	return []byte(formatSeconds(time.Duration(d))), nil
}

func formatSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64)
}
