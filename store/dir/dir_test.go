package dir_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
	"github.com/ferry-dr/ferry/store/storetest"
)

// caps is what the dir store declares to the conformance suite.
var caps = storetest.Caps{Swap: true, OverlapBelow: true, OverlapRace: true}

func TestConformance(t *testing.T) {
	storetest.RunWith(t, caps, func(t *testing.T) store.Store {
		return newStore(t, t.TempDir())
	})
}

func newStore(t *testing.T, root string) *dir.Store {
	t.Helper()
	s, err := dir.New(root)
	if err != nil {
		t.Fatalf("New(%s): %v", root, err)
	}
	return s
}

func TestNewCreatesRoot(t *testing.T) {
	root := filepath.Join(t.TempDir(), "a", "b")
	s := newStore(t, root)
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		t.Fatalf("root not created: %v", err)
	}
	if got, want := s.String(), "dir:"+root; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

// MustExist refuses a missing root, naming it, and creates nothing.
func TestMustExistCreatesNothing(t *testing.T) {
	root := filepath.Join(t.TempDir(), "a", "b")
	_, err := dir.NewWithOptions(root, dir.Options{MustExist: true})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), root) {
		t.Fatalf("err = %v, want one wrapping fs.ErrNotExist naming %s", err, root)
	}
	if _, err := os.Stat(filepath.Dir(root)); !os.IsNotExist(err) {
		t.Fatalf("%s: %v, want it not to exist", filepath.Dir(root), err)
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := dir.NewWithOptions(root, dir.Options{MustExist: true}); err != nil {
		t.Fatalf("existing root: %v", err)
	}
}

// ListDirs names the sub-directories, not files or temp directories.
func TestListDirs(t *testing.T) {
	s := newStore(t, t.TempDir())
	ctx := context.Background()
	for _, name := range []string{"b/x", "a/y", "a/c/z", "top"} {
		if err := s.Put(ctx, name, []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ dir, want string }{{"", "a/ b/"}, {"a/", "a/c/"}, {"b/", ""}, {"nope/", ""}} {
		var got []string
		if err := s.ListDirs(ctx, tc.dir, func(n string) error { got = append(got, n); return nil }); err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("ListDirs(%q) = %q, want %q", tc.dir, got, tc.want)
		}
	}
}

func TestNewRootIsFile(t *testing.T) {
	root := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(root, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{root, filepath.Join(root, "sub")} {
		_, err := dir.New(path)
		if err == nil {
			t.Errorf("New(%s) under a regular file succeeded", path)
		} else if !strings.Contains(err.Error(), path) {
			t.Errorf("New(%s) error does not name the path: %v", path, err)
		}
	}
	if _, err := dir.New(""); err == nil {
		t.Error(`New("") succeeded`)
	}
}

func TestUnwritableRoot(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	if err := os.Chmod(root, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(root, 0o755) })
	probe := filepath.Join(root, "probe")
	if err := os.WriteFile(probe, nil, 0o644); err == nil {
		os.Remove(probe)
		t.Skip("chmod 0o500 does not stop writes here (running as root?); cannot test an unwritable root")
	}
	for _, name := range []string{"top", "s/x"} {
		err := s.Put(t.Context(), name, []byte("x"))
		if !errors.Is(err, store.ErrPermanent) {
			t.Errorf("Put(%q) into an unwritable root: %v, want ErrPermanent", name, err)
		}
	}
	if _, err := dir.New(filepath.Join(root, "sub")); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("New under an unwritable dir: %v, want ErrPermanent", err)
	}
}

