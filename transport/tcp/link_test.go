package tcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

func TestPutLandsInInbox(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	var applied atomic.Uint64
	applied.Store(7)
	srv.Applied = func(stream string) uint64 { return applied.Load() }
	addr, _ := startServer(t, srv)
	c := insecureClient(t, addr)
	ctx := context.Background()

	segs := []testSegment{
		makeSegment(t, "app", 1, 1, 10, "a"),
		makeSegment(t, "app", 1, 11, 5, "b"),
		makeSegment(t, "app", 1, 16, 1, "c"),
	}
	for _, s := range segs {
		if err := c.Put(ctx, "app/"+s.name, s.data); err != nil {
			t.Fatalf("Put %s: %v", s.name, err)
		}
		if got := mustGet(t, inbox, "app/"+s.name); !bytes.Equal(got, s.data) {
			t.Fatalf("inbox copy of %s differs from what was sent", s.name)
		}
	}
	wantInbox(t, inbox, segs[0].name, segs[1].name, segs[2].name)
	if r, a := c.Watermarks(); r != 16 || a != 7 {
		t.Fatalf("Watermarks = %d, %d; want 16, 7", r, a)
	}
	if c.String() != "tcp://"+addr || strings.Contains(c.String(), testToken) {
		t.Fatalf("String() = %q", c.String())
	}
	if c.dials != 1 {
		t.Fatalf("%d dials for 3 puts, want 1", c.dials)
	}
}

func TestResendIdenticalIsSuccess(t *testing.T) {
	c, inbox := insecureLink(t)
	s := makeSegment(t, "app", 1, 1, 3, "x")
	for i := range 3 {
		if err := c.Put(t.Context(), "app/"+s.name, s.data); err != nil {
			t.Fatalf("Put #%d: %v", i+1, err)
		}
	}
	wantInbox(t, inbox, s.name)
}

func TestDifferentContentSameNameIsConflict(t *testing.T) {
	c, inbox := insecureLink(t)
	ctx := t.Context()
	a := makeSegment(t, "app", 1, 1, 3, "original")
	b := makeSegment(t, "app", 1, 1, 3, "impostor")
	if a.name != b.name || bytes.Equal(a.data, b.data) {
		t.Fatal("test segments should share a name and differ")
	}
	if err := c.Put(ctx, "app/"+a.name, a.data); err != nil {
		t.Fatal(err)
	}
	err := c.Put(ctx, "app/"+b.name, b.data)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Put of different content: %v, want ErrConflict", err)
	}
	if !bytes.Equal(mustGet(t, inbox, "app/"+a.name), a.data) {
		t.Fatal("inbox copy was overwritten")
	}
	// The link survives a conflict.
	next := makeSegment(t, "app", 1, 4, 1, "original")
	if err := c.Put(ctx, "app/"+next.name, next.data); err != nil {
		t.Fatalf("Put after conflict: %v", err)
	}
	if c.dials != 1 {
		t.Fatalf("%d dials, want 1", c.dials)
	}
}

func TestWrongTokenRefused(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	var serverLog, clientLog ferrytest.LockedBuffer
	srv.Log = serverLog.Logger(slog.LevelDebug)
	addr, _ := startServer(t, srv)
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: "wrong", Insecure: true}, clientLog.Logger(slog.LevelDebug))
	s := makeSegment(t, "app", 1, 1, 3, "x")
	err := c.Put(context.Background(), "app/"+s.name, s.data)
	t.Logf("error: %v", err)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, store.ErrPermanent) {
		t.Fatalf("Put with a wrong token: %v, want ErrRefused and ErrPermanent", err)
	}
	if !strings.Contains(err.Error(), "token") {
		t.Fatalf("error does not mention the token: %v", err)
	}
	wantInbox(t, inbox)
	if sl := serverLog.String(); !strings.Contains(sl, "refused link") || !strings.Contains(sl, "peer=127.0.0.1:") || !strings.Contains(sl, "code=auth") {
		t.Fatalf("server log lacks the refusal with the peer address:\n%s", sl)
	}
	if cl := clientLog.String(); !strings.Contains(cl, "refused") || !strings.Contains(cl, addr) {
		t.Fatalf("client log lacks the refusal with the receiver address:\n%s", cl)
	}
	if strings.Contains(serverLog.String()+clientLog.String(), "wrong") {
		t.Fatal("a token appears in a log")
	}
}

