//go:build linux

package apply_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/internal/treetest"
	"github.com/ferry-dr/ferry/receiver"
)

// renameFile is a rename record of a file that a put from r.put(old, mode,
// content) left at old.
func (r *dirRecs) renameFile(old, key string, mode uint32, content string) batch.Record {
	return r.rec(dirtree.OpRename, key, dirtree.AppendRename(nil, dirtree.Rename{
		Old: old, Kind: dirtree.RenameFile, Mode: mode, Mtime: dirT + int64(len(old)),
		Size: int64(len(content)), SHA256: sha256.Sum256([]byte(content))}))
}

// renameDir is a rename record of a directory that r.mkdir(old, mode) made.
func (r *dirRecs) renameDir(old, key string, mode uint32) batch.Record {
	return r.renameDirMade(old, old, key, mode)
}

// renameDirMade is a rename record of a directory at old that
// r.mkdir(made, mode) made (and renames moved to old).
func (r *dirRecs) renameDirMade(made, old, key string, mode uint32) batch.Record {
	return r.rec(dirtree.OpRename, key, dirtree.AppendRename(nil, dirtree.Rename{
		Old: old, Kind: dirtree.RenameDir, Mode: mode, Mtime: dirT - int64(len(made))*1e9}))
}

func TestDirRenameFile(t *testing.T) {
	root := filepath.Join(t.TempDir(), "replica")
	a := newDirApplier(t, root, nil)
	var r dirRecs
	dirApply(t, a, r.mkdir("cur", 0o700), r.mkdir("new", 0o700), r.put("new/1", 0o600, "message one"), r.put("cur/2:2,S", 0o640, "message two"))
	before := dirWalk(t, root)
	dirApply(t, a, r.renameFile("new/1", "cur/1:2,", 0o600, "message one"), r.renameFile("cur/2:2,S", "cur/2:2,RS", 0o640, "message two"))
	got := dirWalk(t, root)
	for _, mv := range [][2]string{{"new/1", "cur/1:2,"}, {"cur/2:2,S", "cur/2:2,RS"}} {
		if _, ok := got[mv[0]]; ok {
			t.Fatalf("%s is still there after its rename", mv[0])
		}
		if got[mv[1]] != before[mv[0]] {
			t.Fatalf("%s = %+v, want what %s was: %+v", mv[1], got[mv[1]], mv[0], before[mv[0]])
		}
	}
	// The directories keep the times their mkdir records set.
	for _, d := range []string{"cur", "new"} {
		if got[d] != before[d] {
			t.Fatalf("directory %s changed: %+v, was %+v", d, got[d], before[d])
		}
	}
}

func TestDirRenameDirAndOverFile(t *testing.T) {
	root := filepath.Join(t.TempDir(), "replica")
	a := newDirApplier(t, root, nil)
	var r dirRecs
	dirApply(t, a, r.mkdir("a", 0o750), r.put("a/x", 0o644, "x"), r.mkdir("a/b", 0o755), r.put("a/b/y", 0o644, "y"),
		r.mkdir("z", 0o755), r.put("f", 0o644, "eff"), r.put("g", 0o600, "gee"), r.mkdir("empty", 0o755))
	before := dirWalk(t, root)
	dirApply(t, a, r.renameDir("a", "z/c", 0o750), r.renameFile("f", "g", 0o644, "eff"), r.renameDir("z", "empty", 0o755))
	got := dirWalkNoMark(t, root)
	for old, now := range map[string]string{"a": "empty/c", "a/x": "empty/c/x", "a/b": "empty/c/b", "a/b/y": "empty/c/b/y", "f": "g"} {
		if got[now] != before[old] {
			t.Fatalf("%s = %+v, want what %s was: %+v", now, got[now], old, before[old])
		}
	}
	for _, p := range []string{"a", "f", "z"} {
		if _, ok := got[p]; ok {
			t.Fatalf("%s is still there", p)
		}
	}
	if len(got) != 6 { // empty, empty/c, its x, b, b/y, and g
		t.Fatalf("replica holds %d paths: %v", len(got), got)
	}
}

