//go:build linux

package apply

import (
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/dirtree"
)

// dirRenameUnsafeScan is the definition renameUnsafe indexes: a scan of
// every record before recs[i].
func dirRenameUnsafeScan(recs batch.Records, i int, old, key string) bool {
	touches := func(op, k string) bool {
		for _, p := range []string{old, key} {
			if k == p || strings.HasPrefix(k, p+"/") || (op != dirtree.OpMkdir && strings.HasPrefix(p, k+"/")) {
				return true
			}
		}
		return false
	}
	for j := 0; j < i; j++ {
		r := recs.At(j)
		if touches(r.Op, string(r.Key)) {
			return true
		}
		if r.Op == dirtree.OpRename {
			if rn, err := dirtree.ParseRename(r.Data); err == nil && touches(r.Op, rn.Old) {
				return true
			}
		}
	}
	return false
}

// renameUnsafe answers as the scan does, for every rename of random
// segments over a small tree (names that are prefixes of one another
// without being ancestors: "a", "ab", "a/b").
func TestDirRenameUnsafeIndexMatchesScan(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "ab", "a/b", "a/bc", "a/b/c", "ab/c", "d", "d/a", "d/a/b"}
	ops := []string{dirtree.OpMkdir, dirtree.OpPut, dirtree.OpDel, dirtree.OpRmdir, dirtree.OpRename}
	checked := 0
	for range 300 {
		var rs []batch.Record
		for j := range 1 + rng.IntN(12) {
			r := batch.Record{Seq: uint64(j + 1), Op: ops[rng.IntN(len(ops))], Key: []byte(names[rng.IntN(len(names))])}
			if r.Op == dirtree.OpRename {
				r.Data = dirtree.AppendRename(nil, dirtree.Rename{Old: names[rng.IntN(len(names))], Kind: dirtree.RenameFile, Mode: 0o644})
			}
			rs = append(rs, r)
		}
		recs := batch.RecordsOf(rs)
		var touched dirTouched
		for i := range rs {
			if rs[i].Op != dirtree.OpRename {
				continue
			}
			rn, err := dirtree.ParseRename(rs[i].Data)
			if err != nil {
				t.Fatal(err)
			}
			want := dirRenameUnsafeScan(recs, i, rn.Old, string(rs[i].Key))
			if got := touched.renameUnsafe(recs, i, rn.Old, string(rs[i].Key)); got != want {
				t.Fatalf("rename %q -> %q after %v: renameUnsafe %v, the scan says %v", rn.Old, rs[i].Key, rs[:i], got, want)
			}
			checked++
		}
	}
	if checked < 100 {
		t.Fatalf("only %d renames checked", checked)
	}
}
