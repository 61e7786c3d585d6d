package dirsync

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func file(mtime int64, size int64, hash string) State {
	return State{Kind: KindFile, Mode: 0o644, Mtime: mtime, Size: size, Hash: []byte(hash)}
}

func TestWinsOrder(t *testing.T) {
	f := file(1, 1, "x")
	cases := []struct {
		name string
		at   int64
		as   string
		ast  State
		bt   int64
		bs   string
		bst  State
		want bool
	}{
		{"later stamp wins", 20, "a", f, 10, "b", f, true},
		{"earlier stamp loses", 10, "z", f, 20, "a", f, false},
		{"tie: greater site wins", 10, "b", f, 10, "a", f, true},
		{"tie: smaller site loses", 10, "a", f, 10, "b", f, false},
		{"modify beats a later delete", 10, "a", f, 20, "b", Absent, true},
		{"delete loses to an earlier modify", 20, "b", Absent, 10, "a", f, false},
	}
	for _, c := range cases {
		if got := Wins(c.at, c.as, c.ast, c.bt, c.bs, c.bst); got != c.want {
			t.Errorf("%s: Wins = %v, want %v", c.name, got, c.want)
		}
		// A total order: exactly one of two different changes wins.
		if c.at != c.bt || c.as != c.bs {
			if Wins(c.at, c.as, c.ast, c.bt, c.bs, c.bst) == Wins(c.bt, c.bs, c.bst, c.at, c.as, c.ast) {
				t.Errorf("%s: both or neither win", c.name)
			}
		}
	}
	if a, b := ConflictName("x/f", "a", 1e18), ConflictName("x/f", "a", 1e18); a != b || !strings.HasPrefix(a, "x/f.ferry-conflict-a-") {
		t.Fatalf("ConflictName: %q, %q", a, b)
	}
}

func TestVV(t *testing.T) {
	v, w := VV{"a": 1}, VV{"a": 1, "b": 2}
	if !v.LE(w) || w.LE(v) {
		t.Fatal("LE wrong")
	}
	if m := Merge(VV{"a": 3}, w); m["a"] != 3 || m["b"] != 2 {
		t.Fatalf("Merge = %v", m)
	}
	ver := Version{Origin: "a", VV: VV{"a": 5, "b": 2}}
	got, err := ParseVersion(ver.Encode())
	if err != nil || got.Time() != 5 || got.Origin != "a" {
		t.Fatalf("ParseVersion = %+v, %v", got, err)
	}
	if _, err := ParseVersion([]byte(`{"v":2,"origin":"a","vv":{"a":1}}`)); err == nil || !strings.Contains(err.Error(), "upgrade ferry") {
		t.Fatalf("a newer format: %v", err)
	}
}

// A version record that names the version its change replaced only in
// part (a site without a stamp, a stamp without a site, that version's
// base without the version) is refused, naming the field: read as it
// is, it would rank a delete differently from the site that wrote it.
func TestParseVersionRefusesAHalfSetBase(t *testing.T) {
	whole := Version{Origin: "a", VV: VV{"a": 5}, Base: &State{Kind: KindFile, Size: 1}, BaseSite: "b", BaseTime: 3, BaseBase: &State{Kind: KindAbsent}}
	if _, err := ParseVersion(whole.Encode()); err != nil {
		t.Fatalf("a whole base: %v", err)
	}
	for _, c := range []struct {
		json, field string
	}{
		{`{"v":1,"origin":"a","vv":{"a":5},"base_site":"b"}`, "base_site without base_time"},
		{`{"v":1,"origin":"a","vv":{"a":5},"base_time":3}`, "base_time without base_site"},
		{`{"v":1,"origin":"a","vv":{"a":5},"base_base":{"k":"f"}}`, "base_base without base_site"},
		{`{"v":1,"origin":"a","vv":{"a":5},"base_time":3,"base_base":{"k":"f"}}`, "base_time without base_site"},
	} {
		if _, err := ParseVersion([]byte(c.json)); err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%s: %v; want an error saying %q", c.json, err, c.field)
		}
	}
}

