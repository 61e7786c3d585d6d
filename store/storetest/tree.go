package storetest

import (
	"errors"
	"path"
	"slices"
	"testing"

	"github.com/ferry-dr/ferry/store"
)

// RunTree runs the store.TreeLister conformance tests against stores from
// newStore, each test on a fresh, empty store.
func RunTree(t *testing.T, newStore func(t *testing.T) store.Store) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, store.TreeLister, store.Store)
	}{
		{"ListTree", testListTree},
		{"ListTreeMissingDir", testListTreeMissingDir},
		{"ListTreeStop", testListTreeStop},
		{"ListTreeInvalidDir", testListTreeInvalidDir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			tl, ok := s.(store.TreeLister)
			if !ok {
				t.Fatalf("%s is not a store.TreeLister", s)
			}
			tc.fn(t, tl, s)
		})
	}
}

// listTree lists dir, checking each directory's objects come in
// ascending order.
func listTree(t *testing.T, tl store.TreeLister, dir string) []string {
	t.Helper()
	var names []string
	last := map[string]string{} // directory: its last name seen
	err := tl.ListTree(t.Context(), dir, nil, func(o store.Object) error {
		d := path.Dir(o.Name)
		if prev, ok := last[d]; ok && o.Name <= prev {
			t.Errorf("ListTree(%q): %q after %q in one directory", dir, o.Name, prev)
		}
		last[d] = o.Name
		names = append(names, o.Name)
		return nil
	})
	if err != nil {
		t.Fatalf("ListTree(%q): %v", dir, err)
	}
	slices.Sort(names)
	return names
}

func testListTree(t *testing.T, tl store.TreeLister, s store.Store) {
	all := []string{"top.json", "a/z", "a/b/c/deep", "a/b/x", "a/m", "b-2/y", "b/y"}
	for _, name := range all {
		mustPut(t, s, name, []byte(name))
	}
	for dir, want := range map[string][]string{
		"":     all,
		"a/":   {"a/b/c/deep", "a/b/x", "a/m", "a/z"},
		"a/b/": {"a/b/c/deep", "a/b/x"},
		"b/":   {"b/y"},
	} {
		want = slices.Sorted(slices.Values(want))
		if got := listTree(t, tl, dir); !slices.Equal(got, want) {
			t.Errorf("ListTree(%q) = %q, want %q", dir, got, want)
		}
	}
}

func testListTreeMissingDir(t *testing.T, tl store.TreeLister, s store.Store) {
	mustPut(t, s, "s/x", []byte("x"))
	for _, dir := range []string{"nope/", "s/sub/", "s/x/"} {
		if got := listTree(t, tl, dir); len(got) != 0 {
			t.Errorf("ListTree of missing %q = %q, want nothing", dir, got)
		}
	}
}

func testListTreeStop(t *testing.T, tl store.TreeLister, s store.Store) {
	for _, name := range []string{"s/a", "s/b", "s/c/d", "t/e"} {
		mustPut(t, s, name, []byte(name))
	}
	errStop := errors.New("stop here")
	n := 0
	err := tl.ListTree(t.Context(), "", nil, func(store.Object) error {
		if n++; n == 2 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) || n != 2 {
		t.Errorf("ListTree returned %v after %d objects, want the callback's error after 2", err, n)
	}
}

func testListTreeInvalidDir(t *testing.T, tl store.TreeLister, _ store.Store) {
	for _, dir := range []string{"s", "../", "/s/", "s//", "a/../"} {
		err := tl.ListTree(t.Context(), dir, nil, func(o store.Object) error {
			t.Errorf("ListTree(%q) reported %q", dir, o.Name)
			return nil
		})
		if !errors.Is(err, store.ErrPermanent) {
			t.Errorf("ListTree(%q) = %v, want an error wrapping store.ErrPermanent", dir, err)
		}
	}
}
