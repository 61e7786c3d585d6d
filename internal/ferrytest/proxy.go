package ferrytest

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP fault proxy for tests of the direct link: it forwards
// connections to a target and can cut every open connection, cut new ones
// after some bytes from the client (mid-segment), or stall them.
type Proxy struct {
	ln     net.Listener
	target string

	cutAfter atomic.Int64 // >0: cut each new connection after this many client bytes
	stall    atomic.Int64 // >0: nanoseconds to hold each new connection before forwarding
	cuts     atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// StartProxy listens on a loopback port and forwards to target until the
// test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() {
		ln.Close()
		p.CutAll()
	})
	go p.accept()
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cuts is how many connections the proxy has cut.
func (p *Proxy) Cuts() int64 { return p.cuts.Load() }

// CutAfter makes new connections die after n bytes from the client (0:
// never).
func (p *Proxy) CutAfter(n int64) { p.cutAfter.Store(n) }

// Stall makes new connections wait d before anything is forwarded (0: no
// stall).
func (p *Proxy) Stall(d time.Duration) { p.stall.Store(int64(d)) }

// CutAll closes every open connection at once.
func (p *Proxy) CutAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		p.cuts.Add(1)
	}
	clear(p.conns)
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *Proxy) track(cs ...net.Conn) {
	p.mu.Lock()
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	p.mu.Unlock()
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	for _, c := range cs {
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

func (p *Proxy) serve(c net.Conn) {
	defer c.Close()
	if d := time.Duration(p.stall.Load()); d > 0 {
		time.Sleep(d)
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer up.Close()
	p.track(c, up)
	defer p.untrack(c, up)
	go func() {
		io.Copy(c, up)
		c.Close()
	}()
	if n := p.cutAfter.Load(); n > 0 {
		io.CopyN(up, c, n)
		p.cuts.Add(1)
		return
	}
	io.Copy(up, c)
}

// WaitConn waits up to timeout for at least one open connection, so a cut
// hits a live link; it reports whether one was there.
func (p *Proxy) WaitConn(timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		p.mu.Lock()
		n := len(p.conns)
		p.mu.Unlock()
		if n > 0 {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}
