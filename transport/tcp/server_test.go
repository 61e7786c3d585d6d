package tcp

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// The receiver's inbox failing: each failure reaches the shipper as the
// error table in PROTOCOL.md says, and an ERROR keeps the link.
func TestInboxFailures(t *testing.T) {
	s := makeSegment(t, "app", 1, 1, 3, "x")
	once := func(err error) func() error {
		var n atomic.Int32
		return func() error {
			if n.Add(1) == 1 {
				return err
			}
			return nil
		}
	}
	readOnly := fmt.Errorf("%w: inbox is read-only", store.ErrPermanent)
	hiccup := errors.New("disk hiccup")
	tests := []struct {
		name      string
		inbox     faultyInbox
		get       bool // Get the segment (after a good Put) instead of Put it
		permanent bool
		want      string
	}{
		{"list fails: refused, retry later", faultyInbox{list: once(hiccup)}, false, false, "code unavailable"},
		{"put refused for good", faultyInbox{put: once(readOnly)}, false, true, "code permanent"},
		{"put fails once", faultyInbox{put: once(hiccup)}, false, false, "code unavailable"},
		{"get refused for good", faultyInbox{get: once(readOnly)}, true, true, "code permanent"},
		{"get fails once", faultyInbox{get: once(hiccup)}, true, false, "code unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, inbox, _ := insecureServer(t)
			tc.inbox.Store = inbox
			srv.Inbox = &tc.inbox
			addr, _ := startServer(t, srv)
			c := insecureClient(t, addr)
			call := func() error { return c.Put(t.Context(), "app/"+s.name, s.data) }
			if tc.get {
				if err := call(); err != nil {
					t.Fatal(err)
				}
				call = func() error { _, err := c.Get(t.Context(), "app/"+s.name); return err }
			}
			err := call()
			t.Logf("error: %v", err)
			if err == nil || errors.Is(err, store.ErrPermanent) != tc.permanent || store.IsRetryable(err) == tc.permanent ||
				!strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want permanent=%v mentioning %q", err, tc.permanent, tc.want)
			}
			if err := call(); err != nil {
				t.Fatalf("second call: %v", err)
			}
			if c.dials != 1 {
				t.Fatalf("%d handshakes, want 1: an ERROR keeps the link", c.dials)
			}
			wantInbox(t, inbox, s.name)
		})
	}
}

// A newest segment in the inbox that fails verification refuses the
// handshake for good: the receiver cannot say where the stream stands.
func TestHandshakeRefusesDamagedNewest(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	damaged := batch.SegmentName(1, 1, 1)
	if err := inbox.Put(t.Context(), "app/"+damaged, []byte("not a segment")); err != nil {
		t.Fatal(err)
	}
	addr, _ := startServer(t, srv)
	c := insecureClient(t, addr)
	s := makeSegment(t, "app", 1, 2, 1, "x")
	err := c.Put(t.Context(), "app/"+s.name, s.data)
	t.Logf("error: %v", err)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "code damaged") ||
		!strings.Contains(err.Error(), damaged) {
		t.Fatalf("Put with a damaged newest segment in the inbox: %v", err)
	}
	wantInbox(t, inbox, damaged)
}

