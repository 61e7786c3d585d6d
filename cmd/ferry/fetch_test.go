package main

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// listCounter counts the objects its store's listings report.
type listCounter struct {
	store.Store
	listed int
}

func (c *listCounter) List(ctx context.Context, d, after string, fn func(store.Object) error) error {
	return c.Store.List(ctx, d, after, func(o store.Object) error {
		c.listed++
		return fn(o)
	})
}

// listHolding finds the segments holding a seq range from a listing of
// about the range, not of the whole stream: a fetch of the newest WAL file
// from a stream of many segments lists a few of them (on S3 one request,
// not one per thousand segments).
func TestListHoldingListsTheRange(t *testing.T) {
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// Generation 1: 1000 segments of 3 seqs (1-3, 4-6, ...); generation
	// 2 after it; objects that are not segments among them.
	var all []string
	put := func(name string) {
		if err := st.Put(ctx, "s/"+name, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range uint64(1000) {
		n := batch.SegmentName(1, 3*i+1, 3*i+3)
		all = append(all, n)
		put(n)
	}
	put(batch.SegmentName(2, 3001, 3010))
	put("00000001-notes.json")
	for _, c := range []struct{ first, last uint64 }{
		{2998, 3000}, // the newest: in the last segment
		{2990, 2999}, // from the middle of one segment into the last
		{1, 2},       // the oldest: the whole generation is listed
		{1500, 1500}, // one seq
	} {
		lc := &listCounter{Store: st}
		names, sizes, err := listHolding(ctx, lc, "s", 1, c.first, c.last)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, n := range all {
			_, lo, hi, _ := batch.ParseSegmentName(n)
			if hi >= c.first && lo <= c.last {
				want = append(want, n)
			}
		}
		// What it returns may start before the range; what holds the
		// range must be there, in order, and nothing past it.
		i := slices.Index(names, want[0])
		if i < 0 || !slices.Equal(names[i:], want) || len(sizes) != len(names) {
			t.Fatalf("seqs %d-%d: listed %v, want ... %v", c.first, c.last, names, want)
		}
		if c.first > 64*4*4 && lc.listed > 200 {
			t.Errorf("seqs %d-%d: the listing reported %d objects, want a few dozen (the stream has 1002)", c.first, c.last, lc.listed)
		}
		t.Logf("seqs %d-%d: %d segments returned, %d objects listed", c.first, c.last, len(names), lc.listed)
	}
	// A generation with no segment in the range: nothing, no error.
	names, _, err := listHolding(ctx, st, "s", 3, 1, 10)
	if err != nil || len(names) != 0 {
		t.Fatalf("generation 3: %v, %v", names, err)
	}
	// Segments of 1000 seqs: the first tries start past the one holding
	// first, and the listing reaches further back until it finds it.
	for i := range uint64(3) {
		put(batch.SegmentName(4, 1000*i+1, 1000*i+1000))
	}
	names, _, err = listHolding(ctx, st, "s", 4, 2500, 2600)
	if want := []string{batch.SegmentName(4, 2001, 3000)}; err != nil || !slices.Equal(names, want) {
		t.Fatalf("generation 4, seqs 2500-2600: %v, %v; want %v", names, err, want)
	}
}

// A marker's seqs are not trusted: a forged first_seq near the top of
// the seq space still ends listHolding's widening (it reaches seq 0).
func TestListHoldingHugeSeq(t *testing.T) {
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := st.Put(ctx, "s/"+batch.SegmentName(1, 1, 3), []byte("x")); err != nil {
		t.Fatal(err)
	}
	for _, first := range []uint64{1 << 62, 1<<63 + 5, math.MaxUint64} {
		lc := &listCounter{Store: st}
		names, _, err := listHolding(ctx, lc, "s", 1, first, first)
		if err != nil || !slices.Equal(names, []string{batch.SegmentName(1, 1, 3)}) {
			t.Fatalf("seq %d: %v, %v (%d objects listed); want the generation's one segment", first, names, err, lc.listed)
		}
	}
}

// fetch --wait on a directory store looks for the marker when inotify
// says something was created in <stream>/pushed, not only every poll: a
// marker renamed in there wakes the watch at once, and waitFor looks on
// a wake though its poll is an hour away.
func TestFetchWaitWatchesMarkerDir(t *testing.T) {
	root := t.TempDir()
	st, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	key := shipper.PushMarkerKey("pg-wal", "000000010000000000000003")
	if wake, stop := watchMarkerDir(st, key); wake != nil {
		stop()
		t.Fatal("a watch on a pushed/ directory that does not exist yet (fetch must poll)")
	}
	pushed := filepath.Join(root, "pg-wal", "pushed")
	if err := os.MkdirAll(pushed, 0o755); err != nil {
		t.Fatal(err)
	}
	wake, stop := watchMarkerDir(st, key)
	if wake == nil {
		t.Fatal("no watch on an existing pushed/ directory of a directory store")
	}
	defer stop()

	var there atomic.Bool
	go func() {
		time.Sleep(100 * time.Millisecond)
		tmp := filepath.Join(pushed, ".000000010000000000000003.tmp")
		if err := os.WriteFile(tmp, []byte("{}"), 0o644); err != nil {
			t.Error(err)
		}
		there.Store(true)
		if err := os.Rename(tmp, filepath.Join(pushed, "000000010000000000000003")); err != nil {
			t.Error(err)
		}
	}()
	start := time.Now()
	if err := waitFor(t.Context(), time.Minute, time.Hour, wake, there.Load); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); !there.Load() || took > 30*time.Second {
		t.Fatalf("waitFor returned after %v, marker there: %v (a wake should end it within moments)", took, there.Load())
	}
}
