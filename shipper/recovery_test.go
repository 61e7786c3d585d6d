package shipper

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

func readJournal(t *testing.T, dir string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "journal"))
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
	appendRecs(t, sp, records("a", 2), "c2")
	appendRecs(t, sp, records("b", 1), "c3")
	if err := sp.Close(); err != nil { // no Seal: the batch stays in the journal
		t.Fatal(err)
	}
	if n := len(sealedFiles(t, cfg.Dir)); n != 0 {
		t.Fatalf("Close sealed %d segments", n)
	}

	sp = openSpool(t, cfg)
	segs := sealedFiles(t, cfg.Dir)
	if got := seqRanges(segs); len(got) != 1 || got[0] != [2]uint64{1, 3} {
		t.Fatalf("after reopen: sealed %v, want [1 3]", got)
	}
	all := checkChain(t, segs, 0, batch.ZeroHash)
	if got, want := datas(all), append(lines("a", 1, 2), lines("b", 1, 1)...); !slices.Equal(got, want) {
		t.Fatalf("resealed data %q, want %q", got, want)
	}
	if c := sp.Cursor(); string(c) != "c3" {
		t.Fatalf("cursor %q, want c3", c)
	}
	if j := readJournal(t, cfg.Dir); len(j) != 0 {
		t.Fatalf("journal holds %d bytes after the reseal", len(j))
	}
	next := records("n", 1)
	appendRecs(t, sp, next, "")
	if next[0].Seq != 4 {
		t.Fatalf("next seq %d, want 4", next[0].Seq)
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	checkChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)

	// A third open with nothing in the journal changes nothing.
	sp.Close()
	sp = openSpool(t, cfg)
	if got := seqRanges(sealedFiles(t, cfg.Dir)); len(got) != 2 {
		t.Fatalf("sealed %v after a clean reopen", got)
	}
	if st := sp.Stats(); st.LastSeq != 4 {
		t.Fatalf("LastSeq %d, want 4", st.LastSeq)
	}
}

// twoEntrySpool leaves a closed spool whose journal holds entry 1 (seqs
// 1-2, cursor c1) and entry 2 (seqs 3-4, cursor c2), and returns the dir
// and the length of entry 1.
func twoEntrySpool(t *testing.T) (SpoolConfig, int) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, records("one", 2), "c1")
	appendRecs(t, sp, records("two", 2), "c2")
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
func checkRecoveredFirstEntry(t *testing.T, cfg SpoolConfig, dir, what string) {
	t.Helper()
	cfg.Dir = dir
	sp, err := OpenSpool(cfg, nil, quiet)
	if err != nil {
		t.Fatalf("%s: OpenSpool: %v", what, err)
	}
	defer sp.Close()
	segs := sealedFiles(t, dir)
	if got := seqRanges(segs); len(got) != 1 || got[0] != [2]uint64{1, 2} {
		t.Fatalf("%s: sealed %v, want [1 2]", what, got)
	}
	if got := datas(checkChain(t, segs, 0, batch.ZeroHash)); !slices.Equal(got, lines("one", 1, 2)) {
		t.Fatalf("%s: data %q", what, got)
	}
	if c := sp.Cursor(); string(c) != "c1" {
		t.Fatalf("%s: cursor %q, want c1 (the last complete entry's)", what, c)
	}
	next := records("n", 1)
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
	for cut := n1; cut < len(j); cut++ {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			t.Parallel()
			dir := copyDir(t, cfg.Dir)
			writeFile(t, filepath.Join(dir, "journal"), j[:cut])
			checkRecoveredFirstEntry(t, cfg, dir, fmt.Sprintf("journal cut to %d of %d", cut, len(j)))
		})
	}
}

