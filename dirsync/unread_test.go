package dirsync

import "testing"

// A delete of a file its site listed and never read (LocalUnread) beats a
// peer's first-scan version of the path only if that version has the very
// stat it listed (a copy of the same file, times kept); a version with
// another mtime, size or mode is a change the delete never saw, and wins
// (modify beats delete). Both sites decide alike, in either order.
func TestUnreadDeleteRanksByListedStat(t *testing.T) {
	listed := State{Kind: KindFile, Mode: 0o600, Mtime: 1_700_000_000_123456789, Size: 26}
	for _, c := range []struct {
		name       string
		peer       State
		deleteWins bool
	}{
		{"same stat", listed.WithHash([]byte("h")), true},
		{"other mtime", State{Kind: KindFile, Mode: 0o600, Mtime: listed.Mtime + 1, Size: 26, Hash: []byte("h")}, false},
		{"other size", State{Kind: KindFile, Mode: 0o600, Mtime: listed.Mtime, Size: 27, Hash: []byte("h")}, false},
		{"other mode", State{Kind: KindFile, Mode: 0o644, Mtime: listed.Mtime, Size: 26, Hash: []byte("h")}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			la, lb := open(t, t.TempDir(), "a"), open(t, t.TempDir(), "b")
			defer la.Close()
			defer lb.Close()
			raw, ship, err := la.LocalUnread("p", listed)
			if err != nil || !ship {
				t.Fatalf("LocalUnread: %v, %v", ship, err)
			}
			del, _ := ParseVersion(raw)
			raw, _, err = lb.Local("p", c.peer)
			if err != nil {
				t.Fatal(err)
			}
			put, _ := ParseVersion(raw)
			atA, err := la.Decide(Incoming{Peer: "b", Seq: 1, Key: "p", Ver: put, State: c.peer, Disk: Absent, CheckDisk: true})
			if err != nil {
				t.Fatal(err)
			}
			atB, err := lb.Decide(Incoming{Peer: "a", Seq: 1, Key: "p", Ver: del, State: Absent, Disk: c.peer, CheckDisk: true})
			if err != nil {
				t.Fatal(err)
			}
			ea, _ := la.Get("p")
			eb, _ := lb.Get("p")
			if (ea.State.Kind == KindAbsent) != c.deleteWins || (eb.State.Kind == KindAbsent) != c.deleteWins {
				t.Fatalf("p at a: %v (%s), at b: %v (%s); want deleted on both: %v", ea.State.Kind, atA.Act, eb.State.Kind, atB.Act, c.deleteWins)
			}
		})
	}
	// A path the ledger knows is Local's: no unread base.
	l := open(t, t.TempDir(), "a")
	defer l.Close()
	if _, _, err := l.Local("q", listed.WithHash([]byte("h"))); err != nil {
		t.Fatal(err)
	}
	raw, _, err := l.LocalUnread("q", listed)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := ParseVersion(raw); v.Base == nil || v.Base.Unread || len(v.Base.Hash) == 0 {
		t.Fatalf("delete of a known path: base %+v; want the known state", v.Base)
	}
}
