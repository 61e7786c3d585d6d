package source

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch/batchtest"
)

// dueSink is a fakeSink that tells a seal deadline (shipper.Shipper's
// SealDeadline) and notes when each line arrived.
type dueSink struct {
	fakeSink
	due     atomic.Pointer[time.Time] // nil: no segment open
	mu      sync.Mutex
	arrived map[string]time.Time
}

func (s *dueSink) SealDeadline() time.Time {
	if d := s.due.Load(); d != nil {
		return *d
	}
	return time.Time{}
}

func (s *dueSink) setDue(d time.Time) { s.due.Store(&d) }

func (s *dueSink) arrival(line string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.arrived[line]
	return at, ok
}

func (s *dueSink) note() {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.arrived == nil {
		s.arrived = map[string]time.Time{}
	}
	for _, d := range s.datas() {
		if _, ok := s.arrived[d]; !ok {
			s.arrived[d] = now
		}
	}
}

// runCoalescing runs src into sink until the test ends, noting arrivals
// every millisecond.
func runCoalescing(t *testing.T, src *Tail, sink *dueSink) {
	t.Helper()
	src.Log = quiet
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, sink) }()
	go func() {
		for ctx.Err() == nil {
			sink.note()
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestTailCoalescesReads: a busy file whose segment seals far off is
// read about every Coalesce, not every Poll, and every line still comes,
// once, in order.
func TestTailCoalescesReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path)
	sink := &dueSink{}
	sink.setDue(time.Now().Add(time.Hour))
	src := &Tail{Path: path, Poll: 10 * time.Millisecond, Coalesce: 400 * time.Millisecond}
	runCoalescing(t, src, sink)
	start := time.Now()
	n := 0
	for time.Since(start) < 1200*time.Millisecond {
		n++
		appendFile(t, path, fmt.Sprintf("l-%d\n", n))
		time.Sleep(5 * time.Millisecond)
	}
	polls := src.polls.Load()
	want := batchtest.Lines("l", 1, n)
	waitFor(t, "every line", func() bool { return len(sink.datas()) >= n || time.Since(start) > 5*time.Second })
	if got := sink.datas(); !slices.Equal(got, want[:len(got)]) || len(got) != n {
		t.Fatalf("tail produced %d lines, want l1..l%d once, in order", len(got), n)
	}
	// 1.2 s at one read per 400 ms, each read followed by one that finds
	// the file's end: about 8. Reading every Poll makes well over 100.
	if polls > 20 {
		t.Fatalf("the tail looked at its busy file %d times in 1.2 s; with Coalesce 400ms, want about 8", polls)
	}
}

// TestTailReadsBeforeTheSeal: however long Coalesce is, the tail reads
// once Poll before the open segment's seal, so a line written well
// before it makes that segment.
func TestTailReadsBeforeTheSeal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path, "first\n")
	sink := &dueSink{}
	src := &Tail{Path: path, Poll: 50 * time.Millisecond, Coalesce: time.Hour}
	due := time.Now().Add(time.Second)
	sink.setDue(due)
	runCoalescing(t, src, sink)
	waitFor(t, "the first line", func() bool { _, ok := sink.arrival("first\n"); return ok })
	appendFile(t, path, "second\n")
	waitFor(t, "the second line", func() bool { _, ok := sink.arrival("second\n"); return ok })
	at, _ := sink.arrival("second\n")
	// It is read at due - Poll; a loaded machine may run the read late,
	// but not by the hour Coalesce would have waited.
	if late := at.Sub(due); late > 2*time.Second {
		t.Fatalf("a line written before the seal arrived %s after it", late)
	}
}

// TestTailReadsEveryPollWithNothingOpen: with no segment open (the last
// one sealed) the tail reads every Poll: the line that opens the next
// segment does not wait for Coalesce.
func TestTailReadsEveryPollWithNothingOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "app.log")
	appendFile(t, path, "first\n")
	sink := &dueSink{} // no deadline: nothing open
	src := &Tail{Path: path, Poll: 20 * time.Millisecond, Coalesce: time.Hour}
	runCoalescing(t, src, sink)
	waitFor(t, "the first line", func() bool { _, ok := sink.arrival("first\n"); return ok })
	written := time.Now()
	appendFile(t, path, "second\n")
	waitFor(t, "the second line", func() bool { _, ok := sink.arrival("second\n"); return ok })
	if at, _ := sink.arrival("second\n"); at.Sub(written) > 5*time.Second {
		t.Fatalf("with no segment open a line waited %s", at.Sub(written))
	}
}

