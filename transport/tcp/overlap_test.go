package tcp

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

func put(t *testing.T, c *Client, s testSegment) error {
	t.Helper()
	return c.Put(t.Context(), "app/"+s.name, s.data)
}

// wantConflict checks that err is a conflict whose message has every one
// of want.
func wantConflict(t *testing.T, what string, err error, want ...string) {
	t.Helper()
	if !errors.Is(err, store.ErrConflict) || store.IsRetryable(err) {
		t.Fatalf("%s: %v; want ErrConflict", what, err)
	}
	for _, w := range append(want, "two writers on stream") {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: %q does not mention %q", what, err, w)
		}
	}
}

// A segment sorting below the newest with other boundaries (newest 3-4,
// then 2-3 arrives) overlaps what the receiver has: refused, naming both,
// also when the shipper waits for the applied watermark, and nothing is
// stored. The identical resend of a stored segment is still acknowledged.
func TestOverlapBelowNewestRefused(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	var applied atomic.Uint64
	srv.Applied = func(string) uint64 { return applied.Load() }
	addr, _ := startServer(t, srv)
	c := insecureClient(t, addr)
	s12 := makeSegment(t, "app", 1, 1, 2, "a")
	s34 := makeSegment(t, "app", 1, 3, 2, "a")
	for _, s := range []testSegment{s12, s34} {
		if err := put(t, c, s); err != nil {
			t.Fatal(err)
		}
	}
	applied.Store(4)
	s23 := makeSegment(t, "app", 1, 2, 2, "b")
	wantConflict(t, "2-3 below newest 3-4", put(t, c, s23), "app/"+s23.name+" (seq 2-3)", "app/"+s34.name+" (seq 3-4)")
	s11 := makeSegment(t, "app", 1, 1, 1, "b")
	wantConflict(t, "1-1 inside 1-2", put(t, c, s11), "app/"+s11.name+" (seq 1-1)", "app/"+s12.name+" (seq 1-2)")
	other12 := makeSegment(t, "app", 1, 1, 2, "other")
	wantConflict(t, "1-2 with other content", put(t, c, other12), "has other content than")
	wantInbox(t, inbox, s12.name, s34.name)

	// Resends of what it stored, on a new link as after a reconnect.
	c.Close()
	c2 := insecureClient(t, addr)
	for _, s := range []testSegment{s12, s34} {
		if err := put(t, c2, s); err != nil {
			t.Fatalf("identical resend of %s: %v", s.name, err)
		}
	}
	if rec, app := c2.Watermarks(); rec != 4 || app != 4 {
		t.Fatalf("watermarks after the resends: %d, %d; want 4, 4", rec, app)
	}
	if err := put(t, c2, makeSegment(t, "app", 1, 5, 1, "a")); err != nil {
		t.Fatal(err)
	}
}

// Below what the server remembers, the inbox decides: an identical copy
// still there is acknowledged, a different one or an overlapping one is a
// conflict, and a segment over seqs the receiver applied whose segments
// were pruned is refused (it cannot be told from a resend), even if it
// was such a resend.
func TestOverlapBelowMemory(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	srv.RecentSegments = 1
	var applied atomic.Uint64
	srv.Applied = func(string) uint64 { return applied.Load() }
	addr, _ := startServer(t, srv)
	c := insecureClient(t, addr)
	segs := []testSegment{makeSegment(t, "app", 1, 1, 2, "a"), makeSegment(t, "app", 1, 3, 2, "a"), makeSegment(t, "app", 1, 5, 2, "a")}
	for _, s := range segs {
		if err := put(t, c, s); err != nil {
			t.Fatal(err)
		}
	}
	applied.Store(6)
	// The receiver applied 1-2 and pruned it.
	if err := inbox.Delete(context.Background(), "app/"+segs[0].name); err != nil {
		t.Fatal(err)
	}
	if err := put(t, c, segs[1]); err != nil {
		t.Fatalf("identical resend of a segment still in the inbox: %v", err)
	}
	other34 := makeSegment(t, "app", 1, 3, 2, "other")
	wantConflict(t, "3-4 with other content", put(t, c, other34), "a different segment app/"+segs[1].name)
	s24 := makeSegment(t, "app", 1, 2, 3, "b")
	wantConflict(t, "2-4 over 3-4 in the inbox", put(t, c, s24), "app/"+s24.name+" (seq 2-4)", "app/"+segs[1].name+" (seq 3-4)")
	s11 := makeSegment(t, "app", 1, 1, 1, "b")
	wantConflict(t, "1-1 over pruned seqs", put(t, c, s11), "app/"+s11.name+" (seq 1-1)", "already applied (up to 6)")
	wantConflict(t, "the pruned 1-2 again", put(t, c, segs[0]), "already applied (up to 6)")
	wantInbox(t, inbox, segs[1].name, segs[2].name)
}