// The old path must hold what the source shipped for it; otherwise the
// replica diverged and the receiver stops, naming the segment, the key
// and the old path.
func TestDirRenameMismatchRefused(t *testing.T) {
	var r dirRecs
	setup := []batch.Record{r.mkdir("d", 0o755), r.put("f", 0o644, "eff"), r.put("nd/g", 0o644, "g")}
	cases := []struct {
		name  string
		rec   batch.Record
		inErr string
	}{
		{"other content", r.renameFile("f", "h", 0o644, "EFF"), "with other content"},
		{"other size", r.renameFile("f", "h", 0o644, "effs"), "a file of 3 bytes"},
		{"other mode", r.renameFile("f", "h", 0o600, "eff"), "mode 0644"},
		{"missing", r.renameFile("nothere", "h", 0o644, "eff"), "holds nothing"},
		{"a file, not a dir", r.renameDir("f", "h", 0o644), "a file of 3 bytes"},
		{"a dir, not a file", r.renameFile("d", "h", 0o755, ""), "a directory"},
		{"dir of other time", r.rec(dirtree.OpRename, "h", dirtree.AppendRename(nil, dirtree.Rename{Old: "d", Kind: dirtree.RenameDir, Mode: 0o755, Mtime: 1})), "mtime 1)"},
		{"over a non-empty dir", r.renameDir("d", "nd", 0o755), `"nd", which holds a directory`},
		{"new parent missing", r.renameFile("f", "no/h", 0o644, "eff"), "replica diverged"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "replica")
			a := newDirApplier(t, root, nil)
			dirApply(t, a, setup...)
			before := dirWalk(t, root)
			recs := []batch.Record{c.rec}
			meta := dirMeta(recs)
			err := a.Apply(context.Background(), meta, batch.RecordsOf(recs))
			rn, _ := dirtree.ParseRename(c.rec.Data)
			if !errors.Is(err, receiver.ErrFatal) {
				t.Fatalf("Apply: %v, want a fatal error", err)
			}
			for _, s := range []string{meta.Name(), fmt.Sprintf("%q", c.rec.Key), fmt.Sprintf("%q", rn.Old), c.inErr} {
				if !strings.Contains(err.Error(), s) {
					t.Fatalf("error does not say %q: %v", s, err)
				}
			}
			if d := diffTrees(before, dirWalk(t, root)); d != "" {
				t.Fatalf("the replica changed:\n%s", d)
			}
		})
	}
}

// Hostile renames: old paths that escape, are absolute, are the new path,
// contain it or lie below it, and paths through a symlink, old or new.
func TestDirRenameRefusesHostile(t *testing.T) {
	base := t.TempDir()
	outside := filepath.Join(base, "outside")
	if err := os.MkdirAll(filepath.Join(outside, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "keep"), []byte("eff"), 0o644); err != nil {
		t.Fatal(err)
	}
	var r dirRecs
	cases := []struct {
		name  string
		rec   batch.Record
		inErr string
	}{
		{"dotdot old", r.renameFile("../outside/keep", "x", 0o644, "eff"), `path element ".."`},
		{"absolute old", r.renameFile(filepath.Join(outside, "keep"), "x", 0o644, "eff"), "absolute path"},
		{"to itself", r.renameFile("f", "f", 0o644, "eff"), "to itself"},
		{"into itself", r.renameDir("d", "d/e", 0o755), "into itself"},
		{"over its parent", r.renameDir("d/e", "d", 0o755), "over its own ancestor"},
		{"dotdot new", r.renameFile("f", "../x", 0o644, "eff"), `path element ".."`},
		{"root new", r.renameDir("d", ".", 0o755), "only mkdir may name it"},
		{"old through symlink", r.renameFile("esc/keep", "x", 0o644, "eff"), `"esc" is a symlink in the replica`},
		{"new through symlink", r.renameFile("f", "esc/sub/x", 0o644, "eff"), `"esc" is a symlink in the replica`},
		{"old is a symlink", r.renameDir("esc", "x", 0o755), "holds a symlink"},
		{"malformed", r.rec(dirtree.OpRename, "x", []byte{1, 1, 0}), "shorter than the 54-byte header"},
		{"onto the marker", r.renameFile("f", ".ferry-renamed.tmp", 0o644, "eff"), "reserved for the applier's temp files"},
		{"from a temp name", r.renameFile(".ferry-0000000000000001.tmp", "x", 0o644, "eff"), "reserved for the applier's temp files"},
		{"into staging", r.renameFile("f", ".ferry-staging/x", 0o644, "eff"), "reserved for the applier's staging directory"},
		{"from staging", r.renameDir(".ferry-staging", "x", 0o755), "reserved for the applier's staging directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "replica")
			a := newDirApplier(t, root, nil)
			dirApply(t, a, r.put("f", 0o644, "eff"))
			if err := os.Symlink(outside, filepath.Join(root, "esc")); err != nil {
				t.Fatal(err)
			}
			before, beforeOut := dirWalk(t, root), dirWalk(t, outside)
			recs := []batch.Record{c.rec}
			err := a.Apply(context.Background(), dirMeta(recs), batch.RecordsOf(recs))
			if !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), c.inErr) {
				t.Fatalf("Apply: %v, want a fatal error saying %q", err, c.inErr)
			}
			if d := diffTrees(before, dirWalk(t, root)); d != "" {
				t.Fatalf("the replica changed:\n%s", d)
			}
			if d := diffTrees(beforeOut, dirWalk(t, outside)); d != "" {
				t.Fatalf("the directory outside the replica changed:\n%s", d)
			}
		})
	}
}