func open(t *testing.T, dir, site string) *Ledger {
	t.Helper()
	l, err := Open(dir, site, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A peer's change, once decided, is foreign to the source: it is not
// shipped back, also after the ledger is reopened (a restart), and a torn
// last line (a crash mid-write) is ignored.
func TestLedgerForeignSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, "b")
	st := file(100, 3, "h1")
	d, err := l.Decide(Incoming{Peer: "a", Seq: 7, Key: "f", Ver: Version{Origin: "a", VV: VV{"a": 50}}, State: st, Disk: Absent, CheckDisk: true})
	if err != nil || d.Act != ActApply {
		t.Fatalf("Decide = %+v, %v; want apply", d, err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Close()
	f, _ := os.OpenFile(filepath.Join(dir, LedgerFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"p":"g","e":{"st":`)
	f.Close()

	l = open(t, dir, "b")
	if foreign, _ := l.Foreign("f", file(100, 3, "")); !foreign {
		t.Fatal("the applied state is not foreign after a restart")
	}
	if _, ship, _ := l.Local("f", file(100, 3, "h1")); ship {
		t.Fatal("Local would ship a peer's change back")
	}
	// A local change of it is this site's, and includes what it replaced.
	ver, ship, err := l.Local("f", file(200, 4, "h2"))
	if err != nil || !ship {
		t.Fatalf("Local of a local change: ship %v, %v", ship, err)
	}
	v, _ := ParseVersion(ver)
	if v.Origin != "b" || v.VV["a"] != 50 || v.VV["b"] <= 50 {
		t.Fatalf("local version %+v: want origin b, including a:50, stamped after it", v)
	}
	// The same record applied again after a crash gets the same answer.
	e, _ := l.Get("f")
	if e.Origin != "b" {
		t.Fatalf("entry %+v", e)
	}
}

// Two sites change one path concurrently: each decides the other's record
// and both pick the same winner; the loser's copy is made once.
func TestDecideConcurrentSameWinner(t *testing.T) {
	la, lb := open(t, t.TempDir(), "a"), open(t, t.TempDir(), "b")
	va, _, _ := la.Local("f", file(10, 1, "A"))
	vb, _, _ := lb.Local("f", file(20, 1, "B"))
	verA, _ := ParseVersion(va)
	verB, _ := ParseVersion(vb)
	// Both shipped; each site meets the other's.
	da, err := la.Decide(Incoming{Peer: "b", Seq: 1, Key: "f", Ver: verB, State: file(20, 1, "B"), Disk: file(10, 1, "A"), CheckDisk: true})
	if err != nil {
		t.Fatal(err)
	}
	db, err := lb.Decide(Incoming{Peer: "a", Seq: 1, Key: "f", Ver: verA, State: file(10, 1, "A"), Disk: file(20, 1, "B"), CheckDisk: true})
	if err != nil {
		t.Fatal(err)
	}
	// b stamped later, so b wins on both: a keeps its own as the copy, b drops a's.
	if da.Act != ActRenameApply || da.Copy != ConflictName("f", "a", verA.Time()) {
		t.Fatalf("a decided %+v; want rename-apply to a's conflict copy", da)
	}
	if db.Act != ActSkip {
		t.Fatalf("b decided %+v; want skip (a keeps the copy)", db)
	}
	if la.Conflicts() != 1 || lb.Conflicts() != 1 {
		t.Fatalf("conflicts a %d, b %d; want 1 each", la.Conflicts(), lb.Conflicts())
	}
	// A change b makes after seeing a's includes it: a applies it, no conflict.
	vb2, _, _ := lb.Local("f", file(30, 2, "B2"))
	verB2, _ := ParseVersion(vb2)
	d, _ := la.Decide(Incoming{Peer: "b", Seq: 2, Key: "f", Ver: verB2, State: file(30, 2, "B2"), Disk: file(20, 1, "B"), CheckDisk: true})
	if d.Act != ActApply {
		t.Fatalf("a decided %+v on b's later change; want apply", d)
	}
}

// A local change the source has not shipped yet (the tree differs from the
// ledger) is not overwritten by a peer's concurrent change: it gets its
// version when the peer's record arrives, stamped then, so it is the later
// one and wins; the peer's record is dropped here, and the peer, meeting
// the local version when it ships, keeps its own as the conflict copy.
func TestDecideUnshippedLocalChange(t *testing.T) {
	l := open(t, t.TempDir(), "b")
	ver := Version{Origin: "a", VV: VV{"a": 1}} // stamped long ago
	d, err := l.Decide(Incoming{Peer: "a", Seq: 3, Key: "f", Ver: ver, State: file(5, 1, "A"), Disk: file(9, 2, ""), CheckDisk: true,
		LocalHash: func() []byte { return []byte("L") }})
	if err != nil {
		t.Fatal(err)
	}
	if d.Act != ActSkip {
		t.Fatalf("decided %+v; want skip (the peer keeps its copy)", d)
	}
	// The local version, when shipped, is concurrent with the peer's (so
	// the peer meets the conflict), and lists the peer's as lost.
	v, ship, _ := l.Local("f", file(9, 2, "L"))
	pv, _ := ParseVersion(v)
	if !ship || pv.VV["a"] != 0 || pv.VV["b"] <= 1 || pv.Lost["a"] != 1 {
		t.Fatalf("local version %+v (ship %v); want b's own, after a:1, listing a:1 as lost", pv, ship)
	}
	// A modify beats a concurrent delete whatever the stamps.
	d, _ = l.Decide(Incoming{Peer: "a", Seq: 4, Key: "f", Ver: Version{Origin: "a", VV: VV{"a": 1 << 62}}, State: Absent, Disk: file(9, 2, ""), CheckDisk: true})
	if d.Act != ActSkip {
		t.Fatalf("a later delete met a local modify: %+v; want skip", d)
	}
}

// A peer that deletes a file and then its directory ships both in one
// segment; the applier decides the whole segment before applying it, so
// when the directory's delete is decided the file is still on disk while
// its entry already says deleted. That is the peer's own change, not a
// local one: the directory's delete is applied, not undone and re-shipped.
func TestDecideDirDeleteAfterItsFilesInOneSegment(t *testing.T) {
	l := open(t, t.TempDir(), "b")
	dirSt := State{Kind: KindDir, Mode: 0o755, Mtime: 5}
	f := file(6, 3, "F")
	d, err := l.Decide(Incoming{Peer: "a", Seq: 1, Key: "d", Ver: Version{Origin: "a", VV: VV{"a": 10}}, State: dirSt, Disk: Absent, CheckDisk: true})
	if err != nil || d.Act != ActApply {
		t.Fatalf("mkdir: %+v, %v", d, err)
	}
	if d, err = l.Decide(Incoming{Peer: "a", Seq: 2, Key: "d/f", Ver: Version{Origin: "a", VV: VV{"a": 11}}, State: f, Disk: Absent, CheckDisk: true}); err != nil || d.Act != ActApply {
		t.Fatalf("put: %+v, %v", d, err)
	}
	// One later segment: del d/f, rmdir d. The tree still holds d/f.
	decided := map[string]bool{}
	d, err = l.Decide(Incoming{Peer: "a", Seq: 3, Key: "d/f", Ver: Version{Origin: "a", VV: VV{"a": 20}, Seen: VV{"a": 20}}, State: Absent, Disk: f, CheckDisk: true})
	if err != nil || d.Act != ActApply {
		t.Fatalf("del: %+v, %v", d, err)
	}
	decided["d/f"] = true
	reshipped := ""
	l.OnReship = func(p string) { reshipped = p }
	d, err = l.Decide(Incoming{Peer: "a", Seq: 4, Key: "d", Ver: Version{Origin: "a", VV: VV{"a": 21}, Seen: VV{"a": 21}}, State: Absent, Disk: dirSt, CheckDisk: true,
		Below:         func(fn func(string, State)) { fn("d/f", f) },
		DecidedBefore: func(p string) bool { return decided[p] }})
	if err != nil || d.Act != ActApply || reshipped != "" {
		t.Fatalf("rmdir after its file's del in one segment: %+v, %v, reshipped %q; want apply", d, err, reshipped)
	}
}

// The decisions on a peer's last segment survive a restart and the
// ledger's compaction; another segment, or another peer's, has none.
func TestLedgerDecidedSurvivesRestartAndCompaction(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, "b")
	acts := []Decision{{Act: ActSkip}, {Act: ActApply}, {Act: ActSkip}, {Act: ActRenameApply, Copy: "f.ferry-conflict-b-x"}, {}, {Act: ActAsCopy, Copy: "g.ferry-conflict-a-y"}}
	l.Lock()
	if err := l.SetDecided("a", "seg1", acts[:2]); err != nil {
		t.Fatal(err)
	}
	if err := l.SetDecided("a", "seg2", acts); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	for round, reopen := range []func(*Ledger) *Ledger{
		func(l *Ledger) *Ledger { l.Close(); return open(t, dir, "b") },
		func(l *Ledger) *Ledger {
			if err := l.compact(); err != nil {
				t.Fatal(err)
			}
			l.Close()
			return open(t, dir, "b")
		},
	} {
		l = reopen(l)
		got, ok := l.Decided("a", "seg2", len(acts))
		if !ok || !reflect.DeepEqual(got, acts) {
			t.Fatalf("round %d: Decided(a, seg2) = %+v, %v; want %+v", round, got, ok, acts)
		}
		if done := l.AppliedToEnd("a", "seg2"); done != (round > 0) {
			t.Fatalf("round %d: AppliedToEnd(a, seg2) = %v; want %v", round, done, round > 0)
		}
		if round == 0 {
			if err := l.SetAppliedToEnd("a", "seg2", "g"); err != nil {
				t.Fatal(err)
			}
			if err := l.SetAppliedToEnd("a", "seg1", ""); err != nil { // not the last: no mark
				t.Fatal(err)
			}
			if got, ok := l.Decided("a", "seg2", len(acts)); !ok || !reflect.DeepEqual(got, acts) {
				t.Fatalf("Decided(a, seg2) after SetAppliedToEnd = %+v, %v; want %+v", got, ok, acts)
			}
		}
		if _, ok := l.Decided("a", "seg1", 2); ok {
			t.Fatalf("round %d: the decisions on a's older segment are still there", round)
		}
		if _, ok := l.Decided("c", "seg2", len(acts)); ok {
			t.Fatalf("round %d: peer c has a's decisions", round)
		}
		if _, ok := l.Decided("a", "seg2", len(acts)-1); ok {
			t.Fatalf("round %d: decisions given for a segment of another length", round)
		}
	}
	l.Close()
}

// A rejoin reads the site's own stream back from the store through the
// applier: those versions are this site's, already in the store, so the
// source ships none of them (nor lists them as unshipped); a later local
// change of the same path is an ordinary new version of this site that
// includes them; and a peer's change the own stream had already seen is
// dropped as seen.
func TestRejoinOwnVersionsAreStored(t *testing.T) {
	l := open(t, t.TempDir(), "b")
	st := file(100, 3, "h1")
	own := Version{Origin: "b", VV: VV{"a": 40, "b": 50}}
	d, err := l.Decide(Incoming{Peer: "b", Seq: 1, Key: "f", Ver: own, State: st, Disk: Absent, CheckDisk: true})
	if err != nil || d.Act != ActApply {
		t.Fatalf("Decide on the own stream = %+v, %v; want apply", d, err)
	}
	if foreign, _ := l.Foreign("f", file(100, 3, "")); !foreign {
		t.Fatal("a version read back from the own stream is not recognised: the source would ship it again")
	}
	if _, ship, _ := l.Local("f", st); ship {
		t.Fatal("Local would ship a version the store already holds")
	}
	if u := l.Unshipped(); len(u) != 0 {
		t.Fatalf("Unshipped = %q; want none", u)
	}
	// A peer's version the own one had seen: dropped.
	if d, _ := l.Decide(Incoming{Peer: "a", Seq: 1, Key: "f", Ver: Version{Origin: "a", VV: VV{"a": 40}}, State: file(90, 2, "ha"), Disk: st, CheckDisk: true}); d.Act != ActSkip {
		t.Fatalf("a peer's version the own stream had seen: %+v; want skip", d)
	}
	ver, ship, err := l.Local("f", file(200, 4, "h2"))
	if err != nil || !ship {
		t.Fatalf("Local of a local change after the rejoin: ship %v, %v", ship, err)
	}
	if v, _ := ParseVersion(ver); v.VV["b"] <= 50 || v.VV["a"] != 40 {
		t.Fatalf("new local version %+v: want after b:50, including a:40", v)
	}
	if e, _ := l.Get("f"); e.Stored {
		t.Fatalf("the new local version is marked stored: %+v", e)
	}
}

// A rejoin re-decides the whole history, and meets again the conflicts
// this site met before it lost its state: those are not recorded again
// (conflicts.ndjson, the counter). Its own stream's version records say
// what it had seen from each site (Version.Seen); a conflict between
// versions it had seen both of is an old one. A conflict with a version
// it had not seen (made while it was gone) is new, and recorded, also
// when the rejoin is interrupted and continued by a new process.
func TestRejoinDoesNotRecordOldConflictsAgain(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, "b")
	tree := map[string]State{}
	decide := func(peer string, seq uint64, key string, ver Version, st State) Decision {
		t.Helper()
		l.Lock()
		defer l.Unlock()
		disk, ok := tree[key]
		if !ok {
			disk = Absent
		}
		d, err := l.Decide(Incoming{Peer: peer, Seq: seq, Key: key, Ver: ver, State: st, Disk: disk, Rebuild: true})
		if d.Act == ActApply || d.Act == ActRenameApply {
			tree[key] = st
		}
		if err == nil {
			err = l.Sync()
		}
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// b's own stream: f at 20; g at 40, after b had applied a's f (10),
	// which lost to b's f; h at 45.
	decide("b", 1, "f", Version{Origin: "b", VV: VV{"b": 20}, Seen: VV{"b": 20}}, file(20, 2, "fb"))
	decide("b", 2, "g", Version{Origin: "b", VV: VV{"b": 40}, Seen: VV{"a": 10, "b": 40}}, file(40, 2, "gb"))
	decide("b", 3, "h", Version{Origin: "b", VV: VV{"b": 45}, Seen: VV{"a": 10, "b": 45}}, file(45, 2, "hb"))
	l.Close() // the rejoin is interrupted; run again, it goes on with a's stream
	l = open(t, dir, "b")
	if d := decide("a", 1, "f", Version{Origin: "a", VV: VV{"a": 10}, Seen: VV{"a": 10}}, file(10, 2, "fa")); d.Act != ActSkip {
		t.Fatalf("a's f, which lost to b's before: %+v; want skip", d)
	}
	if n := l.Conflicts(); n != 0 {
		t.Fatalf("%d conflicts recorded re-deciding one b had met before its loss; want 0", n)
	}
	// a's h at 50, made while b was gone: a new conflict, b's h loses.
	if d := decide("a", 2, "h", Version{Origin: "a", VV: VV{"a": 50}, Seen: VV{"a": 50}}, file(50, 2, "ha")); d.Act != ActRenameApply {
		t.Fatalf("a's h, made while b was gone: %+v; want rename-apply (b keeps its copy)", d)
	}
	if n := l.Conflicts(); n != 1 {
		t.Fatalf("%d conflicts recorded; want 1, the new one", n)
	}
	if cs, err := ReadConflicts(dir); err != nil || len(cs) != 1 || cs[0].Path != "h" || !cs[0].Made {
		t.Fatalf("conflicts.ndjson: %+v, %v; want h's only, the copy made here", cs, err)
	}
}

// A conflict is listed (conflicts.ndjson) only once the decision that
// resolved it is durable. A site killed after deciding a segment and
// before its ledger Sync decides it anew at its start, against what its
// tree holds then: here its own version, which had lost, was rewritten
// while it was down, so the peer's record now loses, and no copy is made.
// Listing the first decision's conflict would leave a copy recorded as
// made that no tree holds (seen in TestSyncChurnKill9). And a kill right
// after the Sync, before the listing, loses no conflict: the segment's
// decision line carries them, and Open lists them.
func TestConflictListedWithItsDecision(t *testing.T) {
	dir := t.TempDir()
	la, lb := open(t, dir, "a"), open(t, t.TempDir(), "b")
	va, _, _ := la.Local("f", file(10, 1, "A"))
	if err := la.Sync(); err != nil {
		t.Fatal(err)
	}
	vb, _, _ := lb.Local("f", file(20, 1, "B"))
	verA, _ := ParseVersion(va)
	verB, _ := ParseVersion(vb)
	in := Incoming{Peer: "b", Seq: 1, Key: "f", Ver: verB, State: file(20, 1, "B"), Disk: file(10, 1, "A"), CheckDisk: true}
	d, err := la.Decide(in)
	if err != nil || d.Act != ActRenameApply || d.Copy != ConflictName("f", "a", verA.Time()) {
		t.Fatalf("Decide = %+v, %v; want rename-apply to a's copy", d, err)
	}
	if err := la.SetDecided("b", "seg1", []Decision{d}); err != nil {
		t.Fatal(err)
	}
	if cs, _ := ReadConflicts(dir); len(cs) != 0 {
		t.Fatalf("conflicts listed before the decision is durable: %+v", cs)
	}
	// Killed here (la is dropped unsynced); f rewritten while down.
	l2 := open(t, dir, "a")
	in.Disk = file(30, 2, "A2")
	d2, err := l2.Decide(in)
	if err != nil || d2.Act != ActSkip {
		t.Fatalf("after the restart, Decide = %+v, %v; want skip (the local rewrite is later)", d2, err)
	}
	if err := l2.SetDecided("b", "seg1", []Decision{d2}); err != nil {
		t.Fatal(err)
	}
	if err := l2.Sync(); err != nil {
		t.Fatal(err)
	}
	cs, err := ReadConflicts(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || cs[0].Made || cs[0].Winner != "a" || cs[0].Loser != "b" {
		t.Fatalf("conflicts %+v; want one, a's rewrite beating b's, no copy made here", cs)
	}
	// Killed after the Sync, before the listing: Open lists it, once.
	if err := os.Truncate(filepath.Join(dir, ConflictsFile), 0); err != nil {
		t.Fatal(err)
	}
	l2.Close()
	for range 2 {
		l3 := open(t, dir, "a")
		if got, _ := ReadConflicts(dir); len(got) != 1 || got[0] != cs[0] || l3.Conflicts() != 1 {
			t.Fatalf("after a restart: conflicts %+v (counted %d); want %+v", got, l3.Conflicts(), cs)
		}
		l3.Close()
	}
}

// A local delete of a directory gives everything the ledger has below it
// the delete's version, also for paths loaded from the log at Open and
// below directories with no entry of their own; a delete of a file or of
// a path with nothing below touches nothing else (Local skips the walk
// over every entry then).
func TestLocalDeleteReachesEverythingBelow(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, "a")
	l.Lock()
	for _, p := range []string{"d/e/f", "d/g", "dx/h", "k"} {
		if _, _, err := l.Local(p, file(1, 1, p)); err != nil {
			t.Fatal(err)
		}
	}
	l.Unlock()
	l.Close()
	l = open(t, dir, "a")
	defer l.Close()
	l.Lock()
	for _, p := range []string{"k", "dx/h/none", "d"} {
		if _, _, err := l.Local(p, Absent); err != nil {
			t.Fatal(err)
		}
	}
	l.Unlock()
	for p, gone := range map[string]bool{"d/e/f": true, "d/g": true, "dx/h": false, "k": true} {
		e, ok := l.Get(p)
		if !ok || (e.State.Kind == KindAbsent) != gone {
			t.Errorf("%s after deleting d and k: %+v (known %v); want deleted %v", p, e.State, ok, gone)
		}
	}
}
