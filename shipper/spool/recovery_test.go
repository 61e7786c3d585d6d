package spool

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
)

// journalFiles lists the journal files in dir in replay order.
func journalFiles(t *testing.T, dir string) []string {
	t.Helper()
	names, err := listJournals(dir)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// journalPath is the newest journal file in dir, the one appends go to.
func journalPath(t *testing.T, dir string) string {
	t.Helper()
	names := journalFiles(t, dir)
	if len(names) == 0 {
		t.Fatalf("no journal file in %s", dir)
	}
	return filepath.Join(dir, names[len(names)-1])
}

// readJournal reads the newest journal file in dir.
func readJournal(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(journalPath(t, dir))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readState(t *testing.T, dir string) spoolState {
	t.Helper()
	var st spoolState
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestRecoverPartialBatch(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("a", 2), "c2")
	appendRecs(t, sp, batchtest.Records("b", 1), "c3")
	if err := sp.Close(); err != nil { // no Seal: the batch stays in the journal
		t.Fatal(err)
	}
	if n := len(sealedFiles(t, cfg.Dir)); n != 0 {
		t.Fatalf("Close sealed %d segments", n)
	}

	sp = openSpool(t, cfg)
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); len(got) != 1 || got[0] != [2]uint64{1, 3} {
		t.Fatalf("after reopen: sealed %v, want [1 3]", got)
	}
	all := batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	if got, want := batchtest.Datas(all), append(batchtest.Lines("a", 1, 2), batchtest.Lines("b", 1, 1)...); !slices.Equal(got, want) {
		t.Fatalf("resealed data %q, want %q", got, want)
	}
	if c := sp.Cursor(); string(c) != "c3" {
		t.Fatalf("cursor %q, want c3", c)
	}
	if j := readJournal(t, cfg.Dir); len(j) != 0 {
		t.Fatalf("journal holds %d bytes after the reseal", len(j))
	}
	if names := journalFiles(t, cfg.Dir); len(names) != 1 || names[0] != journalName(4) {
		t.Fatalf("journal files after the reseal: %q, want only %s", names, journalName(4))
	}
	next := batchtest.Records("n", 1)
	appendRecs(t, sp, next, "")
	if next[0].Seq != 4 {
		t.Fatalf("next seq %d, want 4", next[0].Seq)
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	batchtest.CheckChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)

	// A third open with nothing in the journal changes nothing.
	sp.Close()
	sp = openSpool(t, cfg)
	if got := batchtest.SeqRanges(sealedFiles(t, cfg.Dir)); len(got) != 2 {
		t.Fatalf("sealed %v after a clean reopen", got)
	}
	if st := sp.Stats(); st.LastSeq != 4 {
		t.Fatalf("LastSeq %d, want 4", st.LastSeq)
	}
}

// twoEntrySpool leaves a closed spool whose journal holds entry 1 (seqs
// 1-2, cursor c1) and entry 2 (seqs 3-4, cursor c2), and returns the dir
// and the length of entry 1.
func twoEntrySpool(t *testing.T) (Config, int) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("one", 2), "c1")
	appendRecs(t, sp, batchtest.Records("two", 2), "c2")
	sp.Close()
	j := readJournal(t, cfg.Dir)
	_, _, n, err := parseEntry(j)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, n
}

// checkRecoveredFirstEntry opens the spool in dir and checks that exactly
// entry 1 of twoEntrySpool survived.
func checkRecoveredFirstEntry(t *testing.T, cfg Config, dir, what string) {
	t.Helper()
	cfg.Dir = dir
	sp, err := Open(cfg, nil, quiet)
	if err != nil {
		t.Fatalf("%s: Open: %v", what, err)
	}
	defer sp.Close()
	segs := sealedFiles(t, dir)
	if got := batchtest.SeqRanges(segs); len(got) != 1 || got[0] != [2]uint64{1, 2} {
		t.Fatalf("%s: sealed %v, want [1 2]", what, got)
	}
	if got := batchtest.Datas(batchtest.CheckChain(t, segs, 0, batch.ZeroHash)); !slices.Equal(got, batchtest.Lines("one", 1, 2)) {
		t.Fatalf("%s: data %q", what, got)
	}
	if c := sp.Cursor(); string(c) != "c1" {
		t.Fatalf("%s: cursor %q, want c1 (the last complete entry's)", what, c)
	}
	next := batchtest.Records("n", 1)
	if _, err := sp.Append(context.Background(), next, nil); err != nil {
		t.Fatal(err)
	}
	if next[0].Seq != 3 {
		t.Fatalf("%s: next seq %d, want 3", what, next[0].Seq)
	}
}

