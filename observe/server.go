package observe

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed page
var page embed.FS

// View is the run as /api/snapshot serves it to the page: what a person
// reads, in units a person reads (seconds, records a second).
type View struct {
	Pipeline string      `json:"pipeline"`
	Running  bool        `json:"running"`
	Elapsed  float64     `json:"elapsed_seconds"`
	Input    InputView   `json:"input"`
	Stages   []StageView `json:"stages"`
	Output   OutputView  `json:"output"`
	Advice   string      `json:"advice"`
	// Workers are the worker processes of a run on a broker, in the
	// order they joined (their last report); null for a run without.
	Workers []WorkerView `json:"workers"`
	// Worker names the flowrun worker whose stages these are
	// (Observer.Worker): its page has no input, output, workers or
	// advice, which are the run's.
	Worker   string `json:"worker,omitempty"`
	WorkerID string `json:"worker_id,omitempty"`
}

// WorkerView is a worker of a run on a broker.
type WorkerView struct {
	Name    string            `json:"name"` // host:pid or --name, "#" and a short id after a name two share
	ID      string            `json:"id"`
	Version string            `json:"version"`
	Local   bool              `json:"local"` // the run's own process
	State   string            `json:"state"` // working, gone or left
	Busy    int               `json:"busy"`
	Slots   int               `json:"slots"`
	Records int64             `json:"records"`
	Seen    float64           `json:"seen_seconds_ago"`
	Stages  []WorkerStageView `json:"stages"`
}

// WorkerStageView is a stage a worker works.
type WorkerStageView struct {
	Name    string `json:"name"`
	Slots   int    `json:"slots"`
	Busy    int    `json:"busy"`
	Records int64  `json:"records"`
}

// InputView is the input's part of a View. Percent and ETA are null when
// the input's size is unknown (stdin): never a made-up number.
type InputView struct {
	From       string   `json:"from"`
	Format     string   `json:"format"`
	Records    int64    `json:"records"`
	Bytes      int64    `json:"bytes"`
	TotalBytes int64    `json:"total_bytes"` // -1: unknown
	Percent    *float64 `json:"percent"`
	ETA        *float64 `json:"eta_seconds"`
	Rate       float64  `json:"rate"`
	Errors     int64    `json:"errors"`
}

// StageView is one stage's part of a View.
type StageView struct {
	Name    string  `json:"name"`
	Use     string  `json:"use"`
	Workers int     `json:"workers"`
	Busy    int     `json:"busy"`
	In      int64   `json:"in"`
	Out     int64   `json:"out"`
	Rate    float64 `json:"rate"` // records out a second
	Queued  int     `json:"queued"`
	Cap     int     `json:"cap"`
	Fused   bool    `json:"fused"`
	Remote  bool    `json:"remote"` // on workers through a broker
	Errors  int64   `json:"errors"`
	Retries int64   `json:"retries"`
	Skipped int64   `json:"skipped"`
	Dead    int64   `json:"dead_letters"`
	P50     float64 `json:"p50_seconds"`
	P99     float64 `json:"p99_seconds"`
}

// OutputView is the output's part of a View.
type OutputView struct {
	To      string  `json:"to"`
	Format  string  `json:"format"`
	Records int64   `json:"records"`
	Rate    float64 `json:"rate"`
	Queued  int     `json:"queued"`
	Cap     int     `json:"cap"`
}

// View returns the run's state now.
func (o *Observer) View() View {
	s, elapsed, running := o.current()
	inRate, stageRates, outRate, byteRate := o.rates()
	p := o.pipeline
	v := View{
		Pipeline: p.Name, Running: running, Elapsed: elapsed.Seconds(),
		Input: InputView{
			From: p.Input.From, Format: p.Input.Format, Records: s.InRecords, Bytes: s.InBytes,
			TotalBytes: s.TotalBytes, Rate: inRate, Errors: s.InErrors,
		},
		Output: OutputView{To: p.Output.To, Format: p.Output.Format, Records: s.OutRecords, Rate: outRate, Queued: s.OutQueued, Cap: s.OutCap},
		Advice: o.Advice().Line,
	}
	if o.Worker != "" {
		v.Worker, v.WorkerID, v.Advice = o.Worker, o.WorkerID, ""
	}
	if s.TotalBytes > 0 {
		pc := min(100, 100*float64(s.InBytes)/float64(s.TotalBytes))
		v.Input.Percent = &pc
		if running && byteRate > 0 {
			eta := float64(s.TotalBytes-s.InBytes) / byteRate
			v.Input.ETA = &eta
		}
	}
	for i, st := range s.Stages {
		sv := StageView{
			Name: st.Name, Use: st.Use, Workers: st.Workers, Busy: st.Busy, In: st.In, Out: st.Out,
			Queued: st.Queued, Cap: st.Cap, Fused: st.Fused, Remote: st.Remote,
			Errors: st.Errs, Retries: st.Retries, Skipped: st.Skipped, Dead: st.Dead,
			P50: st.P50.Seconds(), P99: st.P99.Seconds(),
		}
		if i < len(stageRates) {
			sv.Rate = stageRates[i]
		}
		v.Stages = append(v.Stages, sv)
	}
	for _, w := range s.Workers {
		wv := WorkerView{Name: w.Name, ID: w.ID, Version: w.Version, Local: w.Local, State: "working", Records: w.Records, Seen: w.Since.Seconds()}
		switch {
		case w.Left:
			wv.State = "left"
		case w.Gone:
			wv.State = "gone"
		}
		for _, st := range w.Stages {
			wv.Stages = append(wv.Stages, WorkerStageView{Name: st.Name, Slots: st.Slots, Busy: st.Busy, Records: st.Records})
			wv.Slots += st.Slots
			wv.Busy += st.Busy
		}
		v.Workers = append(v.Workers, wv)
	}
	return v
}

// Handler serves /metrics, the page at / and its data at /api/snapshot.
func (o *Observer) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry(), promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /api/snapshot", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(o.View())
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		b, err := page.ReadFile("page/index.html")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(b)
	})
	return mux
}

// Server serves an Observer over HTTP.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan error
}

// Listen starts serving o at addr (host:port; port 0 picks a free one).
func (o *Observer) Listen(addr string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics %s: %w", addr, err)
	}
	s := &Server{
		srv:  &http.Server{Handler: o.Handler(), ReadHeaderTimeout: 10 * time.Second},
		ln:   ln,
		done: make(chan error, 1),
	}
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the server's root as a person can open it: a server listening on
// every interface (":9090", "0.0.0.0:9090") is at localhost on this
// machine; http://[::]:9090/ is not an address a browser opens.
func (s *Server) URL() string {
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil {
		return "http://" + s.Addr() + "/"
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// Close stops the server, giving requests in progress a moment to end,
// and returns once its goroutines have.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		s.srv.Close()
	}
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
