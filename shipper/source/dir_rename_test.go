//go:build linux

package source

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/internal/treetest"
)

// rename applies a rename record to the model as the applier does: the old
// path must hold exactly what the record expects.
func (m *dirModel) rename(key string, r batch.Record) {
	t := m.t
	rn, err := dirtree.ParseRename(r.Data)
	if err == nil {
		err = dirtree.CheckRename(key, rn)
	}
	if err != nil {
		t.Fatalf("rename %q: %v", key, err)
	}
	old := m.nodes[rn.Old]
	switch {
	case rn.Kind == dirtree.RenameDir && (old.Kind != "dir" || old.Mode != rn.Mode || old.Mtime != rn.Mtime):
		t.Fatalf("rename %q from %q: the model holds %+v there, the record expects dir %#o %d", key, rn.Old, old, rn.Mode, rn.Mtime)
	case rn.Kind == dirtree.RenameFile && (old.Kind != "file" || old.Mode != rn.Mode || old.Mtime != rn.Mtime ||
		int64(len(old.Content)) != rn.Size || sha256.Sum256([]byte(old.Content)) != rn.SHA256):
		t.Fatalf("rename %q from %q: the model holds %+v there, the record expects another file", key, rn.Old, old)
	}
	if n, ok := m.nodes[key]; ok && (n.Kind == "dir") != (rn.Kind == dirtree.RenameDir) {
		t.Fatalf("rename %q from %q over a %s", key, rn.Old, n.Kind)
	}
	moved := treetest.Tree{}
	for k, n := range m.nodes {
		if k == rn.Old || strings.HasPrefix(k, rn.Old+"/") {
			moved[key+k[len(rn.Old):]] = n
		}
	}
	m.removeTree(rn.Old)
	m.removeTree(key)
	for k, n := range moved {
		m.nodes[k] = n
	}
}

func opsAfter(recs []batch.Record, from int) map[string]int {
	n := map[string]int{}
	for _, r := range recs[from:] {
		n[r.Op]++
	}
	return n
}

// fsnotify names the old path only in Event.String; the source parses it
// from there, for every name Linux allows.
func TestDirRenamedFromParsesFsnotify(t *testing.T) {
	dir := t.TempDir()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		t.Fatal(err)
	}
	for _, names := range [][2]string{{"1:2,S", "1:2,RS"}, {`a" ← "b`, `c ← "d\"`}, {"tab\there", "new\nline ←"}} {
		old, nw := filepath.Join(dir, names[0]), filepath.Join(dir, names[1])
		if err := os.WriteFile(old, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(old, nw); err != nil {
			t.Fatal(err)
		}
		deadline := time.After(5 * time.Second)
		for found := false; !found; {
			select {
			case ev := <-w.Events:
				if ev.Name != nw || !ev.Has(fsnotify.Create) {
					continue
				}
				if got := dirRenamedFrom(ev); got != old {
					t.Fatalf("dirRenamedFrom(%s) = %q, want %q", ev, got, old)
				}
				found = true
			case err := <-w.Errors:
				t.Fatal(err)
			case <-deadline:
				t.Fatalf("no create event for %q", nw)
			}
		}
	}
	if got := dirRenamedFrom(fsnotify.Event{Name: "x", Op: fsnotify.Create}); got != "" {
		t.Fatalf("a plain create names %q", got)
	}
}

// A Maildir flag change is one rename record of a few hundred bytes, not
// the message again; a directory move is one record, not its subtree.
func TestDirSourceShipsRenames(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "tree")
	body := strings.Repeat("Subject: hello\r\n\r\nthe body of a message\r\n", 800) // 33 KiB
	dirWrite(t, filepath.Join(root, "INBOX/cur/1700000000.1.host:2,S"), body, 0o600)
	for i := range 40 {
		dirWrite(t, filepath.Join(root, "Archive/cur", strings.Repeat("m", 1+i%5)+string(rune('a'+i%26))+time.Duration(i).String()), body[:100+i], 0o600)
	}
	sink, src, m := startConverged(t, &Dir{Root: root, SpoolDir: t.TempDir()})

	from := len(sink.records())
	if err := os.Rename(filepath.Join(root, "INBOX/cur/1700000000.1.host:2,S"), filepath.Join(root, "INBOX/cur/1700000000.1.host:2,RS")); err != nil {
		t.Fatal(err)
	}
	src.converge(t, m)
	recs := sink.records()
	var bytes int
	for _, r := range recs[from:] {
		bytes += r.FramedSize()
		if r.Op == dirtree.OpPut || r.Op == dirtree.OpChunk {
			t.Fatalf("the flag change shipped %s %q", r.Op, r.Key)
		}
	}
	if ops := opsAfter(recs, from); ops[dirtree.OpRename] != 1 {
		t.Fatalf("the flag change shipped %v, want one rename", ops)
	}
	if bytes > 400 {
		t.Fatalf("the flag change shipped %d bytes", bytes)
	}
	t.Logf("flag change of a %d-byte message: %d records, %d framed bytes", len(body), len(recs)-from, bytes)

	from = len(recs)
	if err := os.Rename(filepath.Join(root, "Archive"), filepath.Join(root, "INBOX/Archive-2025")); err != nil {
		t.Fatal(err)
	}
	src.converge(t, m)
	recs = sink.records()
	if ops := opsAfter(recs, from); ops[dirtree.OpRename] != 1 || ops[dirtree.OpPut]+ops[dirtree.OpChunk]+ops[dirtree.OpDel]+ops[dirtree.OpRmdir] != 0 {
		t.Fatalf("the folder move shipped %v, want one rename and no puts or deletes", ops)
	}
	// Changes below the moved folder ship under its new name.
	dirWrite(t, filepath.Join(root, "INBOX/Archive-2025/cur/after"), "after the move", 0o600)
	src.converge(t, m)
}

