//go:build linux

package source

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/dirtree"
)

func statState(t *testing.T, p string) dirsync.State {
	t.Helper()
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.IsDir() {
		return dirsync.State{Kind: dirsync.KindDir, Mode: uint32(fi.Mode().Perm()), Mtime: fi.ModTime().UnixNano()}
	}
	return dirsync.State{Kind: dirsync.KindFile, Mode: uint32(fi.Mode().Perm()), Mtime: fi.ModTime().UnixNano(), Size: fi.Size()}
}

func shippedFile(recs []batchRecordView, key string) bool {
	for _, r := range recs {
		if r.key == key && (r.op == dirtree.OpPut || r.op == dirtree.OpChunk) {
			return true
		}
	}
	return false
}

type batchRecordView struct{ op, key string }

func (s *dirSink) views() []batchRecordView {
	var out []batchRecordView
	for _, r := range s.records() {
		out = append(out, batchRecordView{string(r.Op), string(r.Key)})
	}
	return out
}

// A peer's delete of a directory lost to a local change below it: the
// ledger gives the directory and everything below new versions of this
// site, to be shipped again (dirsync resurrect). A crash before the
// running source shipped them loses its note of them, and the tree still
// matches the source's index, so only the ledger knows: the source ships
// them when it starts (Ledger.Unshipped).
func TestDirSyncShipsUnshippedVersionsAtStart(t *testing.T) {
	root, state, spoolDir := t.TempDir(), t.TempDir(), t.TempDir()
	dirWrite(t, filepath.Join(root, "d/f"), "from a\n", 0o644)
	l, err := dirsync.Open(state, "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// d and d/f came from peer a.
	for i, key := range []string{"d", "d/f"} {
		st := statState(t, filepath.Join(root, key))
		d, err := l.Decide(dirsync.Incoming{Peer: "a", Seq: uint64(i + 1), Key: key, Ver: dirsync.Version{Origin: "a", VV: dirsync.VV{"a": int64(10 + i)}},
			State: st, Disk: st, CheckDisk: false})
		if err != nil || d.Act != dirsync.ActApply {
			t.Fatalf("%s: %+v, %v", key, d, err)
		}
	}
	dirWrite(t, filepath.Join(root, "d/g"), "local\n", 0o644) // a local change below d
	sink := &dirSink{}
	run := startDirSource(t, &Dir{Root: root, SpoolDir: spoolDir, Ledger: l}, sink)
	deadline := time.Now().Add(10 * time.Second)
	for !shippedFile(sink.views(), "d/g") {
		if time.Now().After(deadline) {
			t.Fatalf("d/g not shipped: %v", sink.views())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	if shippedFile(sink.views(), "d/f") {
		t.Fatalf("d/f, a's change, was shipped back: %v", sink.views())
	}
	if err := run.stop(t); err != nil {
		t.Fatal(err)
	}

	// While the source is down, a's delete of d arrives and loses to d/g.
	// Its OnReship note is lost with the process.
	l.Lock()
	d, err := l.Decide(dirsync.Incoming{Peer: "a", Seq: 3, Key: "d", Ver: dirsync.Version{Origin: "a", VV: dirsync.VV{"a": 20}, Seen: dirsync.VV{"a": 20}},
		State: dirsync.Absent, Disk: statState(t, filepath.Join(root, "d")), CheckDisk: true,
		Below: func(fn func(string, dirsync.State)) {
			for _, p := range []string{"d/f", "d/g"} {
				fn(p, statState(t, filepath.Join(root, p)))
			}
		}})
	if err == nil {
		err = l.Sync()
	}
	l.Unlock()
	if err != nil || d.Act != dirsync.ActSkip {
		t.Fatalf("a's delete of d: %+v, %v; want it to lose (skip)", d, err)
	}

	sink2 := &dirSink{}
	startDirSource(t, &Dir{Root: root, SpoolDir: spoolDir, Ledger: l, Cursor: sink.lastCursor()}, sink2)
	deadline = time.Now().Add(10 * time.Second)
	for !shippedFile(sink2.views(), "d/f") {
		if time.Now().After(deadline) {
			t.Fatalf("after the restart, d/f (kept against a's delete) was not shipped: %v", sink2.views())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A peer's file the applier put in the tree and a local program removed
// before the source looked at it (the index never had it): the source
// ships its removal, so the peer does not keep it for ever.
func TestDirSyncShipsRemovalOfAPeersUnindexedFile(t *testing.T) {
	root, state, spoolDir := t.TempDir(), t.TempDir(), t.TempDir()
	l, err := dirsync.Open(state, "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sink := &dirSink{}
	startDirSource(t, &Dir{Root: root, SpoolDir: spoolDir, Ledger: l}, sink)
	time.Sleep(300 * time.Millisecond) // the first scan is done
	// Under the lock, as the applier works: a's x is recorded and written;
	// then, before the source can look, something here removes it.
	l.Lock()
	p := filepath.Join(root, "x")
	dirWrite(t, p, "from a\n", 0o644)
	st := statState(t, p)
	d, err := l.Decide(dirsync.Incoming{Peer: "a", Seq: 1, Key: "x", Ver: dirsync.Version{Origin: "a", VV: dirsync.VV{"a": 10}},
		State: st, Disk: st, CheckDisk: false})
	if err == nil {
		err = l.Sync()
	}
	if err != nil || d.Act != dirsync.ActApply {
		l.Unlock()
		t.Fatalf("a's x: %+v, %v", d, err)
	}
	time.Sleep(100 * time.Millisecond) // the source sees x come
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var del bool
		for _, r := range sink.views() {
			if r.key == "x" && r.op == dirtree.OpDel {
				del = true
			}
			if r.key == "x" && r.op == dirtree.OpPut {
				t.Fatalf("a's x was shipped back: %v", sink.views())
			}
		}
		if del {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the removal of a's x was not shipped: %v", sink.views())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if e, ok := l.Get("x"); !ok || e.State.Kind != dirsync.KindAbsent || e.Origin != "b" {
		t.Errorf("ledger entry of x after the removal: %+v, %v; want absent, this site's", e, ok)
	}
}

// A peer's directory with a file in it, both applied here, then the peer's
// delete of the directory applied before the source looked at either: the
// ledger's entry of the file is left as it was (the delete names the
// directory), but the file went with its directory, a peer's change: the
// source ships nothing for it.
func TestDirSyncPeerDirectoryDeleteShipsNothing(t *testing.T) {
	root, state, spoolDir := t.TempDir(), t.TempDir(), t.TempDir()
	l, err := dirsync.Open(state, "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sink := &dirSink{}
	startDirSource(t, &Dir{Root: root, SpoolDir: spoolDir, Ledger: l}, sink)
	time.Sleep(300 * time.Millisecond) // the first scan is done
	l.Lock()
	decide := func(seq uint64, key string, st, disk dirsync.State, stamp int64) {
		t.Helper()
		d, err := l.Decide(dirsync.Incoming{Peer: "a", Seq: seq, Key: key, Ver: dirsync.Version{Origin: "a", VV: dirsync.VV{"a": stamp}, Seen: dirsync.VV{"a": stamp}},
			State: st, Disk: disk, CheckDisk: false})
		if err != nil || d.Act != dirsync.ActApply {
			l.Unlock()
			t.Fatalf("%s: %+v, %v", key, d, err)
		}
	}
	if err := os.Mkdir(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	decide(1, "d", statState(t, filepath.Join(root, "d")), dirsync.Absent, 10)
	time.Sleep(200 * time.Millisecond) // the source watches d
	dirWrite(t, filepath.Join(root, "d/x"), "from a\n", 0o644)
	decide(2, "d/x", statState(t, filepath.Join(root, "d/x")), dirsync.Absent, 11)
	time.Sleep(100 * time.Millisecond) // the source sees them come
	if err := os.RemoveAll(filepath.Join(root, "d")); err != nil {
		t.Fatal(err)
	}
	decide(3, "d", dirsync.Absent, dirsync.Absent, 12)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	time.Sleep(1500 * time.Millisecond) // the source has handled the events
	for _, r := range sink.views() {
		if r.key == "d" || r.key == "d/x" {
			t.Fatalf("the source shipped %s %s, a peer's change: %v", r.op, r.key, sink.views())
		}
	}
}
