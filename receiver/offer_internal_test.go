package receiver

import (
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// An offered segment's size reaches the read, as a listed one's does: a
// read without it grows its buffer by doubling, which cost 15% of the
// receiver's CPU in a bulk run over the link.
func TestOfferedSizeSizesTheRead(t *testing.T) {
	r := &Receiver{wake: make(chan struct{}, 1)}
	a, b := batch.SegmentName(1, 1, 10), batch.SegmentName(1, 11, 20)
	r.Offer(b, 2000)
	r.Offer(a, 1000)
	offered, _ := r.takeOffers()
	todo, ok, err := r.takeOffered(testCursor(t, nil, "", 0), offered)
	if !ok || err != nil || len(todo) != 2 {
		t.Fatalf("takeOffered = %v, %t; want both offers, in order", todo, ok)
	}
	if todo[0] != (planned{name: a, listed: 1000}) || todo[1] != (planned{name: b, listed: 2000}) {
		t.Fatalf("takeOffered = %+v; want names in order with their offered sizes", todo)
	}
}
