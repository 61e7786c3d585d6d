package dirsync

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

// Simulated sites for the convergence tests: each has a real Ledger and a
// tree held in memory (path -> state; a file's Hash stands for its
// content). The simulation does what the dir: source and applier do with
// the ledger's answers: ship a local change with the version Local gives,
// apply, drop, or keep a peer's record under a copy name as Decide says,
// and ship the conflict copies a site makes as its own new files.

type simRec struct {
	from string
	seq  uint64
	key  string
	ver  Version
	st   State
}

type simSite struct {
	id   string
	dir  string
	l    *Ledger
	tree map[string]State
	out  []simRec // everything this site shipped, in order
}

func newSim(t *testing.T, dir, id string) *simSite {
	t.Helper()
	return &simSite{id: id, dir: dir, l: open(t, dir, id), tree: map[string]State{}}
}

func (s *simSite) disk(p string) State {
	if st, ok := s.tree[p]; ok {
		st.Hash = nil // stat knows no content hash
		return st
	}
	return Absent
}

// write changes the site's tree (a local change, not yet shipped).
func (s *simSite) write(p string, st State) {
	if st.Kind == KindAbsent {
		delete(s.tree, p)
		return
	}
	s.tree[p] = st
}

// ship is the source meeting p: it ships it unless it is what a peer's
// change left.
func (s *simSite) ship(t *testing.T, p string) {
	t.Helper()
	st, ok := s.tree[p]
	if !ok {
		st = Absent
	}
	b, ship, err := s.l.Local(p, st)
	if err != nil {
		t.Fatal(err)
	}
	if !ship {
		return
	}
	v, err := ParseVersion(b)
	if err != nil {
		t.Fatal(err)
	}
	s.out = append(s.out, simRec{from: s.id, seq: uint64(len(s.out) + 1), key: p, ver: v, st: st})
}

