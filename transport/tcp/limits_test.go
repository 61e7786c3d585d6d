package tcp

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/testpki"
)

// dialFrom opens a TCP connection to addr from the loopback address src
// (127.0.0.2, ...: another source than a client's 127.0.0.1), closed
// when the test ends.
func dialFrom(t *testing.T, addr, src string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// closedWithin reports whether the server closes nc within d (a read
// ends with EOF or a reset), discarding what it sends, and how long it
// took.
func closedWithin(nc net.Conn, d time.Duration) (bool, time.Duration) {
	start := time.Now()
	nc.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, nc)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout()), time.Since(start)
}

// shipOne ships one segment over a fresh client of addr, failing the test
// unless it is acknowledged within 5s, and returns the client, its link
// still established.
func shipOne(t *testing.T, addr string, first uint64) *Client {
	t.Helper()
	c := insecureClient(t, addr)
	seg := makeSegment(t, "app", 1, first, 3, "rec")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Put(ctx, "app/"+seg.name, seg.data); err != nil {
		t.Fatalf("a real shipper did not get through: %v", err)
	}
	return c
}

// Connections that have not authenticated are capped at MaxStartups: one
// more from a source already holding as many as any other is closed at
// once, while one from another source (the real shipper) takes the place
// of the oldest of the source holding the most.
func TestMaxStartups(t *testing.T) {
	srv, _, _ := insecureServer(t)
	srv.MaxStartups, srv.MaxConnections, srv.HandshakeTimeout = 3, 8, 5*time.Second
	addr, _ := startServer(t, srv)

	idle := []net.Conn{dialFrom(t, addr, "127.0.0.2"), dialFrom(t, addr, "127.0.0.2"), dialFrom(t, addr, "127.0.0.3")}
	time.Sleep(100 * time.Millisecond) // all three admitted
	over := dialFrom(t, addr, "127.0.0.2")
	if closed, took := closedWithin(over, 2*time.Second); !closed {
		t.Fatalf("a connection over max_startups was kept %s", took)
	}
	over = dialFrom(t, addr, "127.0.0.3") // 127.0.0.3 holds 1, 127.0.0.2 holds 2
	if closed, took := closedWithin(idle[0], 2*time.Second); !closed {
		t.Fatalf("the oldest startup of the heaviest source was kept %s after a lighter source connected", took)
	}
	for _, nc := range []net.Conn{idle[1], idle[2], over} {
		if closed, _ := closedWithin(nc, 100*time.Millisecond); closed {
			t.Fatalf("startup %s closed, want only the heaviest source's oldest evicted", nc.LocalAddr())
		}
	}
	// Every slot is taken again, 127.0.0.3 holding two; the shipper from
	// 127.0.0.1 still gets in, in place of 127.0.0.3's oldest.
	shipOne(t, addr, 1).Close()
	if closed, _ := closedWithin(idle[2], 2*time.Second); !closed {
		t.Fatal("the shipper got in without evicting 127.0.0.3's oldest startup")
	}
	if closed, _ := closedWithin(idle[1], 100*time.Millisecond); closed {
		t.Fatal("127.0.0.2's only startup was evicted")
	}
}