func TestRecoverTornJournalTail(t *testing.T) {
	cfg, n1 := twoEntrySpool(t)
	j := readJournal(t, cfg.Dir)
	name := filepath.Base(journalPath(t, cfg.Dir))
	for cut := n1; cut < len(j); cut++ {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			t.Parallel()
			dir := copyDir(t, cfg.Dir)
			writeFile(t, filepath.Join(dir, name), j[:cut])
			checkRecoveredFirstEntry(t, cfg, dir, fmt.Sprintf("journal cut to %d of %d", cut, len(j)))
		})
	}
}

func TestRecoverDamagedJournalTail(t *testing.T) {
	cfg, n1 := twoEntrySpool(t)
	j := readJournal(t, cfg.Dir)
	name := filepath.Base(journalPath(t, cfg.Dir))
	for _, i := range []int{n1, n1 + 3, n1 + 4, n1 + 8, n1 + 12, len(j) - 1} {
		dir := copyDir(t, cfg.Dir)
		b := bytes.Clone(j)
		b[i] ^= 0x40
		writeFile(t, filepath.Join(dir, name), b)
		checkRecoveredFirstEntry(t, cfg, dir, fmt.Sprintf("byte %d flipped", i))
	}
}

func TestRecoverTornTailIsCutOff(t *testing.T) {
	// The torn tail must be removed, not just skipped: entries appended
	// after recovery would otherwise sit behind it and be lost next time.
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("a", 2), "c2")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	torn := appendEntry(nil, batchtest.Records("x", 1), []byte("torn"))
	writeFile(t, journalPath(t, cfg.Dir), torn[:len(torn)-3])

	sp = openSpool(t, cfg)
	if c := sp.Cursor(); string(c) != "c2" {
		t.Fatalf("cursor %q, want c2", c)
	}
	appendRecs(t, sp, batchtest.Records("b", 1), "c3")
	sp.Close()
	sp = openSpool(t, cfg)
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); len(got) != 2 || got[1] != [2]uint64{3, 3} {
		t.Fatalf("sealed %v, want [1 2] [3 3]", got)
	}
	batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	if c := sp.Cursor(); string(c) != "c3" {
		t.Fatalf("cursor %q, want c3", c)
	}
}

func TestRecoverAdoptsSegmentBeyondState(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("a", 5), "c5")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	oldState, err := os.ReadFile(filepath.Join(cfg.Dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	appendRecs(t, sp, batchtest.Records("b", 3), "c8")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	// A crash between publishing segment 6-8 and writing state.json.
	writeFile(t, filepath.Join(cfg.Dir, "state.json"), oldState)

	sp = openSpool(t, cfg)
	if st := readState(t, cfg.Dir); st.SealedSeq != 8 {
		t.Fatalf("state.json sealed_seq %d after adoption, want 8", st.SealedSeq)
	}
	next := batchtest.Records("c", 1)
	appendRecs(t, sp, next, "c9")
	if next[0].Seq != 9 {
		t.Fatalf("next seq %d, want 9", next[0].Seq)
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); len(got) != 3 {
		t.Fatalf("sealed %v, want three segments", got)
	}
	// The new segment chains to the adopted one.
	batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
}

func TestRecoverSealedRecordsNotResealed(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	pos := appendRecs(t, sp, batchtest.Records("a", 3), "c3")
	if err := sp.WaitDurable(context.Background(), pos); err != nil {
		t.Fatal(err)
	}
	jp := journalPath(t, cfg.Dir)
	journal := readJournal(t, cfg.Dir)
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	if _, err := os.Stat(jp); !os.IsNotExist(err) {
		t.Fatalf("journal file %s of the sealed batch left behind (%v)", filepath.Base(jp), err)
	}
	// A crash after state.json but before the removal of the batch's
	// journal file was durable brings it back.
	writeFile(t, jp, journal)

	sp = openSpool(t, cfg)
	if got := batchtest.SeqRanges(sealedFiles(t, cfg.Dir)); len(got) != 1 || got[0] != [2]uint64{1, 3} {
		t.Fatalf("sealed %v, want only [1 3]", got)
	}
	if c := sp.Cursor(); string(c) != "c3" {
		t.Fatalf("cursor %q, want c3", c)
	}
	next := batchtest.Records("n", 1)
	appendRecs(t, sp, next, "")
	if next[0].Seq != 4 {
		t.Fatalf("next seq %d, want 4", next[0].Seq)
	}
	sp.Close()
	sp = openSpool(t, cfg)
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); len(got) != 2 || got[1] != [2]uint64{4, 4} {
		t.Fatalf("sealed %v, want [1 3] [4 4]", got)
	}
	batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
}

