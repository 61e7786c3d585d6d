package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
)

// writeBundle writes parts as the bundle file path (what a Bundler does,
// without its fsyncs) and returns the PartRefs of the parts in it.
func writeBundle(t *testing.T, path string, parts ...*Part) []PartRef {
	t.Helper()
	var buf bytes.Buffer
	w := batch.NewBundleWriter(&buf)
	for _, p := range parts {
		if err := w.Add(p.Data, p.Hash); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var refs []PartRef
	for _, bp := range w.Parts() {
		refs = append(refs, PartRef{Bundle: path, Offset: bp.Offset, Length: bp.Length, Name: bp.Name(), FirstSeq: bp.FirstSeq, LastSeq: bp.LastSeq})
	}
	return refs
}

// journalNames lists the journal files in dir.
func journalNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "journal") {
			out = append(out, e.Name())
		}
	}
	return out
}

// sealedChain decodes every sealed segment the spool lists, parts
// included, in order.
func sealedChain(t *testing.T, sp *Spool) []batchtest.Segment {
	t.Helper()
	var out []batchtest.Segment
	for _, seg := range sp.Pending(0) {
		data, err := sp.ReadSealed(seg.Name)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, batchtest.Decode(t, seg.Name, data))
	}
	return out
}

func TestSealPartCommit(t *testing.T) {
	cfg := spoolConfig(t)
	bdir := t.TempDir()
	sp := openSpool(t, cfg, "t1")
	appendRecs(t, sp, batchtest.Records("a", 5), "c5")
	p, err := sp.SealPart(0)
	if err != nil || p == nil {
		t.Fatalf("SealPart: %v, %v", p, err)
	}
	// Appends go on into the next batch while the part is in flight.
	appendRecs(t, sp, batchtest.Records("b", 3), "c8")
	if got, err := sp.SealPart(0); got != nil || err != nil {
		t.Fatalf("second SealPart while one is in flight: %v, %v; want nothing", got, err)
	}
	if n := len(sp.Pending(0)); n != 0 {
		t.Fatalf("%d sealed before the part is committed", n)
	}
	path := filepath.Join(bdir, batch.BundleName(1))
	refs := writeBundle(t, path, p)
	p.Commit(path, refs[0].Offset)
	pend := sp.Pending(0)
	if len(pend) != 1 || !pend[0].IsPart() || pend[0].Bundle != path || pend[0].LastSeq != 5 {
		t.Fatalf("Pending after Commit: %+v", pend)
	}
	if got := journalNames(t, cfg.Dir); len(got) != 1 {
		t.Fatalf("journal files after the part's commit: %v, want only the live one", got)
	}
	// The next seal, alone, chains to the part.
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	segs := sealedChain(t, sp)
	recs := batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	if got := batchtest.Datas(recs); !slices.Equal(got, append(batchtest.Lines("a", 1, 5), batchtest.Lines("b", 1, 3)...)) {
		t.Fatalf("records %q", got)
	}
	if segs[0].Hash != p.Hash {
		t.Fatalf("part hash %s, decoded %s", p.Hash, segs[0].Hash)
	}
	if files := sealedFiles(t, cfg.Dir); len(files) != 1 || files[0].Meta.FirstSeq != 6 {
		t.Fatalf("sealed/ holds %v; the part must not be there", batchtest.SeqRanges(files))
	}
	// Confirmed and saved, the part leaves the spool; its bundle file
	// stays (the Bundler's).
	sp.Confirm("t1", 8)
	sp.SaveState()
	if n := len(sp.Pending(0)); n != 0 {
		t.Fatalf("%d segments left after confirm and save", n)
	}
	if sp.StateSealedSeq() != 8 {
		t.Fatalf("StateSealedSeq %d, want 8", sp.StateSealedSeq())
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the spool removed the bundle file: %v", err)
	}
}