// Connections in all are capped at MaxConnections; one whose token was
// wrong waits out AuthFailDelay outside the startup slots (a shipper still
// gets in meanwhile), and is the first closed when all connections are
// taken.
func TestMaxConnectionsAndAuthFailDelay(t *testing.T) {
	srv, _, _ := insecureServer(t)
	srv.MaxStartups, srv.MaxConnections, srv.AuthFailDelay = 1, 3, 10*time.Second
	addr, _ := startServer(t, srv)

	wrong := func(src string) net.Conn {
		nc := dialFrom(t, addr, src)
		l := newLink(nc, 5*time.Second, MaxControlFrame, nil, defaultChunk)
		if err := l.writeJSON(context.Background(), frameHello, helloMsg{Version: 1, Stream: "app", Generation: 1, Token: "wrong"}); err != nil {
			t.Fatal(err)
		}
		return nc
	}
	p1 := wrong("127.0.0.2")
	time.Sleep(100 * time.Millisecond)
	p2 := wrong("127.0.0.3")
	time.Sleep(100 * time.Millisecond)
	// Both wait out their delay; the one startup slot is free.
	shipOne(t, addr, 1)
	// p1, p2 and the shipper's link: a new connection takes the place of
	// the oldest in its delay, and the next one the other's.
	late := dialFrom(t, addr, "127.0.0.4")
	if closed, took := closedWithin(p1, 2*time.Second); !closed {
		t.Fatalf("the oldest connection in its auth-fail delay was kept %s with every connection taken", took)
	}
	if closed, _ := closedWithin(p2, 100*time.Millisecond); closed {
		t.Fatal("the newer connection in its auth-fail delay was closed too")
	}
	// The one startup slot is late's: another from its source is closed
	// at once, and p2 keeps its place.
	if closed, _ := closedWithin(dialFrom(t, addr, "127.0.0.4"), 2*time.Second); !closed {
		t.Fatal("a connection over max_startups was kept")
	}
	if closed, _ := closedWithin(p2, 100*time.Millisecond); closed {
		t.Fatal("a refused newcomer cost the connection in its delay its place")
	}
	// From another source it takes late's startup slot (late's source
	// holds more); with no startup slot to take, it would take p2's.
	if closed, _ := closedWithin(dialFrom(t, addr, "127.0.0.5"), 300*time.Millisecond); closed {
		t.Fatal("a newcomer from a fresh source was closed")
	}
	if closed, _ := closedWithin(late, 2*time.Second); !closed {
		t.Fatal("late kept its startup slot")
	}
}

// A token that is wrong gets its REFUSE only after AuthFailDelay.
func TestAuthFailDelay(t *testing.T) {
	srv, _, _ := insecureServer(t)
	srv.AuthFailDelay = 400 * time.Millisecond
	addr, _ := startServer(t, srv)
	l := rawDial(t, addr)
	start := time.Now()
	f := rawHello(t, l, helloMsg{Version: 1, Stream: "app", Generation: 1, Token: "wrong"})
	took := time.Since(start)
	var r refuseMsg
	if f.typ != frameRefuse || decodeJSON(f, &r) != nil || r.Code != codeAuth {
		t.Fatalf("answer %s %s, want REFUSE auth", typeName(f.typ), f.payload)
	}
	if took < 400*time.Millisecond {
		t.Fatalf("REFUSE auth after %s, want the 400ms delay", took)
	}
}

// The handshake timeout bounds the TLS handshake and the HELLO together,
// however the peer paces its bytes, and is not the (longer) I/O timeout.
func TestHandshakeTimeout(t *testing.T) {
	pki := testpki.New(t)
	inbox, _ := newInbox(t)
	srv := &Server{Token: testToken, TLS: serverTLS(t, pki, false), Inbox: inbox, Log: quiet,
		IOTimeout: 30 * time.Second, HandshakeTimeout: 500 * time.Millisecond}
	// The bounds below are far above the 500ms handshake timeout, as a
	// loaded machine can stall the test for seconds, and far below the
	// 30s I/O timeout the peer would be kept for without it.
	addr, _ := startServer(t, srv)

	t.Run("TLS handshake never finished", func(t *testing.T) {
		nc := dialFrom(t, addr, "127.0.0.2")
		nc.Write([]byte{0x16, 0x03, 0x01}) // a record header, then nothing
		if closed, took := closedWithin(nc, 12*time.Second); !closed || took > 8*time.Second {
			t.Fatalf("peer stuck in the TLS handshake kept %s, want about 500ms", took)
		}
	})
	t.Run("TLS, then a HELLO trickled", func(t *testing.T) {
		nc := dialFrom(t, addr, "127.0.0.2")
		start := time.Now()
		tc := tls.Client(nc, &tls.Config{InsecureSkipVerify: true})
		time.Sleep(300 * time.Millisecond) // a slow start: most of the budget
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		go func() {
			for _, b := range []byte{0, 0, 0, 100, frameHello, '{', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '} {
				if _, err := tc.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		tc.SetReadDeadline(time.Now().Add(12 * time.Second))
		_, err := io.Copy(io.Discard, tc)
		if took := time.Since(start); took > 8*time.Second {
			t.Fatalf("peer kept %s after it connected (%v), want the 500ms handshake timeout over TLS and HELLO", took, err)
		}
	})
	t.Run("a real shipper is not hurried", func(t *testing.T) {
		c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken,
			TLS: clientTLS(t, pki.CAFile, "", "", "127.0.0.1")}, nil)
		seg := makeSegment(t, "app", 1, 1, 3, "rec")
		if err := c.Put(context.Background(), "app/"+seg.name, seg.data); err != nil {
			t.Fatal(err)
		}
	})
}