// Pipelined into an empty inbox, the first segment fails and those behind
// it land (there is no newest yet to continue); resent, the first fills
// the hole below them.
func TestPipelinedFirstSegmentFillsHole(t *testing.T) {
	srv, inbox, _ := insecureServer(t)
	var failNext atomic.Bool
	srv.Inbox = &faultyInbox{Store: inbox, put: func() error {
		if failNext.CompareAndSwap(true, false) {
			return errors.New("disk hiccup")
		}
		return nil
	}}
	srv.Applied = func(string) uint64 { return 0 }
	addr, _ := startServer(t, srv)
	c := insecureClient(t, addr)
	segs := []testSegment{makeSegment(t, "app", 1, 1, 2, "a"), makeSegment(t, "app", 1, 3, 2, "a"), makeSegment(t, "app", 1, 5, 2, "a")}
	failNext.Store(true)
	var waits []func() error
	for _, s := range segs {
		waits = append(waits, c.PutAsync(t.Context(), "app/"+s.name, s.data))
	}
	if err := waits[0](); err == nil || !store.IsRetryable(err) {
		t.Fatalf("first segment, inbox failing: %v; want a retryable error", err)
	}
	for _, w := range waits[1:] {
		if err := w(); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range segs {
		if err := put(t, c, s); err != nil {
			t.Fatalf("resend of %s: %v", s.name, err)
		}
	}
	wantInbox(t, inbox, segs[0].name, segs[1].name, segs[2].name)
	// The filled hole is remembered like the rest.
	wantConflict(t, "1-1 inside the filled 1-2", put(t, c, makeSegment(t, "app", 1, 1, 1, "b")), "(seq 1-2)")
}

func TestSegMemory(t *testing.T) {
	var m segMemory
	seg := func(first, last uint64) storedSegment {
		return storedSegment{name: batch.SegmentName(1, first, last), firstSeq: first, lastSeq: last}
	}
	for _, s := range []storedSegment{seg(5, 6), seg(7, 9), seg(1, 2), seg(7, 9), seg(10, 10)} {
		m.add(s, 3)
	}
	// Kept: at least the newest 3, fewer than 6.
	if len(m.segs) != 4 || m.newest().firstSeq != 10 || m.segs[0].firstSeq != 1 {
		t.Fatalf("memory %+v", m.segs)
	}
	for _, tc := range []struct {
		first, last uint64
		want        uint64 // first seq of the one found; 0 none
	}{{3, 4, 0}, {1, 1, 1}, {2, 5, 5}, {6, 8, 7}, {8, 20, 10}, {11, 12, 0}, {4, 4, 0}} {
		got, ok := m.overlapping(tc.first, tc.last)
		if (tc.want == 0) == ok || ok && got.firstSeq != tc.want {
			t.Errorf("overlapping(%d, %d) = %+v, %t; want first %d", tc.first, tc.last, got, ok, tc.want)
		}
	}
	m.add(seg(11, 11), 3)
	m.add(seg(12, 12), 3)
	if len(m.segs) != 3 || m.segs[0].firstSeq != 10 {
		t.Fatalf("after trimming: %+v", m.segs)
	}
}