func TestSealPartSkips(t *testing.T) {
	sp := openSpool(t, spoolConfig(t), "t1")
	if p, err := sp.SealPart(0); p != nil || err != nil {
		t.Fatalf("empty batch: %v, %v", p, err)
	}
	appendRecs(t, sp, batchtest.Records("a", 10), "")
	if p, err := sp.SealPart(10); p != nil || !errors.Is(err, ErrPartTooLarge) {
		t.Fatalf("batch over maxBytes: %v, %v", p, err)
	}
	p, err := sp.SealPart(1 << 20)
	if p == nil || err != nil {
		t.Fatalf("batch under maxBytes: %v, %v", p, err)
	}
	p.Fail(os.ErrInvalid)
	if err := sp.Err(); err == nil {
		t.Fatal("the spool did not fail with its part")
	}
}

// TestPartCrashImages: a kill -9 at each step of a bundle seal, restarted
// with the parts the Bundler would find: nothing lost, nothing twice, the
// chain continues.
func TestPartCrashImages(t *testing.T) {
	for _, replayable := range []bool{false, true} {
		for _, step := range []string{"before bundle", "bundle written, not committed", "committed"} {
			t.Run(map[bool]string{false: "journal", true: "replayable"}[replayable]+"/"+step, func(t *testing.T) {
				cfg := spoolConfig(t)
				bdir := t.TempDir()
				sp := openSpool(t, cfg, "t1")
				if replayable {
					sp.SetReplayable()
				}
				appendRecs(t, sp, batchtest.Records("a", 3), "c3")
				if err := sp.Seal("first"); err != nil {
					t.Fatal(err)
				}
				appendRecs(t, sp, batchtest.Records("b", 4), "c7")
				p, err := sp.SealPart(0)
				if err != nil || p == nil {
					t.Fatalf("SealPart: %v", err)
				}
				path := filepath.Join(bdir, batch.BundleName(1))
				var refs []PartRef
				image := func() string { return copyDir(t, cfg.Dir) }
				var img string
				switch step {
				case "before bundle":
					img = image()
					p.Fail(os.ErrClosed)
				case "bundle written, not committed":
					refs = writeBundle(t, path, p)
					img = image()
					p.Commit(path, refs[0].Offset)
				case "committed":
					refs = writeBundle(t, path, p)
					p.Commit(path, refs[0].Offset)
					img = image()
				}
				c2 := cfg
				c2.Dir = img
				c2.Parts = refs
				sp2 := openSpool(t, c2, "t1")
				if replayable {
					sp2.SetReplayable()
					// The source reads again from the cursor the spool
					// reports.
					switch cur := string(sp2.Cursor()); {
					case refs == nil && cur != "c3":
						t.Fatalf("cursor %q, want c3 (the part was never committed)", cur)
					case refs != nil && cur != "c7":
						t.Fatalf("cursor %q, want c7 (the part's)", cur)
					}
					if refs == nil {
						appendRecs(t, sp2, batchtest.Records("b", 4), "c7")
					}
				}
				if refs != nil {
					// The part is adopted, not sealed again from the
					// journal: the store may hold it already.
					pend := sp2.Pending(3)
					if len(pend) == 0 || !pend[0].IsPart() || pend[0].Name != refs[0].Name {
						t.Fatalf("after restart the spool lists %+v, want the part %s first", pend, refs[0].Name)
					}
				}
				appendRecs(t, sp2, batchtest.Records("c", 2), "c9")
				if err := sp2.Seal("test"); err != nil {
					t.Fatal(err)
				}
				recs := batchtest.CheckChain(t, sealedChain(t, sp2), 0, batch.ZeroHash)
				want := slices.Concat(batchtest.Lines("a", 1, 3), batchtest.Lines("b", 1, 4), batchtest.Lines("c", 1, 2))
				if got := batchtest.Datas(recs); !slices.Equal(got, want) {
					t.Fatalf("records after restart %q, want %q", got, want)
				}
			})
		}
	}
}

