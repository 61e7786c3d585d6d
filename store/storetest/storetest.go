// Package storetest is the conformance suite every store.Store must pass,
// unhappy cases included. A backend's test calls Run with a constructor for
// fresh, empty stores:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) store.Store {
//			s, err := dir.New(t.TempDir())
//			if err != nil {
//				t.Fatal(err)
//			}
//			return s
//		})
//	}
//
// A store that does more than the Store contract declares it in Caps and
// calls RunWith instead, so the suite checks exactly what the store
// promises and a store cannot skip a test by quietly lacking a feature.
//
// The suite only checks behaviour every backend shares; backend limits (a
// name that is both an object and a directory, say) belong in the backend's
// own tests.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/store"
)

// Caps declares what a store does beyond the Store contract. The zero
// value declares nothing extra.
type Caps struct {
	// Swap: the store implements store.Swapper. The suite fails if it
	// does not, and runs the Swap tests if it does.
	Swap bool
	// OverlapBelow: Put refuses a segment that a stored segment of the
	// same generation, starting below it, reaches into. (Every store
	// refuses one that a stored segment starting inside it overlaps.)
	OverlapBelow bool
	// OverlapRace: of concurrent Puts of overlapping segments of one
	// generation, exactly one succeeds. (Without it the suite checks only
	// that each either succeeds or fails with ErrConflict.)
	OverlapRace bool
}

// Run runs the suite as subtests of t for a store that declares no Caps.
// newStore must return a fresh, empty store on each call (its own temp dir
// or prefix); each subtest calls it once.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	RunWith(t, Caps{}, newStore)
}