func TestHandshakeRefusals(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	srv.Stream = "app"
	srv.Generation = 2
	createRecord(t, inbox, testRecord("app", 2, 0, "dr"))
	addr, _ := startServer(t, srv)
	good := helloMsg{Version: 1, Stream: "app", Generation: 2, Token: testToken}
	tests := []struct {
		name string
		edit func(h *helloMsg)
		code string
		msg  string
	}{
		{"newer version", func(h *helloMsg) { h.Version = 2 }, codeVersion, "upgrade the receiver"},
		{"version zero", func(h *helloMsg) { h.Version = 0 }, codeVersion, "invalid"},
		{"no token", func(h *helloMsg) { h.Token = "" }, codeAuth, "token missing"},
		{"bad stream name", func(h *helloMsg) { h.Stream = "../etc" }, codeStream, "invalid"},
		{"other stream", func(h *helloMsg) { h.Stream = "other" }, codeStream, `accepts stream "app"`},
		{"generation zero", func(h *helloMsg) { h.Generation = 0 }, codeGeneration, "generation 0"},
		{"older generation", func(h *helloMsg) { h.Generation = 1 }, codeFenced, "fenced: generation 2 was promoted at seq 0 on dr"},
		{"unknown generation", func(h *helloMsg) { h.Generation = 3 }, codeGeneration, "unknown generation 3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := good
			tc.edit(&h)
			l := rawDial(t, addr)
			f := rawHello(t, l, h)
			var r refuseMsg
			if f.typ != frameRefuse || decodeJSON(f, &r) != nil {
				t.Fatalf("answer %s %q, want REFUSE", typeName(f.typ), f.payload)
			}
			if r.Code != tc.code || !strings.Contains(r.Message, tc.msg) {
				t.Fatalf("REFUSE %+v, want code %s and a message with %q", r, tc.code, tc.msg)
			}
			// Nothing is accepted after a refusal: the link is closed.
			s := makeSegment(t, "app", 2, 1, 1, "x")
			l.write(context.Background(), frameSegment, segmentHeader(s.name), s.data)
			if fs, err := readUntilEOF(l); len(fs) != 0 {
				t.Fatalf("frames after REFUSE: %d (%v)", len(fs), err)
			}
		})
	}
	t.Run("good hello", func(t *testing.T) {
		f := rawHello(t, rawDial(t, addr), good)
		if f.typ != frameWelcome {
			t.Fatalf("answer %s %q, want WELCOME", typeName(f.typ), f.payload)
		}
	})
	wantInbox(t, inbox)
}

func TestNothingAcceptedBeforeHandshake(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	l := rawDial(t, addr)
	s := makeSegment(t, "app", 1, 1, 1, "x")
	if err := l.write(context.Background(), frameSegment, segmentHeader(s.name), s.data); err != nil {
		t.Fatal(err)
	}
	fs, _ := readUntilEOF(l)
	var r refuseMsg
	if len(fs) != 1 || fs[0].typ != frameRefuse || decodeJSON(fs[0], &r) != nil || r.Code != codeProtocol {
		t.Fatalf("answer to a SEGMENT before HELLO: %d frames %v", len(fs), fs)
	}
	wantInbox(t, inbox)
}

func TestSegmentVerification(t *testing.T) {
	c, inbox := insecureLink(t)
	ctx := t.Context()

	s := makeSegment(t, "app", 1, 1, 50, "payload")
	damaged := bytes.Clone(s.data)
	damaged[len(damaged)-3] ^= 0x40
	other := makeSegment(t, "other", 1, 1, 1, "x")
	gen2 := makeSegment(t, "app", 2, 1, 1, "x")
	tests := []struct {
		name, key string
		data      []byte
		want      string
	}{
		{"damaged payload", "app/" + s.name, damaged, "failed verification"},
		{"other stream", "app/" + other.name, other.data, `belongs to stream "other"`},
		{"other generation", "app/" + gen2.name, gen2.data, "generation 2"},
		{"name disagrees", "app/" + batch.SegmentName(1, 1, 2), s.data, "metadata says"},
	}
	for _, tc := range tests {
		err := c.Put(ctx, tc.key, tc.data)
		if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Put = %v, want ErrPermanent mentioning %q", tc.name, err, tc.want)
		}
	}
	wantInbox(t, inbox)
	if c.dials != 1 {
		t.Fatalf("%d dials, want 1: rejections keep the link", c.dials)
	}
}

