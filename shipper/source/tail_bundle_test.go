package source

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/bundle"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// arrivalSink is a real Shipper that notes when each line arrived in its
// open batch and how many batches the tail appended.
type arrivalSink struct {
	*shipper.Shipper
	mu      sync.Mutex
	batches int
	order   []string
	arrived map[string]time.Time
}

func (s *arrivalSink) AppendBatch(ctx context.Context, recs []batch.Record, cursor []byte) error {
	if err := s.Shipper.AppendBatch(ctx, recs, cursor); err != nil {
		return err
	}
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(recs) > 0 {
		s.batches++
	}
	for _, r := range recs {
		s.order = append(s.order, string(r.Data))
		s.arrived[string(r.Data)] = now
	}
	return nil
}

// TestTailCoalescesOnBundleTicks: a bundled stream's open batch is
// sealed by the Bundler's tick, not by age (its spool has no max_age),
// and the tail spaces its reads on that tick (Shipper.SealDeadline from
// Config.SealTick = Bundler.NextTick): it appends far fewer batches than
// one per Poll, and every line written well before a tick (Poll and a
// margin for a loaded machine) is in the open batch before that tick
// seals it. Without SealTick the deadline is zero and the tail appends
// at every Poll.
func TestTailCoalescesOnBundleTicks(t *testing.T) {
	const (
		interval = time.Second
		poll     = 100 * time.Millisecond
		every    = 10 * time.Millisecond // one line written each
		margin   = 50 * time.Millisecond // a late timer on a loaded machine
	)
	root := t.TempDir()
	st, err := dir.New(filepath.Join(root, "store"))
	if err != nil {
		t.Fatal(err)
	}
	retry := store.RetryPolicy{Min: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	b, err := bundle.Open(bundle.Config{Dir: filepath.Join(root, "spool", bundle.DirName), Interval: interval,
		Targets: []bundle.Target{{Name: "t", Store: st}}, Retry: retry, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sh, err := shipper.New(ctx, shipper.Config{
		Spool: spool.Config{Dir: filepath.Join(root, "spool", "s"), Stream: "s", Fsync: spool.FsyncOff,
			Policy: batch.FlushPolicy{MaxBytes: 16 << 20}, Parts: b.Parts("s")},
		Targets:  []shipper.Target{{Name: "t", Store: st}},
		Retry:    retry,
		Lease:    shipper.LeaseConfig{TTL: -1},
		SealTick: b.NextTick,
	}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); sh.Run(ctx) }()
	go func() { defer wg.Done(); b.Run(ctx) }()
	b.Register("s", sh)
	defer b.Unregister("s")
	for b.NextTick().IsZero() {
		time.Sleep(time.Millisecond)
	}

	path := filepath.Join(root, "app.log")
	appendFile(t, path)
	sink := &arrivalSink{Shipper: sh, arrived: map[string]time.Time{}}
	src := &Tail{Path: path, Format: FormatLine, Poll: poll, Coalesce: interval, Replayable: true, Log: quiet}
	srcDone := make(chan error, 1)
	srcCtx, stopSrc := context.WithCancel(ctx)
	go func() { srcDone <- src.Run(srcCtx, sink) }()

	first := b.NextTick() // the ticks: first + k*interval
	start := time.Now()
	var written []time.Time
	for time.Since(start) < 3500*time.Millisecond {
		written = append(written, time.Now())
		appendFile(t, path, fmt.Sprintf("l-%d\n", len(written)))
		time.Sleep(every)
	}
	n := len(written)
	waitFor(t, "every line", func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return len(sink.order) >= n
	})
	stopSrc()
	if err := <-srcDone; err != nil {
		t.Fatalf("tail: %v", err)
	}
	elapsed := time.Since(start)

	sink.mu.Lock()
	defer sink.mu.Unlock()
	if want := batchtest.Lines("l", 1, n); !slices.Equal(sink.order, want) {
		t.Fatalf("the tail appended %d lines, want l-1..l-%d once, in order", len(sink.order), n)
	}
	// The tick that seals what arrives at a: the first after it.
	tickAfter := func(at time.Time) time.Time {
		k := at.Sub(first)/interval + 1
		if at.Before(first) {
			k = 0
		}
		return first.Add(k * interval)
	}
	// A line written Poll (and a margin) before a tick is read by the
	// read Poll before it. A loaded machine may run one such read late
	// (a timer over 100 ms late): one tick may be missed, not more; a
	// tail that does not read before the ticks misses every one.
	late, missed := 0, map[time.Time]bool{}
	for i, w := range written {
		due := tickAfter(w.Add(poll + margin))
		if at := sink.arrived[fmt.Sprintf("l-%d\n", i+1)]; !at.Before(due) {
			missed[due] = true
			if late++; late <= 3 {
				t.Logf("line %d, written %s before the tick at %s, arrived %s after it: it waits for the next tick",
					i+1, due.Sub(w).Round(time.Millisecond), due.Format("15:04:05.000"), at.Sub(due).Round(time.Millisecond))
			}
		}
	}
	if len(missed) > 1 {
		t.Fatalf("%d of %d lines missed the tick they were written for, at %d ticks", late, n, len(missed))
	}
	// About two reads per tick (one Poll before it, one at it) against
	// one per Poll, each with data: ten per tick.
	ticks := int(elapsed/interval) + 1
	if max := 3*ticks + 2; sink.batches > max {
		t.Fatalf("the tail appended %d batches of %d lines in %s (%d ticks of %s, Poll %s): want at most %d, about two a tick",
			sink.batches, n, elapsed.Round(time.Millisecond), ticks, interval, poll, max)
	}
	t.Logf("%d lines in %d batches over %d ticks", n, sink.batches, ticks)
}