func TestRecoverRemovesSealTempFile(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("a", 2), "c2")
	sp.Close()
	tmp := filepath.Join(cfg.Dir, "sealed", "."+batch.SegmentName(1, 1, 2)+".tmp")
	writeFile(t, tmp, []byte("half a segment"))
	openSpool(t, cfg)
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("temp file of an interrupted seal left behind (%v)", err)
	}
	if got := batchtest.SeqRanges(sealedFiles(t, cfg.Dir)); len(got) != 1 || got[0] != [2]uint64{1, 2} {
		t.Fatalf("sealed %v, want [1 2]", got)
	}
}

func TestRecoverForeignFileInSealed(t *testing.T) {
	cfg := spoolConfig(t)
	openSpool(t, cfg).Close()
	writeFile(t, filepath.Join(cfg.Dir, "sealed", "notes.txt"), nil)
	_, err := Open(cfg, nil, quiet)
	if err == nil || !strings.Contains(err.Error(), "sealed/notes.txt") {
		t.Fatalf("err %v, want it to name sealed/notes.txt", err)
	}
}

// TestRecoverCrashAtEveryFsync crashes (by image) before and after every
// fsync of a run with group commit, mid-entry seals and explicit seals, and
// checks each image recovers consistently (checkImages). Each append waits
// for the seals it started, so every fsync happens while the rest of the
// spool is still; TestSealInFlightCrashImages crashes with a seal in flight.
// It runs with a journal file per seal, with one file kept across seals
// (JournalRotate), and with one rotated every few seals.
func TestRecoverCrashAtEveryFsync(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rotate int64
	}{{"file per seal", 0}, {"one file", 1 << 20}, {"rotate at 300 bytes", 300}} {
		t.Run(tc.name, func(t *testing.T) { recoverCrashAtEveryFsync(t, tc.rotate) })
	}
}

func recoverCrashAtEveryFsync(t *testing.T, rotate int64) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	cfg.JournalRotate = rotate
	sim := newCrashSim(t)
	sim.snap = func(point string) {
		kinds := []imageKind{powerLoss, resurrected, killed}
		if strings.HasPrefix(point, "after") {
			kinds = append(kinds, published)
		}
		sim.take(cfg.Dir, point, kinds...)
	}
	cfg.SyncFile = sim.sync
	sp := openSpool(t, cfg)
	ctx := context.Background()

	log := newCursorLog()
	add := func(prefix string, n int, cursor string, wait bool) {
		pos := appendRecs(t, sp, batchtest.Records(prefix, n), cursor)
		log.add(prefix, n, cursor)
		settle(t, sp)
		if wait {
			if err := sp.WaitDurable(ctx, pos); err != nil {
				t.Fatal(err)
			}
			sim.acked.Store(uint64(len(log.want)))
		}
	}
	add("a", 2, "a", true)
	add("b", 2, "b", false)
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sim.acked.Store(uint64(len(log.want)))
	add("c", 25, "c", false) // seals 5-14 and 15-24 mid-entry
	add("d", 1, "d", false)
	add("e", 6, "e", true) // seals 25-34 (c's leftover, d, e)
	add("f", 3, "", false) // no cursor
	add("g", 9, "", false) // seals 35-44 mid-entry without a cursor
	add("h", 1, "h", true)
	add("i", 1, "i", false)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sim.snap = nil
	sim.take(cfg.Dir, "after close", killed, powerLoss)
	checkImages(t, cfg, sim.images, log)
}