func TestUnsupportedOperations(t *testing.T) {
	c, _ := insecureLink(t)
	ctx := t.Context()
	s := makeSegment(t, "app", 1, 1, 1, "x")
	if err := c.Put(ctx, "other/"+s.name, s.data); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("Put of another stream: %v", err)
	}
	if err := c.Put(ctx, "app/watermarks/x", s.data); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("Put of a non-segment: %v", err)
	}
	if err := c.Delete(ctx, "app/"+s.name); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("Delete: %v", err)
	}
	if err := c.List(ctx, "app/watermarks/", "", func(store.Object) error { return nil }); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("List of another dir: %v", err)
	}
	if _, err := c.Get(ctx, "app/"+s.name); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a missing segment: %v", err)
	}
	var listed []string
	if err := c.List(ctx, "app/", "", func(o store.Object) error { listed = append(listed, o.Name); return nil }); err != nil || len(listed) != 0 {
		t.Errorf("List of an empty stream: %v %v", listed, err)
	}
	c.Close()
	if err := c.Put(ctx, "app/"+s.name, s.data); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("Put after Close: %v", err)
	}
}

func TestConstructionNeedsTLSOrInsecure(t *testing.T) {
	_, err := NewClient(ClientConfig{Addr: "127.0.0.1:1", Stream: "app", Token: "t"}, nil)
	if err == nil || !strings.Contains(err.Error(), "insecure = true") || !strings.Contains(err.Error(), "TLS") {
		t.Errorf("NewClient without TLS: %v", err)
	}
	_, err = NewClient(ClientConfig{Addr: "127.0.0.1:1", Stream: "app", Insecure: true}, nil)
	if err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("NewClient without token or certificate: %v", err)
	}
	_, err = NewClient(ClientConfig{Addr: "nowhere", Stream: "app", Token: "t", Insecure: true}, nil)
	if err == nil || !strings.Contains(err.Error(), "host:port") {
		t.Errorf("NewClient with a bad address: %v", err)
	}
	_, err = NewClient(ClientConfig{Addr: "h:1", Stream: "app", Token: "t", Insecure: true, IOTimeout: time.Second, HeartbeatInterval: 2 * time.Second}, nil)
	if err == nil || !strings.Contains(err.Error(), "heartbeat") {
		t.Errorf("NewClient with heartbeat above io timeout: %v", err)
	}

	inbox, _ := newInbox(t)
	srv := &Server{Token: "t", Inbox: inbox}
	if err := srv.Check(); err == nil || !strings.Contains(err.Error(), "insecure = true") {
		t.Errorf("Server without TLS: %v", err)
	}
	if err := srv.ListenAndServe(context.Background()); err == nil {
		t.Error("ListenAndServe without TLS succeeded")
	}
	srv = &Server{Insecure: true, Inbox: inbox}
	if err := srv.Check(); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("Server without token or mutual TLS: %v", err)
	}
	srv = &Server{Insecure: true, Token: "t"}
	if err := srv.Check(); err == nil || !strings.Contains(err.Error(), "inbox") {
		t.Errorf("Server without inbox: %v", err)
	}
}

// A link cut in the middle of a SEGMENT frame: the Put fails retryably,
// the receiver stores nothing, and the retry stores one intact copy.
func TestCutMidSegment(t *testing.T) {
	srv, inbox, root := insecureServer(t)
	addr, _ := startServer(t, srv)
	p := startProxy(t, addr)
	p.setCut(func(conn int, up bool, n int, total int64) bool {
		return conn == 1 && up && total > 100<<10
	})
	c := newClient(t, ClientConfig{Addr: p.addr(), Stream: "app", Token: testToken, Insecure: true, ReconnectMin: time.Millisecond}, nil)
	s := makeBigSegment(t, "app", 1, 1, 300<<10)
	ctx := context.Background()

	err := c.Put(ctx, "app/"+s.name, s.data)
	t.Logf("error: %v", err)
	if err == nil || !store.IsRetryable(err) {
		t.Fatalf("Put over a cut link: %v, want a retryable error", err)
	}
	wantInbox(t, inbox)
	err = store.Retry(ctx, store.RetryPolicy{Min: time.Millisecond}, nil, "put", func(ctx context.Context) error {
		return c.Put(ctx, "app/"+s.name, s.data)
	})
	if err != nil {
		t.Fatalf("retried Put: %v", err)
	}
	checkOneCopy(t, inbox, root, s)
}

