//go:build linux

package apply_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirsync"
	"github.com/ferry-dr/ferry/dirtree"
	"github.com/ferry-dr/ferry/receiver/apply"
)

// peerRecs builds a peer's sync stream: every change is a version record
// of the peer's (its stamps rising) followed by the change.
type peerRecs struct {
	dirRecs
	origin string
	stamp  int64
}

func (p *peerRecs) ver(key string) batch.Record {
	p.stamp++
	v := dirsync.Version{Origin: p.origin, VV: dirsync.VV{p.origin: p.stamp}, Seen: dirsync.VV{p.origin: p.stamp}}
	return p.rec(dirtree.OpVersion, key, v.Encode())
}

// change is each of rs after its version record.
func (p *peerRecs) change(rs ...batch.Record) []batch.Record {
	var out []batch.Record
	for _, r := range rs {
		v := p.ver(string(r.Key))
		// The version record takes the change's seq; renumber so the
		// change comes after it.
		r.Seq = p.seq + 1
		p.seq++
		out = append(out, v, r)
	}
	return out
}

func newPeerApplier(t *testing.T, root, state, peer string) (*apply.Dir, *dirsync.Ledger) {
	t.Helper()
	l, err := dirsync.Open(state, "b", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	a := &apply.Dir{Root: root, Ledger: l, Peer: peer}
	if err := a.Restore(nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); l.Close() })
	return a, l
}

// A segment of a peer's stream applied again, after an Apply that stopped
// midway (a retry, or a kill -9 and restart), does what it was decided to
// do the first time; deciding it afresh meets the tree half applied.
//
//   - The segment creates d/g and deletes it; the first Apply stops after
//     the put, so the tree holds d/g while the ledger says the peer deleted
//     it. Decided afresh, d/g is a local change of this site: the peer's
//     delete of it is dropped, d/g is shipped back as this site's, and the
//     peer's later delete of d is undone as "changed below" (the
//     TestSyncChurnKill9 flake seen once).
//   - The segment creates d/h and rewrites it; the first Apply stops before
//     the put, so d/h is absent while the ledger holds the rewrite. Decided
//     afresh, the absence is a local delete of this site, which beats both
//     puts: d/h is never written here, and the source, seeing no change on
//     disk, never ships the delete either, so the trees differ for good
//     (the TestSyncChurnKill9 failure under load: "only in a: a-dir2/m29").
func TestDirPeerSegmentAppliedAgainKeepsDecisions(t *testing.T) {
	for _, restart := range []bool{false, true} {
		for stopAfter := 0; stopAfter <= 4; stopAfter++ {
			base := t.TempDir()
			root, state := filepath.Join(base, "tree"), filepath.Join(base, "state")
			a, l := newPeerApplier(t, root, state, "a")
			p := &peerRecs{origin: "a", stamp: 100}
			seg1 := p.change(p.mkdir("d", 0o755), p.put("d/f", 0o644, "f"))
			seg2 := p.change(
				p.put("d/g", 0o644, "g"),
				p.del("d/g"),
				p.put("e/h", 0o644, "h1"),
				p.put("e/h", 0o600, "h2, rewritten"),
			)
			seg3 := p.change(p.del("d/f"), p.rmdir("d"))
			dirApply(t, a, seg1...)

			err := a.Apply(&dirErrAfter{Context: context.Background(), n: stopAfter}, dirMeta(seg2), batch.RecordsOf(seg2))
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Fatalf("stop after %d: Apply: %v", stopAfter, err)
			}
			if restart { // kill -9: a new applier and ledger from what is on disk
				a.Close()
				l.Close()
				a, l = newPeerApplier(t, root, state, "a")
			}
			var reshipped []string
			l.OnReship = func(p string) { reshipped = append(reshipped, p) }
			dirApply(t, a, seg2...)
			dirApply(t, a, seg3...)

			what := fmt.Sprintf("restart %v, stop after %d records", restart, stopAfter)
			if _, err := os.Lstat(filepath.Join(root, "d")); !os.IsNotExist(err) {
				t.Errorf("%s: d is still in the tree (%v); the peer deleted it", what, err)
			}
			if b, err := os.ReadFile(filepath.Join(root, "e/h")); string(b) != "h2, rewritten" {
				t.Errorf("%s: e/h holds %q (%v); want the peer's rewrite", what, b, err)
			}
			if len(reshipped) > 0 {
				t.Errorf("%s: %q kept against the peer's delete and shipped again", what, reshipped)
			}
			if u := l.Unshipped(); len(u) > 0 {
				t.Errorf("%s: the ledger gives this site versions of %q, which only the peer changed", what, u)
			}
		}
	}
}

