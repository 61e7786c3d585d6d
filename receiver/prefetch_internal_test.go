package receiver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

func TestPlan(t *testing.T) {
	name := func(first, last uint64) string { return batch.SegmentName(1, first, last) }
	listing := func(ranges ...[2]uint64) []planned {
		var out []planned
		for _, r := range ranges {
			out = append(out, planned{name: name(r[0], r[1])})
		}
		return out
	}
	for _, tc := range []struct {
		desc    string
		listed  []planned
		applied uint64
		want    []string
		gap     *gapAt
	}{
		{"nothing", nil, 0, nil, nil},
		{"chain", listing([2]uint64{1, 10}, [2]uint64{11, 20}), 0, []string{name(1, 10), name(11, 20)}, nil},
		{"after checkpoint", listing([2]uint64{11, 20}, [2]uint64{21, 30}), 10, []string{name(11, 20), name(21, 30)}, nil},
		{"duplicates skipped", listing([2]uint64{1, 10}, [2]uint64{4, 7}, [2]uint64{11, 20}, [2]uint64{12, 20}, [2]uint64{21, 30}),
			0, []string{name(1, 10), name(11, 20), name(21, 30)}, nil},
		// 11..20 sorts after 11..15 but does not follow it: the next pass
		// lists after 15 and so past 11..20 (the receiver applied before
		// prefetching did the same).
		{"wider range after a narrow one", listing([2]uint64{11, 15}, [2]uint64{11, 20}, [2]uint64{16, 20}), 10,
			[]string{name(11, 15)}, &gapAt{from: 16, first: 11, next: name(11, 20)}},
		{"gap first", listing([2]uint64{21, 30}), 10, nil, &gapAt{from: 11, first: 21, next: name(21, 30)}},
		{"gap later", listing([2]uint64{11, 20}, [2]uint64{31, 40}, [2]uint64{41, 50}), 10,
			[]string{name(11, 20)}, &gapAt{from: 21, first: 31, next: name(31, 40)}},
		{"overlap is a gap", listing([2]uint64{1, 10}, [2]uint64{5, 15}), 0,
			[]string{name(1, 10)}, &gapAt{from: 11, first: 5, next: name(5, 15)}},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, gap := plan(tc.listed, tc.applied)
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
		})
	}
}

// acquireAsync starts b.acquire(ctx, idx, n) and returns a channel that
// yields its result.
func acquireAsync(ctx context.Context, b *budget, idx int, n int64) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- b.acquire(ctx, idx, n) }()
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
	b := newBudget(100, 2)

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

func TestReadSegment(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 10_000)
	for _, tc := range []struct {
		desc   string
		listed int64
		buf    []byte
	}{
		{"listed exactly", int64(len(data)), nil},
		{"listed short", 10, nil},
		{"listed long", 1 << 40, nil},
		{"listed negative", -1, nil},
		{"reused buffer", int64(len(data)), make([]byte, 7, 2*len(data))},
		{"small buffer", int64(len(data)), make([]byte, 3)},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := readSegment(iotest.HalfReader(bytes.NewReader(data)), tc.buf, tc.listed, int64(len(data)))
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, %v; want the %d bytes", len(got), err, len(data))
			}
			if cap(tc.buf) >= len(data)+1 && &got[0] != &tc.buf[:1][0] {
				t.Fatal("a big enough buffer was not reused")
			}
		})
	}
	if _, err := readSegment(bytes.NewReader(data), nil, 10, int64(len(data))-1); !errors.Is(err, batch.ErrCorrupt) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("over the limit: %v", err)
	}
	boom := errors.New("connection reset")
	if _, err := readSegment(io.MultiReader(bytes.NewReader(data[:100]), iotest.ErrReader(boom)), nil, 0, 1<<20); !errors.Is(err, boom) {
		t.Fatalf("broken body: %v", err)
	}
}