// A link cut after the receiver stored the segment but before the ACK
// arrived: the resend of the identical segment succeeds.
func TestCutBeforeAck(t *testing.T) {
	srv, inbox, root := insecureServer(t)
	addr, _ := startServer(t, srv)
	p := startProxy(t, addr)
	p.setCut(func(conn int, up bool, n int, total int64) bool {
		return conn == 1 && !up && n >= 2 // the WELCOME passes, the ACK does not
	})
	c := newClient(t, ClientConfig{Addr: p.addr(), Stream: "app", Token: testToken, Insecure: true, ReconnectMin: time.Millisecond}, nil)
	s := makeSegment(t, "app", 1, 1, 10, "x")
	ctx := context.Background()
	err := c.Put(ctx, "app/"+s.name, s.data)
	if err == nil || !store.IsRetryable(err) {
		t.Fatalf("Put with the ACK lost: %v, want a retryable error", err)
	}
	if err := c.Put(ctx, "app/"+s.name, s.data); err != nil {
		t.Fatalf("resend: %v", err)
	}
	checkOneCopy(t, inbox, root, s)
	if c.dials != 2 {
		t.Fatalf("%d dials, want 2", c.dials)
	}
}

// checkOneCopy checks the inbox holds exactly s, intact, and no temp files.
func checkOneCopy(t *testing.T, inbox store.Store, root string, s testSegment) {
	t.Helper()
	wantInbox(t, inbox, s.name)
	if !bytes.Equal(mustGet(t, inbox, "app/"+s.name), s.data) {
		t.Fatal("inbox copy differs from what was sent")
	}
	ents, err := os.ReadDir(root + "/app")
	ents = slices.DeleteFunc(ents, func(e os.DirEntry) bool { return isLockFile(e.Name()) })
	if err != nil || len(ents) != 1 {
		t.Fatalf("inbox directory holds %d entries besides its lock file (%v), want 1", len(ents), err)
	}
}

// isLockFile reports the dir store's lock files, which have the temp-file
// shape (".*.tmp") that List skips.
func isLockFile(name string) bool {
	return strings.HasPrefix(name, ".") && strings.HasSuffix(name, "-lock.tmp")
}

func TestOversizeFrameClosesLink(t *testing.T) {
	srv, _, _ := insecureServer(t)
	srv.MaxSegment = 1 << 20
	addr, _ := startServer(t, srv)

	t.Run("before handshake", func(t *testing.T) {
		l := rawDial(t, addr)
		hdr := []byte{0x00, 0x10, 0x00, 0x00, frameHello} // 1 MiB HELLO
		if _, err := l.conn.Write(hdr); err != nil {
			t.Fatal(err)
		}
		if fs, _ := readUntilEOF(l); len(fs) != 0 {
			t.Fatalf("got %d frames, want the link closed", len(fs))
		}
	})
	t.Run("segment over the limit", func(t *testing.T) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		l := rawDial(t, addr)
		if f := rawHello(t, l, helloMsg{Version: 1, Stream: "app", Generation: 1, Token: testToken}); f.typ != frameWelcome {
			t.Fatalf("answer %s", typeName(f.typ))
		}
		hdr := []byte{0xff, 0xff, 0xff, 0xf0, frameSegment}
		if _, err := l.conn.Write(hdr); err != nil {
			t.Fatal(err)
		}
		fs, _ := readUntilEOF(l)
		var m errorMsg
		var last frame
		if len(fs) > 0 {
			last = fs[len(fs)-1]
		}
		if last.typ != frameError || decodeJSON(last, &m) != nil || m.Code != codeProtocol || !m.Close || !strings.Contains(m.Message, "over the") {
			t.Fatalf("last frame %s %q, want a closing protocol ERROR", typeName(last.typ), last.payload)
		}
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
			t.Fatalf("%d MiB allocated handling an oversize frame", grew>>20)
		}
	})
	t.Run("client refuses a segment over the receiver's limit", func(t *testing.T) {
		c := insecureClient(t, addr)
		s := makeBigSegment(t, "app", 1, 1, 2<<20)
		err := c.Put(context.Background(), "app/"+s.name, s.data)
		if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "at most") {
			t.Fatalf("Put of a segment over max_segment: %v", err)
		}
	})
}