// A crash between Apply and the checkpoint, at any point of the segment:
// the segment applied again over what the first Apply left (all of it, or
// its first k records) ends in exactly the tree one Apply makes.
func TestDirRenameReplayIsNoop(t *testing.T) {
	var r dirRecs
	prefix := []batch.Record{r.mkdir("d", 0o750), r.put("d/x", 0o644, "x"), r.put("f", 0o644, "eff"), r.mkdir("e", 0o755), r.put("e/y", 0o644, "y")}
	segments := map[string][]batch.Record{
		"file":                        {r.renameFile("f", "g", 0o644, "eff")},
		"dir":                         {r.renameDir("d", "e/d2", 0o750)},
		"file then recreated":         {r.renameFile("f", "g", 0o644, "eff"), r.put("f", 0o644, "eff"), r.put("f", 0o600, "new f")},
		"same content back":           {r.renameFile("f", "g", 0o644, "eff"), r.put("f", 0o644, "eff")},
		"chain":                       {r.renameFile("f", "g", 0o644, "eff"), r.renameFile("g", "h", 0o644, "eff"), r.renameDir("d", "d3", 0o750), r.renameDirMade("d", "d3", "e/d4", 0o750)},
		"dir then recreated":          {r.renameDir("d", "e/d2", 0o750), r.mkdir("d", 0o750), r.put("d/z", 0o644, "z")},
		"put into, then move":         {r.put("d/new", 0o644, "new"), r.renameDir("d", "moved", 0o750), r.put("moved/after", 0o644, "a")},
		"mkdir then move":             {r.mkdir("n", 0o700), r.put("n/m", 0o644, "m"), r.renameDir("n", "e/n", 0o700)},
		"put then move":               {r.put("p", 0o640, "pp"), r.renameFile("p", "e/p", 0o640, "pp"), r.del("f")},
		"move then delete":            {r.renameFile("f", "g", 0o644, "eff"), r.del("g"), r.renameDir("d", "d5", 0o750), r.rmdir("d5")},
		"dir over an empty dir":       {r.mkdir("e/q", 0o755), r.renameDir("d", "e/q", 0o750), r.mkdir("d", 0o750)},
		"put over the new path first": {r.put("g", 0o644, "other"), r.renameFile("f", "g", 0o644, "eff")},
		"rmdir the new path first":    {r.rmdir("e"), r.renameDir("d", "e", 0o750)},
		"move over and back":          {r.renameFile("f", "e/y", 0o644, "eff"), r.put("f", 0o644, "second")},
	}
	for name, seg := range segments {
		t.Run(name, func(t *testing.T) {
			base := t.TempDir()
			once := filepath.Join(base, "once")
			a := newDirApplier(t, once, nil)
			dirApply(t, a, prefix...)
			dirApply(t, a, seg...)
			want := dirWalkNoMark(t, once)
			for k := 0; k <= len(seg); k++ {
				root := filepath.Join(base, fmt.Sprint("replay", k))
				a := newDirApplier(t, root, nil)
				dirApply(t, a, prefix...)
				st := dirState(t, a)
				if k > 0 { // the first Apply of the segment got this far
					if err := a.Apply(context.Background(), dirMeta(seg), batch.RecordsOf(seg[:k])); err != nil {
						t.Fatal(err)
					}
				}
				a.Close()
				b := newDirApplier(t, root, st) // restarted from the checkpoint before the segment
				dirApply(t, b, seg...)
				got := dirWalkNoMark(t, root)
				if d := diffTrees(want, got); d != "" {
					t.Fatalf("applied again after %d of %d records:\n%s", k, len(seg), d)
				}
			}
		})
	}
}

