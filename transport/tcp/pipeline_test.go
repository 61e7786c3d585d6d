package tcp

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/store"
)

// The client sends up to the window the receiver offers before the first
// answer, and no more; answers are matched in request order.
func TestPutAsyncWindow(t *testing.T) {
	segs := []testSegment{
		makeSegment(t, "app", 1, 1, 2, "a"),
		makeSegment(t, "app", 1, 3, 2, "b"),
		makeSegment(t, "app", 1, 5, 2, "c"),
	}
	held := make(chan []string, 1)
	addr := fakeReceiver(t, func(_ int, l *link) {
		l.writeJSON(context.Background(), frameWelcome, welcomeMsg{Version: ProtocolVersion, MaxSegment: DefaultMaxSegment, HeartbeatMS: 1000, MaxInFlight: 2})
		var got []string
		read := func() bool {
			f, err := l.read()
			if err != nil || f.typ != frameSegment {
				return false
			}
			name, _, _ := parseSegment(f.payload)
			got = append(got, name)
			return true
		}
		// Two arrive without an answer; the third must wait for one.
		if !read() || !read() {
			return
		}
		l.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if read() {
			held <- got
			return
		}
		held <- append([]string(nil), got...)
		l.conn.SetReadDeadline(time.Time{})
		l.writeJSON(context.Background(), frameAck, ackMsg{Name: got[0], ReceivedSeq: 2})
		if !read() {
			return
		}
		for _, n := range got[1:] {
			l.writeJSON(context.Background(), frameAck, ackMsg{Name: n, ReceivedSeq: 6})
		}
		readUntilEOF(l)
	})
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true, MaxInFlight: 8}, nil)
	var waits []func() error
	for _, s := range segs {
		waits = append(waits, c.PutAsync(t.Context(), "app/"+s.name, s.data))
	}
	if got := <-held; len(got) != 2 {
		t.Fatalf("the receiver got %v before answering; want exactly 2 (its window)", got)
	}
	for i, w := range waits {
		if err := w(); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
	}
	if rec, _ := c.Watermarks(); rec != 6 {
		t.Fatalf("received watermark %d after the last ACK, want 6", rec)
	}
}

// A receiver that does not offer a window (before max_in_flight) gets one
// request at a time: no second SEGMENT arrives before the first's answer.
func TestPutAsyncOldReceiver(t *testing.T) {
	var early atomic.Int32
	addr := fakeReceiver(t, func(_ int, l *link) {
		welcome(l) // no max_in_flight
		frames := make(chan frame)
		go func() {
			defer close(frames)
			for {
				f, err := l.read()
				if err != nil {
					return
				}
				frames <- f
			}
		}()
		for f := range frames {
			name, _, _ := parseSegment(f.payload)
			select {
			case <-frames:
				early.Add(1)
				return
			case <-time.After(50 * time.Millisecond):
			}
			l.writeJSON(context.Background(), frameAck, ackMsg{Name: name})
		}
	})
	c := newClient(t, ClientConfig{Addr: addr, Stream: "app", Token: testToken, Insecure: true, MaxInFlight: 8}, nil)
	var waits []func() error
	for i := range 3 {
		s := makeSegment(t, "app", 1, uint64(1+2*i), 2, "x")
		waits = append(waits, c.PutAsync(t.Context(), "app/"+s.name, s.data))
	}
	for i, w := range waits {
		if err := w(); err != nil {
			t.Fatalf("segment %d: %v", i, err)
		}
	}
	if early.Load() != 0 {
		t.Fatal("a second SEGMENT arrived before the first was answered")
	}
}

// The receiver refuses a segment that would leave a hole after the inbox's
// newest (retryably: the shipper resends from the first it lacks) and one
// that overlaps it (a conflict: another writer). Pipelined behind a
// segment that failed, the next is refused, not stored; resent in order,
// both land.
func TestServerRefusesGapsAndOverlaps(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	var failNext atomic.Bool
	srv.Inbox = &faultyInbox{Store: inbox, put: func() error {
		if failNext.CompareAndSwap(true, false) {
			return errors.New("disk hiccup")
		}
		return nil
	}}
	addr, _ := startServer(t, srv)
	c := insecureClient(t, addr)
	put := func(s testSegment) error { return c.Put(t.Context(), "app/"+s.name, s.data) }

	s1 := makeSegment(t, "app", 1, 1, 3, "a") // 1..3
	if err := put(s1); err != nil {
		t.Fatal(err)
	}
	gap := makeSegment(t, "app", 1, 5, 2, "b") // 5..6: 4 is missing
	err := put(gap)
	if err == nil || !strings.Contains(err.Error(), "code gap") || errors.Is(err, store.ErrPermanent) || !store.IsRetryable(err) {
		t.Fatalf("segment after a hole: %v; want a retryable gap error", err)
	}
	over := makeSegment(t, "app", 1, 3, 2, "c") // 3..4 overlaps 1..3
	if err := put(over); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("overlapping segment: %v; want ErrConflict", err)
	}
	wantInbox(t, inbox, s1.name)

	s2 := makeSegment(t, "app", 1, 4, 1, "d") // 4
	s3 := makeSegment(t, "app", 1, 5, 2, "e") // 5..6
	failNext.Store(true)
	w2 := c.PutAsync(t.Context(), "app/"+s2.name, s2.data)
	w3 := c.PutAsync(t.Context(), "app/"+s3.name, s3.data)
	if err := w2(); err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("first of two pipelined, inbox failing: %v", err)
	}
	if err := w3(); err == nil || !strings.Contains(err.Error(), "code gap") {
		t.Fatalf("second of two pipelined behind a failure: %v; want a gap error", err)
	}
	wantInbox(t, inbox, s1.name)
	if err := put(s2); err != nil {
		t.Fatal(err)
	}
	if err := put(s3); err != nil {
		t.Fatal(err)
	}
	wantInbox(t, inbox, s1.name, s2.name, s3.name)
	if rec, _ := c.Watermarks(); rec != 6 {
		t.Fatalf("received watermark %d, want 6", rec)
	}
}

// The applied watermark the server reports never passes the received one:
// a receiver may apply a segment before its Put is durable (or keep its
// own checkpoint behind), and "applied" must mean the record survives the
// loss of the primary.
func TestAppliedNeverPassesReceived(t *testing.T) {
	srv, _, _ := insecureServer(t)
	srv.Applied = func(string) uint64 { return 1000 }
	addr, _ := startServer(t, srv)
	c := insecureClient(t, addr)
	s := makeSegment(t, "app", 1, 1, 3, "a")
	if err := c.Put(t.Context(), "app/"+s.name, s.data); err != nil {
		t.Fatal(err)
	}
	if rec, app := c.Watermarks(); rec != 3 || app != 3 {
		t.Fatalf("watermarks after the ACK: received %d applied %d, want 3 and 3", rec, app)
	}
}