func TestHeartbeatKeepsIdleLinkAlive(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	// Timeouts short enough to expire three times over during the idle
	// time below, long enough (10 heartbeats each) not to trip on a loaded
	// machine's stalls.
	srv.IOTimeout, srv.HeartbeatInterval = 1500*time.Millisecond, 150*time.Millisecond
	var applied atomic.Uint64
	srv.Applied = func(string) uint64 { return applied.Load() }
	addr, _ := startServer(t, srv)
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true,
		IOTimeout: 1500 * time.Millisecond, HeartbeatInterval: 150 * time.Millisecond}, nil)
	ctx := context.Background()
	a := makeSegment(t, "app", 1, 1, 2, "x")
	if err := c.Put(ctx, "app/"+a.name, a.data); err != nil {
		t.Fatal(err)
	}
	applied.Store(2) // the receiver applies while the link is idle
	time.Sleep(4500 * time.Millisecond)
	if r, ap := c.Watermarks(); r != 2 || ap != 2 {
		t.Fatalf("Watermarks after idle heartbeats = %d, %d; want 2, 2", r, ap)
	}
	b := makeSegment(t, "app", 1, 3, 2, "x")
	if err := c.Put(ctx, "app/"+b.name, b.data); err != nil {
		t.Fatal(err)
	}
	if c.dials != 1 {
		t.Fatalf("%d dials: the idle link died despite heartbeats", c.dials)
	}
	wantInbox(t, inbox, a.name, b.name)
}

