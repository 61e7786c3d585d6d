package receiver

import (
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// fakeVerified is a segment of generation gen with records first..last,
// size bytes long, as the link's server would offer it (only the fields
// OfferVerified reads are set).
func fakeVerified(gen uint32, first, last uint64, size int) (*batch.Segment, []byte) {
	data := make([]byte, size)
	seg := &batch.Segment{Meta: batch.Meta{Generation: gen, FirstSeq: first, LastSeq: last}, Payload: data[size/4:]}
	return seg, data
}

// Offered copies count against the memory limit until a pass has no use
// for them: applied ones, duplicates, another generation's, all offers of
// a pass that lists instead, and a pass's segments it never fetched.
func TestOfferedCopiesAreReleased(t *testing.T) {
	r := &Receiver{wake: make(chan struct{}, 1), cfg: Config{PrefetchBytes: 4000}} // limit 1000
	offer := func(gen uint32, first, last uint64, size int) {
		r.OfferVerified(fakeVerified(gen, first, last, size))
	}
	held := func(want int64, when string) {
		t.Helper()
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.memHeld != want {
			t.Fatalf("%s: %d bytes of copies held, want %d", when, r.memHeld, want)
		}
	}

	offer(1, 11, 20, 300)
	offer(1, 1, 10, 300)
	offer(1, 1, 10, 300)  // a duplicate
	offer(2, 21, 30, 300) // over the limit: no copy
	held(900, "after four offers")
	offered, _ := r.takeOffers()
	todo, ok, _ := r.takeOffered(testCursor(t, nil, "", 0), offered)
	if !ok || len(todo) != 2 || todo[0].mem == nil || todo[1].mem == nil {
		t.Fatalf("takeOffered = %+v, %t; want both of generation 1, with their copies", todo, ok)
	}
	if todo[0].mem.seg.Meta.FirstSeq != 1 || len(todo[0].mem.seg.Payload) != 225 || &todo[0].mem.seg.Payload[0] != &todo[0].mem.data[75] {
		t.Fatalf("copy of the first: payload of %d bytes; want the last 225 of the copy", len(todo[0].mem.seg.Payload))
	}
	held(600, "after the duplicate and the other generation were dropped")
	r.releasePlanned(todo) // as a pass that never fetched them
	held(0, "after the pass")
	if len(r.memFree) != 2 {
		t.Fatalf("%d free buffers, want both kept for the next offers", len(r.memFree))
	}

	offer(1, 21, 30, 200) // reuses a free buffer
	if len(r.memFree) != 1 {
		t.Fatalf("%d free buffers after an offer, want one taken", len(r.memFree))
	}
	offer(1, 41, 50, 200) // allocates: leaves a gap, so the pass lists the store
	held(400, "after two offers")
	offered, _ = r.takeOffers()
	if _, ok, _ := r.takeOffered(testCursor(t, nil, "", 20), offered); ok {
		t.Fatal("takeOffered planned across a gap")
	}
	held(0, "after offers a listing replaces")
	// Free buffers are kept only while they fit under the limit with the
	// copies held.
	if r.memFreeBytes > r.memLimit() || len(r.memFree) != 2 {
		t.Fatalf("%d free buffers of %d bytes, want 2 within the limit of %d", len(r.memFree), r.memFreeBytes, r.memLimit())
	}
	offer(1, 51, 60, 900)
	r.releasePlanned(r.offered) // 900 more would pass the limit: not kept
	if r.memFreeBytes > r.memLimit() || len(r.memFree) != 2 {
		t.Fatalf("%d free buffers of %d bytes, want still 2 within the limit of %d", len(r.memFree), r.memFreeBytes, r.memLimit())
	}
}

// A segment stored in over streamAbove bytes is offered without a copy,
// whatever the limit: read back, it is decompressed as it is read.
func TestLargeOfferIsNotCopied(t *testing.T) {
	r := &Receiver{wake: make(chan struct{}, 1), cfg: Config{PrefetchBytes: 1 << 30}}
	r.OfferVerified(fakeVerified(1, 1, 10, streamAbove))
	r.OfferVerified(fakeVerified(1, 11, 20, streamAbove+1))
	offered, _ := r.takeOffers()
	if len(offered) != 2 || offered[0].mem == nil || offered[1].mem != nil || offered[1].listed != streamAbove+1 {
		t.Fatalf("offered %+v; want the first with a copy, the second by name and size only", offered)
	}
	r.releasePlanned(offered)
}
