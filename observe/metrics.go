package observe

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flowrun/flowrun/runner"
)

// durationBuckets are the upper bounds of flowrun_stage_duration_seconds:
// from a microsecond (a cheap transform's share of a batch) to a minute
// (a download).
var durationBuckets = []float64{
	1e-6, 1e-5, 1e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
}

// Registry returns a Prometheus registry with the run's metrics, the Go
// runtime's and the process's.
func (o *Observer) Registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(o), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// collector turns the run's snapshot into metrics at each scrape: the
// counters are the runner's own, so a scrape costs the run nothing and
// the hot path no more than it already does (one add per batch).
type collector struct {
	o      *Observer
	bounds []time.Duration
	worker string // the worker's name: a label of every metric but build_info
	id     string // and its id, the label worker_id

	buildInfo                                         *prometheus.Desc
	in, out, errs, retries, skipped, dead, busySecs   *prometheus.Desc
	queueLen, queueCap, workers, workersBusy          *prometheus.Desc
	duration                                          *prometheus.Desc
	inputRecords, inputBytes, inputSize, inputErrors  *prometheus.Desc
	outputRecords, outputQueueLen, outputQueueCap, up *prometheus.Desc
	brokerWorkers                                     *prometheus.Desc
}

func newCollector(o *Observer) *collector {
	stage := []string{"pipeline", "stage"}
	pipeline := []string{"pipeline"}
	if o.Worker != "" {
		stage = append(stage, "worker", "worker_id")
		pipeline = append(pipeline, "worker", "worker_id")
	}
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	c := &collector{
		o:              o,
		worker:         o.Worker,
		id:             o.WorkerID,
		buildInfo:      d("flowrun_build_info", "flowrun's version; the value is 1.", []string{"version", "revision", "goversion"}),
		in:             d("flowrun_records_in_total", "Records a stage has taken in and finished with.", stage),
		out:            d("flowrun_records_out_total", "Records a stage has passed on.", stage),
		errs:           d("flowrun_record_errors_total", "Failed attempts on a record in a stage, retried or not.", stage),
		retries:        d("flowrun_retries_total", "Attempts on a record after its first, in a stage.", stage),
		skipped:        d("flowrun_skipped_total", "Records a stage skipped after their attempts (on_error: skip).", stage),
		dead:           d("flowrun_dead_letters_total", "Records a stage sent to the dead-letter file.", stage),
		busySecs:       d("flowrun_stage_busy_seconds_total", "Time the stage's workers spent processing, summed over workers.", stage),
		queueLen:       d("flowrun_queue_length", "Batches waiting in a stage's input queue.", stage),
		queueCap:       d("flowrun_queue_capacity", "Batches a stage's input queue holds.", stage),
		workers:        d("flowrun_workers", "Worker goroutines of a stage.", stage),
		workersBusy:    d("flowrun_workers_busy", "Workers of a stage processing a batch now.", stage),
		duration:       d("flowrun_stage_duration_seconds", "Time a record took in a stage, measured per batch.", stage),
		inputRecords:   d("flowrun_input_records_total", "Records read from the input.", pipeline),
		inputBytes:     d("flowrun_input_bytes_total", "Input bytes whose records went to the first stage.", pipeline),
		inputSize:      d("flowrun_input_size_bytes", "Size of the input, when it is known (files, not stdin).", pipeline),
		inputErrors:    d("flowrun_input_errors_total", "Input records that could not be decoded.", pipeline),
		outputRecords:  d("flowrun_output_records_total", "Records written to the output.", pipeline),
		outputQueueLen: d("flowrun_output_queue_length", "Batches waiting for the output writer.", pipeline),
		outputQueueCap: d("flowrun_output_queue_capacity", "Batches the output writer's queue holds.", pipeline),
		up:             d("flowrun_running", "1 while the run is going, 0 before it starts and after it ends.", pipeline),
		brokerWorkers:  d("flowrun_broker_workers", "Worker processes that joined a run on a broker, by state: working, gone (no report for a while) or left.", []string{"pipeline", "state"}),
	}
	for _, b := range durationBuckets {
		c.bounds = append(c.bounds, time.Duration(b*float64(time.Second)))
	}
	return c
}