func TestHandshakeReportsNewestAfterRestart(t *testing.T) {
	_, root := newInbox(t)
	open := func() *dir.Store {
		s, err := dir.New(root)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	srv1 := &Server{Token: testToken, Insecure: true, Inbox: open(), Log: quiet}
	addr, stop := startServer(t, srv1)
	c := insecureClient(t, addr)
	ctx := context.Background()
	var segs []testSegment
	prev := batch.ZeroHash
	for i := range 3 {
		first := uint64(1 + 4*i)
		s := seal(t, "app", 1, prev, []batch.Record{{Seq: first, Data: []byte("a")}, {Seq: first + 1}, {Seq: first + 2}, {Seq: first + 3}})
		prev = s.hash
		segs = append(segs, s)
		if err := c.Put(ctx, "app/"+s.name, s.data); err != nil {
			t.Fatal(err)
		}
	}
	// A newer generation must not be reported for generation 1.
	if err := open().Put(ctx, "app/"+batch.SegmentName(2, 1, 1), []byte("not read")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	stop()

	srv2 := &Server{Token: testToken, Insecure: true, Inbox: open(), Log: quiet}
	addr2, _ := startServer(t, srv2)
	// The same shipper as c2 below, which replaces this link.
	l := rawDial(t, addr2)
	f := rawHello(t, l, helloMsg{Version: 1, Stream: "app", Generation: 1, Token: testToken, ClientID: "c2", Host: "h"})
	var w welcomeMsg
	if f.typ != frameWelcome || decodeJSON(f, &w) != nil {
		t.Fatalf("answer %s %q", typeName(f.typ), f.payload)
	}
	newest := segs[2]
	if w.HighestSeq != 12 || w.HighestSegment != newest.name || w.HighestHash != newest.hash {
		t.Fatalf("WELCOME %+v, want seq 12, %s, %s", w, newest.name, newest.hash)
	}

	// What the shipper does on a fresh spool: List, then Get the newest.
	c2 := newClient(t, ClientConfig{Addr: addr2, Stream: "app", Token: testToken, Insecure: true, ClientID: "c2", Host: "h"}, nil)
	var listed []string
	err := c2.List(ctx, "app/", "", func(o store.Object) error { listed = append(listed, o.Name); return nil })
	if err != nil || len(listed) != 1 || listed[0] != "app/"+newest.name {
		t.Fatalf("List = %v, %v; want just app/%s", listed, err, newest.name)
	}
	if err := c2.List(ctx, "app/", "app/"+newest.name, func(o store.Object) error { return fmt.Errorf("listed %s", o.Name) }); err != nil {
		t.Fatalf("List after the newest: %v", err)
	}
	if !bytes.Equal(mustGet(t, c2, "app/"+newest.name), newest.data) {
		t.Fatal("Get of the newest segment returned other bytes")
	}
	if r, _ := c2.Watermarks(); r != 12 {
		t.Fatalf("received watermark %d, want 12", r)
	}
}

func TestConcurrentPuts(t *testing.T) {
	c, inbox := insecureLink(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	names := make([]string, 16)
	for i := range 16 {
		s := makeSegment(t, "app", 1, uint64(1+10*i), 10, "x")
		names[i] = s.name
		wg.Go(func() {
			// Puts racing each other reach the receiver in any order; one
			// that would leave a hole is refused retryably (code gap), so
			// each is retried, as the shipper's sender would.
			for {
				err := c.Put(t.Context(), "app/"+s.name, s.data)
				if err == nil || !strings.Contains(err.Error(), "code gap") || !store.IsRetryable(err) {
					errs <- err
					return
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	wantInbox(t, inbox, names...)
}

// The receiver restarting under a connected client: the next Put fails
// retryably (or succeeds after a redial) and the one after succeeds.
func TestServerRestart(t *testing.T) {
	inbox, _ := newInbox(t)
	srv := &Server{Token: testToken, Insecure: true, Inbox: inbox, Log: quiet}
	addr, stop := startServer(t, srv)
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true, ReconnectMin: time.Millisecond}, nil)
	ctx := context.Background()
	a := makeSegment(t, "app", 1, 1, 1, "x")
	if err := c.Put(ctx, "app/"+a.name, a.data); err != nil {
		t.Fatal(err)
	}
	stop()
	b := makeSegment(t, "app", 1, 2, 1, "x")
	err := c.Put(ctx, "app/"+b.name, b.data)
	t.Logf("error: %v", err)
	if err == nil || !store.IsRetryable(err) {
		t.Fatalf("Put with the receiver down: %v, want a retryable error", err)
	}
	ln, err := listenAgain(addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	srv2 := &Server{Token: testToken, Insecure: true, Inbox: inbox, Log: quiet}
	sctx, scancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv2.Serve(sctx, ln) }()
	defer func() { scancel(); <-done }()
	err = store.Retry(ctx, store.RetryPolicy{Min: time.Millisecond, Max: 50 * time.Millisecond}, nil, "put", func(ctx context.Context) error {
		return c.Put(ctx, "app/"+b.name, b.data)
	})
	if err != nil {
		t.Fatal(err)
	}
	wantInbox(t, inbox, a.name, b.name)
}

// AppliedChanged sends the new watermarks at once: with the poll and the
// heartbeat interval far longer than the test, only the wake-up can bring
// them, and WatermarksChanged tells the client's user.
func TestAppliedChangedPushesWatermarks(t *testing.T) {
	srv, _, _ := insecureServer(t)
	srv.IOTimeout, srv.HeartbeatInterval, srv.WatermarkPoll = time.Hour, 30*time.Minute, time.Hour
	var applied atomic.Uint64
	srv.Applied = func(string) uint64 { return applied.Load() }
	addr, _ := startServer(t, srv)
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true,
		IOTimeout: time.Hour, HeartbeatInterval: 30 * time.Minute}, nil)
	a := makeSegment(t, "app", 1, 1, 3, "x")
	if err := c.Put(context.Background(), "app/"+a.name, a.data); err != nil {
		t.Fatal(err)
	}
	for want := uint64(1); want <= 3; want++ {
		moved := c.WatermarksChanged()
		applied.Store(want)
		srv.AppliedChanged()
		select {
		case <-moved:
		case <-time.After(10 * time.Second):
			t.Fatalf("applied %d: WatermarksChanged not closed", want)
		}
		if _, ap, ok := c.LinkWatermarks(); !ok || ap != want {
			t.Fatalf("LinkWatermarks applied = %d (ok %t), want %d", ap, ok, want)
		}
	}
	// Nothing moved: no wake-up.
	moved := c.WatermarksChanged()
	srv.AppliedChanged()
	select {
	case <-moved:
		t.Fatal("WatermarksChanged closed although the watermarks did not move")
	case <-time.After(100 * time.Millisecond):
	}
}
