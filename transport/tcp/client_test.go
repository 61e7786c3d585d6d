package tcp

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// serveAcks answers every SEGMENT on l with an ACK naming it until the link
// ends; wrong, if set, names the segment the first ACK claims instead.
func serveAcks(l *link, wrong string) {
	for {
		f, err := l.read()
		if err != nil {
			return
		}
		if f.typ != frameSegment {
			continue
		}
		name, _, err := parseSegment(f.payload)
		if err != nil {
			return
		}
		if wrong != "" {
			name, wrong = wrong, ""
		}
		if l.writeJSON(context.Background(), frameAck, ackMsg{Name: name}) != nil {
			return
		}
	}
}

// A receiver answering WELCOME with another protocol version is refused
// for good.
func TestClientRefusesOtherWelcomeVersion(t *testing.T) {
	addr := fakeReceiver(t, func(_ int, l *link) {
		l.writeJSON(context.Background(), frameWelcome, welcomeMsg{Version: 2, MaxSegment: DefaultMaxSegment})
		readUntilEOF(l)
	})
	c := insecureClient(t, addr)
	s := makeSegment(t, "app", 1, 1, 1, "x")
	err := c.Put(t.Context(), "app/"+s.name, s.data)
	if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "protocol 2") {
		t.Fatalf("Put to a receiver speaking protocol 2: %v", err)
	}
}

// An answer that breaks the protocol (an ACK for another segment) fails
// the Put retryably and ends that link, though the receiver keeps it open;
// the retry goes over a new one.
func TestClientDropsLinkOnBadAnswer(t *testing.T) {
	s := makeSegment(t, "app", 1, 1, 1, "x")
	other := batch.SegmentName(1, 2, 2)
	addr := fakeReceiver(t, func(conn int, l *link) {
		welcome(l)
		if conn == 1 {
			serveAcks(l, other)
		} else {
			serveAcks(l, "")
		}
	})
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true, ReconnectMin: time.Millisecond}, nil)
	err := c.Put(t.Context(), "app/"+s.name, s.data)
	t.Logf("error: %v", err)
	if !errors.Is(err, ErrProtocol) || !store.IsRetryable(err) {
		t.Fatalf("Put answered with an ACK for another segment: %v, want a retryable protocol error", err)
	}
	if err := store.Retry(t.Context(), store.RetryPolicy{Min: time.Millisecond}, nil, "put", func(ctx context.Context) error {
		return c.Put(ctx, "app/"+s.name, s.data)
	}); err != nil {
		t.Fatal(err)
	}
	if c.dials != 2 {
		t.Fatalf("%d handshakes, want 2: the link that broke the protocol must not be reused", c.dials)
	}
}

// An answer with no request outstanding (here an ERROR conflict while the
// link is idle) ends the link rather than being taken as the answer to
// the next request.
func TestClientDropsLinkOnUnsolicitedAnswer(t *testing.T) {
	addr := fakeReceiver(t, func(conn int, l *link) {
		welcome(l)
		if conn == 1 {
			l.writeJSON(context.Background(), frameError, errorMsg{Code: codeConflict, Message: "unasked"})
		}
		serveAcks(l, "")
	})
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true, ReconnectMin: time.Millisecond}, nil)
	if err := c.List(t.Context(), "app/", "", func(store.Object) error { return nil }); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		lost := c.conn == nil
		c.mu.Unlock()
		if lost {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the link survived an ERROR nobody asked for")
		}
	}
	s := makeSegment(t, "app", 1, 1, 1, "x")
	if err := c.Put(t.Context(), "app/"+s.name, s.data); err != nil {
		t.Fatalf("Put after an unsolicited ERROR: %v", err)
	}
	if c.dials != 2 {
		t.Fatalf("%d handshakes, want 2", c.dials)
	}
}

func TestBandwidthLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 3s")
	}
	t.Run("one big segment", func(t *testing.T) {
		srv, inbox, _ := insecureServer(t)
		addr, _ := startServer(t, srv)
		c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true, BandwidthLimit: 512 << 10}, nil)
		s := makeBigSegment(t, "app", 1, 1, 1<<20)
		start := time.Now()
		if err := c.Put(context.Background(), "app/"+s.name, s.data); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		if took < 1500*time.Millisecond || took > 10*time.Second {
			t.Fatalf("1 MiB at 512 KiB/s took %s, want about 1.9s", took)
		}
		if !bytes.Equal(mustGet(t, inbox, "app/"+s.name), s.data) {
			t.Fatal("inbox copy differs")
		}
	})
	// Segments smaller than one write are paced too, not just big ones.
	t.Run("many small segments", func(t *testing.T) {
		srv, _, _ := insecureServer(t)
		addr, _ := startServer(t, srv)
		const limit = 8 << 10 // writes of 1 KiB, the burst
		c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true, BandwidthLimit: limit}, nil)
		total := 0
		start := time.Now()
		for i := range 20 {
			s := makeSegment(t, "app", 1, uint64(1+i), 1, "x")
			total += len(s.data)
			if err := c.Put(t.Context(), "app/"+s.name, s.data); err != nil {
				t.Fatal(err)
			}
		}
		took := time.Since(start)
		if want := time.Duration(float64(total-1<<10) / limit * float64(time.Second)); took < want*9/10 {
			t.Fatalf("%d bytes in small segments at %d B/s took %s, want at least %s", total, limit, took, want)
		}
	})
}

// Cancelling a Put mid-transfer abandons the link; the next Put redials.
func TestPutCancelled(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	addr, _ := startServer(t, srv)
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true, BandwidthLimit: 256 << 10, ReconnectMin: time.Millisecond}, nil)
	s := makeBigSegment(t, "app", 1, 1, 1<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.Put(ctx, "app/"+s.name, s.data); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled Put: %v", err)
	}
	small := makeSegment(t, "app", 1, 1, 1, "x")
	if err := c.Put(context.Background(), "app/"+small.name, small.data); err != nil {
		t.Fatal(err)
	}
	wantInbox(t, inbox, small.name)
}
