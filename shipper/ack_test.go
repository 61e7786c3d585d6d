package shipper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/storetest"
)

// gatedStore holds every Put until the gate opens, counting Puts.
type gatedStore struct {
	*storetest.Faulty
	gate chan struct{}
	puts atomic.Int64
}

func newGatedStore(t *testing.T) *gatedStore { return gatedOn(newDirStore(t)) }

// gatedOn is a gatedStore in front of inner.
func gatedOn(inner store.Store) *gatedStore {
	g := &gatedStore{gate: make(chan struct{})}
	g.Faulty = &storetest.Faulty{Store: inner, PutFn: func(ctx context.Context, name string, data []byte) error {
		select {
		case <-g.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		g.puts.Add(1)
		return inner.Put(ctx, name, data)
	}}
	return g
}

// wmStore is a target that reports the receiver's watermarks itself, as a
// tcp:// link does.
type wmStore struct {
	store.Store
	applied atomic.Uint64
}

func (w *wmStore) LinkWatermarks() (uint64, uint64, bool) { return 0, w.applied.Load(), true }

func appendAsync(sh *Shipper, data string) chan error {
	done := make(chan error, 1)
	go func() {
		_, err := sh.Append(context.Background(), batch.Record{Data: []byte(data)})
		done <- err
	}()
	return done
}

func notYet(t *testing.T, done chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("%s returned (%v) before it was acknowledged", what, err)
	case <-time.After(100 * time.Millisecond):
	}
}

func returns(t *testing.T, done chan error, what string) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not return", what)
	}
}

// Under ack "received" Append returns only once the target stored the
// segment holding the record, without waiting for the flush policy; an
// async target is not waited for.
func TestAckReceived(t *testing.T) {
	sync := newGatedStore(t)
	archive := newGatedStore(t) // never opens during the appends
	cfg := ackConfig(t, AckReceived, Target{Name: "dr", Store: sync}, Target{Name: "archive", Store: archive, Async: true})
	sh := startShipper(t, cfg)

	done := appendAsync(sh.Shipper, "one")
	notYet(t, done, "Append with the target's Put held")
	close(sync.gate)
	returns(t, done, "Append after the target stored it")
	if got := sync.puts.Load(); got != 1 {
		t.Fatalf("%d puts to the synchronous target, want 1", got)
	}
	if archive.puts.Load() != 0 {
		t.Fatal("the async target got a Put through a closed gate")
	}
	// The async target still gets everything before the spool lets go.
	close(archive.gate)
	drain(t, sh.Shipper)
	if n := len(storeSegments(t, archive.Store, "app")); n != 1 {
		t.Fatalf("archive holds %d segments, want 1", n)
	}
}

// Concurrent appenders share segments and round trips: while one segment
// is on its way, the records that arrive gather into the next.
func TestAckReceivedGroupCommit(t *testing.T) {
	st := newGatedStore(t)
	cfg := ackConfig(t, AckReceived, Target{Name: "dr", Store: st})
	sh := startShipper(t, cfg)
	const n = 64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := sh.Append(context.Background(), batch.Record{Data: fmt.Appendf(nil, "r%d", i)})
			errs <- err
		}()
	}
	time.Sleep(200 * time.Millisecond) // let every appender queue behind the held Put
	close(st.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	segs := storeSegments(t, st.Store, "app")
	if len(segs) > 3 {
		t.Fatalf("%d appenders took %d segments; group commit should need about 2", n, len(segs))
	}
	if recs := batchtest.CheckChain(t, segs, 0, batch.ZeroHash); len(recs) != n {
		t.Fatalf("store holds %d records, want %d", len(recs), n)
	}
}

