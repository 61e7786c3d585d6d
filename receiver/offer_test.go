package receiver_test

import (
	"context"
	"io"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/store"
)

// countingStore counts Get calls and List calls: those of the stream's
// segments (lists) and of its generation records (histLists).
type countingStore struct {
	store.Store
	lists, histLists, gets atomic.Int64
}

// List counts a listing once it is done, so that a test waiting for the
// count knows what the listing could have seen.
func (c *countingStore) List(ctx context.Context, dir, after string, fn func(store.Object) error) error {
	err := c.Store.List(ctx, dir, after, fn)
	switch dir {
	case batch.StreamDir(receivertest.Stream):
		c.lists.Add(1)
	case batch.GenerationDir(receivertest.Stream):
		c.histLists.Add(1)
	}
	return err
}

func (c *countingStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, key)
}

// runFedByOffers opens cfg as a receiver that nothing but offers wakes (no
// polls) and runs it; stop ends Run and fails the test on its error.
func runFedByOffers(t *testing.T, cfg receiver.Config) (r *receiver.Receiver, stop func()) {
	t.Helper()
	cfg.Once = false
	cfg.PollMin, cfg.PollMax = time.Hour, time.Hour
	r = receivertest.Open(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return r, func() {
		t.Helper()
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// Segments announced with Offer as they arrive are applied without
// listing the store; an offer that does not continue the stream (one
// arrived unannounced) falls back to a listing, which finds both.
func TestOfferedSegmentsNeedNoListing(t *testing.T) {
	inner, _ := receivertest.NewStore(t)
	st := &countingStore{Store: inner}
	segs := receivertest.Chain(t, 8, 5)
	out := filepath.Join(t.TempDir(), "replica")
	r, stop := runFedByOffers(t, receivertest.Config(t, st, &apply.File{Path: out}))
	receivertest.Eventually(t, "the first pass's listing", func() bool { return st.lists.Load() == 1 })

	for _, s := range segs[:5] {
		receivertest.Put(t, st, s)
		r.Offer(s.Name, int64(len(s.Data)))
		receivertest.Eventually(t, "offered "+s.Name+" applied", func() bool { return r.Applied() == s.Meta.LastSeq })
	}
	if n := st.lists.Load(); n != 1 {
		t.Fatalf("%d listings for 5 offered segments, want only the first pass's", n)
	}
	// The history is read before each applies (one LIST of the small
	// generations dir), and by the first pass.
	if n := st.histLists.Load(); n != 6 {
		t.Fatalf("%d listings of the generation records for 5 offered segments, want 6", n)
	}
	// Wakes with nothing offered (one racing the last offer, a held
	// checkpoint coming due) do not list either: only the poll would.
	for range 5 {
		r.Wake()
		time.Sleep(2 * time.Millisecond)
	}
	if n := st.lists.Load(); n != 1 {
		t.Fatalf("%d listings after wakes with nothing offered, want still 1", n)
	}
	receivertest.Put(t, st, segs[5]) // stored without an offer
	receivertest.Put(t, st, segs[6])
	r.Offer(segs[6].Name, int64(len(segs[6].Data)))
	receivertest.Eventually(t, "both applied after a listing", func() bool { return r.Applied() == segs[6].Meta.LastSeq })
	if n := st.lists.Load(); n < 2 {
		t.Fatalf("%d listings: an offer after a missing one must fall back to listing", n)
	}
	receivertest.Put(t, st, segs[7])
	r.Offer(segs[7].Name, int64(len(segs[7].Data)))
	r.Offer(segs[3].Name, 0) // applied already: ignored
	receivertest.Eventually(t, "the last applied", func() bool { return r.Applied() == segs[7].Meta.LastSeq })
	stop()
	receivertest.WantFile(t, out, receivertest.Want(1, 40), "after the offers")
}

// An offer of a segment applied already (its own listing found it first,
// or it was offered twice) tells nothing: it does not make a receiver
// fed by offers list the store.
func TestStaleOfferNeedsNoListing(t *testing.T) {
	inner, _ := receivertest.NewStore(t)
	st := &countingStore{Store: inner}
	segs := receivertest.Chain(t, 3, 5)
	out := filepath.Join(t.TempDir(), "replica")
	r, stop := runFedByOffers(t, receivertest.Config(t, st, &apply.File{Path: out}))
	receivertest.Eventually(t, "the first pass's listing", func() bool { return st.lists.Load() == 1 })
	for _, s := range segs {
		receivertest.Put(t, st, s)
		r.Offer(s.Name, int64(len(s.Data)))
		receivertest.Eventually(t, "offered "+s.Name+" applied", func() bool { return r.Applied() == s.Meta.LastSeq })
	}
	for _, s := range segs {
		r.Offer(s.Name, int64(len(s.Data))) // again
		time.Sleep(5 * time.Millisecond)
	}
	if n := st.lists.Load(); n != 1 {
		t.Fatalf("%d listings after offers of applied segments, want still only the first pass's", n)
	}
	stop()
	receivertest.WantFile(t, out, receivertest.Want(1, 15), "after the offers")
}

// A receiver whose own listing applied what the store held is not made
// to list again by offers of those same segments (a many-stream
// receiver's offers racing its first listing).
func TestStaleOfferAfterListingNeedsNoListing(t *testing.T) {
	inner, _ := receivertest.NewStore(t)
	st := &countingStore{Store: inner}
	segs := receivertest.Chain(t, 3, 5)
	receivertest.Put(t, st, segs...)
	out := filepath.Join(t.TempDir(), "replica")
	r, stop := runFedByOffers(t, receivertest.Config(t, st, &apply.File{Path: out}))
	receivertest.Eventually(t, "the listings applying the store", func() bool { return r.Applied() == 15 && st.lists.Load() == 2 })
	time.Sleep(20 * time.Millisecond)
	lists := st.lists.Load()
	for _, s := range segs {
		r.Offer(s.Name, int64(len(s.Data)))
		time.Sleep(5 * time.Millisecond)
	}
	if n := st.lists.Load(); n != lists {
		t.Fatalf("%d listings after offers of segments its listing applied, want still %d", n, lists)
	}
	// A new segment offered is applied from the offer.
	next := receivertest.SealSeg(t, receivertest.Stream, 1, 16, 20, segs[2].Hash)
	receivertest.Put(t, st, next)
	r.Offer(next.Name, int64(len(next.Data)))
	receivertest.Eventually(t, "the new segment applied", func() bool { return r.Applied() == 20 })
	if n := st.lists.Load(); n != lists {
		t.Fatalf("%d listings after a new offer, want still %d", n, lists)
	}
	stop()
	receivertest.WantFile(t, out, receivertest.Want(1, 20), "after the offers")
}