func TestRecoverDamagedJournalTail(t *testing.T) {
	cfg, n1 := twoEntrySpool(t)
	j := readJournal(t, cfg.Dir)
	for _, i := range []int{n1, n1 + 3, n1 + 4, n1 + 8, n1 + 12, len(j) - 1} {
		dir := copyDir(t, cfg.Dir)
		b := bytes.Clone(j)
		b[i] ^= 0x40
		writeFile(t, filepath.Join(dir, "journal"), b)
		checkRecoveredFirstEntry(t, cfg, dir, fmt.Sprintf("byte %d flipped", i))
	}
}

func TestRecoverTornTailIsCutOff(t *testing.T) {
	// The torn tail must be removed, not just skipped: entries appended
	// after recovery would otherwise sit behind it and be lost next time.
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, records("a", 2), "c2")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	torn := appendEntry(nil, records("x", 1), []byte("torn"))
	writeFile(t, filepath.Join(cfg.Dir, "journal"), torn[:len(torn)-3])

	sp = openSpool(t, cfg)
	if c := sp.Cursor(); string(c) != "c2" {
		t.Fatalf("cursor %q, want c2", c)
	}
	appendRecs(t, sp, records("b", 1), "c3")
	sp.Close()
	sp = openSpool(t, cfg)
	segs := sealedFiles(t, cfg.Dir)
	if got := seqRanges(segs); len(got) != 2 || got[1] != [2]uint64{3, 3} {
		t.Fatalf("sealed %v, want [1 2] [3 3]", got)
	}
	checkChain(t, segs, 0, batch.ZeroHash)
	if c := sp.Cursor(); string(c) != "c3" {
		t.Fatalf("cursor %q, want c3", c)
	}
}

func TestRecoverAdoptsSegmentBeyondState(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, records("a", 5), "c5")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	oldState, err := os.ReadFile(filepath.Join(cfg.Dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	appendRecs(t, sp, records("b", 3), "c8")
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
	next := records("c", 1)
	appendRecs(t, sp, next, "c9")
	if next[0].Seq != 9 {
		t.Fatalf("next seq %d, want 9", next[0].Seq)
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	segs := sealedFiles(t, cfg.Dir)
	if got := seqRanges(segs); len(got) != 3 {
		t.Fatalf("sealed %v, want three segments", got)
	}
	// The new segment chains to the adopted one.
	checkChain(t, segs, 0, batch.ZeroHash)
}

func TestRecoverSealedRecordsNotResealed(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	pos := appendRecs(t, sp, records("a", 3), "c3")
	if err := sp.WaitDurable(context.Background(), pos); err != nil {
		t.Fatal(err)
	}
	journal := readJournal(t, cfg.Dir)
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	// A crash after state.json but before the journal was emptied.
	writeFile(t, filepath.Join(cfg.Dir, "journal"), journal)

	sp = openSpool(t, cfg)
	if got := seqRanges(sealedFiles(t, cfg.Dir)); len(got) != 1 || got[0] != [2]uint64{1, 3} {
		t.Fatalf("sealed %v, want only [1 3]", got)
	}
	if c := sp.Cursor(); string(c) != "c3" {
		t.Fatalf("cursor %q, want c3", c)
	}
	next := records("n", 1)
	appendRecs(t, sp, next, "")
	if next[0].Seq != 4 {
		t.Fatalf("next seq %d, want 4", next[0].Seq)
	}
	sp.Close()
	sp = openSpool(t, cfg)
	segs := sealedFiles(t, cfg.Dir)
	if got := seqRanges(segs); len(got) != 2 || got[1] != [2]uint64{4, 4} {
		t.Fatalf("sealed %v, want [1 3] [4 4]", got)
	}
	checkChain(t, segs, 0, batch.ZeroHash)
}

func TestRecoverRemovesSealTempFile(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, records("a", 2), "c2")
	sp.Close()
	tmp := filepath.Join(cfg.Dir, "sealed", "."+batch.SegmentName(1, 1, 2)+".tmp")
	writeFile(t, tmp, []byte("half a segment"))
	openSpool(t, cfg)
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatalf("temp file of an interrupted seal left behind (%v)", err)
	}
	if got := seqRanges(sealedFiles(t, cfg.Dir)); len(got) != 1 || got[0] != [2]uint64{1, 2} {
		t.Fatalf("sealed %v, want [1 2]", got)
	}
}