// A tree copied back from the peer (cp -a) and started with a new state:
// the ledger knows nothing, and the peer's stream, read from its start,
// brings its older versions of paths the copy holds in a newer form. The
// peer's first segment makes the directory and then the file in it: the
// file's record comes after its directory was decided in the same
// segment, and must still meet what the tree holds as this site's change
// (a conflict the later version wins, here the copy), not overwrite it:
// the peer, which holds the newer content, would never get it back, and
// the two trees would differ for good.
func TestDirPeerCopiedTreeMeetsPeerUnderDirDecidedInSegment(t *testing.T) {
	base := t.TempDir()
	root, state := filepath.Join(base, "tree"), filepath.Join(base, "state")
	const newer = "the copy's newer content, rewritten after the peer's"
	if err := os.MkdirAll(filepath.Join(root, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "d/f"), []byte(newer), 0o644); err != nil {
		t.Fatal(err)
	}
	a, l := newPeerApplier(t, root, state, "a")
	p := &peerRecs{origin: "a", stamp: 100} // stamped long before the copy's versions
	seg := p.change(
		p.mkdir("d", 0o755),
		p.put("d/f", 0o644, "a's older version"),
		p.put("d/g", 0o644, "only at a"),
	)
	dirApply(t, a, seg...)

	if b, err := os.ReadFile(filepath.Join(root, "d/f")); string(b) != newer {
		t.Fatalf("d/f holds %q (%v); want the copy's newer content: the peer's older version overwrote it", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "d/g")); string(b) != "only at a" {
		t.Fatalf("d/g holds %q (%v); want the peer's file", b, err)
	}
	e, _ := l.Get("d/f")
	if e.Origin != "b" {
		t.Fatalf("d/f's entry %+v; want this site's version (b), which it ships to the peer", e)
	}
	if u := l.Unshipped(); !slices.Contains(u, "d/f") {
		t.Fatalf("unshipped versions %q; want d/f among them", u)
	}
	if n := l.Conflicts(); n != 1 {
		t.Fatalf("%d conflicts recorded; want 1 (d/f)", n)
	}
}

// The reason a path under a directory decided earlier in the segment
// cannot simply be checked against the ledger: the peer deleted the
// directory and made it again with a new file of the same name, all in one
// segment. When the file's record is decided, the ledger already says the
// old file went with the directory, while the tree still holds it. That is
// the state before the segment, not a local change: the peer's new file is
// applied, nothing is shipped back.
func TestDirPeerDirRemadeInOneSegment(t *testing.T) {
	base := t.TempDir()
	root, state := filepath.Join(base, "tree"), filepath.Join(base, "state")
	a, l := newPeerApplier(t, root, state, "a")
	p := &peerRecs{origin: "a", stamp: 100}
	seg1 := p.change(p.mkdir("d", 0o755), p.put("d/f", 0o644, "f1"))
	dirApply(t, a, seg1...)
	seg2 := p.change(p.rmdir("d"), p.mkdir("d", 0o700), p.put("d/f", 0o600, "f2, made again"))
	var reshipped []string
	l.OnReship = func(p string) { reshipped = append(reshipped, p) }
	dirApply(t, a, seg2...)
	if b, err := os.ReadFile(filepath.Join(root, "d/f")); string(b) != "f2, made again" {
		t.Fatalf("d/f holds %q (%v); want the peer's new file", b, err)
	}
	if len(reshipped) > 0 {
		t.Fatalf("%q kept against the peer's change and shipped again", reshipped)
	}
	if u := l.Unshipped(); len(u) > 0 {
		t.Fatalf("the ledger gives this site versions of %q, which only the peer changed", u)
	}
	if n := l.Conflicts(); n != 0 {
		t.Fatalf("%d conflicts recorded; want none", n)
	}
}

