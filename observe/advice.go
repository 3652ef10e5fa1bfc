package observe

import (
	"fmt"
	"strings"
	"time"

	"github.com/flowrun/flowrun/runner"
)

// tally counts, over the samples of a run, how often each queue was full
// and how often it was empty: the part of the advice that a counter
// cannot give, since a queue's length is a level, not a sum.
type tally struct {
	samples  int
	full     []int // per stage: its input queue at 90% or more
	empty    []int // per stage: its input queue empty
	outFull  int   // the output writer's queue at 90% or more
	outEmpty int   // and empty
	// slotTime is, per stage, its workers multiplied by the time they
	// were there (from one sample to the next): on a broker the slots of
	// a remote stage come and go with the worker processes, and its busy
	// share is of the slots it had, not of those it has at the end.
	slotTime []time.Duration
	last     time.Time // of the latest sample
	workers  []int     // at the latest sample
}

func (t *tally) add(at time.Time, s runner.Snapshot) {
	if t.full == nil {
		t.full = make([]int, len(s.Stages))
		t.empty = make([]int, len(s.Stages))
		t.slotTime = make([]time.Duration, len(s.Stages))
		t.workers = make([]int, len(s.Stages))
	}
	if !t.last.IsZero() {
		for i, n := range t.workers {
			t.slotTime[i] += time.Duration(n) * at.Sub(t.last)
		}
	}
	t.last = at
	t.samples++
	for i := range s.Stages {
		if i >= len(t.full) {
			break
		}
		t.workers[i] = s.Stages[i].Workers
		q, c := queueOf(s, i)
		if isFull(q, c) {
			t.full[i]++
		}
		if q == 0 {
			t.empty[i]++
		}
	}
	if isFull(s.OutQueued, s.OutCap) {
		t.outFull++
	}
	if s.OutQueued == 0 {
		t.outEmpty++
	}
}

// queueOf returns the queue that feeds stage i: its own, or for a stage
// fused to the one before it, the queue of the goroutines it runs in.
func queueOf(s runner.Snapshot, i int) (queued, capacity int) {
	for i > 0 && s.Stages[i].Fused {
		i--
	}
	return s.Stages[i].Queued, s.Stages[i].Cap
}

// nextEmpty returns the fraction of samples that the queue after stage i
// (the next stage's own, or the output's) was empty: what comes after it
// waited for it.
func (t *tally) nextEmpty(s runner.Snapshot, i int) float64 {
	for j := i + 1; j < len(s.Stages); j++ {
		if !s.Stages[j].Fused {
			return t.frac(t.empty[j])
		}
	}
	return t.frac(t.outEmpty)
}

func isFull(queued, capacity int) bool { return capacity > 0 && queued*10 >= capacity*9 }

func (t *tally) frac(n int) float64 {
	if t.samples == 0 {
		return 0
	}
	return float64(n) / float64(t.samples)
}

// Thresholds of the advice. A stage is named only when the measurements
// leave no doubt: its workers were busy most of the run, records waited
// for it most of the run, and every other stage was clearly less busy
// (or somewhat less, while the stage after it waited for its records).
const (
	minSamples = 10   // fewer: too short to tell (a second at DefaultEvery)
	busyHigh   = 0.70 // a stage this busy may be the limit
	fullHigh   = 0.50 // its queue full this much of the run: records waited for it
	busyMargin = 0.25 // the next busiest stage at least this much less busy,
	starved    = 0.10 // or this much, when the queue after it was mostly empty
	busyLow    = 0.50 // stages below this are waiting, not working
)

// Advice is what the measurements say about what limits a run.
type Advice struct {
	// Limit is the stage's name, "(input)" or "(output)" when one of them
	// is the limit, or "" when none stands out or the run was too short
	// to tell.
	Limit string
	// Line says it for a person, with the numbers it comes from, e.g.
	// "bottleneck: download — workers busy 99%, queue full 96% of the
	// run; more workers there would help (resize and upload were idle 70%)".
	Line string
	// Conclusive is false when the run was too short to tell.
	Conclusive bool
}

func (a Advice) String() string { return a.Line }

// Advice names what limited the run so far (or the whole run, after
// Finish), from the measured busy time of each stage's workers and how
// full the queues were.
func (o *Observer) Advice() Advice {
	s, elapsed, _ := o.current()
	o.mu.Lock()
	t := o.tally
	t.full, t.empty = append([]int(nil), t.full...), append([]int(nil), t.empty...)
	t.slotTime = append([]time.Duration(nil), t.slotTime...)
	o.mu.Unlock()
	return advise(s, elapsed, &t, o.maxWorkers())
}

