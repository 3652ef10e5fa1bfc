package observe

import (
	"sync"
	"time"

	"github.com/flowrun/flowrun/runner"
	"github.com/flowrun/flowrun/spec"
)

// DefaultEvery is how often an Observer samples its run when Every is 0.
const DefaultEvery = 100 * time.Millisecond

// rateWindow is how far back a live rate looks: long enough to smooth
// batches of a thousand records, short enough to follow a change.
const rateWindow = 2 * time.Second

// Observer watches one run of a pipeline. Hand its Watch to
// runner.Options.Watch, call Finish when Run returns; in between (and
// after) it serves metrics, the page and the advice. The zero value is
// not usable: make one with New.
type Observer struct {
	// Every is how often the run is sampled, for rates and for how full
	// each queue was over the run; 0 means DefaultEvery. Set it before
	// Watch.
	Every time.Duration
	// Worker, when set, names the flowrun worker (host:pid) whose stages
	// are watched, not a run: each stage's metrics carry it as the
	// worker label, and there is no input or output. Set it before
	// Registry, Handler or Listen.
	Worker string
	// WorkerID is the worker's id (transport's Worker.ID), the
	// worker_id label beside worker: two workers of one name are two.
	WorkerID string

	pipeline *spec.Pipeline
	build    BuildInfo

	mu       sync.Mutex
	snapshot func() runner.Snapshot // nil until Watch
	began    time.Time
	ended    time.Time // zero while running
	recent   []sample  // the last rateWindow of samples, oldest first
	tally    tally     // queue fill over the whole run, for the advice
	stop     chan struct{}
	sampler  sync.WaitGroup
	finished bool
}

// BuildInfo is what flowrun_build_info reports.
type BuildInfo struct {
	Version, Revision, GoVersion string
}

type sample struct {
	at time.Time
	s  runner.Snapshot
}

// New returns an Observer of a run of p.
func New(p *spec.Pipeline, build BuildInfo) *Observer {
	return &Observer{pipeline: p, build: build, stop: make(chan struct{})}
}

// Watch starts watching the run whose state snapshot reads, in a
// goroutine of its own that Finish stops. It is runner.Options.Watch.
func (o *Observer) Watch(snapshot func() runner.Snapshot) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.snapshot != nil || o.finished {
		return
	}
	o.snapshot, o.began = snapshot, time.Now()
	o.add(time.Now(), snapshot())
	every := o.Every
	if every <= 0 {
		every = DefaultEvery
	}
	o.sampler.Add(1)
	go func() {
		defer o.sampler.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-o.stop:
				return
			case now := <-t.C:
				s := snapshot()
				o.mu.Lock()
				o.add(now, s)
				o.mu.Unlock()
			}
		}
	}()
}

// Finish says the run has returned: the sampler stops, the elapsed time
// stops growing, and what is served from now on is the final state. It
// may be called whether or not Watch was (a run that never started).
func (o *Observer) Finish() {
	o.mu.Lock()
	if o.finished {
		o.mu.Unlock()
		return
	}
	o.finished = true
	close(o.stop)
	o.mu.Unlock()
	o.sampler.Wait()

	o.mu.Lock()
	defer o.mu.Unlock()
	o.ended = time.Now()
	if o.snapshot != nil {
		o.add(o.ended, o.snapshot())
	}
}

// add records a sample; o.mu is held.
func (o *Observer) add(at time.Time, s runner.Snapshot) {
	o.tally.add(at, s)
	o.recent = append(o.recent, sample{at, s})
	// Keep what the rate needs: the samples within the window, and one
	// before it to measure from.
	cut := 0
	for cut+1 < len(o.recent)-1 && at.Sub(o.recent[cut+1].at) >= rateWindow {
		cut++
	}
	if cut > 0 {
		o.recent = append(o.recent[:0], o.recent[cut:]...)
	}
}

// current returns the run's state now and how long it has run. Before
// Watch, it is the pipeline's stages with nothing counted.
func (o *Observer) current() (runner.Snapshot, time.Duration, bool) {
	o.mu.Lock()
	snapshot, began, ended := o.snapshot, o.began, o.ended
	running := o.snapshot != nil && !o.finished
	o.mu.Unlock()
	if snapshot == nil {
		return o.empty(), 0, false
	}
	s := snapshot()
	if ended.IsZero() {
		s.Elapsed = time.Since(began)
	} else {
		s.Elapsed = ended.Sub(began)
	}
	return s, s.Elapsed, running
}

// empty is the snapshot of a run not yet started.
func (o *Observer) empty() runner.Snapshot {
	s := runner.Snapshot{TotalBytes: -1}
	for _, st := range o.pipeline.Stages {
		s.Stages = append(s.Stages, runner.StageSnapshot{Name: st.Name, Use: st.Use, Workers: st.Workers})
	}
	return s
}

// rates returns records per second out of the input, out of each stage
// and into the output, and input bytes per second, over the last
// rateWindow; over the whole run once it has ended.
func (o *Observer) rates() (in float64, stages []float64, out, bytes float64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.recent) == 0 {
		return 0, nil, 0, 0
	}
	last := o.recent[len(o.recent)-1]
	first := o.recent[0]
	if !o.ended.IsZero() {
		first = sample{at: o.began, s: o.empty()}
	}
	secs := last.at.Sub(first.at).Seconds()
	if secs <= 0 {
		return 0, make([]float64, len(last.s.Stages)), 0, 0
	}
	per := func(a, b int64) float64 { return float64(b-a) / secs }
	stages = make([]float64, len(last.s.Stages))
	for i := range last.s.Stages {
		var before int64
		if i < len(first.s.Stages) {
			before = first.s.Stages[i].Out
		}
		stages[i] = per(before, last.s.Stages[i].Out)
	}
	return per(first.s.InRecords, last.s.InRecords), stages, per(first.s.OutRecords, last.s.OutRecords),
		per(first.s.InBytes, last.s.InBytes)
}