// A kill -9 after a peer's segment was applied to its end and before the
// receiver's checkpoint covered it: the receiver applies the segment again
// at the start. What was changed here while the site was down, on paths
// that segment wrote, is this site's change made after the peer's, and
// stays: a file deleted stays deleted, a file rewritten keeps its content
// (and the source ships both). A path left as the segment made it is
// applied again as before. A segment not applied to its end (the kill came
// midway) is applied again whole (TestDirPeerSegmentAppliedAgainKeepsDecisions).
func TestDirPeerSegmentAppliedToEndKeepsLocalChangesOnReapply(t *testing.T) {
	base := t.TempDir()
	root, state := filepath.Join(base, "tree"), filepath.Join(base, "state")
	a, l := newPeerApplier(t, root, state, "a")
	p := &peerRecs{origin: "a", stamp: 100}
	seg1 := p.change(p.mkdir("d", 0o755), p.put("d/f", 0o644, "f"))
	dirApply(t, a, seg1...)
	checkpoint := dirState(t, a) // the receiver's checkpoint after seg1
	seg2 := p.change(
		p.put("d/g", 0o644, "g, deleted here while down"),
		p.put("d/h", 0o644, "h, rewritten here while down"),
		p.mkdir("e", 0o755),
		p.put("e/k", 0o644, "k, left alone"),
	)
	seg2 = append(seg2, p.ver("e/big"))
	seg2 = append(seg2, p.chunks("e/big", 0o644, "a chunked file, deleted here while down", 8)...)
	dirApply(t, a, seg2...) // applied to its end; the kill comes before the checkpoint
	a.Close()
	l.Close()

	if err := os.Remove(filepath.Join(root, "d/g")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(root, "e/big")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "d/h"), []byte("changed here"), 0o644); err != nil {
		t.Fatal(err)
	}

	l, err := dirsync.Open(state, "b", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a = &apply.Dir{Root: root, Ledger: l, Peer: "a"}
	if err := a.Restore(checkpoint); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	l.SetApplied("a", seg1[len(seg1)-1].Seq, a.Continuing())
	dirApply(t, a, seg2...) // the receiver applies it again

	for _, k := range []string{"d/g", "e/big"} {
		if _, err := os.Lstat(filepath.Join(root, k)); !os.IsNotExist(err) {
			t.Errorf("%s, deleted here while the site was down, is back (%v)", k, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(root, "d/h")); string(b) != "changed here" {
		t.Errorf("d/h holds %q (%v); want the local rewrite", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "e/k")); string(b) != "k, left alone" {
		t.Errorf("e/k holds %q (%v); want the peer's file", b, err)
	}
	// The source ships the local changes: the deletes (gone from the tree
	// while the ledger holds the peer's files, which the tree held) and
	// the rewrite; e/k is the peer's.
	inTree := l.InTree()
	l.Lock()
	defer l.Unlock()
	for _, k := range []string{"d/g", "e/big"} {
		if !slices.Contains(inTree, k) {
			t.Errorf("InTree = %q; want %s, so that the source ships its removal", inTree, k)
		}
		if _, ship, err := l.Local(k, dirsync.Absent); !ship || err != nil {
			t.Errorf("the removal of %s would not ship (%v)", k, err)
		}
	}
	fi, err := os.Stat(filepath.Join(root, "d/h"))
	if err != nil {
		t.Fatal(err)
	}
	st := dirsync.State{Kind: dirsync.KindFile, Mode: 0o644, Mtime: fi.ModTime().UnixNano(), Size: fi.Size()}
	if _, ship, err := l.Local("d/h", st); !ship || err != nil {
		t.Errorf("the local rewrite of d/h would not ship (%v)", err)
	}
	fi, _ = os.Stat(filepath.Join(root, "e/k"))
	st = dirsync.State{Kind: dirsync.KindFile, Mode: 0o644, Mtime: fi.ModTime().UnixNano(), Size: fi.Size()}
	if _, ship, _ := l.Local("e/k", st); ship {
		t.Error("e/k, the peer's file left alone, would ship back")
	}
}
