package dirsync

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// powerLossImage copies the ledger of dir as a power loss leaves it: the
// log file holds only what its last fsync made durable (durable bytes).
func powerLossImage(t *testing.T, dir string, durable int64) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, LedgerFile))
	if err != nil {
		t.Fatal(err)
	}
	img := t.TempDir()
	if err := os.WriteFile(filepath.Join(img, LedgerFile), raw[:durable], 0o644); err != nil {
		t.Fatal(err)
	}
	return img
}

// The ledger's mark that a peer's segment was applied to its end is
// durable when SetAppliedToEnd returns: after a power loss right then (the
// receiver's checkpoint not written), the site knows the tree held the
// segment, so a path of it changed here while the site was down is a
// local change that ships, not a half-applied path held back for the
// applier (which would overwrite it).
func TestAppliedToEndMarkSurvivesPowerLoss(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, "b")
	var durable int64
	l.fsync = func(f *os.File) error {
		fi, err := f.Stat()
		if err == nil {
			err = f.Sync()
		}
		if err == nil {
			durable = fi.Size()
		}
		return err
	}
	seg := batch.SegmentName(1, 2, 2)
	f := file(100, 7, "h1")
	l.Lock()
	d, err := l.Decide(Incoming{Peer: "a", Seq: 2, Key: "m", Ver: Version{Origin: "a", VV: VV{"a": 10}}, State: f, Disk: Absent})
	if err == nil {
		err = l.SetDecided("a", seg, []Decision{d})
	}
	if err == nil {
		err = l.Sync()
	}
	if err != nil || d.Act != ActApply {
		t.Fatalf("m from a: %+v, %v", d, err)
	}
	// The applier wrote m and fsynced the tree, then marks the end.
	if err := l.SetAppliedToEnd("a", seg, ""); err != nil {
		t.Fatal(err)
	}
	l.Unlock()

	img := powerLossImage(t, dir, durable) // before l.Close, which would sync
	l.Close()
	l2 := open(t, img, "b")
	defer l2.Close()
	l2.SetApplied("a", 1, "") // the checkpoint covers seq 1 only
	l2.Lock()
	defer l2.Unlock()
	if !l2.AppliedToEnd("a", seg) {
		t.Fatalf("after a power loss the mark of segment %s's end is gone: the segment counts as half applied", seg)
	}
	// m was rewritten here while the site was down: a local change.
	local := file(200, 9, "h2")
	if _, ship, err := l2.Local("m", local); err != nil || !ship {
		t.Fatalf("a local rewrite of m after the power loss: ship=%v, %v; want shipped (not held back as half applied)", ship, err)
	}
}