// Before the peer has authenticated, the server reads one frame of at
// most MaxHelloFrame bytes: a larger one is refused on its header, before
// the server waits for or allocates its payload. A real HELLO with every
// identity field at its cap fits, and NewClient refuses one that would
// not.
func TestHelloReadIntoSmallBuffer(t *testing.T) {
	srv, _, _ := insecureServer(t)
	srv.HandshakeTimeout = 5 * time.Second
	addr, _ := startServer(t, srv)
	for _, n := range []int{MaxHelloFrame + 1, MaxControlFrame - 100} {
		nc := dialFrom(t, addr, "127.0.0.2")
		nc.Write([]byte{0, byte(n >> 16), byte(n >> 8), byte(n), frameHello, '{'})
		if closed, took := closedWithin(nc, 3*time.Second); !closed || took > time.Second {
			t.Fatalf("a HELLO header claiming %d bytes: connection kept %s, want closed on the header", n, took)
		}
	}

	long := func(n int) string { return strings.Repeat("x", n) }
	c := newClient(t, ClientConfig{Addr: addr, Stream: long(128), Token: testToken, Insecure: true,
		ClientID: long(maxIdentity), Site: long(maxIdentity), Host: long(maxIdentity), Spool: "/" + long(maxSpoolPath-1)}, nil)
	seg := makeSegment(t, long(128), 1, 1, 1, "r")
	if err := c.Put(context.Background(), long(128)+"/"+seg.name, seg.data); err != nil {
		t.Fatalf("HELLO with every field at its cap: %v", err)
	}
	hello, _ := json.Marshal(c.hello(MaxHistoryRecords))
	t.Logf("largest HELLO without a token: %d bytes of %d", len(hello)-len(testToken), MaxHelloFrame)

	_, err := NewClient(ClientConfig{Addr: addr, Stream: "app", Token: long(MaxHelloFrame), Insecure: true}, quiet)
	if err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("NewClient with a HELLO over MaxHelloFrame: %v, want an error naming the token", err)
	}
}

// A handshake link reads with small buffers; grow gives it full ones and
// keeps what the small one had read ahead.
func TestHandshakeLinkGrows(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	l := newHandshakeLink(b, time.Second)
	// What a peer that has not authenticated costs in buffers.
	if l.r.Size()+l.w.Size() > 8<<10 {
		t.Fatalf("handshake link buffers %d+%d bytes, want at most 8 KiB", l.r.Size(), l.w.Size())
	}
	hello := frameBytes(frameHello, []byte(`{"version":1}`))
	gen := frameBytes(frameGeneration, []byte(`{"generation":2}`))
	go a.Write(append(hello, gen...))
	f, err := readHelloFrame(l.r)
	if err != nil || f.typ != frameHello {
		t.Fatalf("first frame %s, %v", typeName(f.typ), err)
	}
	l.grow(time.Second, MaxControlFrame)
	if l.r.Size() != linkReadBuffer || l.w.Size() != defaultChunk {
		t.Fatalf("grown link buffers %d/%d, want %d/%d", l.r.Size(), l.w.Size(), linkReadBuffer, defaultChunk)
	}
	f, err = l.read()
	if err != nil || f.typ != frameGeneration || string(f.payload) != `{"generation":2}` {
		t.Fatalf("frame read after grow: %s %q, %v", typeName(f.typ), f.payload, err)
	}
}