// dirWalkNoMark is dirWalk without the root (no record sets its time) and
// the applier's files at the root.
func dirWalkNoMark(t *testing.T, root string) treetest.Tree {
	t.Helper()
	return treetest.Read(t, root, treetest.Options{Mode: 0o7777, Mtime: time.Nanosecond, NoRoot: true,
		Skip: func(_ string, d fs.DirEntry) bool { return strings.HasPrefix(d.Name(), dirtree.TempPrefix) }})
}

// A later mkdir of the directory above does not excuse a rename that finds
// the wrong content (it changes nothing at the path); a later put of the
// new path does (the segment rewrites it, as after a crash).
func TestDirRenameMismatchNotExcusedByParentMkdir(t *testing.T) {
	root := filepath.Join(t.TempDir(), "replica")
	a := newDirApplier(t, root, nil)
	var r dirRecs
	dirApply(t, a, r.mkdir("d", 0o755), r.put("d/f", 0o644, "eff"))
	recs := []batch.Record{r.renameFile("d/f", "d/g", 0o644, "other"), r.mkdir("d", 0o755)}
	err := a.Apply(context.Background(), dirMeta(recs), batch.RecordsOf(recs))
	if !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), "replica diverged") {
		t.Fatalf("Apply: %v, want the divergence refused", err)
	}
	recs = []batch.Record{r.renameFile("d/f", "d/g", 0o644, "other"), r.put("d/g", 0o644, "gee"), r.del("d/f")}
	dirApply(t, a, recs...)
}