func TestRecoverResealKeepsCursorDurable(t *testing.T) {
	// After kill -9 the journal read back may be only in the page cache;
	// resealing from it must fsync it before the segment exists, like any
	// other seal.
	cfg := spoolConfig(t)
	openSpool(t, cfg).Close()
	recs := batchtest.Records("a", 2)
	recs[0].Seq, recs[1].Seq = 1, 2
	writeFile(t, filepath.Join(cfg.Dir, "journal"), appendEntry(nil, recs, []byte("c2")))
	var order []string
	cfg.SyncFile = func(f *os.File) error {
		order = append(order, filepath.Base(f.Name()))
		return f.Sync()
	}
	sp := openSpool(t, cfg)
	if c := sp.Cursor(); string(c) != "c2" {
		t.Fatalf("cursor %q", c)
	}
	if got := batchtest.SeqRanges(sealedFiles(t, cfg.Dir)); len(got) != 1 || got[0] != [2]uint64{1, 2} {
		t.Fatalf("sealed %v, want [1 2]", got)
	}
	// The reseal must not depend on the journal being durable: the
	// segment is fsynced, and it carries the journal's cursor, so a crash
	// right after recovery keeps both.
	segName := slices.IndexFunc(order, func(s string) bool { return strings.HasSuffix(s, ".seg.zst") })
	if segName < 0 {
		t.Fatalf("fsyncs at recovery: %q; want the resealed segment fsynced", order)
	}
	raw, err := os.ReadFile(filepath.Join(cfg.Dir, "sealed", order[segName]))
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := batch.ParseMeta(raw)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.SourceCursor) != "c2" || m.LastSeq != 2 {
		t.Fatalf("resealed segment: cursor %q last seq %d; want c2 and 2", m.SourceCursor, m.LastSeq)
	}
}

// TestRecoverFinishesPublish: a crash after state.json names a sealed
// segment but before its temp file was renamed leaves only the temp file;
// recovery must publish it (not delete it) and keep state.json's cursor.
func TestRecoverFinishesPublish(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("a", 3), "c3")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	segs := sealedFiles(t, cfg.Dir)
	if len(segs) != 1 {
		t.Fatalf("sealed %v", segs)
	}
	name := segs[0].Name
	if err := os.Rename(filepath.Join(cfg.Dir, "sealed", name), filepath.Join(cfg.Dir, "sealed", "."+name+".tmp")); err != nil {
		t.Fatal(err)
	}
	sp = openSpool(t, cfg)
	defer sp.Close()
	if got := sealedFiles(t, cfg.Dir); len(got) != 1 || got[0].Name != name {
		t.Fatalf("after recovery sealed = %v, want %s", got, name)
	}
	if c := sp.Cursor(); string(c) != "c3" || sp.Stats().LastSeq != 3 {
		t.Fatalf("cursor %q last %d; want c3 and 3", c, sp.Stats().LastSeq)
	}
	// A temp file state.json does not name is an interrupted seal: removed.
	junk := filepath.Join(cfg.Dir, "sealed", ".00000001-0000000000000004-0000000000000005.seg.zst.tmp")
	writeFile(t, junk, []byte("partial"))
	sp.Close()
	sp = openSpool(t, cfg)
	if _, err := os.Stat(junk); !os.IsNotExist(err) {
		t.Fatalf("stray temp file not removed: %v", err)
	}
}

