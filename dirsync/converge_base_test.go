package dirsync

import (
	"testing"
)

// The base-rule variant of a delete of a conflict's winner: a writes f =
// "x" then rewrites it to "y" (V); c, not having met either, writes f =
// "x" (M), later than V. V was made on top of M's very content, so V wins
// without a conflict wherever the two meet. b, having met V, deletes f
// (D). A site that meets only M and D (d, in some orders) must rank D as V
// would rank against M, base rule included, or it keeps M's "x" while the
// others delete f. So D carries V's own base (Version.BaseBase). Every
// arrival order at every site must end with the same tree, f deleted.
func TestConvergeDeleteOfBaseRuleWinnerBeatsItsLoser(t *testing.T) {
	ids := simIDs
	base, _ := newSites(t, ids)
	a, b, c := base["a"], base["b"], base["c"]
	a.write("f", file(100, 1, "x"))
	a.ship(t, "f")
	a1 := a.out[len(a.out)-1]
	a.write("f", file(101, 1, "y"))
	a.ship(t, "f")
	v := a.out[len(a.out)-1]
	c.write("f", file(102, 1, "x"))
	c.ship(t, "f")
	m := c.out[len(c.out)-1]
	if v.ver.Time() >= m.ver.Time() {
		t.Fatalf("V's stamp %d is not before M's %d", v.ver.Time(), m.ver.Time())
	}
	b.deliver(t, a1)
	b.deliver(t, v)
	if string(b.tree["f"].Hash) != "y" {
		t.Fatalf("b holds %v; want a's rewrite", b.tree["f"])
	}
	b.write("f", Absent)
	b.ship(t, "f")
	del := b.out[len(b.out)-1]
	if del.ver.BaseBase == nil || string(del.ver.BaseBase.Hash) != "x" {
		t.Fatalf("b's delete carries base_base %+v; want V's base, a's \"x\"", del.ver.BaseBase)
	}

	orders := map[string][][]simRec{
		"a": permutations([]simRec{m, del}),
		"b": {{m}},
		"c": permutations([]simRec{a1, v, del}),
		"d": permutations([]simRec{a1, v, m, del}),
	}
	want := ""
	combos := everyOrder(t, base, ids, orders, func(n int, run []*simSite, _ map[string][]string) {
		for _, s := range run {
			if want == "" {
				want = s.treeString()
			}
			if got := s.treeString(); got != want {
				t.Fatalf("combination %d: site %s ends with\n%s\nbut another with\n%s", n, s.id, got, want)
			}
			if st, ok := s.tree["f"]; ok {
				t.Fatalf("combination %d: site %s holds f = %q; want it deleted (b's delete of V, which beat M)", n, s.id, st.Hash)
			}
		}
	})
	t.Logf("%d combinations of arrival orders, all sites alike:\n%s", combos, want)
}