// The receiver applies up to 64 segments past its checkpoint
// (checkpoint_delay, or segments ready at once); after a crash it applies
// them all again, the earlier ones first. The marker of an exactly-once
// rename in a later segment survives the replay of the earlier ones, and
// of an earlier one with an exactly-once rename of its own. A marker
// written before the list (one segment) still reads.
func TestDirRenameMarkerSurvivesEarlierSegmentReplay(t *testing.T) {
	var r dirRecs
	prefix := []batch.Record{r.put("f", 0o644, "eff"), r.mkdir("e", 0o755)}
	first := []batch.Record{r.put("p", 0o640, "pp"), r.renameFile("p", "q", 0o640, "pp"), r.put("h", 0o644, "hh")}
	second := []batch.Record{r.put("g", 0o644, "other"), r.renameFile("f", "g", 0o644, "eff")}
	base := t.TempDir()
	once := filepath.Join(base, "once")
	a := newDirApplier(t, once, nil)
	dirApply(t, a, prefix...)
	dirApply(t, a, first...)
	dirApply(t, a, second...)
	want := dirWalkNoMark(t, once)

	for _, oldMarker := range []bool{false, true} {
		root := filepath.Join(base, fmt.Sprint("replay-", oldMarker))
		a = newDirApplier(t, root, nil)
		dirApply(t, a, prefix...)
		st := dirState(t, a)
		dirApply(t, a, first...)
		dirApply(t, a, second...)
		a.Close()
		if oldMarker {
			m := fmt.Sprintf(`{"segment":%q,"index":1}`, dirMeta(second).Name())
			if err := os.WriteFile(filepath.Join(root, ".ferry-renamed.tmp"), []byte(m), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		b := newDirApplier(t, root, st)
		dirApply(t, b, first...)
		dirApply(t, b, second...)
		if d := diffTrees(want, dirWalkNoMark(t, root)); d != "" {
			t.Fatalf("applied again from the checkpoint before both segments (marker of one segment: %v):\n%s", oldMarker, d)
		}
	}
}

// The marker keeps the last exactly-once rename of each of the last 256
// segments that had one: after 257 such segments past one checkpoint, a
// crash replay of segments 2..257 resumes after each one's rename and
// converges, and the oldest, whose entry was dropped, is applied from its
// first record (its put then clobbers the file its rename moved: the
// replica diverges, which is what the bound costs).
func TestDirRenameMarkerKeeps256Segments(t *testing.T) {
	const n = 257
	var r dirRecs
	var prefix []batch.Record
	for i := range n {
		prefix = append(prefix, r.put(fmt.Sprintf("f%03d", i), 0o644, fmt.Sprintf("eff %d", i)))
	}
	segs := make([][]batch.Record, n)
	for i := range segs {
		// The put of g before the rename onto g makes the rename unsafe
		// to replay: it needs the marker.
		segs[i] = []batch.Record{r.put(fmt.Sprintf("g%03d", i), 0o644, "other"),
			r.renameFile(fmt.Sprintf("f%03d", i), fmt.Sprintf("g%03d", i), 0o644, fmt.Sprintf("eff %d", i))}
	}
	root := filepath.Join(t.TempDir(), "replica")
	a := newDirApplier(t, root, nil)
	dirApply(t, a, prefix...)
	st := dirState(t, a)
	for _, s := range segs {
		dirApply(t, a, s...)
	}
	want := dirWalkNoMark(t, root)
	a.Close()

	b, err := os.ReadFile(filepath.Join(root, ".ferry-renamed.tmp"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Renames []struct {
			Segment string `json:"segment"`
			Index   int    `json:"index"`
		} `json:"renames"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("marker: %v", err)
	}
	if len(m.Renames) != 256 {
		t.Fatalf("the marker holds %d segments, want the last 256", len(m.Renames))
	}
	for k, e := range m.Renames {
		if w := dirMeta(segs[n-256+k]).Name(); e.Segment != w || e.Index != 1 {
			t.Fatalf("marker entry %d is %s record %d, want %s record 1", k, e.Segment, e.Index, w)
		}
	}

	// Replay from the checkpoint before them all, newest entries first
	// kept: segments 2..257 resume after their renames.
	c := newDirApplier(t, root, st)
	for _, s := range segs[1:] {
		dirApply(t, c, s...)
	}
	if d := diffTrees(want, dirWalkNoMark(t, root)); d != "" {
		t.Fatalf("segments 2..%d applied again:\n%s", n, d)
	}
	// The oldest is no longer in the marker: its put of g000 runs again
	// over the moved file, and its rename finds the replica diverged.
	err = dirApplyErr(c, segs[0]...)
	if !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), "diverged") {
		t.Fatalf("segment 1 applied again: got %v, want the divergence its dropped marker entry leaves", err)
	}
}

// The rename marker is the applier's own file at the root; one it cannot
// use (not JSON, a symlink, a record past the segment's end) stops the
// apply, naming it, before any record is applied.
func TestDirRenameMarkerHostile(t *testing.T) {
	var r dirRecs
	seg := []batch.Record{r.put("f", 0o644, "eff")}
	cases := []struct {
		name  string
		plant func(t *testing.T, p string)
		inErr string
	}{
		{"not json", func(t *testing.T, p string) { os.WriteFile(p, []byte("{seg"), 0o644) }, ".ferry-renamed.tmp unreadable"},
		{"symlink", func(t *testing.T, p string) { os.Symlink("/etc/passwd", p) }, "open .ferry-renamed.tmp"},
		{"record past the end", func(t *testing.T, p string) {
			os.WriteFile(p, fmt.Appendf(nil, `{"renames":[{"segment":%q,"index":7}]}`, dirMeta(seg).Name()), 0o644)
		}, "names record 7 of segment " + dirMeta(seg).Name() + ", which has 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "replica")
			a := newDirApplier(t, root, nil)
			st := dirState(t, a)
			a.Close()
			c.plant(t, filepath.Join(root, ".ferry-renamed.tmp"))
			b := newDirApplier(t, root, st)
			err := b.Apply(context.Background(), dirMeta(seg), batch.RecordsOf(seg))
			if !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), c.inErr) {
				t.Fatalf("got %v, want a fatal error with %q", err, c.inErr)
			}
			if _, err := os.Lstat(filepath.Join(root, "f")); err == nil {
				t.Fatalf("f applied despite the marker")
			}
		})
	}
}