// What cannot be paired ships as del + put: a move in from outside the
// tree, a move out of it, a file changed right before its rename, a file
// never shipped, and a file renamed over a directory's place after that
// directory is gone.
func TestDirSourceRenameFallsBack(t *testing.T) {
	base := t.TempDir()
	root, outside := filepath.Join(base, "tree"), filepath.Join(base, "outside")
	dirWrite(t, filepath.Join(outside, "in"), "moved in", 0o644)
	dirWrite(t, filepath.Join(root, "out"), "moved out", 0o644)
	dirWrite(t, filepath.Join(root, "changed"), "before", 0o644)
	sink, src, m := startConverged(t, &Dir{Root: root, SpoolDir: t.TempDir(), Debounce: 300 * time.Millisecond})
	from := len(sink.records())
	mv := func(a, b string) {
		t.Helper()
		if err := os.Rename(a, b); err != nil {
			t.Fatal(err)
		}
	}
	mv(filepath.Join(outside, "in"), filepath.Join(root, "in"))
	mv(filepath.Join(root, "out"), filepath.Join(outside, "out"))
	dirWrite(t, filepath.Join(root, "changed"), "after!", 0o644) // same size, not shipped yet
	mv(filepath.Join(root, "changed"), filepath.Join(root, "changed2"))
	dirWrite(t, filepath.Join(root, "fresh"), "never shipped", 0o644)
	mv(filepath.Join(root, "fresh"), filepath.Join(root, "fresh2"))
	src.converge(t, m)
	ops := opsAfter(sink.records(), from)
	if ops[dirtree.OpRename] != 0 {
		t.Fatalf("shipped a rename for moves it cannot pair: %v", ops)
	}
	if ops[dirtree.OpPut] != 3 || ops[dirtree.OpDel] != 2 {
		t.Fatalf("shipped %v, want 3 puts (in, changed2, fresh2) and 2 deletes (out, changed)", ops)
	}
}

// A baseline never holds a rename (a replica built from the baseline on
// may lack the old path): moves during one ship as del + put; outside
// baselines they ship as renames again.
func TestDirSourceNoRenameInBaseline(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	for i := range 800 {
		dirWrite(t, filepath.Join(root, "cur", "m"+strconv.Itoa(i)+":2,"), strings.Repeat("x", 100), 0o600)
	}
	sink := &dirSink{}
	done := make(chan batch.Baseline, 100)
	src := &Dir{Root: root, SpoolDir: t.TempDir(), Debounce: 5 * time.Millisecond, Baseline: every(300 * time.Millisecond),
		OnBaseline: func(b batch.Baseline) { done <- b }}
	run := startDirSource(t, src, sink)
	first := waitBaseline(t, done)
	flag := map[int]string{}
	deadline := time.Now().Add(10 * time.Second)
	// Rename until two more baselines completed during the renames.
	for i := 0; len(done) < 2 && time.Now().Before(deadline); i = (i + 7) % 800 {
		name := filepath.Join(root, "cur", "m"+strconv.Itoa(i)+":2,")
		nf := flag[i] + "S"
		if err := os.Rename(name+flag[i], name+nf); err != nil {
			t.Fatal(err)
		}
		flag[i] = nf
		time.Sleep(2 * time.Millisecond)
	}
	run.converge(t, newDirModel(t))
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}
	close(done)
	recs := sink.records()
	renames, baselines := 0, 0
	for b := range done {
		if b.BeginSeq == first.BeginSeq {
			continue
		}
		baselines++
		for _, r := range baselineRecords(t, recs, b) {
			if r.Op == dirtree.OpRename {
				t.Fatalf("baseline %d..%d holds a rename of %q", b.BeginSeq, b.EndSeq, r.Key)
			}
		}
	}
	for _, r := range recs {
		if r.Op == dirtree.OpRename {
			renames++
		}
	}
	if renames == 0 || baselines < 2 {
		t.Fatalf("%d renames, %d baselines: the test needs both", renames, baselines)
	}
	t.Logf("%d baselines, %d renames outside them", baselines, renames)
}

