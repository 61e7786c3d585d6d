package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/store"
)

// swapTests run for stores that declare Caps.Swap.
var swapTests = []struct {
	name string
	fn   func(*testing.T, store.Swapper)
}{
	{"LoadMissing", testLoadMissing},
	{"SwapCreate", testSwapCreate},
	{"SwapReplace", testSwapReplace},
	{"SwapStale", testSwapStale},
	{"SwapMissing", testSwapMissing},
	{"SwapSameContent", testSwapSameContent},
	{"SwapConcurrent", testSwapConcurrent},
	{"SwapCancelled", testSwapCancelled},
	{"SwapInvalidNames", testSwapInvalidNames},
	{"SwapOversized", testSwapOversized},
}

// claim is the name the Swap tests contend for, shaped like a writer lease.
const claim = "s/claims/writer.json"

func asSwapper(t *testing.T, s store.Store) store.Swapper {
	t.Helper()
	sw, err := store.AsSwapper(s, "the Swap conformance tests")
	if err != nil {
		t.Fatalf("store declares Caps.Swap: %v", err)
	}
	return sw
}

// lease returns distinct small contents, as successive lease renewals are.
func lease(holder string, n int) []byte {
	return fmt.Appendf(nil, `{"holder":%q,"renewal":%d}`, holder, n)
}

func testLoadMissing(t *testing.T, s store.Swapper) {
	mustPut(t, s, "s/present", []byte("x"))
	for _, name := range []string{claim, "s/presen", "nodir/x"} {
		if data, v, err := s.Load(t.Context(), name); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Load(%q) of a missing object = %q, %q, %v; want ErrNotFound", name, data, v, err)
		}
	}
}

func testSwapCreate(t *testing.T, s store.Swapper) {
	d1 := lease("a", 1)
	v1 := mustSwap(t, s, claim, d1, "")
	if v1 == "" {
		t.Fatal(`Swap returned version ""`)
	}
	checkLoad(t, s, claim, d1, v1)
	if got := mustGet(t, s, claim); !bytes.Equal(got, d1) {
		t.Errorf("Get(%s) = %q, want %q", claim, got, d1)
	}
	checkObjects(t, mustList(t, s, "s/claims/", ""), []store.Object{{Name: claim, Size: int64(len(d1))}})

	_, err := s.Swap(t.Context(), claim, lease("b", 1), "")
	checkChanged(t, "create-only Swap over an existing object", err)
	checkLoad(t, s, claim, d1, v1)
}

func testSwapReplace(t *testing.T, s store.Swapper) {
	v := mustSwap(t, s, claim, lease("a", 0), "")
	seen := map[string]int{v: 0}
	for i := 1; i <= 5; i++ {
		data := lease("a", i)
		if i == 5 {
			data = []byte{} // an empty object has a version too
		}
		nv := mustSwap(t, s, claim, data, v)
		if prev, ok := seen[nv]; ok {
			t.Errorf("swap %d returned version %q, which swap %d returned for other content", i, nv, prev)
		}
		seen[nv] = i
		checkLoad(t, s, claim, data, nv)
		v = nv
	}
}

func testSwapStale(t *testing.T, s store.Swapper) {
	d1, d2 := lease("a", 1), lease("a", 2)
	v1 := mustSwap(t, s, claim, d1, "")
	v2 := mustSwap(t, s, claim, d2, v1)
	for _, old := range []string{v1, "not-a-version"} {
		_, err := s.Swap(t.Context(), claim, lease("b", 1), old)
		checkChanged(t, fmt.Sprintf("Swap from stale version %q", old), err)
		checkLoad(t, s, claim, d2, v2)
	}
}

func testSwapMissing(t *testing.T, s store.Swapper) {
	other := "s/claims/other.json"
	v := mustSwap(t, s, other, lease("a", 1), "")
	_, err := s.Swap(t.Context(), claim, lease("b", 1), v)
	checkChanged(t, "Swap of a missing object from a version", err)
	checkLoadMissing(t, s, claim)

	if err := s.Delete(t.Context(), other); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err = s.Swap(t.Context(), other, lease("b", 1), v)
	checkChanged(t, "Swap of a deleted object from its last version", err)
	checkLoadMissing(t, s, other)
	v = mustSwap(t, s, other, lease("b", 2), "")
	checkLoad(t, s, other, lease("b", 2), v)
}

// A Swap whose answer was lost is retried with the version it started
// from; finding its own content in place, it succeeds.
func testSwapSameContent(t *testing.T, s store.Swapper) {
	d1, d2 := lease("a", 1), lease("a", 2)
	v1 := mustSwap(t, s, claim, d1, "")
	if v, err := s.Swap(t.Context(), claim, bytes.Clone(d1), ""); err != nil || v != v1 {
		t.Errorf("create-only Swap of the content in place = %q, %v; want %q, nil", v, err, v1)
	}
	v2 := mustSwap(t, s, claim, d2, v1)
	if v, err := s.Swap(t.Context(), claim, bytes.Clone(d2), v1); err != nil || v != v2 {
		t.Errorf("repeated Swap from v1 to the content in place = %q, %v; want %q, nil", v, err, v2)
	}
	_, err := s.Swap(t.Context(), claim, d1, v1)
	checkChanged(t, "Swap back to earlier content from a stale version", err)
	checkLoad(t, s, claim, d2, v2)
}