// Under ack "applied" Append waits for the receiver's applied watermark,
// not just for the store.
func TestAckApplied(t *testing.T) {
	target := &wmStore{Store: newDirStore(t)}
	cfg := ackConfig(t, AckApplied, Target{Name: "dr", Store: target})
	sh := startShipper(t, cfg)

	done := appendAsync(sh.Shipper, "one")
	waitFor(t, "segment stored", func() bool { return len(storeSegments(t, target.Store, "app")) == 1 })
	notYet(t, done, "Append stored but not applied")
	target.applied.Store(1)
	returns(t, done, "Append after the receiver applied it")
	ts := sh.Targets()[0]
	if ts.AppliedSeq != 1 || !ts.AppliedKnown || !ts.OldestUnapplied.IsZero() {
		t.Fatalf("target status %+v: want applied 1, nothing unapplied", ts)
	}
	// A record sent but not applied shows up as lag.
	done = appendAsync(sh.Shipper, "two")
	waitFor(t, "second segment stored", func() bool { return len(storeSegments(t, target.Store, "app")) == 2 })
	waitFor(t, "lag visible", func() bool { return !sh.Targets()[0].OldestUnapplied.IsZero() })
	target.applied.Store(2)
	returns(t, done, "second Append")
}

// Under ack "applied" on a store target, the shipper reads the receivers'
// published watermarks through Config.Applied.
func TestAckAppliedFromStore(t *testing.T) {
	target := newDirStore(t)
	var applied atomic.Uint64
	cfg := ackConfig(t, AckApplied, Target{Name: "archive", Store: target})
	cfg.Applied = func(ctx context.Context, st store.Store, stream string) (uint64, bool, error) {
		if st != target || stream != "app" {
			return 0, false, errors.New("wrong store or stream")
		}
		return applied.Load(), true, nil
	}
	sh := startShipper(t, cfg)
	done := appendAsync(sh.Shipper, "one")
	notYet(t, done, "Append before any watermark")
	applied.Store(1)
	returns(t, done, "Append after the watermark moved")
}