// deliver applies a peer's record as the dir: applier does, and ships
// any conflict copy it made.
func (s *simSite) deliver(t *testing.T, r simRec) {
	t.Helper()
	disk := s.disk(r.key)
	d, err := s.l.Decide(Incoming{Peer: r.from, Seq: r.seq, Key: r.key, Ver: r.ver, State: r.st, Disk: disk, CheckDisk: true,
		LocalHash: func() []byte { return s.tree[r.key].Hash }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.l.Sync(); err != nil {
		t.Fatal(err)
	}
	switch d.Act {
	case ActSkip:
	case ActApply:
		s.write(r.key, r.st)
	case ActRenameApply:
		if st, ok := s.tree[r.key]; ok {
			s.tree[d.Copy] = st
		}
		s.write(r.key, r.st)
		s.ship(t, d.Copy)
	case ActAsCopy:
		if r.st.Kind != KindAbsent {
			s.tree[d.Copy] = r.st
			s.ship(t, d.Copy)
		}
	default:
		t.Fatalf("site %s: decision %q", s.id, d.Act)
	}
}

// clone copies a site (its ledger directory and tree) to dir.
func (s *simSite) clone(t *testing.T, dir string) *simSite {
	t.Helper()
	if err := s.l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{LedgerFile, ConflictsFile} {
		if b, err := os.ReadFile(filepath.Join(s.dir, name)); err == nil {
			if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.l = open(t, s.dir, s.id)
	c := newSim(t, dir, s.id)
	for p, st := range s.tree {
		c.tree[p] = st
	}
	c.out = append([]simRec(nil), s.out...)
	return c
}

// treeString is a site's tree as the tests compare it: kind and content.
func (s *simSite) treeString() string {
	var lines []string
	for p, st := range s.tree {
		lines = append(lines, fmt.Sprintf("%s %s %x", p, st.Kind, st.Hash))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// simIDs are the four sites every convergence test starts.
var simIDs = []string{"a", "b", "c", "d"}

// newSites starts one simulated site per id, each in its own directory,
// and returns them by id and in ids' order.
func newSites(t *testing.T, ids []string) (map[string]*simSite, []*simSite) {
	t.Helper()
	base := map[string]*simSite{}
	var sites []*simSite
	for _, id := range ids {
		s := newSim(t, t.TempDir(), id)
		base[id] = s
		sites = append(sites, s)
	}
	return base, sites
}

// sitesHoldingF starts the sites of ids (newSites) and lets them all meet
// "f", made by site d.
func sitesHoldingF(t *testing.T, ids []string) map[string]*simSite {
	t.Helper()
	base, sites := newSites(t, ids)
	d := base["d"]
	d.write("f", file(1, 4, "base"))
	d.ship(t, "f")
	quiesce(t, sites, map[[2]string]int{})
	return base
}

// everyOrder runs every combination of arrival orders: combination n
// clones each site of ids from base, delivers it its orders[id] entry
// chosen by n, lets the clones quiesce (each having already met all of
// base's output it was cloned with), and calls check with the clones and,
// per site, whose records it met in its order. It closes the clones after
// check and returns the number of combinations.
func everyOrder(t *testing.T, base map[string]*simSite, ids []string, orders map[string][][]simRec, check func(n int, run []*simSite, met map[string][]string)) int {
	t.Helper()
	combos := 1
	for _, id := range ids {
		combos *= len(orders[id])
	}
	for n := range combos {
		var run []*simSite
		done := map[[2]string]int{}
		met := map[string][]string{}
		k := n
		for _, id := range ids {
			s := base[id].clone(t, t.TempDir())
			order := orders[id][k%len(orders[id])]
			k /= len(orders[id])
			for _, r := range order {
				s.deliver(t, r)
				met[id] = append(met[id], r.from)
			}
			run = append(run, s)
			for _, from := range ids {
				done[[2]string{from, id}] = len(base[from].out)
			}
		}
		quiesce(t, run, done)
		check(n, run, met)
		for _, s := range run {
			s.l.Close()
		}
	}
	return combos
}

// quiesce delivers every site's shipped records to every other site, in
// each stream's order, until nothing new ships.
func quiesce(t *testing.T, sites []*simSite, done map[[2]string]int) {
	t.Helper()
	for moved := true; moved; {
		moved = false
		for _, from := range sites {
			for _, to := range sites {
				if from == to {
					continue
				}
				k := [2]string{from.id, to.id}
				for done[k] < len(from.out) {
					r := from.out[done[k]]
					done[k]++
					to.deliver(t, r)
					moved = true
				}
			}
		}
	}
}

// permutations lists every order of the records.
func permutations(rs []simRec) [][]simRec {
	if len(rs) <= 1 {
		return [][]simRec{rs}
	}
	var out [][]simRec
	for i := range rs {
		rest := append(append([]simRec(nil), rs[:i]...), rs[i+1:]...)
		for _, p := range permutations(rest) {
			out = append(out, append([]simRec{rs[i]}, p...))
		}
	}
	return out
}

// change is one site's concurrent change of the path: content, or a delete.
type change struct {
	site    string
	content string // "" deletes
}

// expectOutcome is the documented rule, written out independently of
// Wins: of concurrent changes, one that leaves something beats a delete,
// then the later stamp, then the greater site id; every other change that
// leaves something is kept as its conflict copy. A losing change with the
// winner's very content (maybe) is the one exception: whether its site
// keeps a copy depends on what that site meets first (docs/SYNC.md), so
// it is listed in maybe, not in copies.
func expectOutcome(key string, vers []simRec) (winner simRec, copies, maybe []string) {
	better := func(a, b simRec) bool {
		ad, bd := a.st.Kind == KindAbsent, b.st.Kind == KindAbsent
		if ad != bd {
			return !ad
		}
		if a.ver.Time() != b.ver.Time() {
			return a.ver.Time() > b.ver.Time()
		}
		return a.ver.Origin > b.ver.Origin
	}
	winner = vers[0]
	for _, v := range vers[1:] {
		if better(v, winner) {
			winner = v
		}
	}
	for _, v := range vers {
		if v.ver.Origin == winner.ver.Origin || v.st.Kind == KindAbsent {
			continue
		}
		name := ConflictName(key, v.ver.Origin, v.ver.Time())
		if SameContent(v.st, winner.st) {
			maybe = append(maybe, name)
		} else {
			copies = append(copies, name)
		}
	}
	sort.Strings(copies)
	return winner, copies, maybe
}

// runConcurrent sets up sites a, b, c, d holding "f" (made by d), lets
// the sites of changes change it concurrently in that order (so stamps
// follow it), and then, for every combination of arrival orders at every
// site, checks that all sites end with the same tree: the winner the rule
// names at f, and exactly one copy of each losing change, made by the
// losing change's own site.
func runConcurrent(t *testing.T, changes []change) {
	t.Helper()
	ids := simIDs
	base := sitesHoldingF(t, ids)
	var vers []simRec
	for i, c := range changes {
		s := base[c.site]
		st := Absent
		if c.content != "" {
			st = file(int64(100+i), int64(len(c.content)), c.content)
		}
		s.write("f", st)
		s.ship(t, "f")
		vers = append(vers, s.out[len(s.out)-1])
	}
	winner, wantCopies, maybe := expectOutcome("f", vers)

	// Each site's arrival orders: every order of the changes it did not make.
	orders := map[string][][]simRec{}
	for _, id := range ids {
		var in []simRec
		for _, v := range vers {
			if v.from != id {
				in = append(in, v)
			}
		}
		orders[id] = permutations(in)
	}
	// Every combination ends with the same tree; with a change of the
	// winner's content among the losers, the same on every site of it.
	var first string
	combos := everyOrder(t, base, ids, orders, func(n int, run []*simSite, _ map[string][]string) {
		if len(maybe) > 0 {
			first = ""
		}
		for _, s := range run {
			got := s.treeString()
			if first == "" {
				first = got
			}
			if got != first {
				t.Fatalf("combination %d: site %s ends with\n%s\nbut another combination or site with\n%s", n, s.id, got, first)
			}
			if wst, ok := s.tree["f"]; winner.st.Kind == KindAbsent && ok || winner.st.Kind != KindAbsent && (!ok || string(wst.Hash) != string(winner.st.Hash)) {
				t.Fatalf("combination %d: site %s holds f = %+v; want the winner %+v (site %s)", n, s.id, wst, winner.st, winner.from)
			}
			var copies []string
			for p := range s.tree {
				if strings.Contains(p, ".ferry-conflict-") && !slices.Contains(maybe, p) {
					copies = append(copies, p)
				}
			}
			sort.Strings(copies)
			if fmt.Sprint(copies) != fmt.Sprint(wantCopies) {
				t.Fatalf("combination %d: site %s has copies %v; want %v", n, s.id, copies, wantCopies)
			}
		}
		made := map[string]string{}
		for _, s := range run {
			cs, err := ReadConflicts(s.dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range cs {
				if !c.Made {
					continue
				}
				if by, ok := made[c.Copy]; ok {
					t.Fatalf("combination %d: copy %s made by %s and %s", n, c.Copy, by, s.id)
				}
				if c.Loser != s.id {
					t.Fatalf("combination %d: copy %s made by %s, not by the loser's site", n, c.Copy, s.id)
				}
				made[c.Copy] = s.id
			}
		}
		for _, p := range maybe {
			if _, ok := made[p]; ok {
				delete(made, p)
			}
		}
		if len(made) != len(wantCopies) {
			t.Fatalf("combination %d: %d copies recorded as made (%v); want %d", n, len(made), made, len(wantCopies))
		}
	})
	t.Logf("%d combinations of arrival orders, all sites alike: f from %s, copies %v", combos, winner.from, wantCopies)
}

// More than two concurrent changes of one path, each arrival order at each
// site: the same winner and the same copies everywhere.
func TestConvergeConcurrentEveryOrder(t *testing.T) {
	cases := []struct {
		name    string
		changes []change
	}{
		{"three rewrites", []change{{"a", "A"}, {"b", "B"}, {"c", "C"}}},
		{"three rewrites, stamps in another order", []change{{"c", "C"}, {"a", "A"}, {"b", "B"}}},
		{"a delete racing two rewrites", []change{{"a", ""}, {"b", "B"}, {"c", "C"}}},
		{"a later delete racing two rewrites", []change{{"b", "B"}, {"c", "C"}, {"a", ""}}},
		{"two deletes racing a rewrite", []change{{"c", "C"}, {"a", ""}, {"b", ""}}},
		{"two rewrites, two bystanders", []change{{"b", "B"}, {"a", "A"}}},
		{"three rewrites, two the same content", []change{{"a", "X"}, {"b", "B"}, {"c", "X"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runConcurrent(t, c.changes) })
	}
}

// A site that saw a conflict (a's change lost to b's) and then changed the
// path ships a version that includes a's only as a loser. When that
// version reaches a before b's does, a keeps its version as the conflict
// copy before applying it (Version.Lost); otherwise a's change would be
// superseded unseen, with no copy anywhere.
func TestConvergeLoserSupersededUnseen(t *testing.T) {
	a, b, c := newSim(t, t.TempDir(), "a"), newSim(t, t.TempDir(), "b"), newSim(t, t.TempDir(), "c")
	a.write("f", file(1, 1, "A"))
	a.ship(t, "f")
	b.write("f", file(2, 1, "B"))
	b.ship(t, "f") // later: b's wins
	c.deliver(t, a.out[0])
	c.deliver(t, b.out[0])
	if got := string(c.tree["f"].Hash); got != "B" {
		t.Fatalf("c holds %q; want b's", got)
	}
	c.write("f", file(3, 2, "C2"))
	c.ship(t, "f")
	if v := c.out[len(c.out)-1].ver; v.Lost["a"] != a.out[0].ver.Time() {
		t.Fatalf("c's version %+v does not list a's change as lost", v)
	}
	a.deliver(t, c.out[len(c.out)-1]) // before b's
	copyName := ConflictName("f", "a", a.out[0].ver.Time())
	if got := string(a.tree[copyName].Hash); got != "A" {
		t.Fatalf("a's tree %v: want a's change kept as %s", a.tree, copyName)
	}
	sites := []*simSite{a, b, c}
	quiesce(t, sites, map[[2]string]int{{"a", "b"}: 1, {"a", "c"}: 1, {"b", "c"}: 1, {"c", "a"}: len(c.out)})
	for _, s := range sites[1:] {
		if s.treeString() != a.treeString() {
			t.Fatalf("site %s:\n%s\nsite a:\n%s", s.id, s.treeString(), a.treeString())
		}
	}
	if string(a.tree["f"].Hash) != "C2" {
		t.Fatalf("f = %q; want c's later change", a.tree["f"].Hash)
	}
}

// A site's local change not yet shipped when a peer's concurrent change
// arrives gets its version then; the sites still end alike, with one copy
// of the loser made by the loser's site.
func TestConvergeUnshippedLocalChange(t *testing.T) {
	for _, order := range [][]string{{"a", "c"}, {"c", "a"}} {
		a, b, c := newSim(t, t.TempDir(), "a"), newSim(t, t.TempDir(), "b"), newSim(t, t.TempDir(), "c")
		a.write("f", file(1, 1, "A"))
		a.ship(t, "f")
		c.write("f", file(2, 1, "C"))
		c.ship(t, "f")
		b.write("f", file(3, 1, "B")) // not shipped yet
		for _, id := range order {
			b.deliver(t, map[string]*simSite{"a": a, "c": c}[id].out[0])
		}
		b.ship(t, "f")
		sites := []*simSite{a, b, c}
		quiesce(t, sites, map[[2]string]int{{"a", "b"}: 1, {"c", "b"}: 1})
		for _, s := range sites[1:] {
			if s.treeString() != a.treeString() {
				t.Fatalf("order %v: site %s:\n%s\nsite a:\n%s", order, s.id, s.treeString(), a.treeString())
			}
		}
		if string(a.tree["f"].Hash) != "B" || len(a.tree) != 3 {
			t.Fatalf("order %v: tree %s; want f = b's change and copies of a's and c's", order, a.treeString())
		}
	}
}

// Two sites start from the same tree and each ships its first scan. One
// then deletes (or rewrites) a file before it has met the other's first
// scan: the other's put carries exactly the content the change replaced,
// so it is no change at all, and the change wins on both sites in every
// arrival order, without a conflict (it used to meet the delete as a
// concurrent modify, which wins, and the file came back: found by
// tests/bench/sync.sh when its churn raced the sites' first exchange).
func TestConvergeFirstScanMeetsChange(t *testing.T) {
	orig := file(1, 5, "orig")
	for _, then := range []State{Absent, file(2, 3, "new")} {
		a, b := newSim(t, t.TempDir(), "a"), newSim(t, t.TempDir(), "b")
		for _, s := range []*simSite{a, b} {
			s.write("m", orig)
			s.ship(t, "m")
		}
		a.write("m", then)
		a.ship(t, "m")
		// a meets b's first scan after its change; b meets a's first
		// scan, then a's change.
		a.deliver(t, b.out[0])
		quiesce(t, []*simSite{a, b}, map[[2]string]int{{"b", "a"}: 1})
		if got, want := a.treeString(), b.treeString(); got != want {
			t.Fatalf("then %v: a has %s, b has %s", then.Kind, got, want)
		}
		if st, ok := a.tree["m"]; (then.Kind == KindAbsent) == ok || (ok && string(st.Hash) != string(then.Hash)) {
			t.Fatalf("then %v: a's change lost: a has %s", then.Kind, a.treeString())
		}
		if a.l.Conflicts()+b.l.Conflicts() != 0 || len(a.tree)+len(b.tree) > 2 {
			t.Fatalf("then %v: conflicts a %d, b %d; trees %s / %s", then.Kind, a.l.Conflicts(), b.l.Conflicts(), a.treeString(), b.treeString())
		}
	}
}

// A delete made after seeing only the winner of a conflict races the
// conflict's loser (docs/SYNC.md, "Three or more sites"): c and a rewrite
// f, a's (later) wins; b, having met only a's, deletes f. The delete
// replaced a's version, which beats c's, so it beats c's too: every site,
// in every arrival order, ends without f and with c's rewrite kept as its
// conflict copy, made once, by c. (Modify beats delete would have c's
// beat the delete while losing to a's, which the delete includes: the
// outcome then depended on the order a site met the three.) When a's
// rewrite is the earlier one, c's beats it and the delete: f is c's
// everywhere; a keeps its rewrite as the copy only if it meets c's before
// b's delete of it (docs/SYNC.md, "Limits"), so there the sites agree
// within each run, not across runs.
func TestConvergeDeleteOfConflictWinnerBeatsItsLoser(t *testing.T) {
	for _, aLater := range []bool{true, false} {
		t.Run(fmt.Sprintf("a's rewrite later %v", aLater), func(t *testing.T) { runDeleteOfConflictWinner(t, aLater) })
	}
}

func runDeleteOfConflictWinner(t *testing.T, aLater bool) {
	ids := simIDs
	base := sitesHoldingF(t, ids)
	a, b, c := base["a"], base["b"], base["c"]
	first, second := c, a // stamps follow the order: the second wins
	if !aLater {
		first, second = a, c
	}
	first.write("f", file(100, 1, first.id))
	first.ship(t, "f")
	second.write("f", file(101, 1, second.id))
	second.ship(t, "f")
	b.deliver(t, a.out[len(a.out)-1])
	if string(b.tree["f"].Hash) != "a" {
		t.Fatalf("b holds %v; want a's rewrite", b.tree["f"])
	}
	b.write("f", Absent)
	b.ship(t, "f")
	vers := []simRec{first.out[len(first.out)-1], second.out[len(second.out)-1], b.out[len(b.out)-1]}
	// The delete wins when it replaced the winner (a's); else c's does.
	var wantF string
	copyName := ConflictName("f", first.id, vers[0].ver.Time())
	if !aLater {
		wantF = "c"
	}

	// Each site's arrival orders of the versions it has not met yet.
	orders := map[string][][]simRec{}
	for _, id := range ids {
		var in []simRec
		for _, v := range vers {
			if v.from != id && !(id == "b" && v.from == "a") {
				in = append(in, v)
			}
		}
		orders[id] = permutations(in)
	}
	if len(orders["d"]) != 6 {
		t.Fatalf("d has %d orders; want 6", len(orders["d"]))
	}
	want := ""
	combos := everyOrder(t, base, ids, orders, func(n int, run []*simSite, met map[string][]string) {
		if !aLater {
			want = ""
		}
		for _, id := range ids {
			t.Logf("combination %d: %s meets %v", n, id, met[id])
		}
		made := 0
		for _, s := range run {
			if want == "" {
				want = s.treeString()
			}
			if got := s.treeString(); got != want {
				t.Fatalf("combination %d: site %s ends with\n%s\nbut another with\n%s", n, s.id, got, want)
			}
			if st, ok := s.tree["f"]; ok != (wantF != "") || string(st.Hash) != wantF {
				t.Fatalf("combination %d: site %s holds f = %q (present %v); want %q (empty: deleted)", n, s.id, st.Hash, ok, wantF)
			}
			if st, ok := s.tree[copyName]; (aLater || ok) && string(st.Hash) != first.id {
				t.Fatalf("combination %d: site %s tree\n%s\nwant %s's rewrite kept as %s", n, s.id, s.treeString(), first.id, copyName)
			}
			cs, err := ReadConflicts(s.dir)
			if err != nil {
				t.Fatal(err)
			}
			for _, cf := range cs {
				if cf.Made {
					made++
					if cf.Copy != copyName || s.id != first.id {
						t.Fatalf("combination %d: site %s made copy %s; want only %s to make %s", n, s.id, cf.Copy, first.id, copyName)
					}
				}
			}
		}
		if made != 1 && (aLater || made != 0) {
			t.Fatalf("combination %d: the copy was made %d times; want once", n, made)
		}
	})
	t.Logf("%d combinations of arrival orders, all sites alike:\n%s", combos, want)
}