// Of writers swapping from one version at once, exactly one wins.
func testSwapConcurrent(t *testing.T, s store.Swapper) {
	const writers = 8
	for round := range 3 {
		name := fmt.Sprintf("s/claims/round%d.json", round)
		old := ""
		if round > 0 { // round 0 races to create
			old = mustSwap(t, s, name, lease("init", round), "")
		}
		versions := make([]string, writers)
		errs := make([]error, writers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				<-start
				versions[i], errs[i] = s.Swap(t.Context(), name, lease(fmt.Sprint("w", i), round), old)
			})
		}
		close(start)
		wg.Wait()
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("%s: writers %d and %d both swapped from version %q", name, winner, i, old)
			case err == nil:
				winner = i
			case !errors.Is(err, store.ErrChanged):
				t.Errorf("%s: losing writer %d: %v, want ErrChanged", name, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: no writer won", name)
		}
		checkLoad(t, s, name, lease(fmt.Sprint("w", winner), round), versions[winner])
	}
}

func testSwapCancelled(t *testing.T, s store.Swapper) {
	d1, d2 := lease("a", 1), lease("a", 2)
	v1 := mustSwap(t, s, claim, d1, "")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := s.Load(ctx, claim); err == nil {
		t.Error("Load with a cancelled context succeeded")
	}
	if _, err := s.Swap(ctx, claim, d2, v1); err == nil {
		t.Error("Swap with a cancelled context succeeded")
	}
	// It may have happened, but whole or not at all.
	data, _, err := s.Load(t.Context(), claim)
	if err != nil || !(bytes.Equal(data, d1) || bytes.Equal(data, d2)) {
		t.Errorf("after a cancelled Swap, Load = %q, %v; want %q or %q", data, err, d1, d2)
	}
}

func testSwapInvalidNames(t *testing.T, s store.Swapper) {
	for _, name := range []string{"", "/abs", "a/../b", "a//b", "a/"} {
		if _, err := s.Swap(t.Context(), name, []byte("x"), ""); err == nil {
			t.Errorf("Swap(%q) succeeded, want refusal", name)
		}
		if _, _, err := s.Load(t.Context(), name); err == nil {
			t.Errorf("Load(%q) succeeded, want refusal", name)
		}
	}
}

// An object larger than store.MaxSwapSize is refused, permanently, by
// Swap before anything is written and by Load without reading it whole;
// Load gives its version, and a Swap from that version, and only from
// it, replaces it (how a damaged lease is taken over, docs/FLEET.md).
func testSwapOversized(t *testing.T, s store.Swapper) {
	big := bytes.Repeat([]byte("x"), store.MaxSwapSize+1)
	if _, err := s.Swap(t.Context(), claim, big, ""); !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Swap of %d bytes: %v; want ErrPermanent, larger than", len(big), err)
	}
	checkLoadMissing(t, s, claim)
	if err := s.Put(t.Context(), claim, big); err != nil {
		t.Fatal(err)
	}
	data, ver, err := s.Load(t.Context(), claim)
	if !errors.Is(err, store.ErrPermanent) || !strings.Contains(err.Error(), claim) || data != nil || ver == "" {
		t.Errorf("Load of a %d-byte object: %d bytes, version %q, %v; want none, its version, ErrPermanent naming it", len(big), len(data), ver, err)
	}
	if _, err := s.Swap(t.Context(), claim, []byte("lease"), "0123456789abcdef0123456789abcdef"); !errors.Is(err, store.ErrChanged) {
		t.Errorf("Swap from another version over an oversize object: %v, want ErrChanged", err)
	}
	if ver != "" {
		nv := mustSwap(t, s, claim, []byte("lease"), ver)
		checkLoad(t, s, claim, []byte("lease"), nv)
		if _, err := s.Swap(t.Context(), claim, []byte("again"), ver); !errors.Is(err, store.ErrChanged) {
			t.Errorf("a second Swap from the oversize object's version: %v, want ErrChanged", err)
		}
	}
	// At the limit is fine.
	v := mustSwap(t, s, "s/claims/max.json", big[:store.MaxSwapSize], "")
	checkLoad(t, s, "s/claims/max.json", big[:store.MaxSwapSize], v)
}

func mustSwap(t *testing.T, s store.Swapper, name string, data []byte, old string) string {
	t.Helper()
	v, err := s.Swap(t.Context(), name, data, old)
	if err != nil {
		t.Fatalf("Swap(%q, from %q): %v", name, old, err)
	}
	return v
}

// checkLoad fails unless name holds data at version.
func checkLoad(t *testing.T, s store.Swapper, name string, data []byte, version string) {
	t.Helper()
	got, v, err := s.Load(t.Context(), name)
	switch {
	case err != nil:
		t.Errorf("Load(%q): %v", name, err)
	case !bytes.Equal(got, data):
		t.Errorf("Load(%q) = %q, want %q", name, got, data)
	case v != version:
		t.Errorf("Load(%q) version %q, want %q (the one Swap returned)", name, v, version)
	}
}

func checkLoadMissing(t *testing.T, s store.Swapper, name string) {
	t.Helper()
	if data, v, err := s.Load(t.Context(), name); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Load(%q) = %q, %q, %v; want ErrNotFound", name, data, v, err)
	}
}

// checkChanged fails unless err wraps store.ErrChanged and names claim.
func checkChanged(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case !errors.Is(err, store.ErrChanged):
		t.Errorf("%s: %v, want ErrChanged", what, err)
	case store.IsRetryable(err):
		t.Errorf("%s: %v is retryable", what, err)
	case !strings.Contains(err.Error(), "s/claims/"):
		t.Errorf("%s: error %q does not name the object", what, err)
	}
}