// Under ferry sync a move ships as del + put: versions are per key, and
// the sync applier refuses rename records.
func TestDirSyncShipsNoRename(t *testing.T) {
	root, state, spoolDir := t.TempDir(), t.TempDir(), t.TempDir()
	l, err := dirsync.Open(state, "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dirWrite(t, filepath.Join(root, "cur/1:2,"), "a message", 0o600)
	dirWrite(t, filepath.Join(root, "box/x"), "in a folder", 0o600)
	sink := &dirSink{}
	startDirSource(t, &Dir{Root: root, SpoolDir: spoolDir, Ledger: l}, sink)
	waitFor(t, "the first scan shipped", func() bool { return len(sink.records()) >= 6 })
	time.Sleep(200 * time.Millisecond)
	from := len(sink.records())
	if err := os.Rename(filepath.Join(root, "cur/1:2,"), filepath.Join(root, "cur/1:2,S")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "box"), filepath.Join(root, "box2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the moves shipped", func() bool {
		ops := opsAfter(sink.records(), from)
		return ops[dirtree.OpPut] >= 2 && ops[dirtree.OpDel]+ops[dirtree.OpRmdir] >= 2
	})
	time.Sleep(200 * time.Millisecond)
	if ops := opsAfter(sink.records(), from); ops[dirtree.OpRename] != 0 {
		t.Fatalf("a sync source shipped %v", ops)
	}
}

// A move whose events are lost (a queue overflow: the rescan finds it)
// ships as del + put, and the replica converges.
func TestDirSourceRenameLostToOverflow(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	dirWrite(t, filepath.Join(root, "cur/1:2,"), "a message", 0o600)
	dirWrite(t, filepath.Join(root, "box/x"), "in a folder", 0o600)
	sink, src, m := startConverged(t, &Dir{Root: root, SpoolDir: t.TempDir()})
	src.mu.Lock()
	r := src.run
	src.mu.Unlock()
	r.mu.Lock()
	for p := range r.watched { // deaf, as after an overflow
		r.w.Remove(r.abs(p))
	}
	r.mu.Unlock()
	from := len(sink.records())
	if err := os.Rename(filepath.Join(root, "cur/1:2,"), filepath.Join(root, "cur/1:2,S")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(root, "box"), filepath.Join(root, "box2")); err != nil {
		t.Fatal(err)
	}
	r.rescan <- struct{}{}
	src.converge(t, m)
	if ops := opsAfter(sink.records(), from); ops[dirtree.OpRename] != 0 || ops[dirtree.OpPut] != 2 {
		t.Fatalf("moves lost to an overflow shipped %v, want del + put", ops)
	}
}

// Two directories swapped through a third name (mv d t; mv e d; mv t e)
// cannot ship as renames (each would land on the other, not empty): they
// ship as the paths' contents, and what each directory held before and no
// longer holds is deleted from the replica too. The new directory at a path
// is another inode than the one the index knows there; its children in the
// index (which no event names) are looked at again.
func TestDirSourceSwapDirs(t *testing.T) {
	for _, debounce := range []time.Duration{30 * time.Millisecond, 300 * time.Millisecond} {
		t.Run(debounce.String(), func(t *testing.T) {
			base := t.TempDir()
			root := filepath.Join(base, "tree")
			dirWrite(t, filepath.Join(root, "d/x"), "x content", 0o644)
			dirWrite(t, filepath.Join(root, "d/sub/s"), "s content", 0o644)
			dirWrite(t, filepath.Join(root, "e/y"), "y content", 0o644)
			dirWrite(t, filepath.Join(root, "e/sub/u"), "u content", 0o644)
			_, src, m := startConverged(t, &Dir{Root: root, SpoolDir: t.TempDir(), Debounce: debounce})
			for _, mv := range [][2]string{{"d", "t"}, {"e", "d"}, {"t", "e"}} {
				if err := os.Rename(filepath.Join(root, mv[0]), filepath.Join(root, mv[1])); err != nil {
					t.Fatal(err)
				}
			}
			src.converge(t, m)
		})
	}
}
