package receiver_test

import (
	"path/filepath"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// offerVerified offers s as the link's server does: verified, with bytes
// that the caller reuses as soon as the call returns.
func offerVerified(t *testing.T, r *receiver.Receiver, s receivertest.Seg) {
	t.Helper()
	data := append([]byte(nil), s.Data...)
	v, err := batch.Open(data)
	if err != nil {
		t.Fatal(err)
	}
	r.OfferVerified(v, data)
	clear(data) // the server's read buffer takes the next frame
}

// Segments offered with their bytes are applied from the receiver's copy:
// the store is not read, and the caller's buffer is free once the offer
// returns, and each copy is released once applied. Past the copies'
// memory limit, an offer carries only the name and the segment is read
// from the store as before.
func TestOfferedBytesAreNotReadBack(t *testing.T) {
	inner, _ := receivertest.NewStore(t)
	st := &countingStore{Store: inner}
	segs := receivertest.Chain(t, 6, 50)
	out := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, &apply.File{Path: out})
	// offerAll offers each of segs under a copy limit of a quarter of
	// prefetchBytes and returns how often the store was read.
	offerAll := func(segs []receivertest.Seg, prefetchBytes int64) int64 {
		cfg.PrefetchBytes = prefetchBytes
		gets, lists := st.gets.Load(), st.lists.Load()
		r, stop := runFedByOffers(t, cfg)
		// Offered after the first pass's listing, which would apply
		// them from the store.
		receivertest.Eventually(t, "the first pass's listing", func() bool { return st.lists.Load() > lists })
		for _, s := range segs {
			receivertest.Put(t, st, s)
			offerVerified(t, r, s)
			receivertest.Eventually(t, "offered "+s.Name+" applied", func() bool { return r.Applied() == s.Meta.LastSeq })
		}
		stop()
		r.Close()
		return st.gets.Load() - gets
	}
	// Copies of one segment at a time: one not released makes the later
	// offers go without theirs, and read the store.
	var largest int64
	for _, s := range segs {
		largest = max(largest, int64(len(s.Data)))
	}
	if n := offerAll(segs[:4], 4*largest); n != 0 {
		t.Fatalf("%d reads of the store for 4 segments offered with their bytes, want 0", n)
	}
	// A limit smaller than one segment: the offers carry names only.
	if n := offerAll(segs[4:], int64(len(segs[4].Data))); n != 2 {
		t.Fatalf("%d reads of the store for 2 segments offered past the memory limit, want 2", n)
	}
	receivertest.WantFile(t, out, receivertest.Want(1, 300), "after the offers")
}
