package transport_test

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stallProxy stands between a worker and a broker, on loopback. While
// stalled, it drops the worker's publishes of results (subjects with
// ".out.") before they reach the broker, and so no PubAck of theirs ever
// comes, while everything else passes: pings, pulls, acks, InProgress,
// reports. It is a broker whose JetStream does not answer while the
// server does (a cluster that lost its quorum, a store that stalls), seen
// from the worker.
type stallProxy struct {
	ln      net.Listener
	broker  string
	stalled atomic.Bool
	dropped atomic.Int64 // publishes of results dropped

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startStallProxy(t *testing.T, brokerURL string) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, broker: strings.TrimPrefix(brokerURL, "nats://")}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *stallProxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *stallProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		b, err := net.Dial("tcp", p.broker)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, b)
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			io.Copy(c, b)
			c.Close()
		}()
		go func() {
			defer p.wg.Done()
			p.forward(b, c)
			b.Close()
		}()
	}
}

// forward copies the client's protocol to the broker a command at a
// time, leaving out the publishes of results while stalled.
func (p *stallProxy) forward(to io.Writer, from io.Reader) {
	r := bufio.NewReaderSize(from, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		f := strings.Fields(string(line))
		var body []byte
		if len(f) >= 3 && (f[0] == "PUB" || f[0] == "HPUB") {
			size, err := strconv.Atoi(f[len(f)-1])
			if err != nil {
				return
			}
			body = make([]byte, size+2) // and its \r\n
			if _, err := io.ReadFull(r, body); err != nil {
				return
			}
			if p.stalled.Load() && strings.Contains(f[1], ".out.") && !bytes.Contains(body, []byte("Flowrun-Notice")) {
				p.dropped.Add(1)
				continue
			}
		}
		if _, err := to.Write(append(line, body...)); err != nil {
			return
		}
	}
}

func (p *stallProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestScaleOutWorkerResultsUnacked: a worker whose publishes of results
// get no PubAck (the broker stores and acks none of them, and answers
// everything else) gives their pieces back after the ack timeout, says
// so in one line, and once the broker acks again works them anew: the
// run ends with the in-memory run's output. It waited for those acks for
// ever, its InProgress keeping the pieces from every other worker, and
// the run never ended.
func TestScaleOutWorkerResultsUnacked(t *testing.T) {
	b := startTestBroker(t, "flowrun-broker")
	s := newScaleRun(t, "unacked", 300, `stages:
  - {name: slow, use: sleep, with: {duration: 20ms}, workers: 4}
  - {name: upper, use: upper}
`)
	want := s.expected(t)
	proxy := startStallProxy(t, b.url)
	w := s.startWorker(t, proxy.url())
	waitFor(t, w.stderr, "waiting for runs")
	run := s.startRun(t, b.url)
	waitFor(t, w.stderr, "joined run")
	began := time.Now()
	proxy.stalled.Store(true)
	waitFor(t, w.stderr, "the broker acked no results of stage")
	proxy.stalled.Store(false)
	t.Logf("stalled for %v, %d results dropped", time.Since(began), proxy.dropped.Load())
	st := s.checkOutput(t, run, want, false)
	t.Logf("run ended %v after the stall began", time.Since(began))
	waitFor(t, w.stderr, "the broker acks results again")
	if proxy.dropped.Load() == 0 {
		t.Errorf("the proxy dropped no results")
	}
	if n := strings.Count(w.stderr.String(), "acked no results"); n != 1 {
		t.Errorf("the worker said %d times that results were not acked, want once:\n%s", n, w.stderr)
	}
	var redelivered int64
	for _, sg := range st.Stages {
		redelivered += sg.Redelivered
	}
	if redelivered == 0 {
		t.Errorf("no piece was delivered again: the pieces whose results were not acked were not given back")
	}
	if w.exited() {
		t.Errorf("the worker exited:\n%s", w.stderr)
	}
	w.stop(t)
}