// A spool written by ferry before the journal rotated has one file named
// "journal": recovery replays it like the first of the numbered files and
// then removes it, whether the old code had rewritten it to the leftover of
// a mid-entry seal or crashed before that.
func TestRecoverLegacyJournal(t *testing.T) {
	for _, rewritten := range []bool{false, true} {
		t.Run(fmt.Sprintf("rewritten=%v", rewritten), func(t *testing.T) {
			cfg := spoolConfig(t)
			cfg.Policy.MaxRecords = 10
			sp := openSpool(t, cfg)
			recs := batchtest.Records("a", 15)
			appendRecs(t, sp, recs, "c15") // seals 1-10 with cursor c15
			sp.Close()
			for _, name := range journalFiles(t, cfg.Dir) {
				if err := os.Remove(filepath.Join(cfg.Dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			legacy := appendEntry(nil, recs, []byte("c15"))
			if rewritten {
				legacy = appendEntry(nil, recs[10:], []byte("c15"))
			}
			writeFile(t, filepath.Join(cfg.Dir, legacyJournal), legacy)

			sp = openSpool(t, cfg)
			segs := sealedFiles(t, cfg.Dir)
			if got := batchtest.SeqRanges(segs); len(got) != 2 || got[1] != [2]uint64{11, 15} {
				t.Fatalf("sealed %v, want [1 10] [11 15]", got)
			}
			if got := batchtest.Datas(batchtest.CheckChain(t, segs, 0, batch.ZeroHash)); !slices.Equal(got, batchtest.Lines("a", 1, 15)) {
				t.Fatalf("data %q", got)
			}
			if c := sp.Cursor(); string(c) != "c15" {
				t.Fatalf("cursor %q, want c15", c)
			}
			if names := journalFiles(t, cfg.Dir); !slices.Equal(names, []string{journalName(16)}) {
				t.Fatalf("journal files %q, want only %s", names, journalName(16))
			}
		})
	}
}

// A journal file starting past the records recovered from the file before
// it follows a file that lost its unsynced tail: it was never made durable
// before that file, so nothing in it was acknowledged, and it is dropped
// (with any later file) rather than leave a gap.
func TestRecoverDropsFileAfterLostTail(t *testing.T) {
	cfg := spoolConfig(t)
	openSpool(t, cfg).Close()
	for _, name := range journalFiles(t, cfg.Dir) {
		os.Remove(filepath.Join(cfg.Dir, name))
	}
	recs := batchtest.Records("a", 12)
	for i := range recs {
		recs[i].Seq = uint64(i + 1)
	}
	first := appendEntry(nil, recs[:3], []byte("c3"))
	torn := appendEntry(nil, recs[3:10], []byte("c10"))
	writeFile(t, filepath.Join(cfg.Dir, journalName(1)), append(first, torn[:len(torn)/2]...))
	writeFile(t, filepath.Join(cfg.Dir, journalName(8)), appendEntry(nil, recs[7:10], []byte("c10")))
	writeFile(t, filepath.Join(cfg.Dir, journalName(11)), appendEntry(nil, recs[10:], []byte("c12")))

	sp := openSpool(t, cfg)
	if got := batchtest.SeqRanges(sealedFiles(t, cfg.Dir)); len(got) != 1 || got[0] != [2]uint64{1, 3} {
		t.Fatalf("sealed %v, want [1 3]", got)
	}
	if c := sp.Cursor(); string(c) != "c3" {
		t.Fatalf("cursor %q, want c3", c)
	}
	if names := journalFiles(t, cfg.Dir); !slices.Equal(names, []string{journalName(4)}) {
		t.Fatalf("journal files %q, want only %s", names, journalName(4))
	}
}

// A leftover copied to the next file is replayed once, whichever copy
// survived; a gap inside a file, or a first file starting past the sealed
// records, is damage recovery refuses to paper over.
func TestRecoverLeftoverInBothFilesAndGaps(t *testing.T) {
	recs := batchtest.Records("a", 8)
	for i := range recs {
		recs[i].Seq = uint64(i + 1)
	}
	setup := func(t *testing.T, files map[string][]byte) Config {
		cfg := spoolConfig(t)
		openSpool(t, cfg).Close()
		for _, name := range journalFiles(t, cfg.Dir) {
			os.Remove(filepath.Join(cfg.Dir, name))
		}
		for name, data := range files {
			writeFile(t, filepath.Join(cfg.Dir, name), data)
		}
		return cfg
	}
	// Entry 1-6 (cursor c6) split at 4: 5-6 copied to journal-5, then 7-8.
	j1 := appendEntry(nil, recs[:6], []byte("c6"))
	j5 := append(appendEntry(nil, recs[4:6], []byte("c6")), appendEntry(nil, recs[6:], []byte("c8"))...)
	for _, c := range []struct {
		name   string
		files  map[string][]byte
		last   int
		cursor string
	}{
		{"both copies", map[string][]byte{journalName(1): j1, journalName(5): j5}, 8, "c8"},
		{"second copy torn", map[string][]byte{journalName(1): j1, journalName(5): j5[:3]}, 6, "c6"},
		{"second file empty", map[string][]byte{journalName(1): j1, journalName(5): nil}, 6, "c6"},
		// The entry is lost from the first file, so the second was never
		// made durable before it: nothing in it was acknowledged.
		{"first copy torn", map[string][]byte{journalName(1): j1[:len(j1)-1], journalName(5): j5}, 0, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := setup(t, c.files)
			sp := openSpool(t, cfg)
			if got := batchtest.Datas(batchtest.CheckChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)); !slices.Equal(got, batchtest.Lines("a", 1, c.last)) {
				t.Fatalf("data %q, want %d records", got, c.last)
			}
			if got := string(sp.Cursor()); got != c.cursor {
				t.Fatalf("cursor %q, want %q", got, c.cursor)
			}
		})
	}
	for name, files := range map[string]map[string][]byte{
		"gap in a file": {journalName(1): append(appendEntry(nil, recs[:2], nil), appendEntry(nil, recs[3:5], nil)...)},
		"missing first": {journalName(5): j5},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := setup(t, files)
			if _, err := Open(cfg, nil, quiet); err == nil || !strings.Contains(err.Error(), "gap") {
				t.Fatalf("Open: err %v, want a gap error", err)
			}
		})
	}
}