func TestLeftoverTempFiles(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	if err := os.Mkdir(filepath.Join(root, "s"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".x.tmp", "s/.x.tmp", "s/.a.seg.zst.k3j2h.tmp"} {
		if err := os.WriteFile(filepath.Join(root, p), []byte("torn"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got := listNames(t, s, "s/"); got != nil {
		t.Errorf("List(s/) reported temp files: %q", got)
	}
	if err := s.Put(t.Context(), "s/a.seg.zst", []byte("data")); err != nil {
		t.Fatalf("Put beside leftover temp files: %v", err)
	}
	if got := listNames(t, s, "s/"); !slices.Equal(got, []string{"s/a.seg.zst"}) {
		t.Errorf("List(s/) = %q, want [s/a.seg.zst]", got)
	}
	if got := listNames(t, s, ""); got != nil {
		t.Errorf("List(root) = %q, want nothing", got)
	}
}

// Names with the temp-file shape are reserved; other dot names are objects.
func TestTempShapedNames(t *testing.T) {
	s := newStore(t, t.TempDir())
	for _, name := range []string{".x.tmp", "s/.y.tmp"} {
		if err := s.Put(t.Context(), name, []byte("x")); !errors.Is(err, store.ErrPermanent) {
			t.Errorf("Put(%q): %v, want ErrPermanent", name, err)
		}
		if _, err := s.Get(t.Context(), name); !errors.Is(err, store.ErrPermanent) {
			t.Errorf("Get(%q): %v, want ErrPermanent", name, err)
		}
	}
	for _, name := range []string{"s/.hidden", "s/x.tmp"} {
		if err := s.Put(t.Context(), name, []byte(name)); err != nil {
			t.Errorf("Put(%q): %v", name, err)
		}
	}
	if got, want := listNames(t, s, "s/"), []string{"s/.hidden", "s/x.tmp"}; !slices.Equal(got, want) {
		t.Errorf("List(s/) = %q, want %q", got, want)
	}
}

// A file already under the name, torn or foreign, is never replaced.
func TestPreexistingFileConflicts(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	data := bytes.Repeat([]byte("segment "), 4096)
	cases := map[string][]byte{
		"torn":      data[:len(data)/2],
		"same size": bytes.Repeat([]byte("SEGMENT "), 4096),
		"longer":    append(bytes.Clone(data), '!'),
	}
	if err := os.Mkdir(filepath.Join(root, "s"), 0o755); err != nil {
		t.Fatal(err)
	}
	for what, old := range cases {
		name := "s/" + strings.ReplaceAll(what, " ", "-")
		path := filepath.Join(root, filepath.FromSlash(name))
		if err := os.WriteFile(path, old, 0o644); err != nil {
			t.Fatal(err)
		}
		err := s.Put(t.Context(), name, data)
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s: Put over a different file: %v, want ErrConflict", what, err)
		} else if !strings.Contains(err.Error(), name) {
			t.Errorf("%s: error does not name the object: %v", what, err)
		}
		if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, old) {
			t.Errorf("%s: file changed by refused Put (err %v)", what, err)
		}
	}
	checkNoTempFiles(t, filepath.Join(root, "s"))
}

// Names the directory layout cannot hold fail permanently and leave no trace.
func TestLayoutClash(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	for _, name := range []string{"a", "s/sub/x"} {
		if err := s.Put(t.Context(), name, []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"a/b", "s/sub"} {
		if err := s.Put(t.Context(), name, []byte("x")); !errors.Is(err, store.ErrPermanent) {
			t.Errorf("Put(%q): %v, want ErrPermanent", name, err)
		}
	}
	if _, err := s.Get(t.Context(), "a/b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get(a/b) under an object: %v, want ErrNotFound", err)
	}
	if err := s.Delete(t.Context(), "a/b"); err != nil {
		t.Errorf("Delete(a/b) under an object: %v, want nil", err)
	}
	checkNoTempFiles(t, root)
	checkNoTempFiles(t, filepath.Join(root, "s"))
}

func TestInvalidNameIsPermanent(t *testing.T) {
	s := newStore(t, t.TempDir())
	if err := s.Put(t.Context(), "a/../b", []byte("x")); !errors.Is(err, store.ErrPermanent) {
		t.Errorf("Put of an invalid name: %v, want ErrPermanent", err)
	}
}

// A Put cancelled before it starts leaves nothing, not even a temp file.
func TestCancelledPutLeavesNothing(t *testing.T) {
	root := t.TempDir()
	s := newStore(t, root)
	if err := s.Put(t.Context(), "s/a", []byte("a")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Put(ctx, "s/b", []byte("b")); err == nil {
		t.Error("Put with a cancelled context succeeded")
	}
	checkNoTempFiles(t, filepath.Join(root, "s"))
	if got := listNames(t, s, "s/"); !slices.Equal(got, []string{"s/a"}) {
		t.Errorf("List(s/) = %q, want [s/a]", got)
	}
}

func listNames(t *testing.T, s store.Store, dir string) []string {
	t.Helper()
	var names []string
	err := s.List(t.Context(), dir, "", func(o store.Object) error {
		names = append(names, o.Name)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q): %v", dir, err)
	}
	return names
}

func checkNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temp file left behind: %s", filepath.Join(dir, e.Name()))
		}
	}
}
