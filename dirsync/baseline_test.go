package dirsync

import (
	"reflect"
	"testing"
)

// A sync baseline ships this site's versions again: while SetBaseline is
// on, Local ships a version of this site that a rejoin read back from the
// store (Stored), with its own version vector (Foreign no longer hides
// it), and OwnDeletes and Tombstone name this site's deletes (not a
// peer's), with whether a directory was deleted.
func TestBaselineShipsOwnStoredVersionsAndTombstones(t *testing.T) {
	l := open(t, t.TempDir(), "b")
	defer l.Close()
	st := file(100, 3, "h1")
	l.Lock()
	d, err := l.Decide(Incoming{Peer: "b", Seq: 1, Key: "f", Ver: Version{Origin: "b", VV: VV{"b": 50}}, State: st, Disk: Absent, CheckDisk: true, Rebuild: true})
	if err != nil || d.Act != ActApply {
		t.Fatalf("Decide of b's own version read back = %+v, %v; want apply", d, err)
	}
	if _, ship, err := l.Local("f", st); err != nil || ship {
		t.Fatalf("Local of a stored own version outside a baseline: ship %v, %v; want nothing shipped", ship, err)
	}
	if foreign, _ := l.Foreign("f", st); !foreign {
		t.Fatal("a stored own version is not foreign outside a baseline: the source would ship it")
	}
	for _, c := range []struct {
		p  string
		st State
	}{{"g", file(1, 1, "g")}, {"dir", State{Kind: KindDir, Mode: 0o755, Mtime: 1}}} {
		if _, _, err := l.Local(c.p, c.st); err != nil {
			t.Fatal(err)
		}
		if _, _, err := l.Local(c.p, Absent); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := l.Decide(Incoming{Peer: "a", Seq: 1, Key: "h", Ver: Version{Origin: "a", VV: VV{"a": 60}}, State: Absent, Disk: Absent, CheckDisk: true}); err != nil || d.Act != ActApply {
		t.Fatalf("Decide of a's delete = %+v, %v; want apply", d, err)
	}
	l.Unlock()

	l.SetBaseline(true)
	l.Lock()
	foreign, _ := l.Foreign("f", st)
	ver, ship, err := l.Local("f", st)
	l.Unlock()
	if foreign {
		t.Fatal("a stored own version is foreign in a baseline: the source would not ship it")
	}
	if err != nil || !ship {
		t.Fatalf("Local of a stored own version in a baseline: ship %v, %v; want it shipped", ship, err)
	}
	if v, err := ParseVersion(ver); err != nil || v.Origin != "b" || !reflect.DeepEqual(v.VV, VV{"b": 50}) {
		t.Fatalf("the version shipped again: %+v, %v; want b's own, vv b:50", v, err)
	}
	if got := l.OwnDeletes(); !reflect.DeepEqual(got, []string{"dir", "g"}) {
		t.Fatalf("OwnDeletes = %q; want [dir g] (not a's delete of h)", got)
	}
	l.Lock()
	defer l.Unlock()
	for p, want := range map[string][2]bool{"dir": {true, true}, "g": {true, false}, "h": {false, false}, "f": {false, false}, "none": {false, false}} {
		if ok, dir := l.Tombstone(p); ok != want[0] || dir != want[1] {
			t.Errorf("Tombstone(%s) = %v, %v; want %v, %v", p, ok, dir, want[0], want[1])
		}
	}
}
