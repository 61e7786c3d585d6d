package dir

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store"
)

// The ListTree cache (tree.go): these tests change the directory behind
// the store's back in ways a real writer never does (a segment rewritten
// in place, a directory's mtime put back) to see what ListTree read and
// what it took from its cache.

func treeStore(t *testing.T) (*Store, string) {
	t.Helper()
	root := t.TempDir()
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	return s, root
}

// listed is ListTree("") as name -> size.
func listed(t *testing.T, s *Store) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	var names []string
	if err := s.ListTree(t.Context(), "", nil, func(o store.Object) error {
		out[o.Name] = o.Size
		names = append(names, o.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeFile(t *testing.T, root, name string, size int) {
	t.Helper()
	p := filepath.Join(root, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
}

// age sets the mtime of directory dir (under root) back to at.
func age(t *testing.T, root, dir string, at time.Time) {
	t.Helper()
	if err := os.Chtimes(filepath.Join(root, filepath.FromSlash(dir)), at, at); err != nil {
		t.Fatal(err)
	}
}

var seg1, seg2 = "s/" + batch.SegmentName(1, 1, 10), "s/" + batch.SegmentName(1, 11, 20)

// TestListTreeStatsOnlyNewSegments: in a directory read again, a segment
// name the last read saw is not stat'ed again (segments never change);
// a new one is, and so is every other name (a swapped object changes).
func TestListTreeStatsOnlyNewSegments(t *testing.T) {
	s, root := treeStore(t)
	writeFile(t, root, seg1, 10)
	writeFile(t, root, "s/claims/lease", 10)
	listed(t, s)
	// Behind the store's back: the old segment and the lease grow, and a
	// new segment makes the directory change.
	writeFile(t, root, seg1, 99)
	writeFile(t, root, "s/claims/lease", 99)
	writeFile(t, root, seg2, 20)
	writeFile(t, root, "s/claims/other", 1)
	got := listed(t, s)
	if got[seg1] != 10 {
		t.Errorf("%s listed at %d bytes: it was stat'ed again (want the size the last listing saw, 10)", seg1, got[seg1])
	}
	if got[seg2] != 20 || got["s/claims/lease"] != 99 || got["s/claims/other"] != 1 {
		t.Errorf("new segment, changed lease, new object listed as %d, %d, %d bytes; want 20, 99, 1",
			got[seg2], got["s/claims/lease"], got["s/claims/other"])
	}
}

// TestListTreeSkipsUnchangedDirectory: a directory whose stat is as it was
// at the last read, and whose mtime was settled then, is not read again
// until treeRecheck has passed.
func TestListTreeSkipsUnchangedDirectory(t *testing.T) {
	s, root := treeStore(t)
	writeFile(t, root, seg1, 10)
	old := time.Now().Add(-time.Minute)
	age(t, root, "s", old)
	listed(t, s)
	// A file appears, and the directory's mtime is put back: to a stat
	// the directory is as it was.
	writeFile(t, root, seg2, 20)
	age(t, root, "s", old)
	if got := listed(t, s); len(got) != 1 {
		t.Fatalf("an unchanged directory was read again: listed %v, want only %s", got, seg1)
	}
	s.tree.dirs["s/"].readAt = time.Now().Add(-treeRecheck) // as if read that long ago
	if got := listed(t, s); got[seg2] != 20 {
		t.Fatalf("after treeRecheck the directory was not read again: listed %v", got)
	}
}

// TestListTreeRereadsUnsettledDirectory: a directory changed within
// treeSettle of its read is read again even if its stat looks the same:
// a name added in the same clock tick as the read leaves its mtime as it
// was.
func TestListTreeRereadsUnsettledDirectory(t *testing.T) {
	s, root := treeStore(t)
	writeFile(t, root, seg1, 10)
	recent := time.Now()
	age(t, root, "s", recent)
	listed(t, s)
	writeFile(t, root, seg2, 20)
	age(t, root, "s", recent) // the same tick
	if got := listed(t, s); got[seg2] != 20 {
		t.Fatalf("a directory changed within treeSettle of its read was not read again: listed %v", got)
	}
}

// TestListTreeSeesChanges: what a writer does to the store shows at the
// next ListTree, cache or not: objects added and deleted, a directory
// removed, and one made again under the same name.
func TestListTreeSeesChanges(t *testing.T) {
	s, root := treeStore(t)
	ctx := t.Context()
	names := func() []string {
		var out []string
		for n := range listed(t, s) {
			out = append(out, n)
		}
		slices.Sort(out)
		return out
	}
	for _, n := range []string{seg1, "s/generations/g1", "t/" + batch.SegmentName(1, 1, 5)} {
		if err := s.Put(ctx, n, []byte(n)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{seg1, "s/generations/g1", "t/" + batch.SegmentName(1, 1, 5)}
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	if err := s.Put(ctx, seg2, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, seg1); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(root, "t")); err != nil {
		t.Fatal(err)
	}
	want = []string{seg2, "s/generations/g1"}
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("after a put, a delete and a removed directory: listed %v, want %v", got, want)
	}
	if _, ok := s.tree.dirs["t/"]; ok {
		t.Error("the removed directory t/ is still in the cache")
	}
	if err := s.Put(ctx, "t/"+batch.SegmentName(1, 6, 9), []byte("y")); err != nil {
		t.Fatal(err)
	}
	want = []string{seg2, "s/generations/g1", "t/" + batch.SegmentName(1, 6, 9)}
	if got := names(); !slices.Equal(got, want) {
		t.Fatalf("after t/ was made again: listed %v, want %v", got, want)
	}
}

// A sub-directory descend refuses is not walked: none of its objects is
// reported, at any depth, and descend is not asked of what is below it;
// a directory it accepts is walked as ever.
func TestListTreeDescend(t *testing.T) {
	s, root := treeStore(t)
	for _, name := range []string{"top", "a/x", "a/skip/y", "a/skip/deeper/z", "b/w", "skip/v"} {
		writeFile(t, root, name, 1)
	}
	var asked, got []string
	err := s.ListTree(t.Context(), "", func(sub string) bool {
		asked = append(asked, sub)
		return filepath.Base(sub) != "skip"
	}, func(o store.Object) error {
		got = append(got, o.Name)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	slices.Sort(asked)
	if want := []string{"a/x", "b/w", "top"}; !slices.Equal(got, want) {
		t.Errorf("listed %q; want %q", got, want)
	}
	if want := []string{"a/", "a/skip/", "b/", "skip/"}; !slices.Equal(asked, want) {
		t.Errorf("descend asked of %q; want %q", asked, want)
	}
	// The cache of a full listing is not confused by the pruned one.
	if all := listed(t, s); len(all) != 6 {
		t.Errorf("a full listing after a pruned one: %v; want all 6 objects", all)
	}
}