// crashCopy copies a live spool the way kill -9 leaves it (the page cache
// survives): state.json is whatever the last SaveState wrote.
func crashCopy(t *testing.T, dir string) Config {
	t.Helper()
	img := t.TempDir()
	if err := copyTree(dir, img); err != nil {
		t.Fatal(err)
	}
	cfg := spoolConfig(t)
	cfg.Dir = img
	return cfg
}

// Seals do not rewrite state.json: the segments sealed since carry the
// chain and the source cursor, and recovery brings state.json up to them.
func TestRecoverAdoptsSealsSinceState(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	defer sp.Close()
	before := readState(t, cfg.Dir)
	for i, c := range []string{"c3", "c5", "c9"} {
		appendRecs(t, sp, batchtest.Records(fmt.Sprint("r", i), 3), c)
		if err := sp.Seal("test"); err != nil {
			t.Fatal(err)
		}
	}
	if st := readState(t, cfg.Dir); st.SealedSeq != before.SealedSeq {
		t.Fatalf("a seal rewrote state.json (sealed_seq %d)", st.SealedSeq)
	}
	appendRecs(t, sp, batchtest.Records("open", 2), "c11") // left in the journal
	if err := sp.WaitDurable(context.Background(), sp.written); err != nil {
		t.Fatal(err)
	}
	img := crashCopy(t, cfg.Dir)
	sp2 := openSpool(t, img)
	defer sp2.Close()
	if st := readState(t, img.Dir); st.SealedSeq < 9 {
		t.Fatalf("state.json sealed_seq %d after recovery, want at least 9", st.SealedSeq)
	}
	if c := string(sp2.Cursor()); c != "c11" || sp2.Stats().LastSeq != 11 {
		t.Fatalf("cursor %q last seq %d; want c11 and 11", c, sp2.Stats().LastSeq)
	}
	all := batchtest.CheckChain(t, sealedFiles(t, img.Dir), 0, batch.ZeroHash)
	if len(all) != 11 {
		t.Fatalf("spool holds %d records after recovery, want 11", len(all))
	}
}