// maxWorkers says, per stage, whether it can take more workers at all
// (take, dedupe and their kind see every record in one worker).
func (o *Observer) maxWorkers() []int {
	m := make([]int, len(o.pipeline.Stages))
	for i, st := range o.pipeline.Stages {
		m[i] = st.Spec.MaxWorkers
	}
	return m
}

func advise(s runner.Snapshot, elapsed time.Duration, t *tally, maxWorkers []int) Advice {
	if t.samples < minSamples || elapsed <= 0 || len(s.Stages) == 0 || len(t.full) < len(s.Stages) {
		return Advice{Line: "bottleneck: the run was too short to tell"}
	}
	busy := make([]float64, len(s.Stages))
	for i, st := range s.Stages {
		slotTime := elapsed.Seconds() * float64(max(st.Workers, 1))
		if st.Remote && t.slotTime[i] > 0 {
			slotTime = t.slotTime[i].Seconds() // the slots it had, for as long as it had them
		}
		busy[i] = min(1, st.BusyTime.Seconds()/slotTime)
	}
	best := 0
	for i := range busy {
		if busy[i] > busy[best] {
			best = i
		}
	}
	second := -1.0
	for i := range busy {
		if i != best {
			second = max(second, busy[i])
		}
	}
	pct := func(f float64) int { return int(f*100 + 0.5) }
	others := func(skip int) (names []string, idle float64) {
		n := 0
		for i, st := range s.Stages {
			if i != skip {
				names = append(names, st.Name)
				idle += 1 - busy[i]
				n++
			}
		}
		if n > 0 {
			idle /= float64(n)
		}
		return names, idle
	}
	full := t.frac(t.full[best])
	// The records of a stage on a broker wait in the broker, not in the
	// run's queue (which hands them on at once): its busy slots say it.
	waited := full >= fullHigh || s.Stages[best].Remote
	margin := busy[best] - second
	if busy[best] >= busyHigh && waited && (margin >= busyMargin || margin >= starved && t.nextEmpty(s, best) >= fullHigh) {
		st := s.Stages[best]
		var b strings.Builder
		if st.Remote {
			fmt.Fprintf(&b, "bottleneck: %s — its workers' slots busy %d%% of the run", st.Name, pct(busy[best]))
		} else {
			fmt.Fprintf(&b, "bottleneck: %s — workers busy %d%%, queue full %d%% of the run", st.Name, pct(busy[best]), pct(full))
		}
		if best < len(maxWorkers) && maxWorkers[best] == 1 {
			b.WriteString("; it runs one worker by design, so only a cheaper stage would help")
		} else {
			b.WriteString("; more workers there would help")
		}
		if names, idle := others(best); len(names) > 0 {
			fmt.Fprintf(&b, " (%s %s idle %d%%)", joinAnd(names), wasWere(len(names)), pct(idle))
		}
		return Advice{Limit: st.Name, Line: b.String(), Conclusive: true}
	}
	var hot []string
	for i, st := range s.Stages {
		if busy[i] >= busyHigh {
			hot = append(hot, fmt.Sprintf("%s %d%%", st.Name, pct(busy[i])))
		}
	}
	if len(hot) > 1 {
		return Advice{Conclusive: true, Line: fmt.Sprintf("bottleneck: no single stage — %s busy; the work is spread evenly: more workers on all of them, or more cores, would help", joinAnd(hot))}
	}
	_, idle := others(-1)
	if busy[best] < busyLow {
		if f := t.frac(t.outFull); f >= fullHigh {
			return Advice{Limit: "(output)", Conclusive: true, Line: fmt.Sprintf("bottleneck: the output — its queue full %d%% of the run while the stages were idle %d%%; whatever takes the output is slower than the stages", pct(f), pct(idle))}
		}
		if f := t.frac(t.empty[0]); f >= fullHigh {
			return Advice{Limit: "(input)", Conclusive: true, Line: fmt.Sprintf("bottleneck: the input — the first queue empty %d%% of the run while the stages were idle %d%%; records arrive no faster than this", pct(f), pct(idle))}
		}
	}
	var parts []string
	for i, st := range s.Stages {
		parts = append(parts, fmt.Sprintf("%s %d%%", st.Name, pct(busy[i])))
	}
	return Advice{Conclusive: true, Line: "bottleneck: none stands out — workers busy " + strings.Join(parts, ", ")}
}

func joinAnd(names []string) string {
	switch len(names) {
	case 0:
		return ""
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

func wasWere(n int) string {
	if n == 1 {
		return "was"
	}
	return "were"
}