// RunWith is Run for a store that declares caps: it also runs the tests of
// each declared capability.
func RunWith(t *testing.T, caps Caps, newStore func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, store.Store)
	}{
		{"PutGet", testPutGet},
		{"GetMissing", testGetMissing},
		{"PutIdempotent", testPutIdempotent},
		{"PutConflict", testPutConflict},
		{"ListOrder", testListOrder},
		{"ListAfter", testListAfter},
		{"ListNoRecurse", testListNoRecurse},
		{"ListMissingDir", testListMissingDir},
		{"ListStop", testListStop},
		{"DirNameIsNotObject", testDirNameIsNotObject},
		{"Delete", testDelete},
		{"InvalidNames", testInvalidNames},
		{"Cancelled", testCancelled},
		{"ConcurrentIdenticalPut", testConcurrentIdenticalPut},
		{"ConcurrentConflictingPut", testConcurrentConflictingPut},
		{"ReaderSurvivesDelete", testReaderSurvivesDelete},
		{"OverlapFromAbove", testOverlapFromAbove},
		{"OverlapAllowed", testOverlapAllowed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
	if caps.OverlapBelow {
		t.Run("OverlapFromBelow", func(t *testing.T) { testOverlapFromBelow(t, newStore(t)) })
	}
	t.Run("OverlapRace", func(t *testing.T) { testOverlapRace(t, newStore(t), caps.OverlapRace) })
	if caps.Swap {
		for _, tc := range swapTests {
			t.Run(tc.name, func(t *testing.T) { tc.fn(t, asSwapper(t, newStore(t))) })
		}
	}
}

// segName returns a segment name in the fixed-width hex form the shipper uses.
func segName(stream string, epoch, first, last uint64) string {
	return fmt.Sprintf("%s/%08x-%016x-%016x.seg.zst", stream, epoch, first, last)
}

// randomBytes returns n deterministic pseudo-random bytes; different seeds
// give different bytes.
func randomBytes(n int, seed uint64) []byte {
	var key [32]byte
	key[0] = byte(seed)
	key[1] = byte(seed >> 8)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

func testPutGet(t *testing.T, s store.Store) {
	cases := []struct {
		name string
		data []byte
	}{
		{"s/empty", []byte{}},
		{"s/one", []byte{0x7f}},
		{"s/big", randomBytes(5<<20, 1)},
	}
	for _, c := range cases {
		mustPut(t, s, c.name, c.data)
		if got := mustGet(t, s, c.name); !bytes.Equal(got, c.data) {
			t.Errorf("Get(%q) returned %d bytes, want the %d put", c.name, len(got), len(c.data))
		}
	}
	got := mustList(t, s, "s/", "")
	want := []store.Object{{Name: "s/big", Size: 5 << 20}, {Name: "s/empty", Size: 0}, {Name: "s/one", Size: 1}}
	checkObjects(t, got, want)
}

func testGetMissing(t *testing.T, s store.Store) {
	mustPut(t, s, "s/present", []byte("x"))
	for _, name := range []string{"s/missing", "s/presen", "nodir/missing"} {
		checkNotFound(t, s, name)
	}
}

func testPutIdempotent(t *testing.T, s store.Store) {
	data := randomBytes(300<<10, 2)
	name := segName("s", 1, 1, 5)
	mustPut(t, s, name, data)
	if err := s.Put(t.Context(), name, bytes.Clone(data)); err != nil {
		t.Fatalf("second Put of identical content: %v, want nil", err)
	}
	mustPut(t, s, "s/empty", nil)
	if err := s.Put(t.Context(), "s/empty", []byte{}); err != nil {
		t.Fatalf("second Put of identical empty content: %v, want nil", err)
	}
	if got := mustGet(t, s, name); !bytes.Equal(got, data) {
		t.Errorf("after idempotent Put, Get returned %d bytes, not the original %d", len(got), len(data))
	}
	checkObjects(t, mustList(t, s, "s/", ""), []store.Object{{Name: name, Size: 300 << 10}, {Name: "s/empty"}})
}

func testPutConflict(t *testing.T, s store.Store) {
	orig := randomBytes(100<<10, 3)
	lastFlipped := bytes.Clone(orig)
	lastFlipped[len(lastFlipped)-1] ^= 1
	firstFlipped := bytes.Clone(orig)
	firstFlipped[0] ^= 0x80
	variants := map[string][]byte{
		"same size, last byte differs":  lastFlipped,
		"same size, first byte differs": firstFlipped,
		"prefix":                        orig[:len(orig)-1],
		"extension":                     append(bytes.Clone(orig), 0),
		"empty":                         {},
	}
	name := segName("s", 1, 1, 5)
	mustPut(t, s, name, orig)
	for what, data := range variants {
		err := s.Put(t.Context(), name, data)
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("Put of different content (%s): %v, want ErrConflict", what, err)
		}
	}
	if got := mustGet(t, s, name); !bytes.Equal(got, orig) {
		t.Errorf("after refused Puts, Get returned %d bytes that differ from the original %d", len(got), len(orig))
	}

	mustPut(t, s, "s/empty", nil)
	if err := s.Put(t.Context(), "s/empty", []byte("x")); !errors.Is(err, store.ErrConflict) {
		t.Errorf("Put of data over an empty object: %v, want ErrConflict", err)
	}
	if got := mustGet(t, s, "s/empty"); len(got) != 0 {
		t.Errorf("empty object now holds %q", got)
	}
}

func testListOrder(t *testing.T, s store.Store) {
	start := time.Now()
	var want []store.Object
	for i := range 6 {
		first := uint64(i)*0x10 + 1
		want = append(want, store.Object{Name: segName("s", 1, first, first+0xf), Size: int64(10 * (i + 1))})
	}
	for _, i := range []int{3, 0, 5, 1, 4, 2} {
		mustPut(t, s, want[i].Name, randomBytes(int(want[i].Size), uint64(i)))
	}
	got := mustList(t, s, "s/", "")
	checkObjects(t, got, want)
	for _, o := range got {
		if !o.ModTime.IsZero() && (o.ModTime.Before(start.Add(-time.Minute)) || o.ModTime.After(time.Now().Add(time.Minute))) {
			t.Errorf("%s: ModTime %v is neither zero nor near now (%v)", o.Name, o.ModTime, start)
		}
	}

	t.Run("bytewise", func(t *testing.T) {
		// Byte order, as S3 lists: upper case before lower, '-' < '.' < '0'.
		names := []string{"b/B", "b/a", "b/a-", "b/a.b", "b/a0", "b/\u00e9"}
		for _, i := range []int{5, 2, 0, 4, 1, 3} {
			mustPut(t, s, names[i], []byte(names[i]))
		}
		if got := objectNames(mustList(t, s, "b/", "")); !slices.Equal(got, names) {
			t.Errorf("List(b/) = %q, want %q", got, names)
		}
	})
}

func testListAfter(t *testing.T, s store.Store) {
	var names []string
	for i := range 5 {
		first := uint64(i)*0x100 + 1
		names = append(names, segName("s", 2, first, first+0xff))
	}
	for _, i := range []int{4, 1, 3, 0, 2} {
		mustPut(t, s, names[i], []byte{byte(i)})
	}
	cases := []struct {
		after string
		want  []string
	}{
		{"", names},
		{names[1], names[2:]},
		{names[1] + "~", names[2:]}, // not an object; sorts between 1 and 2
		{names[0][:len(names[0])-3], names},
		{names[4], nil},
		{"r/zzz", names},
		{"s/", names},
		{"t", nil},
	}
	for _, c := range cases {
		got := objectNames(mustList(t, s, "s/", c.after))
		if !slices.Equal(got, c.want) {
			t.Errorf("List(s/, after %q) = %q, want %q", c.after, got, c.want)
		}
	}
}

func testListNoRecurse(t *testing.T, s store.Store) {
	for _, name := range []string{"s/z.seg.zst", "s/watermarks/r2.json", "top.json", "s/watermarks/r1.json", "s/a.seg.zst"} {
		mustPut(t, s, name, []byte(name))
	}
	cases := []struct {
		dir, after string
		want       []string
	}{
		{"s/", "", []string{"s/a.seg.zst", "s/z.seg.zst"}},
		{"s/watermarks/", "", []string{"s/watermarks/r1.json", "s/watermarks/r2.json"}},
		{"s/watermarks/", "s/watermarks/r1.json", []string{"s/watermarks/r2.json"}},
		{"", "", []string{"top.json"}},
	}
	for _, c := range cases {
		got := objectNames(mustList(t, s, c.dir, c.after))
		if !slices.Equal(got, c.want) {
			t.Errorf("List(%q, after %q) = %q, want %q", c.dir, c.after, got, c.want)
		}
	}
}

func testListMissingDir(t *testing.T, s store.Store) {
	mustPut(t, s, "s/x", []byte("x"))
	for _, dir := range []string{"nope/", "s/sub/", "s/x/"} {
		err := s.List(t.Context(), dir, "", func(o store.Object) error {
			t.Errorf("List(%q) reported %q", dir, o.Name)
			return nil
		})
		if err != nil {
			t.Errorf("List of missing %q: %v, want nil", dir, err)
		}
	}
}

func testListStop(t *testing.T, s store.Store) {
	for _, name := range []string{"s/a", "s/b", "s/c"} {
		mustPut(t, s, name, []byte(name))
	}
	errStop := errors.New("stop here")
	var seen []string
	err := s.List(t.Context(), "s/", "", func(o store.Object) error {
		seen = append(seen, o.Name)
		if o.Name == "s/b" {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Errorf("List returned %v, want the callback's error", err)
	}
	if want := []string{"s/a", "s/b"}; !slices.Equal(seen, want) {
		t.Errorf("callback saw %q, want %q", seen, want)
	}
}

func testDirNameIsNotObject(t *testing.T, s store.Store) {
	mustPut(t, s, "s/watermarks/r1.json", []byte("{}"))
	checkNotFound(t, s, "s/watermarks")
	if err := s.Delete(t.Context(), "s/watermarks"); err != nil {
		t.Errorf("Delete of a directory name: %v, want nil", err)
	}
	if got := mustGet(t, s, "s/watermarks/r1.json"); string(got) != "{}" {
		t.Errorf("object under the directory now holds %q", got)
	}
}

func testDelete(t *testing.T, s store.Store) {
	mustPut(t, s, "s/a", []byte("first"))
	mustPut(t, s, "s/b", []byte("other"))
	if err := s.Delete(t.Context(), "s/a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	checkNotFound(t, s, "s/a")
	if got := objectNames(mustList(t, s, "s/", "")); !slices.Equal(got, []string{"s/b"}) {
		t.Errorf("after Delete, List(s/) = %q, want [s/b]", got)
	}
	for _, name := range []string{"s/a", "s/never", "nodir/x"} {
		if err := s.Delete(t.Context(), name); err != nil {
			t.Errorf("Delete of missing %q: %v, want nil", name, err)
		}
	}
	mustPut(t, s, "s/a", []byte("second, longer"))
	if got := mustGet(t, s, "s/a"); string(got) != "second, longer" {
		t.Errorf("Put after Delete: Get returned %q", got)
	}
	if got := mustGet(t, s, "s/b"); string(got) != "other" {
		t.Errorf("untouched object now holds %q", got)
	}
}

func testInvalidNames(t *testing.T, s store.Store) {
	mustPut(t, s, "b", []byte("b"))
	for _, name := range []string{"", "/abs", "a/../b", "a//b", "a/", "./b", "a/.", "a\\b"} {
		if err := s.Put(t.Context(), name, []byte("x")); err == nil {
			t.Errorf("Put(%q) succeeded, want refusal", name)
		}
		if rc, err := s.Get(t.Context(), name); err == nil {
			rc.Close()
			t.Errorf("Get(%q) succeeded, want refusal", name)
		}
		if err := s.Delete(t.Context(), name); err == nil {
			t.Errorf("Delete(%q) succeeded, want refusal", name)
		}
	}
	for _, dir := range []string{"a", "/a/", "a//", "../", "./"} {
		if err := s.List(t.Context(), dir, "", func(store.Object) error { return nil }); err == nil {
			t.Errorf("List(%q) succeeded, want refusal", dir)
		}
	}
	if got := mustGet(t, s, "b"); string(got) != "b" {
		t.Errorf(`refused names changed "b" to %q`, got)
	}
	checkObjects(t, mustList(t, s, "", ""), []store.Object{{Name: "b", Size: 1}})
	checkObjects(t, mustList(t, s, "a/", ""), nil)
}

func testCancelled(t *testing.T, s store.Store) {
	mustPut(t, s, "s/live", []byte("live"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	// A Get may be lazy, so the failure may come from the reader instead.
	if rc, err := s.Get(ctx, "s/live"); err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
		if err == nil {
			t.Error("Get and read with a cancelled context succeeded")
		}
	}
	if err := s.List(ctx, "s/", "", func(store.Object) error { return nil }); err == nil {
		t.Error("List with a cancelled context returned nil")
	}

	// Put may fail or succeed, but never leave part of the data behind.
	data := randomBytes(256<<10, 4)
	putErr := s.Put(ctx, "s/new", data)
	rc, err := s.Get(t.Context(), "s/new")
	switch {
	case err == nil:
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("Put with a cancelled context (returned %v) left %d bytes (read error %v), want all %d or none",
				putErr, len(got), err, len(data))
		}
	case putErr == nil:
		t.Errorf("Put with a cancelled context returned nil, but Get: %v", err)
	case !errors.Is(err, store.ErrNotFound):
		t.Errorf("Get after cancelled Put: %v, want ErrNotFound or the object", err)
	}
}

func testConcurrentIdenticalPut(t *testing.T, s store.Store) {
	data := randomBytes(256<<10, 5)
	name := segName("s", 1, 1, 0x10)
	errs := putConcurrently(t, s, name, func(int) []byte { return data })
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v, want nil", i, err)
		}
	}
	if got := mustGet(t, s, name); !bytes.Equal(got, data) {
		t.Errorf("Get returned %d bytes that differ from the %d put", len(got), len(data))
	}
}

func testConcurrentConflictingPut(t *testing.T, s store.Store) {
	for round := range 3 {
		name := segName("s", 1, uint64(round)*0x10+1, uint64(round)*0x10+0x10)
		datas := make([][]byte, 8)
		for i := range datas {
			datas[i] = randomBytes(64<<10+i*(round%2), uint64(100*round+i))
		}
		errs := putConcurrently(t, s, name, func(i int) []byte { return datas[i] })
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Errorf("%s: writers %d and %d both succeeded with different content", name, winner, i)
			case err == nil:
				winner = i
			case !errors.Is(err, store.ErrConflict):
				t.Errorf("%s: losing writer %d: %v, want ErrConflict", name, i, err)
			}
		}
		if winner < 0 {
			t.Fatalf("%s: no writer succeeded", name)
		}
		if got := mustGet(t, s, name); !bytes.Equal(got, datas[winner]) {
			t.Errorf("%s: stored content is not the winner's (writer %d)", name, winner)
		}
	}
}

