package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/store"
)

// checkOverlapRefused puts name and fails unless the Put is refused as an
// overlap of stored: ErrConflict, not retryable, naming both, and nothing
// stored.
func checkOverlapRefused(t *testing.T, s store.Store, name, stored string) {
	t.Helper()
	err := s.Put(t.Context(), name, []byte(name))
	switch {
	case !errors.Is(err, store.ErrConflict):
		t.Errorf("Put(%s) overlapping %s: %v, want ErrConflict", name, stored, err)
		return
	case store.IsRetryable(err):
		t.Errorf("Put(%s) overlapping %s: %v is retryable", name, stored, err)
	}
	for _, want := range []string{name, stored, "two writers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("overlap error %q does not mention %q", err, want)
		}
	}
	checkNotFound(t, s, name)
}

// A stored segment that starts inside a new one's range: every store
// refuses the new one.
func testOverlapFromAbove(t *testing.T, s store.Store) {
	stored := segName("s", 1, 0x10, 0x1f)
	mustPut(t, s, stored, []byte("stored"))
	for _, r := range [][2]uint64{
		{0x08, 0x10}, // ends on stored's first seq
		{0x08, 0x12},
		{0x10, 0x18}, // same first seq, shorter
		{0x10, 0x2f}, // same first seq, longer
		{0x01, 0xff}, // contains it
	} {
		checkOverlapRefused(t, s, segName("s", 1, r[0], r[1]), stored)
	}
	// Seq 0, where there is no seq below to list after.
	zero := segName("s", 3, 0, 5)
	mustPut(t, s, zero, []byte("zero"))
	checkOverlapRefused(t, s, segName("s", 3, 0, 2), zero)
	checkOverlapRefused(t, s, segName("s", 3, 0, 9), zero)

	if got := objectNames(mustList(t, s, "s/", "")); !slices.Equal(got, []string{stored, zero}) {
		t.Errorf("after refused Puts, List(s/) = %q, want %q", got, []string{stored, zero})
	}
	if got := mustGet(t, s, stored); string(got) != "stored" {
		t.Errorf("%s now holds %q", stored, got)
	}
}

// A stored segment that starts below a new one and reaches into it.
func testOverlapFromBelow(t *testing.T, s store.Store) {
	stored := segName("s", 1, 0x10, 0x1f)
	mustPut(t, s, stored, []byte("stored"))
	for _, r := range [][2]uint64{
		{0x1f, 0x30}, // starts on stored's last seq
		{0x12, 0x14}, // inside it
		{0x11, 0x1f}, // inside, same last seq
	} {
		checkOverlapRefused(t, s, segName("s", 1, r[0], r[1]), stored)
	}
	if got := objectNames(mustList(t, s, "s/", "")); !slices.Equal(got, []string{stored}) {
		t.Errorf("after refused Puts, List(s/) = %q, want just %s", got, stored)
	}
}

// What is not an overlap is stored: adjacent segments, other generations
// (a fork), other streams, names that are not segments, and identical
// re-puts.
func testOverlapAllowed(t *testing.T, s store.Store) {
	stored := segName("s", 1, 0x10, 0x1f)
	mustPut(t, s, stored, []byte(stored))
	names := []string{
		segName("s", 1, 0x01, 0x0f), // adjacent below
		segName("s", 1, 0x20, 0x2f), // adjacent above
		segName("s", 2, 0x10, 0x1f), // another generation, same range
		segName("s", 2, 0x08, 0x0f),
		segName("s", 0, 0x15, 0x40),
		segName("t", 1, 0x08, 0x12),                            // another stream
		"s/00000001-0000000000000018-000000000000001F.seg.zst", // upper case: not a segment name
		"s/00000001-0000000000000018-0000000000000019.seg",
		"s/claims/00000001-0000000000000018-0000000000000019.seg.zst",
	}
	for _, name := range names {
		mustPut(t, s, name, []byte(name))
	}
	for _, name := range append(names, stored) {
		if err := s.Put(t.Context(), name, []byte(name)); err != nil {
			t.Errorf("identical re-Put(%s): %v, want nil", name, err)
		}
	}
	var want []string
	for _, name := range append(names, stored) {
		if strings.HasPrefix(name, "s/") && strings.Count(name, "/") == 1 {
			want = append(want, name)
		}
	}
	slices.Sort(want)
	if got := objectNames(mustList(t, s, "s/", "")); !slices.Equal(got, want) {
		t.Errorf("List(s/) = %q, want %q", got, want)
	}
}

// Writers racing with different boundaries: each Put succeeds or fails
// with ErrConflict, and with exact enforcement exactly one succeeds.
func testOverlapRace(t *testing.T, s store.Store, exact bool) {
	const writers = 8
	for round := range 3 {
		stream := fmt.Sprintf("r%d", round)
		names := make([]string, writers)
		for i := range names {
			// Every range holds seq 3..0x10, so each pair overlaps.
			names[i] = segName(stream, 1, uint64(1+i%3), uint64(0x10+i))
		}
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				<-start
				errs[i] = s.Put(t.Context(), names[i], []byte(names[i]))
			})
		}
		close(start)
		wg.Wait()
		var won []string
		for i, err := range errs {
			switch {
			case err == nil:
				won = append(won, names[i])
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("%s: losing writer %d: %v, want ErrConflict", stream, i, err)
			}
		}
		slices.Sort(won)
		switch {
		case len(won) == 0:
			t.Fatalf("%s: no writer succeeded", stream)
		case exact && len(won) > 1:
			t.Errorf("%s: %d overlapping segments stored: %q", stream, len(won), won)
		case len(won) > 1:
			t.Logf("%s: %d overlapping segments stored, which this store does not claim to prevent", stream, len(won))
		}
		if got := objectNames(mustList(t, s, stream+"/", "")); !slices.Equal(got, won) {
			t.Errorf("List(%s/) = %q, want the winners %q", stream, got, won)
		}
		for _, name := range won {
			if got := mustGet(t, s, name); !bytes.Equal(got, []byte(name)) {
				t.Errorf("%s holds %q, not its writer's data", name, got)
			}
		}
	}
}
