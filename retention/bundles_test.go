package retention_test

import (
	"slices"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/bundletest"
	"github.com/ferry-dr/ferry/retention"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
	"github.com/ferry-dr/ferry/store/dir"
)

const writer = "00000000000000c1"

func exists(t *testing.T, st store.Store, key string) bool {
	t.Helper()
	rc, err := st.Get(t.Context(), key)
	if err != nil {
		return false
	}
	rc.Close()
	return true
}

func prune(t *testing.T, st store.Store, stream string, keepMin int) *retention.Plan {
	t.Helper()
	p, err := retention.Compute(t.Context(), st, stream, retention.Policy{KeepMin: keepMin}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Apply(t.Context(), st, nil); err != nil {
		t.Fatal(err)
	}
	return p
}

// A prune goes through a stream's parts as through its segments; a bundle
// is deleted only once every part in it lies below its stream's start
// marker, and a bundle marker pointing at no bundle any more (not the
// stream's newest) goes with them.
func TestPruneBundles(t *testing.T) {
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := bundletest.NewWriter(t, st, writer)
	b1, _ := w.Bundle(t, []string{"a", "b"}, 5)
	w.Alone(t, "a", 5)
	b2, _ := w.Bundle(t, []string{"a", "b"}, 5)
	w.Restart()
	b3, _ := w.Bundle(t, []string{"a", "b"}, 5)
	b4, _ := w.Bundle(t, []string{"a", "b"}, 5)
	bundles := []string{b1, b2, b3, b4}

	p := prune(t, st, "a", 1)
	if p.Delete != 4 {
		t.Fatalf("prune of a deletes %d segments, want 4 (3 parts, 1 alone)", p.Delete)
	}
	for _, key := range bundles {
		if !exists(t, st, key) {
			t.Fatalf("%s deleted while b's parts in it are not pruned", key)
		}
	}
	segs, err := catalog.Segments(t.Context(), st, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	starts, err := catalog.ListStarts(t.Context(), st, "a")
	if err != nil || len(starts) != 1 || starts[0].Seq != segs[len(segs)-1].Part.FirstSeq {
		t.Fatalf("a's start markers %+v (%v), want one at its newest part", starts, err)
	}

	prune(t, st, "b", 2) // b keeps its parts in bundles 3 and 4
	for i, key := range bundles {
		if want := i >= 2; exists(t, st, key) != want {
			t.Errorf("after pruning b: %s stored %v, want %v", key, !want, want)
		}
	}
	// a's first marker (bundles 1..2) points at nothing now; its newest
	// (bundles 3..) stays.
	markers, err := catalog.ListBundleMarkers(t.Context(), st, "a")
	if err != nil {
		t.Fatal(err)
	}
	var firsts []uint64
	for _, m := range markers {
		firsts = append(firsts, m.FirstBundle)
	}
	if !slices.Equal(firsts, []uint64{3}) {
		t.Errorf("a's markers start at bundles %v, want [3]", firsts)
	}
	// b pruned a part of bundle 2 only after a: its markers are b's own.
	for _, s := range []string{"a", "b"} {
		segs, err := catalog.Segments(t.Context(), st, s, "")
		if err != nil {
			t.Fatalf("list %s after the prunes: %v", s, err)
		}
		if len(segs) == 0 {
			t.Fatalf("%s lists nothing after the prunes", s)
		}
	}
}