// putConcurrently starts 8 Puts of name at once; data(i) is writer i's
// content. It returns each writer's error.
func putConcurrently(t *testing.T, s store.Store, name string, data func(i int) []byte) []error {
	errs := make([]error, 8)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			<-start
			errs[i] = s.Put(t.Context(), name, data(i))
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func testReaderSurvivesDelete(t *testing.T, s store.Store) {
	data := randomBytes(1<<20, 6)
	mustPut(t, s, "s/a", data)
	mustPut(t, s, "s/b", []byte("b"))
	rc, err := s.Get(t.Context(), "s/a")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	defer rc.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatalf("read head: %v", err)
	}
	if err := s.Delete(t.Context(), "s/b"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read after Delete of another object: %v", err)
	}
	if got := append(head, rest...); !bytes.Equal(got, data) {
		t.Errorf("reader returned %d bytes that differ from the %d put", len(got), len(data))
	}
}

func mustPut(t *testing.T, s store.Store, name string, data []byte) {
	t.Helper()
	if err := s.Put(t.Context(), name, data); err != nil {
		t.Fatalf("Put(%q): %v", name, err)
	}
}

func mustGet(t *testing.T, s store.Store, name string) []byte {
	t.Helper()
	rc, err := s.Get(t.Context(), name)
	if err != nil {
		t.Fatalf("Get(%q): %v", name, err)
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %q: %v", name, err)
	}
	return data
}

func mustList(t *testing.T, s store.Store, dir, after string) []store.Object {
	t.Helper()
	var objs []store.Object
	err := s.List(t.Context(), dir, after, func(o store.Object) error {
		objs = append(objs, o)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q, after %q): %v", dir, after, err)
	}
	return objs
}

func checkNotFound(t *testing.T, s store.Store, name string) {
	t.Helper()
	rc, err := s.Get(t.Context(), name)
	if err == nil {
		rc.Close()
		t.Errorf("Get(%q) of a missing object succeeded", name)
	} else if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(%q) of a missing object: %v, want ErrNotFound", name, err)
	}
}

// checkObjects compares names and sizes, in order; ModTime is ignored.
func checkObjects(t *testing.T, got, want []store.Object) {
	t.Helper()
	strip := func(objs []store.Object) []store.Object {
		var out []store.Object
		for _, o := range objs {
			out = append(out, store.Object{Name: o.Name, Size: o.Size})
		}
		return out
	}
	if g, w := strip(got), strip(want); !slices.Equal(g, w) {
		t.Errorf("List returned %v, want %v", g, w)
	}
}

func objectNames(objs []store.Object) []string {
	var names []string
	for _, o := range objs {
		names = append(names, o.Name)
	}
	return names
}
