package spool

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
)

// journalBytes is the size of every journal file in dir.
func journalBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	for _, name := range journalFiles(t, dir) {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// A replayable source's records are written once, into the segment: the
// journal stays empty, a segment ends only where an Append does (its cursor
// is the source's position after it), and WaitDurable seals.
func TestReplayableWritesNoJournal(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	sp := openSpool(t, cfg)
	sp.SetReplayable()
	appendRecs(t, sp, batchtest.Records("a", 4), "a") // 1-4
	appendRecs(t, sp, batchtest.Records("b", 8), "b") // 5-12: due at 10, sealed after 12
	settle(t, sp)
	if n := journalBytes(t, cfg.Dir); n != 0 {
		t.Fatalf("journal holds %d bytes; a replayable source's records go only into segments", n)
	}
	segs := sealedFiles(t, cfg.Dir)
	if len(segs) != 1 || segs[0].Meta.FirstSeq != 1 || segs[0].Meta.LastSeq != 12 || string(segs[0].Meta.SourceCursor) != "b" {
		t.Fatalf("sealed %d segments (first %+v); want one of seqs 1-12 with cursor b, ending where the Append did", len(segs), segs)
	}
	pos := appendRecs(t, sp, batchtest.Records("c", 3), "c") // 13-15, open
	if got := len(sealedFiles(t, cfg.Dir)); got != 1 {
		t.Fatalf("%d segments before WaitDurable, want 1", got)
	}
	if err := sp.WaitDurable(context.Background(), pos); err != nil {
		t.Fatal(err)
	}
	segs = sealedFiles(t, cfg.Dir)
	if len(segs) != 2 || segs[1].Meta.LastSeq != 15 || string(segs[1].Meta.SourceCursor) != "c" {
		t.Fatalf("after WaitDurable: %d segments; want a second one through seq 15 with cursor c", len(segs))
	}
	appendRecs(t, sp, batchtest.Records("d", 2), "d") // 16-17: lost by the restart, replayed by the source
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sp = openSpool(t, cfg)
	if got, cur := sp.Stats().LastSeq, string(sp.Cursor()); got != 15 || cur != "c" {
		t.Fatalf("after restart: last seq %d, cursor %q; want 15 and c (the source reads d again)", got, cur)
	}
	all := batchtest.CheckChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)
	if got, want := batchtest.Datas(all), slices.Concat(batchtest.Lines("a", 1, 4), batchtest.Lines("b", 1, 8), batchtest.Lines("c", 1, 3)); !slices.Equal(got, want) {
		t.Fatalf("after restart: %q, want %q", got, want)
	}
}

// TestReplayableCrashImages crashes (by image) a spool that keeps no
// journal, at every fsync (segments, state.json), with seals in flight,
// a second due batch waiting for one, and open records after each: every
// image must recover exactly the records of its sealed segments and the
// cursor after the last of them, so a source reading again from there
// neither loses nor repeats a record.
func TestReplayableCrashImages(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	sim := newCrashSim(t)
	all := []imageKind{powerLoss, resurrected, killed}
	sim.snap = func(point string) { sim.take(cfg.Dir, point, all...) }
	gate := newSealGate(t, sim.sync)
	cfg.SyncFile = gate.sync
	sp := openSpool(t, cfg, "t")
	sp.SetReplayable()
	gate.on.Store(true)
	log := newCursorLog()
	add := func(prefix string, n int, cursor string) {
		appendRecs(t, sp, batchtest.Records(prefix, n), cursor)
		log.add(prefix, n, cursor)
		sim.take(cfg.Dir, "after append "+prefix, all...)
	}

	add("a", 4, "a") // 1-4
	add("b", 8, "b") // 5-12: due, handed to the sealer after the entry
	gate.wait(t)
	sim.take(cfg.Dir, "seal 1-12 in flight", all...)
	add("c", 5, "c") // 13-17, open while 1-12 seals
	log.add("d", 6, "d")
	waiting := appendBg(sp, batchtest.Records("d", 6), "d") // 18-23: due, waits for seal 1-12
	lastSeqIs(t, sp, 23)
	sim.take(cfg.Dir, "batch 13-23 waiting for seal 1-12", all...)
	gate.release <- nil
	if err := result(t, "Append of d", waiting); err != nil {
		t.Fatal(err)
	}
	gate.wait(t) // 13-23's segment
	sim.take(cfg.Dir, "seal 13-23 in flight", all...)
	sp.SaveState()   // state.json moves on, with its fsyncs
	add("e", 2, "e") // 24-25
	gate.on.Store(false)
	gate.release <- nil
	settle(t, sp)
	sp.SaveState()
	sim.take(cfg.Dir, "sealed through 23, 24-25 open", all...)
	add("f", 1, "f") // 26
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sim.snap = nil
	sim.take(cfg.Dir, "after close", powerLoss, killed)
	checkImages(t, cfg, sim.images, log)
	if n := journalBytes(t, cfg.Dir); n != 0 {
		t.Fatalf("journal holds %d bytes after a run without one", n)
	}
}
