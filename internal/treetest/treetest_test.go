package treetest

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestWalkKeepsWhatOptionsAsk(t *testing.T) {
	root := t.TempDir()
	mtime := time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)
	if err := os.MkdirAll(filepath.Join(root, "d/skip"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(root, "d/f")
	if err := os.WriteFile(f, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(f, 0o750|fs.ModeSetuid); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(f, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../elsewhere", filepath.Join(root, "d/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "d/skip/x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	skip := func(rel string, d fs.DirEntry) bool { return d.Name() == "skip" }

	all := Read(t, root, Options{Mode: 0o7777, Mtime: time.Nanosecond, Skip: skip})
	want := Node{Kind: "file", Mode: 0o4750, Mtime: mtime.UnixNano(), Content: "hello\n"}
	if got := all["d/f"]; got != want {
		t.Errorf("d/f: %v, want %v", got, want)
	}
	if got := all["d/link"]; got.Kind != "symlink" || got.Target != "../elsewhere" || got.Mode != 0 {
		t.Errorf("d/link: %v", got)
	}
	if _, ok := all["."]; !ok || len(all) != 4 {
		t.Errorf("tree %v, want the root, d, d/f and d/link", all)
	}

	coarse := Read(t, root, Options{Mode: 0o777, Mtime: time.Second, NoRoot: true, Skip: skip})
	want = Node{Kind: "file", Mode: 0o750, Mtime: mtime.Truncate(time.Second).UnixNano(), Content: "hello\n"}
	if got := coarse["d/f"]; got != want {
		t.Errorf("d/f to the second, permissions only: %v, want %v", got, want)
	}
	if _, ok := coarse["."]; ok {
		t.Error("NoRoot kept the root")
	}
	if got := Read(t, root, Options{})["d"]; got != (Node{Kind: "dir"}) {
		t.Errorf("d with no mode or mtime compared: %v", got)
	}
}

func TestDiff(t *testing.T) {
	a := Tree{".": {Kind: "dir"}, "f": {Kind: "file", Content: "a"}, "gone": {Kind: "file"}}
	b := Tree{".": {Kind: "dir"}, "f": {Kind: "file", Content: "b"}, "new": {Kind: "symlink", Target: "x"}}
	if d := Diff("source", a, "replica", a); d != "" {
		t.Errorf("a tree differs from itself:\n%s", d)
	}
	d := Diff("source", a, "replica", b)
	for _, s := range []string{`"f" differs`, `source file mode 0000 "a"`, `"gone" only in the source`, `"new" only in the replica: symlink -> "x"`} {
		if !strings.Contains(d, s) {
			t.Errorf("diff lacks %q:\n%s", s, d)
		}
	}
	many := Tree{}
	for i := range 30 {
		many[strings.Repeat("x", i+1)] = Node{Kind: "file"}
	}
	if d := Diff("a", Tree{}, "b", many); !strings.HasSuffix(d, "... and 10 more") {
		t.Errorf("diff of 30 paths does not stop at %d:\n%s", maxDiffs, d)
	}
}