// A crash during a seal, before its fsync, can leave the newest segment
// torn: recovery removes it and reseals its records from the journal.
// Damage anywhere else is refused.
func TestRecoverTornNewestSegment(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("a", 4), "c4")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	pos := appendRecs(t, sp, batchtest.Records("b", 3), "c7")
	if err := sp.WaitDurable(context.Background(), pos); err != nil {
		t.Fatal(err)
	}
	// The journal of 5-7 as the seal found it, before the seal retires it.
	journals := map[string][]byte{}
	for _, n := range journalFiles(t, cfg.Dir) {
		b, err := os.ReadFile(filepath.Join(cfg.Dir, n))
		if err != nil {
			t.Fatal(err)
		}
		journals[n] = b
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	img := crashCopy(t, cfg.Dir)
	sp.Close()
	for n, b := range journals {
		writeFile(t, filepath.Join(img.Dir, n), b)
	}
	segs := sealedFiles(t, img.Dir)
	newest := filepath.Join(img.Dir, "sealed", segs[len(segs)-1].Name)
	raw, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, newest, raw[:len(raw)-7]) // torn

	damaged := crashCopy(t, img.Dir)
	sp2 := openSpool(t, img)
	if c := string(sp2.Cursor()); c != "c7" || sp2.Stats().LastSeq != 7 {
		t.Fatalf("cursor %q last seq %d; want c7 and 7", c, sp2.Stats().LastSeq)
	}
	all := batchtest.CheckChain(t, sealedFiles(t, img.Dir), 0, batch.ZeroHash)
	if got, want := batchtest.Datas(all), append(batchtest.Lines("a", 1, 4), batchtest.Lines("b", 1, 3)...); !slices.Equal(got, want) {
		t.Fatalf("after recovery %q, want %q", got, want)
	}
	sp2.Close()

	// The same damage in a segment that is not the newest is refused.
	first := filepath.Join(damaged.Dir, "sealed", segs[0].Name)
	raw, err = os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 0xff
	writeFile(t, first, raw)
	if _, err := Open(damaged, nil, quiet); err == nil || !strings.Contains(err.Error(), "the spool is damaged") {
		t.Fatalf("Open with a damaged older segment: %v, want 'the spool is damaged'", err)
	}
}

// Confirmed segments leave the spool once state.json covers them: at
// most every StateEvery while running, at once on Close.
func TestConfirmedSegmentsWaitForState(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.StateEvery = time.Hour
	sp := openSpool(t, cfg, "t")
	seal := func(prefix string) {
		appendRecs(t, sp, batchtest.Records(prefix, 2), "")
		if err := sp.Seal("test"); err != nil {
			t.Fatal(err)
		}
	}
	seal("a")
	sp.Confirm("t", 2) // the first Confirm since open writes state.json
	seal("b")
	seal("c")
	sp.Confirm("t", 6)
	if got := batchtest.SeqRanges(sealedFiles(t, cfg.Dir)); len(got) != 2 || got[0] != [2]uint64{3, 4} {
		t.Fatalf("sealed after confirming everything within StateEvery: %v, want 3-4 and 5-6 kept", got)
	}
	if st := sp.Stats(); st.SealedPending != 0 {
		t.Fatalf("SealedPending %d, want 0: every segment is confirmed", st.SealedPending)
	}
	if u := sp.Unconfirmed(); len(u) != 0 {
		t.Fatalf("Unconfirmed %v, want none (OldestUnsent and health read it)", u)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if got := sealedFiles(t, cfg.Dir); len(got) != 0 {
		t.Fatalf("sealed after Close: %v, want none", batchtest.SeqRanges(got))
	}
	if st := readState(t, cfg.Dir); st.SealedSeq != 6 {
		t.Fatalf("state.json sealed_seq %d after Close, want 6", st.SealedSeq)
	}
}