// TestTailCoalescedRotation: rotations and a copytruncate while the reads
// are coalesced lose and repeat no line.
func TestTailCoalescedRotation(t *testing.T) {
	t.Run("own looks", func(t *testing.T) { coalescedRotation(t, nil) })
	t.Run("watch's looks", func(t *testing.T) {
		tw, err := NewTailWatch(quiet, time.Hour) // only events and looks wake the tail
		if err != nil {
			t.Fatal(err)
		}
		defer tw.Close()
		coalescedRotation(t, tw)
	})
}

func coalescedRotation(t *testing.T, watch *TailWatch) {
	dir := t.TempDir()
	path := filepath.Join(dir, "app.log")
	appendFile(t, path, batchtest.Lines("l", 1, 3)...)
	sink := &dueSink{}
	sink.setDue(time.Now().Add(time.Hour))
	src := &Tail{Path: path, Poll: 10 * time.Millisecond, Coalesce: 200 * time.Millisecond, Watch: watch}
	runCoalescing(t, src, sink)
	waitFor(t, "l1..l3", func() bool { return len(sink.datas()) == 3 })
	n := 3
	write := func(k int) {
		appendFile(t, path, batchtest.Lines("l", n+1, n+k)...)
		n += k
	}
	for round := range 3 {
		write(2)
		if err := os.Rename(path, filepath.Join(dir, fmt.Sprintf("app.log.%d", round))); err != nil {
			t.Fatal(err)
		}
		write(2) // into the new file
		time.Sleep(50 * time.Millisecond)
		write(1)
	}
	ok := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && !ok; time.Sleep(10 * time.Millisecond) {
		ok = len(sink.datas()) >= n
	}
	if !ok {
		t.Fatalf("after rotations the tail produced\n%q\nwant\n%q", sink.datas(), batchtest.Lines("l", 1, n))
	}
	want := batchtest.Lines("l", 1, n)
	if got := sink.datas(); !slices.Equal(got, want) {
		t.Fatalf("after rotations the tail produced\n%q\nwant\n%q", got, want)
	}
	// copytruncate: what was read is copied away, the file truncated and
	// written again from its start, shorter than what was read of it.
	write(10)
	waitFor(t, "the tail at the file's end", func() bool { return len(sink.datas()) == n })
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	write(1)
	waitFor(t, "the lines after the truncation", func() bool { return len(sink.datas()) >= n })
	if got, want := sink.datas(), batchtest.Lines("l", 1, n); !slices.Equal(got, want) {
		t.Fatalf("after a copytruncate the tail produced\n%q\nwant\n%q", got, want)
	}
}

// TestTailWatchLooksForCoalescedTails: a busy tail between two spaced
// reads sleeps until its next read (its Watch looks at its path every
// Poll for it and every such tail on one timer) instead of waking every
// Poll itself; without a Watch it wakes every Poll. Its reads stay
// spaced either way.
func TestTailWatchLooksForCoalescedTails(t *testing.T) {
	tw, err := NewTailWatch(quiet, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Close()
	var stats atomic.Int64
	tw.stat = func(p string) (os.FileInfo, error) { stats.Add(1); return os.Stat(p) }
	busy := func(watch *TailWatch) (wakes, polls int64) {
		path := filepath.Join(t.TempDir(), "app.log")
		appendFile(t, path)
		sink := &dueSink{}
		sink.setDue(time.Now().Add(time.Hour))
		src := &Tail{Path: path, Poll: 10 * time.Millisecond, Coalesce: 400 * time.Millisecond, Watch: watch}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- src.Run(ctx, sink) }()
		n := 0
		for start := time.Now(); time.Since(start) < 1200*time.Millisecond; time.Sleep(5 * time.Millisecond) {
			n++
			appendFile(t, path, fmt.Sprintf("l-%d\n", n))
		}
		waitFor(t, "every line", func() bool { return len(sink.datas()) >= n })
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Run: %v", err)
		}
		return src.wakes.Load(), src.polls.Load()
	}
	wakes, polls := busy(tw)
	// 1.2 s at one read per 400 ms: a few waits, each ended by its timer.
	if wakes > 20 || polls > 20 {
		t.Errorf("with a Watch a coalesced tail woke %d times and read %d times in 1.2 s (Poll 10ms, Coalesce 400ms); want a few of each", wakes, polls)
	}
	if n := stats.Load(); n < 30 {
		t.Errorf("the Watch looked at the busy tail's path %d times in 1.2 s; want about every Poll (10ms)", n)
	}
	if wakes, _ := busy(nil); wakes < 60 {
		t.Errorf("without a Watch a coalesced tail woke only %d times in 1.2 s (Poll 10ms); the test cannot tell", wakes)
	}
}
