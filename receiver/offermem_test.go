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
	"github.com/ferry-dr/ferry/store"
)

// getCountingStore counts Get calls.
type getCountingStore struct {
	store.Store
	gets atomic.Int64
}

func (c *getCountingStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	c.gets.Add(1)
	return c.Store.Get(ctx, key)
}

// offerVerified offers s as the link's server does: verified, with bytes
// that the caller reuses as soon as the call returns.
func offerVerified(t *testing.T, r *receiver.Receiver, s seg) {
	t.Helper()
	data := append([]byte(nil), s.data...)
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
	inner, _ := newStore(t)
	st := &getCountingStore{Store: inner}
	segs := chain(t, 6, 50)
	out := filepath.Join(t.TempDir(), "replica")
	cfg := testConfig(t, st, &receiver.FileApplier{Path: out})
	cfg.Once = false
	cfg.PollMin, cfg.PollMax = time.Hour, time.Hour // only offers wake Run
	// Copies of one segment at a time: one not released makes the later
	// offers go without theirs, and read the store.
	var largest int64
	for _, s := range segs {
		largest = max(largest, int64(len(s.data)))
	}
	cfg.PrefetchBytes = 4 * largest
	r := open(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	for _, s := range segs[:4] {
		put(t, st, s)
		offerVerified(t, r, s)
		eventually(t, "offered "+s.name+" applied", func() bool { return r.Applied() == s.meta.LastSeq })
	}
	if n := st.gets.Load(); n != 0 {
		t.Fatalf("%d reads of the store for 4 segments offered with their bytes, want 0", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r.Close()

	// A limit smaller than one segment: the offers carry names only.
	cfg.PrefetchBytes = int64(len(segs[4].data)) // a quarter of it is the limit
	r = open(t, cfg)
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	go func() { done <- r.Run(ctx) }()
	for _, s := range segs[4:] {
		put(t, st, s)
		offerVerified(t, r, s)
		eventually(t, "offered "+s.name+" applied", func() bool { return r.Applied() == s.meta.LastSeq })
	}
	if n := st.gets.Load(); n != 2 {
		t.Fatalf("%d reads of the store for 2 segments offered past the memory limit, want 2", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantFile(t, out, want(1, 300), "after the offers")
}