func TestRecoverForeignFileInSealed(t *testing.T) {
	cfg := spoolConfig(t)
	openSpool(t, cfg).Close()
	writeFile(t, filepath.Join(cfg.Dir, "sealed", "notes.txt"), nil)
	_, err := OpenSpool(cfg, nil, quiet)
	if err == nil || !strings.Contains(err.Error(), "sealed/notes.txt") {
		t.Fatalf("err %v, want it to name sealed/notes.txt", err)
	}
}

// crashSim is a SyncFile that keeps, for the journal, the bytes its last
// fsync made durable, and calls snap before every fsync and after a
// segment's: the moments a crash image is interesting.
type crashSim struct {
	durable []byte
	ino     uint64
	snap    func(point string)
}

func inode(t *testing.T, path string) uint64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func (c *crashSim) sync(t *testing.T) func(*os.File) error {
	return func(f *os.File) error {
		base := filepath.Base(f.Name())
		c.snap("before fsync of " + base)
		if err := f.Sync(); err != nil {
			return err
		}
		switch {
		case base == "journal":
			b, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			c.durable, c.ino = b, inode(t, f.Name())
		case strings.HasSuffix(base, ".tmp"):
			c.snap("after fsync of " + base)
		}
		return nil
	}
}

// image copies the spool as a crash now could leave it: the journal only
// as far as fsynced (unless it was since replaced whole, atomically), a
// fsynced segment temp file renamed into place when publish is set.
func (c *crashSim) image(t *testing.T, dir string, publish bool) string {
	img := copyDir(t, dir)
	jp := filepath.Join(dir, "journal")
	if inode(t, jp) == c.ino {
		writeFile(t, filepath.Join(img, "journal"), c.durable)
	}
	if publish {
		// The rename of a sealed temp file happens only after state.json
		// names it, so only such a file can appear published.
		var st spoolState
		if raw, err := os.ReadFile(filepath.Join(img, "state.json")); err == nil {
			json.Unmarshal(raw, &st)
		}
		ents, _ := os.ReadDir(filepath.Join(img, "sealed"))
		for _, e := range ents {
			if name := e.Name(); strings.HasPrefix(name, ".") && name == "."+st.Segment+".tmp" {
				final := strings.TrimSuffix(name[1:], ".tmp")
				if err := os.Rename(filepath.Join(img, "sealed", name), filepath.Join(img, "sealed", final)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return img
}

// TestRecoverCrashAtEveryFsync crashes (by image) before and after every
// fsync of a run with group commit, mid-entry seals and explicit seals, and
// checks each image recovers consistently: the cursor names exactly the
// records in the spool, no more (a restarted source would repeat them) and
// no fewer (it would skip them).
func TestRecoverCrashAtEveryFsync(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	sim := &crashSim{}
	type image struct {
		point string
		dir   string
	}
	var images []image
	sim.snap = func(point string) {
		images = append(images, image{point, sim.image(t, cfg.Dir, false)})
		if strings.HasPrefix(point, "after") {
			images = append(images, image{point + " (published)", sim.image(t, cfg.Dir, true)})
		}
	}
	cfg.SyncFile = sim.sync(t)
	sp := openSpool(t, cfg)
	sim.ino = inode(t, filepath.Join(cfg.Dir, "journal")) // empty and durable
	ctx := context.Background()

	var want []string // all data in order
	seqAt := map[string]uint64{"": 0}
	add := func(prefix string, n int, cursor string, wait bool) {
		pos := appendRecs(t, sp, records(prefix, n), cursor)
		want = append(want, lines(prefix, 1, n)...)
		seqAt[cursor] = uint64(len(want))
		if wait {
			if err := sp.WaitDurable(ctx, pos); err != nil {
				t.Fatal(err)
			}
		}
	}
	add("a", 2, "a", true)
	add("b", 2, "b", false)
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	add("c", 25, "c", false) // seals 5-14 and 15-24 mid-entry
	add("d", 1, "d", false)
	add("e", 6, "e", false) // seals 25-34 (c's leftover, d, e)
	add("f", 1, "f", false)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	images = append(images, image{"after close", copyDir(t, cfg.Dir)})

	for _, img := range images {
		rc := cfg
		rc.Dir, rc.SyncFile = img.dir, nil
		sp, err := OpenSpool(rc, nil, quiet)
		if err != nil {
			t.Fatalf("%s: OpenSpool: %v", img.point, err)
		}
		cursor := string(sp.Cursor())
		last, ok := seqAt[cursor]
		if !ok {
			t.Fatalf("%s: cursor %q unknown", img.point, cursor)
		}
		if got := sp.Stats().LastSeq; got != last {
			t.Errorf("%s: recovered through seq %d but cursor %q is after seq %d: a restarted source would %s",
				img.point, got, cursor, last, map[bool]string{true: "repeat records", false: "skip records"}[got > last])
		}
		segs := sealedFiles(t, img.dir)
		all := checkChain(t, segs, 0, batch.ZeroHash)
		if got := datas(all); !slices.Equal(got, want[:len(got)]) || uint64(len(got)) != sp.Stats().LastSeq {
			t.Errorf("%s: spool holds %q, want a prefix of %d records", img.point, got, sp.Stats().LastSeq)
		}
		sp.Close()
	}
	var points []string
	for _, img := range images {
		points = append(points, img.point)
	}
	t.Logf("%d crash images checked: %s", len(images), strings.Join(points, "; "))
}

func TestRecoverResealKeepsCursorDurable(t *testing.T) {
	// After kill -9 the journal read back may be only in the page cache;
	// resealing from it must fsync it before the segment exists, like any
	// other seal.
	cfg := spoolConfig(t)
	openSpool(t, cfg).Close()
	recs := records("a", 2)
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
	if got := seqRanges(sealedFiles(t, cfg.Dir)); len(got) != 1 || got[0] != [2]uint64{1, 2} {
		t.Fatalf("sealed %v, want [1 2]", got)
	}
	// The reseal must not depend on the journal being durable: the
	// segment is fsynced before state.json, and state.json carries the
	// journal's cursor, so a crash right after recovery keeps both.
	seg := slices.IndexFunc(order, func(s string) bool { return strings.HasSuffix(s, ".seg.zst.tmp") })
	if seg < 0 {
		t.Fatalf("fsyncs at recovery: %q; want the resealed segment fsynced", order)
	}
	raw, err := os.ReadFile(filepath.Join(cfg.Dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st spoolState
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if string(st.Cursor) != "c2" || st.SealedSeq != 2 {
		t.Fatalf("state.json after reseal: cursor %q sealed %d; want c2 and 2", st.Cursor, st.SealedSeq)
	}
}

// TestRecoverFinishesPublish: a crash after state.json names a sealed
// segment but before its temp file was renamed leaves only the temp file;
// recovery must publish it (not delete it) and keep state.json's cursor.
func TestRecoverFinishesPublish(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	appendRecs(t, sp, records("a", 3), "c3")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	segs := sealedFiles(t, cfg.Dir)
	if len(segs) != 1 {
		t.Fatalf("sealed %v", segs)
	}
	name := segs[0].name
	if err := os.Rename(filepath.Join(cfg.Dir, "sealed", name), filepath.Join(cfg.Dir, "sealed", "."+name+".tmp")); err != nil {
		t.Fatal(err)
	}
	sp = openSpool(t, cfg)
	defer sp.Close()
	if got := sealedFiles(t, cfg.Dir); len(got) != 1 || got[0].name != name {
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
