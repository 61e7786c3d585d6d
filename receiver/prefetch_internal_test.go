package receiver

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// testHistory is the history of stream "app" with generation 2 forked at
// each of forks in turn (generation k+2 at forks[k]).
func testHistory(t *testing.T, forks ...uint64) batch.History {
	t.Helper()
	var recs []batch.Generation
	for i, f := range forks {
		g := batch.Generation{Version: 1, Stream: "app", Generation: uint32(i + 2), Parent: uint32(i + 1), ForkSeq: f}
		if f > 0 {
			g.ForkHash = strings.Repeat("ab", 32)
		}
		recs = append(recs, g)
	}
	h, err := batch.NewHistory("app", recs)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// testCursor is where a pass of stream "app" continues in history h (nil:
// generation 1 alone) after a checkpoint in generation 1 at seq from,
// which applied segment applied ("" for none).
func testCursor(t *testing.T, h *batch.History, applied string, from uint64) cursor {
	t.Helper()
	if h == nil {
		hist := testHistory(t)
		h = &hist
	}
	r := &Receiver{cfg: Config{Stream: "app"}}
	c, err := r.follow(*h, Checkpoint{Stream: "app", Generation: 1, LastSeq: from, LastHash: batch.ZeroHash, Segment: applied})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPlan(t *testing.T) {
	name := func(first, last uint64) string { return batch.SegmentName(1, first, last) }
	listing := func(ranges ...[2]uint64) []planned {
		var out []planned
		for _, r := range ranges {
			out = append(out, planned{name: name(r[0], r[1])})
		}
		return out
	}
	forkAt20 := testHistory(t, 20)
	for _, tc := range []struct {
		desc      string
		hist      *batch.History
		listed    []planned
		applied   string // the segment applied last
		from      uint64
		want      []string
		gap       *gapAt
		divergent []string
		err       []string // what the error names
	}{
		{desc: "nothing"},
		{desc: "chain", listed: listing([2]uint64{1, 10}, [2]uint64{11, 20}), want: []string{name(1, 10), name(11, 20)}},
		{desc: "after checkpoint", listed: listing([2]uint64{11, 20}, [2]uint64{21, 30}), from: 10,
			want: []string{name(11, 20), name(21, 30)}},
		{desc: "the applied segment listed again", listed: listing([2]uint64{1, 10}, [2]uint64{11, 20}), applied: name(1, 10), from: 10,
			want: []string{name(11, 20)}},
		{desc: "gap first", listed: listing([2]uint64{21, 30}), from: 10, gap: &gapAt{from: 11, first: 21, next: name(21, 30)}},
		{desc: "gap later", listed: listing([2]uint64{11, 20}, [2]uint64{31, 40}, [2]uint64{41, 50}), from: 10,
			want: []string{name(11, 20)}, gap: &gapAt{from: 21, first: 31, next: name(31, 40)}},
		{desc: "overlaps the applied segment", listed: listing([2]uint64{1, 2}, [2]uint64{1, 3}), applied: name(1, 2), from: 2,
			err: []string{name(1, 2), "seq 1..2", name(1, 3), "seq 1..3", "which this site applied", "two writers"}},
		{desc: "the applied segment overlaps a narrower one", listed: listing([2]uint64{1, 2}, [2]uint64{1, 3}), applied: name(1, 3), from: 3,
			err: []string{name(1, 2), name(1, 3), "two writers"}},
		{desc: "listed segments overlap", listed: listing([2]uint64{11, 15}, [2]uint64{11, 20}, [2]uint64{16, 20}), from: 10,
			err: []string{name(11, 15), name(11, 20), "two writers"}},
		{desc: "overlap past a gap", listed: listing([2]uint64{11, 20}, [2]uint64{31, 40}, [2]uint64{35, 45}), from: 10,
			err: []string{name(31, 40), name(35, 45)}},
		{desc: "divergent past the fork", hist: &forkAt20, listed: listing([2]uint64{11, 20}, [2]uint64{21, 30}, [2]uint64{31, 40}), from: 10,
			want: []string{name(11, 20)}, divergent: []string{name(21, 30), name(31, 40)}},
		{desc: "missing before the fork", hist: &forkAt20, listed: listing([2]uint64{11, 15}, [2]uint64{21, 30}), from: 10,
			want: []string{name(11, 15)}, gap: &gapAt{from: 16, first: 21, forkGen: 2}, divergent: []string{name(21, 30)}},
		{desc: "straddles the fork", hist: &forkAt20, listed: listing([2]uint64{11, 15}, [2]uint64{16, 25}), from: 10,
			err: []string{name(16, 25), "straddles seq 20"}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, gap, divergent, err := plan(tc.listed, testCursor(t, tc.hist, tc.applied, tc.from))
			if len(tc.err) > 0 {
				if err == nil || got != nil {
					t.Fatalf("plan = %v, %v; want an error and nothing planned", got, err)
				}
				for _, s := range tc.err {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not mention %q", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var gotNames []string
			for _, p := range got {
				gotNames = append(gotNames, p.name)
			}
			if !slices.Equal(gotNames, tc.want) {
				t.Errorf("plan = %v, want %v", gotNames, tc.want)
			}
			if (gap == nil) != (tc.gap == nil) || (gap != nil && *gap != *tc.gap) {
				t.Errorf("gap = %+v, want %+v", gap, tc.gap)
			}
			if !slices.Equal(divergent, tc.divergent) {
				t.Errorf("divergent = %v, want %v", divergent, tc.divergent)
			}
		})
	}
}

// acquireAsync starts b.acquire(ctx, idx, n, 2) and returns a channel
// that yields its result.
func acquireAsync(ctx context.Context, b *budget, idx int, n int64) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- b.acquire(ctx, idx, n, 2) }()
	return ch
}

// admitted fails the test unless the acquire behind ch was admitted (want)
// or is still waiting (!want).
func admitted(t *testing.T, ch <-chan error, want bool, what string) {
	t.Helper()
	wait := 50 * time.Millisecond
	if want {
		wait = 5 * time.Second
	}
	select {
	case err := <-ch:
		if !want {
			t.Fatalf("%s: admitted (err %v), want it to wait", what, err)
		}
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(wait):
		if want {
			t.Fatalf("%s: still waiting, want it admitted", what)
		}
	}
}

func TestBudget(t *testing.T) {
	ctx := t.Context()
	b := newBudget(100)

	// The head is admitted whatever it asks for.
	admitted(t, acquireAsync(ctx, b, 0, 1000), true, "head over the limit")
	// Segments ahead wait for room...
	one := acquireAsync(ctx, b, 1, 60)
	admitted(t, one, false, "segment 1 while the head holds everything")
	// ...and get it when the head is applied and becomes segment 1.
	b.release(1000, 1)
	admitted(t, one, true, "segment 1 once it is the head")
	two := acquireAsync(ctx, b, 2, 30)
	admitted(t, two, true, "segment 2 within the limit")
	// Within the byte limit but too far ahead.
	three := acquireAsync(ctx, b, 4, 1)
	admitted(t, three, false, "segment 4 with the head at 1 and 2 ahead")
	four := acquireAsync(ctx, b, 3, 20)
	admitted(t, four, false, "segment 3 over the limit")
	b.release(60, 2)
	admitted(t, four, true, "segment 3 once 1 is applied")
	admitted(t, three, true, "segment 4 once the head is 2")

	// A waiter gives up with its context.
	cctx, cancel := context.WithCancel(ctx)
	five := acquireAsync(cctx, b, 9, 1)
	admitted(t, five, false, "segment 9")
	cancel()
	select {
	case err := <-five:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled acquire: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancelled acquire still waiting")
	}
}
