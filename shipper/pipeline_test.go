package shipper

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/store"
)

// pipeStore is a store.Pipeliner over a real store: each started Put
// lands after a short delay, so several are outstanding at once, and the
// first Put of failKey fails retryably, as a receiver's inbox error would.
type pipeStore struct {
	store.Store
	max     int
	failKey string

	mu          sync.Mutex
	outstanding int
	peak        int
	started     []string // keys in the order PutAsync was called
	failed      bool
	landedOrder []string // keys in the order their Put succeeded
}

func (p *pipeStore) MaxInFlight() int { return p.max }

func (p *pipeStore) PutAsync(ctx context.Context, key string, data []byte) func() error {
	p.mu.Lock()
	p.outstanding++
	p.peak = max(p.peak, p.outstanding)
	p.started = append(p.started, key)
	fail := key == p.failKey && !p.failed
	if fail {
		p.failed = true
	}
	p.mu.Unlock()
	done := make(chan error, 1)
	go func() {
		time.Sleep(3 * time.Millisecond)
		var err error
		if fail {
			err = errors.New("inbox write failed: injected")
		} else if err = p.Store.Put(ctx, key, data); err == nil {
			p.mu.Lock()
			p.landedOrder = append(p.landedOrder, key)
			p.mu.Unlock()
		}
		p.mu.Lock()
		p.outstanding--
		p.mu.Unlock()
		done <- err
	}()
	return func() error { return <-done }
}

func (p *pipeStore) Put(ctx context.Context, key string, data []byte) error {
	return p.PutAsync(ctx, key, data)()
}

// A pipelining target gets several segments before the first is answered,
// never more than it allows; when one fails, it is retried and everything
// behind it is sent again, so the target ends with every segment and the
// sender's cursor never passes a segment the target lacks.
func TestSendPipelines(t *testing.T) {
	inner := newDirStore(t)
	ps := &pipeStore{Store: inner, max: 3}
	cfg := shipperConfig(t, Target{Name: "link", Store: ps})
	cfg.Spool.Policy = batch.FlushPolicy{MaxRecords: 1}
	names := func() []string {
		var out []string
		inner.List(context.Background(), "app/", "", func(o store.Object) error {
			out = append(out, o.Name)
			return nil
		})
		return out
	}
	// Seal the segments before the sender runs, so a backlog waits.
	sp := openSpool(t, cfg.Spool, "link")
	if _, err := sp.Append(context.Background(), batchtest.Records("r", 12), nil); err != nil {
		t.Fatal(err)
	}
	const last = 12
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, s := range sealedFiles(t, cfg.Spool.Dir) {
		keys = append(keys, batch.SegmentKey("app", s.Name))
	}
	if len(keys) != 12 {
		t.Fatalf("%d segments sealed, want 12", len(keys))
	}
	ps.failKey = keys[4]

	sh := startShipper(t, cfg)
	waitFor(t, "every segment sent", func() bool { return sh.Targets()[0].SentSeq >= last })
	if got := names(); !slices.Equal(got, keys) {
		t.Fatalf("target holds %v, want %v", got, keys)
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.peak < 2 || ps.peak > 3 {
		t.Errorf("at most %d segments were outstanding at once; want 2 or 3 (the store allows 3)", ps.peak)
	}
	if !ps.failed {
		t.Fatal("the injected failure never happened")
	}
	// Everything from the failed segment on was started again after it.
	var again []string
	for i, k := range ps.started {
		if k == keys[4] && slices.Contains(ps.started[:i], k) {
			again = ps.started[i:]
			break
		}
	}
	if len(again) == 0 || !slices.Equal(dedupe(again), keys[4:]) {
		t.Errorf("after %s failed the sender started %v; want every key from it on, in order", keys[4], again)
	}
	if st := sh.Targets()[0]; st.Segments != 12 {
		t.Errorf("status counts %d segments sent, want 12", st.Segments)
	}
}

// dedupe drops repeats, keeping first occurrences in order.
func dedupe(s []string) []string {
	var out []string
	for _, v := range s {
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// A sending window's bandwidth cap paces whole segments for a target that
// does not pace its own bytes (not a LinkLimiter), so such a target gets
// them one at a time even if it could take several.
func TestSendPipelinesNotUnderStoreCap(t *testing.T) {
	inner := newDirStore(t)
	ps := &pipeStore{Store: inner, max: 3}
	cfg := shipperConfig(t, Target{Name: "archive", Store: ps})
	cfg.Spool.Policy = batch.FlushPolicy{MaxRecords: 1}
	cfg.Schedules.Windows = []Window{{Start: mustCron(t, "* * * * *"), Duration: time.Hour, BandwidthLimit: 64 * mib}} // always open
	sp := openSpool(t, cfg.Spool, "archive")
	if _, err := sp.Append(context.Background(), batchtest.Records("r", 6), nil); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sh := startShipper(t, cfg)
	waitFor(t, "every segment sent", func() bool { return sh.Targets()[0].SentSeq >= 6 })
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.peak != 1 {
		t.Fatalf("%d segments outstanding at once under a capped window, want 1", ps.peak)
	}
}
