package tcp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/testpki"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

const testToken = "s3cret-token"

// quiet discards logs of the code under test.
var quiet = slog.New(slog.DiscardHandler)

// testSegment is one sealed segment: its name (without the stream) and bytes.
type testSegment struct {
	name string
	data []byte
	meta batch.Meta
	hash string
}

// makeSegment seals n records starting at seq first, each record's data
// being "<fill>-<seq>".
func makeSegment(t testing.TB, stream string, gen uint32, first uint64, n int, fill string) testSegment {
	t.Helper()
	recs := make([]batch.Record, n)
	for i := range recs {
		recs[i] = batch.Record{Seq: first + uint64(i), Time: time.Unix(1_750_000_000, 0).UTC(), Data: []byte(fill + "-" + itoa(first+uint64(i)))}
	}
	return seal(t, stream, gen, batch.ZeroHash, recs)
}

// makeBigSegment seals one segment of about size bytes of random
// (incompressible) records.
func makeBigSegment(t testing.TB, stream string, gen uint32, first uint64, size int) testSegment {
	t.Helper()
	const recSize = 64 << 10
	var recs []batch.Record
	for i := 0; i*recSize < size; i++ {
		data := make([]byte, min(recSize, size-i*recSize))
		for j := range data {
			data[j] = byte(mrand.Uint32())
		}
		recs = append(recs, batch.Record{Seq: first + uint64(i), Time: time.Unix(1_750_000_000, 0).UTC(), Data: data})
	}
	return seal(t, stream, gen, batch.ZeroHash, recs)
}