// A flood of hostile HELLOs costs the log one line per kind per interval,
// with the peer's strings escaped and cut, and a count of the rest.
func TestFloodLogIsShortAndEscaped(t *testing.T) {
	var logs ferrytest.LockedBuffer
	srv, _, _ := insecureServer(t)
	srv.Log, srv.AuthFailDelay, srv.LogInterval = logs.Logger(slog.LevelInfo), -1, 500*time.Millisecond
	addr, stop := startServer(t, srv)
	evil := "\x1b[2J\nlevel=ERROR msg=forged " + strings.Repeat("A", 500)
	for range 30 {
		l := rawDial(t, addr)
		if f := rawHello(t, l, helloMsg{Version: 1, Stream: evil, Generation: 1, Token: "wrong", ClientID: evil}); f.typ != frameRefuse {
			t.Fatalf("answer %s", typeName(f.typ))
		}
	}
	stop()
	out := logs.String()
	if strings.Contains(out, "\x1b") || strings.Contains(out, "\nlevel=ERROR msg=forged") {
		t.Fatalf("the peer's control characters reached the log:\n%s", out)
	}
	if n := strings.Count(out, `msg="refused link"`); n != 1 {
		t.Fatalf("%d refused-link lines for 30 refusals within the interval, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, `kind="refused auth" count=29`) {
		t.Fatalf("no count of the 29 lines held back:\n%s", out)
	}
	for line := range strings.Lines(out) {
		if len(line) > 600 {
			t.Fatalf("a %d-byte log line:\n%s", len(line), line)
		}
	}
}

func TestPeerText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"client-1", "client-1"},
		{"a\x1b[31mb\nc", `a\x1b[31mb\nc`},
		{"tab\there", `tab\there`},
		{"back\\slash", `back\\slash`},
		{"bad\xffutf8", `bad\xffutf8`},
		{"ünïcode ok", "ünïcode ok"},
		{"\u2028line sep", `\u2028line sep`},
		{strings.Repeat("x", 70), strings.Repeat("x", 64) + "...(6 bytes cut)"},
		{strings.Repeat("\x00", 20), strings.Repeat(`\x00`, 16) + "...(4 bytes cut)"},
	} {
		if got := peerText(tc.in, 64); got != tc.want {
			t.Errorf("peerText(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The limiter lets the first line of a kind through at once, holds back
// the rest for the interval and then reports their count; other kinds
// are not held back.
func TestLogLimiter(t *testing.T) {
	var logs ferrytest.LockedBuffer
	l := newLogLimiter(logs.Logger(slog.LevelDebug), 200*time.Millisecond)
	for i := range 50 {
		l.Log(slog.LevelWarn, "a", "event a", "i", i)
	}
	l.Log(slog.LevelInfo, "b", "event b")
	out := logs.String()
	if strings.Count(out, "event a") != 1 || !strings.Contains(out, "i=0") || !strings.Contains(out, "event b") {
		t.Fatalf("want the first a and the b:\n%s", out)
	}
	ferrytest.Eventually(t, 2*time.Second, "count of held-back lines", func() (bool, string) {
		out := logs.String()
		return strings.Contains(out, "kind=a count=49"), out
	})
	time.Sleep(250 * time.Millisecond)
	l.Log(slog.LevelWarn, "a", "event a", "i", 50)
	if out := logs.String(); !strings.Contains(out, "i=50") {
		t.Fatalf("a line after a quiet interval was held back:\n%s", out)
	}
	l.Close()
}

// With a file descriptor limit that would leave fewer than FDReserve
// descriptors free with MaxConnections open, the server holds fewer
// connections and says so.
func TestFileBudget(t *testing.T) {
	limit, open, ok := fileLimit()
	if !ok {
		t.Fatal("no RLIMIT_NOFILE on this system")
	}
	var logs ferrytest.LockedBuffer
	srv, _, _ := insecureServer(t)
	srv.Log = logs.Logger(slog.LevelInfo)
	st, err := srv.settings()
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.fileBudget(st); n != DefaultMaxConnections {
		t.Fatalf("budget with %d of %d descriptors open: %d, want max connections %d", open, limit, n, DefaultMaxConnections)
	}
	st.fdReserve = limit - open - 11 // room for 10 connections
	if n := srv.fileBudget(st); n < 8 || n > 12 {
		t.Fatalf("budget with %d of %d open and a reserve of %d: %d, want about 10", open, limit, st.fdReserve, n)
	}
	if !strings.Contains(logs.String(), "file descriptor limit lowers max connections") {
		t.Fatalf("no warning:\n%s", logs.String())
	}
}

// Accept failing with EMFILE makes the server back off, not spin or stop.
func TestAcceptBacksOffOnEMFILE(t *testing.T) {
	srv, _, _ := insecureServer(t)
	ln := &failingListener{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	time.Sleep(500 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if n := ln.calls.Load(); n < 3 || n > 12 {
		t.Fatalf("%d accepts in 500ms of EMFILE, want a few (backing off)", n)
	}
}

type failingListener struct {
	calls  atomic.Int64
	closed atomic.Bool
}

func (l *failingListener) Accept() (net.Conn, error) {
	l.calls.Add(1)
	if l.closed.Load() {
		return nil, net.ErrClosed
	}
	return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
}
func (l *failingListener) Close() error   { l.closed.Store(true); return nil }
func (l *failingListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
