//go:build linux

package source

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
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

// decideApplied records peer's record of key (state st, version stamp ts)
// as the applier does, in segment seg, without touching the tree.
func decideApplied(t *testing.T, l *dirsync.Ledger, peer string, seq uint64, seg, key string, st dirsync.State, ts int64) {
	t.Helper()
	l.Lock()
	defer l.Unlock()
	d, err := l.Decide(dirsync.Incoming{Peer: peer, Seq: seq, Key: key, Ver: dirsync.Version{Origin: peer, VV: dirsync.VV{peer: ts}},
		State: st, Disk: st, CheckDisk: false})
	if err == nil {
		err = l.SetDecided(peer, seg, []dirsync.Decision{d})
	}
	if err == nil {
		err = l.Sync()
	}
	if err != nil || d.Act != dirsync.ActApply {
		t.Fatalf("%s from %s: %+v, %v", key, peer, d, err)
	}
}

func recordsOf(recs []batchRecordView, key string) []string {
	var out []string
	for _, r := range recs {
		if r.key == key {
			out = append(out, r.op)
		}
	}
	return out
}

// A peer's file applied just before the site stopped, never indexed, and
// deleted while the site was down: the peer's receiver checkpoint covers
// the segment that wrote it, which proves the tree held it, so the source
// ships its removal when it starts. A file whose segment the checkpoint
// does not cover (its apply may have failed after the ledger entry) is
// not shipped as removed, nor is a file of a directory the peer removed
// since.
func TestDirSyncShipsRemovalWhileDownOfAppliedFile(t *testing.T) {
	root, state, spoolDir := t.TempDir(), t.TempDir(), t.TempDir()
	l, err := dirsync.Open(state, "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	f := dirsync.State{Kind: dirsync.KindFile, Mode: 0o644, Mtime: 1e18, Size: 7}
	dir := dirsync.State{Kind: dirsync.KindDir, Mode: 0o755, Mtime: 1e18}
	decideApplied(t, l, "a", 1, batch.SegmentName(1, 1, 1), "x", f, 10)
	decideApplied(t, l, "a", 2, batch.SegmentName(1, 2, 2), "d", dir, 11)
	decideApplied(t, l, "a", 3, batch.SegmentName(1, 3, 3), "d/z", f, 12)
	decideApplied(t, l, "a", 4, batch.SegmentName(1, 4, 4), "d", dirsync.Absent, 13) // a removed d and d/z
	decideApplied(t, l, "c", 1, batch.SegmentName(1, 1, 1), "y", f, 10)
	// The site stops; x, d/z and y are not in the tree now (d/z went with
	// a's rmdir, x and y were removed here while the site was down, or
	// never made it). At the start, a's checkpoint is at seq 4, c's at 0.
	l.Close()
	if l, err = dirsync.Open(state, "b", quiet); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.SetApplied("a", 4, "")
	l.SetApplied("c", 0, "")
	sink := &dirSink{}
	startDirSource(t, &Dir{Root: root, SpoolDir: spoolDir, Ledger: l}, sink)
	deadline := time.Now().Add(10 * time.Second)
	for len(recordsOf(sink.views(), "x")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the removal of a's x, applied before the stop and deleted while down, was not shipped: %v", sink.views())
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if got := recordsOf(sink.views(), "x"); len(got) != 2 || got[1] != string(dirtree.OpDel) {
		t.Fatalf("records of x: %v; want version, del", got)
	}
	for _, k := range []string{"y", "d", "d/z"} {
		if got := recordsOf(sink.views(), k); len(got) > 0 {
			t.Errorf("records of %s: %v; want none (no proof it was in the tree, or removed by the peer)", k, got)
		}
	}
}

// A peer's file applied just before the site stopped, in a segment
// applied to its end whose checkpoint was not written (the kill came in
// between), and deleted while the site was down: the ledger's mark of the
// segment's end proves the tree held it, so the source ships its removal
// when it starts, and does not wait for the receiver to apply the segment
// again (which keeps the local delete).
func TestDirSyncShipsRemovalWhileDownOfFileAppliedBeforeCheckpoint(t *testing.T) {
	root, state, spoolDir := t.TempDir(), t.TempDir(), t.TempDir()
	l, err := dirsync.Open(state, "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	f := dirsync.State{Kind: dirsync.KindFile, Mode: 0o644, Mtime: 1e18, Size: 7}
	decideApplied(t, l, "a", 1, batch.SegmentName(1, 1, 1), "x", f, 10)
	decideApplied(t, l, "a", 2, batch.SegmentName(1, 2, 2), "y", f, 11)
	l.Lock()
	if err := l.SetAppliedToEnd("a", batch.SegmentName(1, 2, 2), ""); err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	l.Close() // kill -9: the line was handed to the kernel, not fsynced
	if l, err = dirsync.Open(state, "b", quiet); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.SetApplied("a", 1, "") // the checkpoint covers seq 1 only
	sink := &dirSink{}
	startDirSource(t, &Dir{Root: root, SpoolDir: spoolDir, Ledger: l}, sink)
	deadline := time.Now().Add(10 * time.Second)
	for len(recordsOf(sink.views(), "y")) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the removal of a's y, applied before the stop (not checkpointed) and deleted while down, was not shipped: %v", sink.views())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := recordsOf(sink.views(), "y"); len(got) != 2 || got[1] != string(dirtree.OpDel) {
		t.Fatalf("records of y: %v; want version, del", got)
	}
}

// After a kill -9 while the applier was applying a peer's segment (decided,
// ledger synced, the tree half done), the source's start meets a path of
// that segment that the tree still shows as before: it is not a local
// change, and it is not shipped; the receiver applies the segment again,
// and only then is a change of the path this site's.
func TestDirSyncHalfAppliedSegmentIsNotShipped(t *testing.T) {
	root, state, spoolDir := t.TempDir(), t.TempDir(), t.TempDir()
	l, err := dirsync.Open(state, "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := filepath.Join(root, "m")
	dirWrite(t, p, "a's first\n", 0o644)
	decideApplied(t, l, "a", 1, batch.SegmentName(1, 1, 1), "m", statState(t, p), 10)
	// a's second version of m: decided and synced, never written (the
	// kill came first). The checkpoint is at seq 1; the source's index is
	// new (it never indexed m).
	second := dirsync.State{Kind: dirsync.KindFile, Mode: 0o644, Mtime: 2e18, Size: 11}
	decideApplied(t, l, "a", 2, batch.SegmentName(1, 2, 2), "m", second, 20)
	l.SetApplied("a", 1, "")
	sink := &dirSink{}
	startDirSource(t, &Dir{Root: root, SpoolDir: spoolDir, Ledger: l}, sink)
	time.Sleep(800 * time.Millisecond)
	if got := recordsOf(sink.views(), "m"); len(got) > 0 {
		t.Fatalf("m, half applied, was shipped as this site's change: %v", got)
	}
	// The receiver applies the segment again.
	l.Lock()
	dirWrite(t, p, "a's second\n", 0o644)
	if err := os.Chtimes(p, time.Unix(0, 2e18), time.Unix(0, 2e18)); err != nil {
		t.Fatal(err)
	}
	l.DoneApplying("a")
	l.Unlock()
	time.Sleep(500 * time.Millisecond)
	if got := recordsOf(sink.views(), "m"); len(got) > 0 {
		t.Fatalf("m, applied again, was shipped back: %v", got)
	}
	dirWrite(t, p, "changed here\n", 0o644)
	deadline := time.Now().Add(10 * time.Second)
	for !shippedFile(sink.views(), "m") {
		if time.Now().After(deadline) {
			t.Fatalf("a local change of m after the segment was applied again was not shipped: %v", sink.views())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A peer's directory with a file in it, both applied here, then the peer's
// delete of the directory applied before the source looked at either: the
// file went with its directory, a peer's change: the source ships nothing
// for it.
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

// A peer's delete of a directory, decided and made durable, and the site
// killed before it applied it: the ledger holds everything below the
// directory as deleted (with the delete) while the tree still holds it
// until the applier applies the segment again. The source, restarted
// with an index that lacks those files (the applier's puts are recorded
// in the index in memory only, until its next snapshot), must not take
// them for new files of this site: it would ship them back with versions
// that supersede the peer's delete, and the peer would bring the
// directory back while this site then removes it (TestSyncLinkChurnKill9's
// divergence: the directory only on the deleter).
func TestDirSyncHoldsBackPathsBelowAPendingDirectoryDelete(t *testing.T) {
	root, state, spoolDir := t.TempDir(), t.TempDir(), t.TempDir()
	dirWrite(t, filepath.Join(root, "d/f"), "from a\n", 0o644)
	dirWrite(t, filepath.Join(root, "d/sub/g"), "from a too\n", 0o644)
	l, err := dirsync.Open(state, "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{"d", "d/f", "d/sub", "d/sub/g"}
	for i, key := range keys { // a's, applied here in a's segment of seqs 1-4
		decideApplied(t, l, "a", uint64(i+1), batch.SegmentName(1, uint64(i+1), uint64(i+1)), key, statState(t, filepath.Join(root, key)), int64(10+i))
	}
	// a's next segment deletes d: decided, made durable, not applied.
	l.Lock()
	d, err := l.Decide(dirsync.Incoming{Peer: "a", Seq: 6, Key: "d", Ver: dirsync.Version{Origin: "a", VV: dirsync.VV{"a": 30}, Seen: dirsync.VV{"a": 30}},
		State: dirsync.Absent, Disk: statState(t, filepath.Join(root, "d")), CheckDisk: true,
		Below: func(fn func(string, dirsync.State)) {
			for _, p := range keys[1:] {
				fn(p, statState(t, filepath.Join(root, p)))
			}
		},
		DecidedBefore: func(string) bool { return false }})
	if err == nil {
		err = l.SetDecided("a", batch.SegmentName(1, 5, 6), []dirsync.Decision{{Act: dirsync.ActSkip}, d})
	}
	if err == nil {
		err = l.Sync()
	}
	l.Unlock()
	if err != nil || d.Act != dirsync.ActApply {
		t.Fatalf("a's delete of d: %+v, %v; want it applied", d, err)
	}
	l.Close()

	// The site starts again: a's checkpoint covers seq 4.
	l, err = dirsync.Open(state, "b", quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.SetApplied("a", 4, "")
	sink := &dirSink{}
	src := startDirSource(t, &Dir{Root: root, SpoolDir: spoolDir, Ledger: l}, sink)
	waitFor(t, "the first scan", func() bool { return src.Status().Baseline })
	// The applier applies the segment again: d goes.
	l.Lock()
	if err := os.RemoveAll(filepath.Join(root, "d")); err != nil {
		t.Fatal(err)
	}
	l.DoneApplying("a")
	l.Unlock()
	time.Sleep(500 * time.Millisecond) // the source sees d go
	for _, r := range sink.views() {
		if r.op != dirtree.OpVersion && r.key != "." {
			t.Errorf("shipped %s %s: a's paths below its pending delete of d are not this site's changes", r.op, r.key)
		}
	}
}