func seal(t testing.TB, stream string, gen uint32, prev string, recs []batch.Record) testSegment {
	t.Helper()
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset(stream, gen, prev)
	for i := range recs {
		if err := b.Add(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	data, m, err := b.Seal(time.Unix(1_750_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	return testSegment{name: m.Name(), data: data, meta: m, hash: batch.Hash(data)}
}

func itoa(v uint64) string { return big.NewInt(0).SetUint64(v).String() }

// newInbox returns a dir store in a fresh temp dir and its root.
func newInbox(t *testing.T) (*dir.Store, string) {
	t.Helper()
	root := t.TempDir()
	s, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	return s, root
}

// startServer serves srv on 127.0.0.1:0 until the test ends (or stop is
// called) and returns its address.
func startServer(t *testing.T, srv *Server) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Serve did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

// insecureServer is a plaintext server with a token on a fresh inbox.
func insecureServer(t *testing.T) (*Server, *dir.Store, string) {
	t.Helper()
	inbox, root := newInbox(t)
	return &Server{Token: testToken, Insecure: true, Inbox: inbox, Log: quiet}, inbox, root
}

// insecureLink starts an insecure server on a fresh inbox and returns a
// client of it and the inbox.
func insecureLink(t *testing.T) (*Client, *dir.Store) {
	t.Helper()
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	return insecureClient(t, addr), inbox
}

// newClient builds a client that is closed when the test ends.
func newClient(t *testing.T, cfg ClientConfig, log *slog.Logger) *Client {
	t.Helper()
	if log == nil {
		log = quiet
	}
	c, err := NewClient(cfg, log)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func insecureClient(t *testing.T, addr string) *Client {
	return newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true}, nil)
}

// inboxObjects lists the segments of stream in st.
func inboxObjects(t *testing.T, st store.Store, stream string) []string {
	t.Helper()
	var names []string
	err := st.List(context.Background(), stream+"/", "", func(o store.Object) error {
		names = append(names, strings.TrimPrefix(o.Name, stream+"/"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// wantInbox checks that stream "app" in inbox holds exactly the segments
// named, in order.
func wantInbox(t *testing.T, inbox store.Store, names ...string) {
	t.Helper()
	if got := inboxObjects(t, inbox, "app"); !slices.Equal(got, names) {
		t.Fatalf("inbox holds %v, want %v", got, names)
	}
}

// faultyInbox is an inbox whose operations fail when the matching field
// returns an error; nil fields pass through to Store.
type faultyInbox struct {
	store.Store
	list, put, get func() error
}

func (f *faultyInbox) List(ctx context.Context, dir, after string, fn func(store.Object) error) error {
	if f.list != nil {
		if err := f.list(); err != nil {
			return err
		}
	}
	return f.Store.List(ctx, dir, after, fn)
}

func (f *faultyInbox) Put(ctx context.Context, name string, data []byte) error {
	if f.put != nil {
		if err := f.put(); err != nil {
			return err
		}
	}
	return f.Store.Put(ctx, name, data)
}

func (f *faultyInbox) Get(ctx context.Context, name string) (io.ReadCloser, error) {
	if f.get != nil {
		if err := f.get(); err != nil {
			return nil, err
		}
	}
	return f.Store.Get(ctx, name)
}

// fakeReceiver accepts plaintext links on a fresh port and runs serve on
// each (conn counts from 1) once it has read the shipper's HELLO. It
// returns the address.
func fakeReceiver(t *testing.T, serve func(conn int, l *link)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for conn := 1; ; conn++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer nc.Close()
				l := newLink(nc, 5*time.Second, DefaultMaxSegment, nil, defaultChunk)
				if f, err := l.read(); err != nil || f.typ != frameHello {
					t.Errorf("fake receiver: first frame %s, %v; want HELLO", typeName(f.typ), err)
					return
				}
				serve(conn, l)
			})
		}
	})
	return ln.Addr().String()
}

// welcome answers a HELLO as a receiver with an empty inbox would.
func welcome(l *link) error {
	return l.writeJSON(context.Background(), frameWelcome, welcomeMsg{Version: ProtocolVersion, MaxSegment: DefaultMaxSegment, HeartbeatMS: 1000})
}

// mustGet reads a whole object.
func mustGet(t *testing.T, st store.Store, key string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// rawDial opens a plaintext link to addr without a Client, for tests that
// speak the protocol by hand.
func rawDial(t *testing.T, addr string) *link {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return newLink(nc, 5*time.Second, DefaultMaxSegment, nil, defaultChunk)
}

// rawHello sends h and returns the answer frame.
func rawHello(t *testing.T, l *link, h helloMsg) frame {
	t.Helper()
	if err := l.writeJSON(context.Background(), frameHello, h); err != nil {
		t.Fatal(err)
	}
	f, err := l.read()
	if err != nil {
		t.Fatalf("read answer to HELLO: %v", err)
	}
	return f
}

// readUntilEOF reads frames until the link ends and returns them and the
// ending error.
func readUntilEOF(l *link) ([]frame, error) {
	var fs []frame
	for {
		f, err := l.read()
		if err != nil {
			return fs, err
		}
		fs = append(fs, f)
	}
}

func serverTLS(t *testing.T, p *testpki.PKI, clientCA bool) *tls.Config {
	t.Helper()
	cert, key := p.Issue(t, "receiver", true)
	ca := ""
	if clientCA {
		ca = p.CAFile
	}
	cfg, err := LoadServerTLS(cert, key, ca)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// proxy forwards TCP connections to target. cut, if set, is asked before
// each chunk is forwarded: conn counts connections from 1, up is true for
// shipper-to-receiver bytes, n counts chunks in that direction from 1 and
// total is the bytes forwarded in it including this chunk. If it returns
// true, the chunk is dropped and both connections are closed.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   func(conn int, up bool, n int, total int64) bool
	conns int
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	t.Cleanup(func() {
		ln.Close()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) setCut(f func(conn int, up bool, n int, total int64) bool) {
	p.mu.Lock()
	p.cut = f
	p.mu.Unlock()
}

func (p *proxy) accept() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns++
		id := p.conns
		p.mu.Unlock()
		closeBoth := sync.OnceFunc(func() { down.Close(); up.Close() })
		var pipes sync.WaitGroup
		pipes.Go(func() { p.pipe(id, true, down, up, closeBoth) })
		pipes.Go(func() { p.pipe(id, false, up, down, closeBoth) })
		p.wg.Go(func() { pipes.Wait(); closeBoth() })
	}
}

// pipe copies from to to until from ends (then half-closes to) or
// something fails or the cut hook fires (then closes both connections).
func (p *proxy) pipe(id int, upward bool, from, to net.Conn, closeBoth func()) {
	buf := make([]byte, 32<<10)
	var total int64
	for n := 1; ; n++ {
		k, err := from.Read(buf)
		if k > 0 {
			total += int64(k)
			p.mu.Lock()
			cut := p.cut != nil && p.cut(id, upward, n, total)
			p.mu.Unlock()
			if cut {
				closeBoth()
				return
			}
			if _, werr := to.Write(buf[:k]); werr != nil {
				closeBoth()
				return
			}
		}
		if errors.Is(err, io.EOF) {
			to.(*net.TCPConn).CloseWrite()
			return
		}
		if err != nil {
			closeBoth()
			return
		}
	}
}

// listenAgain listens on addr, retrying briefly while the old listener's
// port is released.
func listenAgain(addr string) (net.Listener, error) {
	var err error
	for range 50 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}