// Without Config.Applied, ack "applied" on a store target waits for the
// watermark objects the receivers publish there, and for the lowest of
// them.
func TestAckAppliedFromWatermarkObjects(t *testing.T) {
	target := newDirStore(t)
	ctx := context.Background()
	for _, id := range []string{"dr-1", "dr-2"} {
		if err := catalog.RegisterReceiver(ctx, target, "app", id); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(id string, seq uint64) {
		t.Helper()
		w := catalog.Watermark{Format: 1, Receiver: id, Stream: "app", Generation: 1, AppliedSeq: seq, PublishedAt: time.Now()}
		if _, err := catalog.PutWatermark(ctx, target, w); err != nil {
			t.Fatal(err)
		}
	}
	sh := startShipper(t, ackConfig(t, AckApplied, Target{Name: "archive", Store: target}))
	done := appendAsync(sh.Shipper, "one")
	notYet(t, done, "Append before any watermark")
	publish("dr-1", 1)
	notYet(t, done, "Append applied by one of two receivers")
	publish("dr-2", 1)
	returns(t, done, "Append after both receivers applied it")
}

// A failing shipper releases its waiters with the error instead of leaving
// them hanging.
func TestAckWaitersReleasedOnFailure(t *testing.T) {
	conflict := &storetest.Faulty{Store: newDirStore(t), PutFn: func(context.Context, string, []byte) error {
		return fmt.Errorf("exists with other content: %w", store.ErrConflict)
	}}
	cfg := ackConfig(t, AckReceived, Target{Name: "dr", Store: conflict})
	sh := startShipper(t, cfg)
	done := appendAsync(sh.Shipper, "one")
	select {
	case err := <-done:
		if !errors.Is(err, store.ErrConflict) {
			t.Fatalf("Append: %v, want the conflict", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Append still waiting after the shipper failed")
	}
	if err := sh.wait(t); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Run: %v", err)
	}
}

func TestAckModeChecked(t *testing.T) {
	cfg := shipperConfig(t, Target{Name: "dr", Store: newDirStore(t)})
	cfg.Ack = "eventually"
	if _, err := New(context.Background(), cfg, quiet); err == nil {
		t.Fatal("New accepted an unknown ack mode")
	}
}

// With every target async, ack "received" waits for nothing remote, but
// Append still returns only once the record is durable in the spool.
func TestAckAllTargetsAsyncStillDurable(t *testing.T) {
	st := newGatedStore(t) // never opens
	cfg := ackConfig(t, AckReceived, Target{Name: "archive", Store: st, Async: true})
	var syncs atomic.Int64
	cfg.Spool.SyncFile = func(f *os.File) error { syncs.Add(1); return f.Sync() }
	sh := startShipper(t, cfg)
	if _, err := sh.Append(context.Background(), batch.Record{Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if syncs.Load() == 0 {
		t.Fatal("Append returned without an fsync and without any target to acknowledge")
	}
}

// Closed-loop appenders (each appends again as soon as its record is
// acknowledged) share segments: the ack sealer lingers for the appenders
// the last segment released instead of sealing at the first of them, which
// would split every round into a tiny segment and a large one.
func TestAckReceivedGroupCommitLingers(t *testing.T) {
	const appenders, each = 8, 24
	segs := closedLoopSegments(t, appenders, each, nil)
	// Ideally each + 1 segments (the first round gathers whoever came
	// first); splitting every round would need about twice as many.
	t.Logf("%d segments", len(segs))
	if max := each * 3 / 2; len(segs) > max {
		t.Fatalf("%d closed-loop appenders x %d records took %d segments, want at most %d: rounds are split",
			appenders, each, len(segs), max)
	}
}

// closedLoopSegments runs appenders closed-loop appenders of each records
// under ack "received" against a store whose Put takes 20 ms (a round
// trip), and returns the segments the store got, checked to chain and
// hold every record. half, if set, runs before the second half of the
// appenders starts.
func closedLoopSegments(t *testing.T, appenders, each int, half func(*Shipper)) []batchtest.Segment {
	t.Helper()
	inner := newDirStore(t)
	st := &storetest.Faulty{Store: inner, PutFn: func(ctx context.Context, name string, data []byte) error {
		time.Sleep(20 * time.Millisecond) // a round trip
		return inner.Put(ctx, name, data)
	}}
	cfg := ackConfig(t, AckReceived, Target{Name: "dr", Store: st})
	sh := startShipper(t, cfg)
	var wg sync.WaitGroup
	for i := range appenders {
		if i == appenders/2 && half != nil {
			half(sh.Shipper)
		}
		wg.Go(func() {
			for j := range each {
				if _, err := sh.Append(context.Background(), batch.Record{Data: fmt.Appendf(nil, "r%d-%d", i, j)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	segs := storeSegments(t, inner, "app")
	if recs := batchtest.CheckChain(t, segs, 0, batch.ZeroHash); len(recs) != appenders*each {
		t.Fatalf("store holds %d records, want %d", len(recs), appenders*each)
	}
	return segs
}

// Under ack "received" nothing waits for the journal: records count once
// a target stored their sealed (fsynced) segment, so the journal is never
// fsynced, even while records wait in the open batch for a slow target.
// Under "local" the same appends fsync it.
func TestAckModesJournalCommits(t *testing.T) {
	for _, tc := range []struct {
		ack  AckMode
		want bool // journal fsyncs expected
	}{{AckReceived, false}, {AckLocal, true}} {
		t.Run(string(tc.ack), func(t *testing.T) {
			var journalSyncs atomic.Int64
			gated := newGatedStore(t)
			cfg := ackConfig(t, tc.ack, Target{Name: "dr", Store: gated})
			cfg.Spool.CommitInterval = time.Millisecond
			cfg.Spool.SyncFile = func(f *os.File) error {
				if strings.HasPrefix(filepath.Base(f.Name()), "journal-") {
					journalSyncs.Add(1)
				}
				return f.Sync()
			}
			sh := startShipper(t, cfg)
			// The first record's segment is held at the target's gate;
			// the rest wait in the open batch meanwhile.
			var dones []chan error
			for i := range 5 {
				dones = append(dones, appendAsync(sh.Shipper, fmt.Sprintf("r%d", i)))
				time.Sleep(10 * time.Millisecond) // many commit intervals
			}
			if got := journalSyncs.Load() > 0; got != tc.want {
				t.Errorf("ack %q: %d journal fsyncs; want some: %v", tc.ack, journalSyncs.Load(), tc.want)
			}
			close(gated.gate)
			for _, d := range dones {
				returns(t, d, "Append once the target opened")
			}
			// Nor does a journal file come and go per seal (JournalRotate).
			for i := range 3 {
				returns(t, appendAsync(sh.Shipper, fmt.Sprintf("s%d", i)), "Append")
				if err := sh.Spool().Seal("test"); err != nil {
					t.Fatal(err)
				}
			}
			files := spoolJournals(t, cfg.Spool.Dir)
			if first := "journal-0000000000000001"; (len(files) == 1 && files[0] == first) == tc.want {
				t.Errorf("ack %q: journal files %q after several seals; want only %s: %v", tc.ack, files, first, !tc.want)
			}
		})
	}
}

// spoolJournals lists the spool's journal files (spool/doc.go), in name
// order.
func spoolJournals(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "journal-") {
			names = append(names, e.Name())
		}
	}
	return names
}

// A round that starts split (half the appenders came late to the first
// segment) is gathered again: the ack sealer waits for every appender
// still waiting, not only as many as the last segment carried, which kept
// every round split in two.
func TestAckSealerHealsASplitRound(t *testing.T) {
	const appenders, each = 8, 20
	segs := closedLoopSegments(t, appenders, each, func(sh *Shipper) {
		// The first segment leaves with the first half.
		waitFor(t, "the first segment sealed", func() bool { return sh.Spool().Stats().SegmentsOut > 0 })
	})
	t.Logf("%d segments", len(segs))
	// Split for good, it takes 2*each segments.
	if max := each + 5; len(segs) > max {
		t.Fatalf("%d appenders x %d records, half of them late to the first round, took %d segments, want at most %d: the split round never healed",
			appenders, each, len(segs), max)
	}
}

// An appender that starts waiting wakes the ack sealer (waitCh), not the
// appenders already waiting (ackCh): with 64 appenders, each arrival
// waking all the others made thousands of wake-ups per round.
func TestArrivingAppenderWakesOnlyTheSealer(t *testing.T) {
	gated := newGatedStore(t)
	cfg := ackConfig(t, AckReceived, Target{Name: "dr", Store: gated})
	sh := startShipper(t, cfg)
	first := appendAsync(sh.Shipper, "r0") // its segment is held at the gate
	waiting := func(n int) func() bool {
		return func() bool {
			sh.mu.Lock()
			defer sh.mu.Unlock()
			return sh.waiters == n
		}
	}
	waitFor(t, "the first appender waiting", waiting(1))
	sh.mu.Lock()
	ack, wait := sh.ackCh, sh.waitCh
	sh.mu.Unlock()
	second := appendAsync(sh.Shipper, "r1")
	waitFor(t, "the second appender waiting", waiting(2))
	select {
	case <-wait:
	default:
		t.Fatal("an appender started waiting without waking the ack sealer")
	}
	select {
	case <-ack:
		t.Fatal("an appender starting to wait woke the appenders already waiting")
	default:
	}
	close(gated.gate)
	returns(t, first, "first Append")
	returns(t, second, "second Append")
}

// ackConfig is shipperConfig for ack mode ack, where only acks seal: the
// flush policy's max_age is an hour.
func ackConfig(t *testing.T, ack AckMode, targets ...Target) Config {
	cfg := shipperConfig(t, targets...)
	cfg.Spool.Policy = batch.FlushPolicy{MaxAge: time.Hour}
	cfg.Ack = ack
	return cfg
}