// SEGMENT and FETCH of something that is not a segment name are answered
// with ERROR mismatch, and the link stays.
func TestServerRefusesNonSegmentNames(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	l := rawDial(t, addr)
	if f := rawHello(t, l, helloMsg{Version: 1, Stream: "app", Generation: 1, Token: testToken}); f.typ != frameWelcome {
		t.Fatalf("answer %s", typeName(f.typ))
	}
	s := makeSegment(t, "app", 1, 1, 1, "x")
	fetch := func(name string) {
		if err := l.writeJSON(t.Context(), frameFetch, fetchMsg{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	requests := []struct {
		send       func()
		name, code string
	}{
		{func() { l.write(t.Context(), frameSegment, segmentHeader("../x"), s.data) }, "../x", codeMismatch},
		{func() { fetch("../../etc/passwd") }, "../../etc/passwd", codeMismatch},
		{func() { fetch(s.name) }, s.name, codeNotFound},
	}
	for _, r := range requests {
		r.send()
		f, err := l.read()
		var m errorMsg
		if err != nil || f.typ != frameError || decodeJSON(f, &m) != nil || m.Code != r.code || m.Name != r.name || m.Close {
			t.Fatalf("answer %s %q (%v), want ERROR %s about %s", typeName(f.typ), f.payload, err, r.code, r.name)
		}
	}
	wantInbox(t, inbox)
}

// Slow peers are dropped: one that goes silent after the handshake after
// IOTimeout (having been sent heartbeats), and one that trickles its HELLO
// a byte at a time, each byte inside the I/O timeout, one I/O timeout
// after it connected.
func TestSlowPeersDropped(t *testing.T) {
	srv, _, _ := insecureServer(t)
	srv.IOTimeout, srv.HeartbeatInterval = 300*time.Millisecond, 100*time.Millisecond
	addr, _ := startServer(t, srv)

	t.Run("silent after the handshake", func(t *testing.T) {
		l := rawDial(t, addr)
		start := time.Now()
		if f := rawHello(t, l, helloMsg{Version: 1, Stream: "app", Generation: 1, Token: testToken}); f.typ != frameWelcome {
			t.Fatalf("answer %s", typeName(f.typ))
		}
		fs, err := readUntilEOF(l)
		if took := time.Since(start); took > 3*time.Second {
			t.Fatalf("silent peer kept for %s", took)
		}
		for _, f := range fs {
			if f.typ != frameHeartbeat {
				t.Fatalf("unexpected %s frame to an idle peer", typeName(f.typ))
			}
		}
		if len(fs) == 0 {
			t.Fatalf("no heartbeats before the link was dropped (%v)", err)
		}
	})
	t.Run("trickling its HELLO", func(t *testing.T) {
		l := rawDial(t, addr)
		start := time.Now()
		done := make(chan struct{})
		defer close(done)
		go func() {
			hello := []byte{0, 0, 0, 100, frameHello} // then 100 payload bytes and a CRC, 50ms apart
			for i := 0; ; i++ {
				b := byte('x')
				if i < len(hello) {
					b = hello[i]
				}
				if _, err := l.conn.Write([]byte{b}); err != nil {
					return
				}
				select {
				case <-done:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		// Without a bound on the whole HELLO the peer would be kept as long
		// as it trickles; 8s leaves room for a loaded machine's stalls.
		fs, err := readUntilEOF(l)
		if took := time.Since(start); len(fs) != 0 || took > 8*time.Second {
			t.Fatalf("trickling peer got %d frames and kept for %s (%v); want dropped after about 300ms", len(fs), took, err)
		}
	})
}

// Admit sees every authenticated HELLO's stream and site; its error
// refuses the link with code stream and its text, and the other streams
// are admitted.
func TestServerAdmit(t *testing.T) {
	srv, _, _ := insecureServer(t)
	var asked []string
	srv.Admit = func(stream, site string) error {
		asked = append(asked, stream+" from "+site)
		if stream != "mail@"+site {
			return fmt.Errorf("site %q may ship only its own stream mail@%s, not %q", site, site, stream)
		}
		return nil
	}
	addr, _ := startServer(t, srv)
	l := rawDial(t, addr)
	f := rawHello(t, l, helloMsg{Version: 1, Stream: "mail@c", Site: "b", Generation: 1, Token: testToken})
	var m refuseMsg
	if f.typ != frameRefuse || decodeJSON(f, &m) != nil || m.Code != codeStream || !strings.Contains(m.Message, `site "b" may ship only`) {
		t.Fatalf("answer %s %q; want REFUSE stream with Admit's text", typeName(f.typ), f.payload)
	}
	l = rawDial(t, addr)
	if f := rawHello(t, l, helloMsg{Version: 1, Stream: "mail@b", Site: "b", Generation: 1, Token: testToken}); f.typ != frameWelcome {
		t.Fatalf("answer %s %q; want WELCOME", typeName(f.typ), f.payload)
	}
	// A wrong token is refused before Admit is asked.
	l = rawDial(t, addr)
	if f := rawHello(t, l, helloMsg{Version: 1, Stream: "mail@b", Site: "b", Generation: 1, Token: testToken + "x"}); f.typ != frameRefuse {
		t.Fatalf("answer %s %q; want REFUSE", typeName(f.typ), f.payload)
	}
	if want := []string{"mail@c from b", "mail@b from b"}; strings.Join(asked, ";") != strings.Join(want, ";") {
		t.Fatalf("Admit asked %q; want %q", asked, want)
	}
}