// Describe sends every metric's description.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.buildInfo, c.in, c.out, c.errs, c.retries, c.skipped, c.dead, c.busySecs,
		c.queueLen, c.queueCap, c.workers, c.workersBusy, c.duration,
		c.inputRecords, c.inputBytes, c.inputSize, c.inputErrors,
		c.outputRecords, c.outputQueueLen, c.outputQueueCap, c.up, c.brokerWorkers,
	} {
		ch <- d
	}
}

// Collect reads the run's state once and sends every metric from it.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s, _, running := c.o.current()
	p := c.o.pipeline.Name
	b := c.o.build
	// The labels of a stage's metrics and of the pipeline's.
	stage := func(name string) []string {
		if c.worker != "" {
			return []string{p, name, c.worker, c.id}
		}
		return []string{p, name}
	}
	pipeline := []string{p}
	if c.worker != "" {
		pipeline = append(pipeline, c.worker, c.id)
	}
	ch <- prometheus.MustNewConstMetric(c.buildInfo, prometheus.GaugeValue, 1, b.Version, b.Revision, b.GoVersion)
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	for _, st := range s.Stages {
		counter(c.in, st.In, stage(st.Name)...)
		counter(c.out, st.Out, stage(st.Name)...)
		counter(c.errs, st.Errs, stage(st.Name)...)
		counter(c.retries, st.Retries, stage(st.Name)...)
		counter(c.skipped, st.Skipped, stage(st.Name)...)
		counter(c.dead, st.Dead, stage(st.Name)...)
		ch <- prometheus.MustNewConstMetric(c.busySecs, prometheus.CounterValue, st.BusyTime.Seconds(), stage(st.Name)...)
		if c.worker == "" { // a worker's queue is the broker's
			gauge(c.queueLen, st.Queued, stage(st.Name)...)
			gauge(c.queueCap, st.Cap, stage(st.Name)...)
		}
		gauge(c.workers, st.Workers, stage(st.Name)...)
		gauge(c.workersBusy, st.Busy, stage(st.Name)...)
		counts, total := st.Latency.Cumulative(c.bounds)
		buckets := make(map[float64]uint64, len(counts))
		for i, n := range counts {
			buckets[durationBuckets[i]] = n
		}
		ch <- prometheus.MustNewConstHistogram(c.duration, total, st.BusyTime.Seconds(), buckets, stage(st.Name)...)
	}
	if c.worker == "" { // a worker has no input or output of its own
		counter(c.inputRecords, s.InRecords, p)
		counter(c.inputBytes, s.InBytes, p)
		if s.TotalBytes >= 0 {
			ch <- prometheus.MustNewConstMetric(c.inputSize, prometheus.GaugeValue, float64(s.TotalBytes), p)
		}
		counter(c.inputErrors, s.InErrors, p)
		counter(c.outputRecords, s.OutRecords, p)
		gauge(c.outputQueueLen, s.OutQueued, p)
		gauge(c.outputQueueCap, s.OutCap, p)
		if remote(s) {
			states := map[string]int{"working": 0, "gone": 0, "left": 0}
			for _, w := range s.Workers {
				switch {
				case w.Left:
					states["left"]++
				case w.Gone:
					states["gone"]++
				default:
					states["working"]++
				}
			}
			for state, n := range states {
				gauge(c.brokerWorkers, n, p, state)
			}
		}
	}
	up := 0
	if running {
		up = 1
	}
	gauge(c.up, up, pipeline...)
}

// remote says whether a stage of s runs on workers through a broker.
func remote(s runner.Snapshot) bool {
	for _, st := range s.Stages {
		if st.Remote {
			return true
		}
	}
	return false
}