// A conflict the ledger lists is durable once the Sync that listed it
// returns: the decision line that carries it too is only the peer's last,
// so after the peer's next segment is decided a power loss must not take
// the conflict from conflicts.ndjson.
func TestListedConflictSurvivesPowerLoss(t *testing.T) {
	dir := t.TempDir()
	la := open(t, dir, "a")
	durable := map[string]int64{}
	la.fsync = func(f *os.File) error {
		fi, err := f.Stat()
		if err == nil {
			err = f.Sync()
		}
		if err == nil {
			durable[filepath.Base(f.Name())] = fi.Size()
		}
		return err
	}
	la.Lock()
	defer la.Unlock()
	verB := conflictOnF(t, la)
	// b's next segment, no conflict: its decision line replaces the first.
	d, err := la.Decide(Incoming{Peer: "b", Seq: 2, Key: "g", Ver: Version{Origin: "b", VV: VV{"b": verB.Time() + 1}}, State: file(30, 1, "G"), Disk: Absent, CheckDisk: true})
	if err == nil {
		err = la.SetDecided("b", batch.SegmentName(2, 2, 1), []Decision{d})
	}
	if err == nil {
		err = la.Sync()
	}
	if err != nil {
		t.Fatal(err)
	}

	img := powerLossImage(t, dir, durable[LedgerFile])
	raw, err := os.ReadFile(filepath.Join(dir, ConflictsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(img, ConflictsFile), raw[:durable[ConflictsFile]], 0o644); err != nil {
		t.Fatal(err)
	}
	l2 := open(t, img, "a")
	defer l2.Close()
	if cs, err := ReadConflicts(img); err != nil || len(cs) != 1 || cs[0].Path != "f" || l2.Conflicts() != 1 {
		t.Fatalf("after a power loss: conflicts %+v, %v (counted %d); want f's, listed before the loss", cs, err, l2.Conflicts())
	}
}

// A power loss in the middle of appending a conflict leaves a torn last
// line in conflicts.ndjson; Open lists the conflict again from the
// segment's decision line, on a line of its own (appended to the torn one
// it would be unreadable).
func TestConflictListedAfterTornAppend(t *testing.T) {
	dir := t.TempDir()
	la := open(t, dir, "a")
	la.Lock()
	conflictOnF(t, la)
	la.Unlock()
	la.Close()
	want, err := ReadConflicts(dir)
	if err != nil || len(want) != 1 {
		t.Fatalf("conflicts %+v, %v; want one", want, err)
	}
	path := filepath.Join(dir, ConflictsFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw[:len(raw)/2], 0o644); err != nil { // torn
		t.Fatal(err)
	}
	l2 := open(t, dir, "a")
	defer l2.Close()
	if got, err := ReadConflicts(dir); err != nil || len(got) != 1 || got[0] != want[0] {
		t.Fatalf("after a torn append and a restart: conflicts %+v, %v; want %+v", got, err, want)
	}
}

// conflictOnF has la (site a; call it under la's lock) write f, then meet
// b's concurrent version of f in b's segment of seq 1, and makes the
// decision durable: a conflict, a's version kept as a copy. It returns
// b's version.
func conflictOnF(t *testing.T, la *Ledger) Version {
	t.Helper()
	lb := open(t, t.TempDir(), "b")
	defer lb.Close()
	if _, _, err := la.Local("f", file(10, 1, "A")); err != nil {
		t.Fatal(err)
	}
	vb, _, _ := lb.Local("f", file(20, 1, "B"))
	verB, _ := ParseVersion(vb)
	d, err := la.Decide(Incoming{Peer: "b", Seq: 1, Key: "f", Ver: verB, State: file(20, 1, "B"), Disk: file(10, 1, "A"), CheckDisk: true})
	if err == nil {
		err = la.SetDecided("b", batch.SegmentName(1, 1, 1), []Decision{d})
	}
	if err == nil {
		err = la.Sync()
	}
	if err != nil || d.Act != ActRenameApply {
		t.Fatalf("f from b: %+v, %v; want a conflict, a's version kept as a copy", d, err)
	}
	return verB
}

// conflicts.ndjson: a torn last line (no newline: a crash mid-append) is
// skipped; a damaged line anywhere else is an error naming the file and
// the line, not a conflict silently left out of the list.
func TestReadConflictsRefusesADamagedLine(t *testing.T) {
	dir := t.TempDir()
	la := open(t, dir, "a")
	la.Lock()
	conflictOnF(t, la)
	la.Unlock()
	la.Close()
	path := filepath.Join(dir, ConflictsFile)
	good, err := os.ReadFile(path)
	if err != nil || bytes.Count(good, []byte{'\n'}) != 1 {
		t.Fatalf("conflicts file %q, %v; want one line", good, err)
	}
	for _, c := range []struct {
		name, body string
		err        string // "" for none
		n          int
	}{
		{"torn last line", string(good) + string(good[:len(good)/2]), "", 1},
		{"damaged middle line", string(good) + "{\"at\":\n" + string(good), "line 2 is not a conflict", 0},
		{"not JSON", "garbage\n" + string(good), "line 1 is not a conflict", 0},
		{"an object that is no conflict", string(good) + "{}\n", "line 2 is not a conflict", 0},
	} {
		if err := os.WriteFile(path, []byte(c.body), 0o644); err != nil {
			t.Fatal(err)
		}
		cs, err := ReadConflicts(dir)
		switch {
		case c.err == "" && (err != nil || len(cs) != c.n):
			t.Errorf("%s: %d conflicts, %v; want %d", c.name, len(cs), err, c.n)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), path)):
			t.Errorf("%s: %v; want an error naming %s and saying %q", c.name, err, path, c.err)
		}
	}
}