func TestPartsRefusedWhenForeign(t *testing.T) {
	cfg := spoolConfig(t)
	bdir := t.TempDir()
	sp := openSpool(t, cfg, "t1")
	appendRecs(t, sp, batchtest.Records("a", 3), "")
	p, _ := sp.SealPart(0)
	path := filepath.Join(bdir, batch.BundleName(1))
	refs := writeBundle(t, path, p)
	p.Commit(path, refs[0].Offset)
	sp.Close()
	// A part that overlaps a sealed segment.
	other := spoolConfig(t)
	osp := openSpool(t, other, "t1")
	appendRecs(t, osp, batchtest.Records("x", 2), "")
	if err := osp.Seal("t"); err != nil {
		t.Fatal(err)
	}
	osp.Close()
	other.Parts = refs
	if _, err := Open(other, []string{"t1"}, quiet); err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("Open with an overlapping part: %v", err)
	}
}

// TestPartAloneWaitsOutFullDisk: a part whose bundle found no room seals
// alone, as a segment file, once the disk has room; the chain and the
// records are the part's.
func TestPartAloneWaitsOutFullDisk(t *testing.T) {
	cfg := spoolConfig(t)
	var fails atomic.Int32
	fails.Store(3)
	cfg.WriteFile = func(f *os.File, p []byte) (int, error) {
		if strings.Contains(f.Name(), "sealed") && fails.Add(-1) >= 0 {
			return 0, syscall.ENOSPC
		}
		return f.Write(p)
	}
	sp := openSpool(t, cfg, "t1")
	appendRecs(t, sp, batchtest.Records("a", 4), "")
	p, err := sp.SealPart(0)
	if err != nil || p == nil {
		t.Fatalf("SealPart: %v", err)
	}
	p.Alone()
	waitFor(t, "the part sealed alone", func() bool { return len(sp.Pending(0)) == 1 })
	if seg := sp.Pending(0)[0]; seg.IsPart() || seg.Name != p.Meta.Name() {
		t.Fatalf("sealed %+v, want the part's segment %s as a file", seg, p.Meta.Name())
	}
	files := sealedFiles(t, cfg.Dir)
	if len(files) != 1 || files[0].Hash != p.Hash {
		t.Fatalf("sealed/ holds %v, want the part's bytes", batchtest.SeqRanges(files))
	}
	if fails.Load() >= 0 {
		t.Fatalf("the disk was never full (%d failures left)", fails.Load())
	}
	if err := sp.Err(); err != nil {
		t.Fatal(err)
	}
}

// Close waits for a part's Commit to remove the journal file the part
// made obsolete, as it waits for a seal's (Commit runs on the Bundler's
// goroutine, apart from the spool's sealers).
func TestCloseWaitsForAPartsJournalRemoval(t *testing.T) {
	cfg := spoolConfig(t)
	var removing atomic.Bool
	testHookBeforeJournalRemoval = func() {
		removing.Store(true)
		time.Sleep(300 * time.Millisecond)
	}
	t.Cleanup(func() { testHookBeforeJournalRemoval = nil })
	sp := openSpool(t, cfg, "t1")
	appendRecs(t, sp, batchtest.Records("a", 5), "c5")
	p, err := sp.SealPart(0)
	if err != nil || p == nil {
		t.Fatalf("SealPart: %v, %v", p, err)
	}
	path := filepath.Join(t.TempDir(), batch.BundleName(1))
	refs := writeBundle(t, path, p)
	committed := make(chan struct{})
	go func() { p.Commit(path, refs[0].Offset); close(committed) }()
	waitFor(t, "the part's commit at its journal removal", removing.Load)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if got := journalNames(t, cfg.Dir); len(got) != 1 {
		t.Fatalf("journal files after Close: %v; want only the live one (Close returned while the part's commit still had the old one to remove)", got)
	}
	<-committed
}
