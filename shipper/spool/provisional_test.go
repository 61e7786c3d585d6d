package spool

import (
	"os"
	"slices"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
)

// A held spool takes records before it knows where the stream stands:
// nothing is sealed, they survive a restart, and Continue numbers them
// after the stream's newest seq, chained to its hash, sealed by the
// flush policy.
func TestHoldThenContinue(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 4
	sp := openSpool(t, cfg)
	if err := sp.Hold(); err != nil {
		t.Fatal(err)
	}
	appendRecs(t, sp, batchtest.Records("a", 6), "c6")
	appendRecs(t, sp, batchtest.Records("b", 3), "c9")
	if err := sp.Seal("shutdown"); err != nil {
		t.Fatal(err)
	}
	if p := sp.Pending(0); len(p) != 0 {
		t.Fatalf("a held spool sealed %+v", p)
	}
	if st := sp.Stats(); st.Held != 9 || st.LastSeq != 0 || st.RecordsIn != 9 {
		t.Fatalf("stats of a held spool: %+v", st)
	}
	sp.Close()

	// A restart keeps them held.
	sp = openSpool(t, cfg)
	if !sp.Held() || !sp.Fresh() {
		t.Fatal("reopened spool is not held and fresh")
	}
	if st := sp.Stats(); st.Held != 9 {
		t.Fatalf("reopened held spool holds %d records, want 9", st.Held)
	}
	if c := sp.Cursor(); string(c) != "c9" {
		t.Fatalf("cursor %q after reopen, want c9", c)
	}
	appendRecs(t, sp, batchtest.Records("c", 1), "c10")

	prev := batch.Hash([]byte("segment 100 in the store"))
	if err := sp.Continue(3, 100, prev); err != nil {
		t.Fatal(err)
	}
	if sp.Held() || sp.Config().Generation != 3 {
		t.Fatalf("after Continue: held %v, generation %d", sp.Held(), sp.Config().Generation)
	}
	if _, err := os.Stat(cfg.Dir + "/" + provisionalName); !os.IsNotExist(err) {
		t.Fatalf("provisional journal still there after Continue: %v", err)
	}
	if err := sp.Seal("shutdown"); err != nil {
		t.Fatal(err)
	}
	if st := sp.Stats(); st.LastSeq != 110 || st.Held != 0 {
		t.Fatalf("stats after Continue: %+v", st)
	}
	segs := sealedFiles(t, cfg.Dir)
	want := append(append(batchtest.Lines("a", 1, 6), batchtest.Lines("b", 1, 3)...), batchtest.Lines("c", 1, 1)...)
	if got := batchtest.Datas(batchtest.CheckChain(t, segs, 100, prev)); !slices.Equal(got, want) {
		t.Fatalf("data %q, want %q", got, want)
	}
	if len(segs) != 3 { // 4 + 4 by max_records, 2 at the seal
		t.Fatalf("%d segments, want 3 (max_records 4)", len(segs))
	}
	for _, sg := range segs {
		if sg.Meta.Generation != 3 {
			t.Fatalf("segment %s in generation %d, want 3", sg.Name, sg.Meta.Generation)
		}
	}
	if c := sp.Cursor(); string(c) != "c10" {
		t.Fatalf("cursor %q", c)
	}
	recs := batchtest.Records("d", 1)
	appendRecs(t, sp, recs, "c11")
	if recs[0].Seq != 111 {
		t.Fatalf("next append got seq %d, want 111", recs[0].Seq)
	}
}

// Crash images of a placement: before its commit (state.json still
// unplaced, a renumbered journal file written) the records stay held,
// once; after it (the provisional file not yet removed) they are the
// stream's, once.
func TestHoldPlacementCrash(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	if err := sp.Hold(); err != nil {
		t.Fatal(err)
	}
	appendRecs(t, sp, batchtest.Records("a", 5), "c5")
	sp.Close()
	held := copyDir(t, cfg.Dir)
	prev := batch.Hash([]byte("segment 7"))

	// Before the commit: a renumbered journal file beside the held ones.
	before := copyDir(t, held)
	prov, err := os.ReadFile(before + "/" + provisionalName)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(before+"/"+journalName(8), prov[:len(prov)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	c1 := cfg
	c1.Dir = before
	sp1 := openSpool(t, c1)
	if !sp1.Held() || sp1.Stats().Held != 5 {
		t.Fatalf("before the commit: held %v, %d records", sp1.Held(), sp1.Stats().Held)
	}
	if names := journalFiles(t, before); len(names) != 0 {
		t.Fatalf("journal files of the interrupted placement left: %q", names)
	}

	// After the commit: place in a copy, then put the provisional file back.
	after := copyDir(t, held)
	c2 := cfg
	c2.Dir = after
	sp2 := openSpool(t, c2)
	if err := sp2.Continue(1, 7, prev); err != nil {
		t.Fatal(err)
	}
	sp2.Close()
	if err := os.WriteFile(after+"/"+provisionalName, prov, 0o644); err != nil {
		t.Fatal(err)
	}
	sp2 = openSpool(t, c2)
	if sp2.Held() {
		t.Fatal("a placed spool is held again after a restart")
	}
	if _, err := os.Stat(after + "/" + provisionalName); !os.IsNotExist(err) {
		t.Fatal("the stale provisional journal was not removed")
	}
	if got := batchtest.Datas(batchtest.CheckChain(t, sealedFiles(t, after), 7, prev)); !slices.Equal(got, batchtest.Lines("a", 1, 5)) {
		t.Fatalf("data %q", got)
	}
	if st := sp2.Stats(); st.LastSeq != 12 {
		t.Fatalf("last seq %d, want 12", st.LastSeq)
	}
}

// Hold refuses a spool that has numbered records.
func TestHoldRefusesUsedSpool(t *testing.T) {
	sp := openSpool(t, spoolConfig(t))
	appendRecs(t, sp, batchtest.Records("a", 1), "")
	if err := sp.Hold(); err == nil {
		t.Fatal("Hold accepted a spool with records")
	}
}
