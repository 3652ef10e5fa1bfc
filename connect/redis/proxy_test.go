package redis_test

import (
	"net"
	"sync"
	"testing"
)

// proxy stands between a client and Redis on a loopback port: for each
// connection it takes it dials Redis and hands both ends to serve, which
// starts what it needs with the proxy's spawn. The test's cleanup closes every
// connection and waits for all that was spawned.
type proxy struct {
	l     net.Listener
	to    string
	serve func(p *proxy, client, server net.Conn)
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, to string, serve func(p *proxy, client, server net.Conn)) *proxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{l: l, to: to, serve: serve}
	p.spawn(p.accept)
	t.Cleanup(func() {
		l.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

// addr is where clients connect.
func (p *proxy) addr() string { return p.l.Addr().String() }

// spawn runs f in a goroutine that cleanup waits for.
func (p *proxy) spawn(f func()) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		f()
	}()
}

func (p *proxy) accept() {
	for {
		client, err := p.l.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.to)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, client, server)
		p.mu.Unlock()
		p.serve(p, client, server)
	}
}
