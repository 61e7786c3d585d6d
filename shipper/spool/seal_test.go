package spool

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
)

// settle waits until no seal is in flight, as a test that looks at sealed
// files right after an Append needs.
func settle(t *testing.T, sp *Spool) {
	t.Helper()
	sp.mu.Lock()
	defer sp.mu.Unlock()
	sp.waitSealLocked()
}

// sealGate is a SyncFile that, once on, parks the sealer before each
// fsync of a segment file until the test releases it, with an error for
// that fsync to return or nil. When the test ends (its Context is done,
// before the Cleanup that closes the spool) the gate fails the parked
// fsync, so a test that fails while a seal is parked ends rather than
// hanging in Close.
type sealGate struct {
	next    func(*os.File) error
	on      atomic.Bool
	parked  chan string
	release chan error
	ended   <-chan struct{}
}

var errGateEnded = errors.New("sealGate: the test ended with this fsync parked")

func newSealGate(t *testing.T, next func(*os.File) error) *sealGate {
	return &sealGate{next: next, parked: make(chan string), release: make(chan error), ended: t.Context().Done()}
}

func (g *sealGate) sync(f *os.File) error {
	if name := filepath.Base(f.Name()); g.on.Load() && strings.HasSuffix(name, ".seg.zst") {
		select {
		case g.parked <- name:
		case <-g.ended:
			return errGateEnded
		}
		select {
		case err := <-g.release:
			if err != nil {
				return err
			}
		case <-g.ended:
			return errGateEnded
		}
	}
	return g.next(f)
}

// wait returns the name of the file the sealer parked at.
func (g *sealGate) wait(t *testing.T) string {
	t.Helper()
	select {
	case name := <-g.parked:
		return name
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the sealer to park")
		return ""
	}
}

// async runs f on a goroutine; the channel yields its error.
func async(f func() error) chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func blocked(t *testing.T, what string, ch chan error) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s returned (%v) while the seal before it was in flight", what, err)
	case <-time.After(50 * time.Millisecond):
	}
}

func result(t *testing.T, what string, ch chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s still blocked", what)
		return nil
	}
}

// appendAsync appends recs on a goroutine.
func appendBg(sp *Spool, recs []batch.Record, cursor string) chan error {
	var c []byte
	if cursor != "" {
		c = []byte(cursor)
	}
	return async(func() error {
		_, err := sp.Append(context.Background(), recs, c)
		return err
	})
}

// lastSeqIs waits until the spool has assigned seqs through seq: an Append
// running on another goroutine got that far.
func lastSeqIs(t *testing.T, sp *Spool, seq uint64) {
	t.Helper()
	waitFor(t, "the append to reach its seal point", func() bool {
		sp.mu.Lock()
		defer sp.mu.Unlock()
		return sp.lastSeq == seq
	})
}

func TestSealAppendsContinueWhileSealing(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	gate := newSealGate(t, (*os.File).Sync)
	cfg.SyncFile = gate.sync
	sp := openSpool(t, cfg)
	gate.on.Store(true)
	appendRecs(t, sp, batchtest.Records("a", 10), "c10") // due: handed to the sealer
	if name := gate.wait(t); !strings.HasSuffix(name, ".seg.zst") {
		t.Fatalf("sealer parked at %s, want the segment file", name)
	}
	// The sealer is stuck in its fsync; the next batch fills meanwhile.
	next := batchtest.Records("b", 5)
	done := appendBg(sp, next, "c15")
	if err := result(t, "Append of the next batch", done); err != nil {
		t.Fatal(err)
	}
	if next[0].Seq != 11 {
		t.Fatalf("next batch starts at seq %d, want 11", next[0].Seq)
	}
	if p := sp.Pending(0); len(p) != 0 {
		t.Fatalf("pending %+v before the seal is done", p)
	}
	st := sp.Stats()
	if st.LastSeq != 15 || st.SegmentsOut != 0 {
		t.Fatalf("stats while sealing: %+v", st)
	}
	// size() counts the batch being sealed as well as the open one.
	var recSize int64
	for _, r := range append(batchtest.Records("a", 10), next...) {
		recSize += int64(r.FramedSize())
	}
	if st.SpoolBytes < recSize {
		t.Fatalf("spool bytes %d while sealing, want at least the %d bytes of both batches", st.SpoolBytes, recSize)
	}
	// Both journal files are live: the sealing batch's and the open one's.
	if names := journalFiles(t, cfg.Dir); !slices.Equal(names, []string{journalName(1), journalName(11)}) {
		t.Fatalf("journal files while sealing: %q", names)
	}
	gate.on.Store(false)
	gate.release <- nil
	settle(t, sp)
	if names := journalFiles(t, cfg.Dir); !slices.Equal(names, []string{journalName(11)}) {
		t.Fatalf("journal files after the seal: %q, want only %s", names, journalName(11))
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); len(got) != 2 || got[0] != [2]uint64{1, 10} || got[1] != [2]uint64{11, 15} {
		t.Fatalf("sealed %v, want [1 10] [11 15]", got)
	}
	all := batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	if got, want := batchtest.Datas(all), append(batchtest.Lines("a", 1, 10), batchtest.Lines("b", 1, 5)...); !slices.Equal(got, want) {
		t.Fatalf("data %q, want %q", got, want)
	}
	if c := sp.Cursor(); string(c) != "c15" {
		t.Fatalf("cursor %q", c)
	}
}

// A second batch that is due while the first still seals waits for it; so
// does the age trigger and an explicit Seal, which also returns only once
// everything is sealed. Close waits for the seal in flight.
func TestSealSecondDueBatchWaits(t *testing.T) {
	cfg := spoolConfig(t)
	clk := newClock()
	cfg.Now = clk.Now
	cfg.Policy.MaxRecords = 10
	cfg.Policy.MaxAge = time.Minute
	gate := newSealGate(t, (*os.File).Sync)
	cfg.SyncFile = gate.sync
	sp := openSpool(t, cfg)
	gate.on.Store(true)
	appendRecs(t, sp, batchtest.Records("a", 10), "")
	gate.wait(t) // seal 1-10 parked at its segment's fsync

	done := appendBg(sp, batchtest.Records("b", 12), "") // 11-20 due at seq 20
	blocked(t, "Append of a second due batch", done)
	lastSeqIs(t, sp, 20)

	gate.release <- nil // segment fsync of 1-10: the seal is done
	if err := result(t, "Append of a second due batch", done); err != nil {
		t.Fatal(err)
	}
	gate.wait(t) // seal 11-20 parked; 21-22 open

	// The age trigger hands 21-22 over: it waits for 11-20 first.
	clk.Advance(time.Minute)
	due := async(func() error { return sp.SealIfDue(clk.Now()) })
	blocked(t, "SealIfDue", due)
	gate.release <- nil
	if err := result(t, "SealIfDue", due); err != nil {
		t.Fatal(err)
	}
	gate.wait(t) // seal 21-22 parked

	// Seal with nothing open still waits for the seal in flight.
	sealed := async(func() error { return sp.Seal("test") })
	blocked(t, "Seal", sealed)
	gate.release <- nil
	if err := result(t, "Seal", sealed); err != nil {
		t.Fatal(err)
	}
	if p := sp.Pending(0); len(p) != 3 || p[2].LastSeq != 22 {
		t.Fatalf("pending after Seal: %+v, want 3 segments through 22", p)
	}

	// Close waits for a seal in flight rather than abandon it.
	appendRecs(t, sp, batchtest.Records("c", 10), "")
	gate.wait(t)
	closed := async(sp.Close)
	blocked(t, "Close", closed)
	gate.on.Store(false)
	gate.release <- nil
	if err := result(t, "Close", closed); err != nil {
		t.Fatal(err)
	}
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); !slices.Equal(got, [][2]uint64{{1, 10}, {11, 20}, {21, 22}, {23, 32}}) {
		t.Fatalf("sealed %v", got)
	}
	all := batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	want := slices.Concat(batchtest.Lines("a", 1, 10), batchtest.Lines("b", 1, 12), batchtest.Lines("c", 1, 10))
	if got := batchtest.Datas(all); !slices.Equal(got, want) {
		t.Fatalf("data %q, want %q", got, want)
	}
}

// Backpressure counts the batch being sealed.
func TestSealBackpressureCountsSealingBatch(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 2
	cfg.Limit = 1
	gate := newSealGate(t, (*os.File).Sync)
	cfg.SyncFile = gate.sync
	sp := openSpool(t, cfg, "t")
	gate.on.Store(true)
	appendRecs(t, sp, batchtest.Records("a", 2), "")
	gate.wait(t)
	done := appendBg(sp, batchtest.Records("b", 1), "")
	blocked(t, "Append over the limit", done)
	gate.on.Store(false)
	gate.release <- nil
	settle(t, sp)
	blocked(t, "Append over the limit", done) // now the sealed segment counts
	sp.Confirm("t", 2)
	if err := result(t, "Append after Confirm", done); err != nil {
		t.Fatal(err)
	}
}

// An fsync failure on the sealer fails the spool and wakes everything
// waiting: the Append waiting to hand over the next batch, a WaitDurable
// waiting for the seal, a Seal; later calls return the error too. A
// restart recovers every record from the journal files.
func TestSealerFsyncFailure(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	gate := newSealGate(t, (*os.File).Sync)
	cfg.SyncFile = gate.sync
	sp := openSpool(t, cfg)
	gate.on.Store(true)
	ctx := context.Background()
	pos := appendRecs(t, sp, batchtest.Records("a", 10), "")
	gate.wait(t)
	appendRecs(t, sp, batchtest.Records("b", 5), "")
	waited := async(func() error { return sp.WaitDurable(ctx, pos) })
	handOff := appendBg(sp, batchtest.Records("c", 5), "")
	lastSeqIs(t, sp, 20)
	sealed := async(func() error { return sp.Seal("test") })
	blocked(t, "WaitDurable", waited)
	blocked(t, "Append", handOff)
	blocked(t, "Seal", sealed)

	gate.on.Store(false)
	gate.release <- errDisk
	for what, ch := range map[string]chan error{"WaitDurable": waited, "Append": handOff, "Seal": sealed} {
		if err := result(t, what, ch); !errors.Is(err, ErrFailed) || !errors.Is(err, errDisk) {
			t.Fatalf("%s: err %v, want ErrFailed wrapping the fsync error", what, err)
		}
	}
	if _, err := sp.Append(ctx, batchtest.Records("later", 1), nil); !errors.Is(err, ErrFailed) {
		t.Fatalf("later Append: err %v", err)
	}
	if err := sp.WaitDurable(ctx, pos); !errors.Is(err, ErrFailed) {
		t.Fatalf("later WaitDurable: err %v", err)
	}
	if err := sp.Seal("test"); !errors.Is(err, ErrFailed) {
		t.Fatalf("later Seal: err %v", err)
	}
	if err := sp.SealIfDue(time.Now()); !errors.Is(err, ErrFailed) {
		t.Fatalf("later SealIfDue: err %v", err)
	}
	if p := sp.Pending(0); len(p) != 0 {
		t.Fatalf("failed spool lists sealed segments %+v", p)
	}
	ents, err := os.ReadDir(filepath.Join(cfg.Dir, "sealed"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			t.Fatalf("failed spool published sealed/%s", e.Name())
		}
	}
	sp.Close()

	cfg.SyncFile = nil
	sp = openSpool(t, cfg)
	all := batchtest.CheckChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)
	if got, want := batchtest.Datas(all), slices.Concat(batchtest.Lines("a", 1, 10), batchtest.Lines("b", 1, 5), batchtest.Lines("c", 1, 5)); !slices.Equal(got, want) {
		t.Fatalf("after restart: %q, want %q", got, want)
	}
}

// TestSealInFlightCrashImages crashes (by image) while seals are in flight,
// with records of the sealing batch and the open one in both journal
// files, seals in the middle of entries that move the cursor, a second
// batch waiting to be handed over, and at every fsync meanwhile. The sealer
// is parked at its segment's fsync whenever the test goroutine works,
// so every image is one instant. Each must recover every acknowledged
// record exactly once, in order, with the cursor that goes with them.
func TestSealInFlightCrashImages(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	sim := newCrashSim(t)
	all := []imageKind{powerLoss, resurrected, killed}
	sim.snap = func(point string) {
		kinds := all
		if strings.HasPrefix(point, "after") {
			kinds = append(kinds, published)
		}
		sim.take(cfg.Dir, point, kinds...)
	}
	gate := newSealGate(t, sim.sync)
	cfg.SyncFile = gate.sync
	sp := openSpool(t, cfg)
	gate.on.Store(true)
	ctx := context.Background()
	log := newCursorLog()
	add := func(prefix string, n int, cursor string) uint64 {
		pos := appendRecs(t, sp, batchtest.Records(prefix, n), cursor)
		log.add(prefix, n, cursor)
		return pos
	}
	ack := func(pos uint64) {
		if err := sp.WaitDurable(ctx, pos); err != nil {
			t.Fatal(err)
		}
		sim.acked.Store(uint64(len(log.want)))
	}

	ack(add("a", 4, "a")) // 1-4
	// 5-16: 1-10 is due at seq 10, mid-entry; the entry moved the cursor,
	// so its leftover 11-16 is made durable in the next journal file
	// before the segment can carry cursor b.
	add("b", 12, "b")
	gate.wait(t)
	sim.take(cfg.Dir, "seal 1-10 in flight", all...)
	ack(add("c", 2, "c")) // 17-18, in the new file only
	add("d", 1, "")       // 19, no cursor, not waited for
	if names := journalFiles(t, cfg.Dir); len(names) != 2 {
		t.Fatalf("journal files with a seal in flight: %q", names)
	}
	sim.take(cfg.Dir, "seal 1-10 in flight, both journal files hold open records", all...)

	// 20-22: 11-20 is due at seq 20 while 1-10 still seals.
	log.add("e", 3, "e")
	waiting := appendBg(sp, batchtest.Records("e", 3), "e")
	lastSeqIs(t, sp, 20)
	sim.take(cfg.Dir, "batch 11-20 waiting for seal 1-10", all...)
	gate.release <- nil // 1-10's segment: the seal is done
	if err := result(t, "Append of e", waiting); err != nil {
		t.Fatal(err)
	}
	gate.wait(t) // 11-20's segment; 21-22 in the newest file
	sim.take(cfg.Dir, "seal 11-20 in flight after a mid-entry hand-off", all...)
	ack(sp.written)
	add("f", 2, "") // 23-24
	sim.take(cfg.Dir, "seal 11-20 in flight, open records not synced", all...)

	// Seal hands 21-24 over once 11-20 is done and waits for it all.
	sealed := async(func() error { return sp.Seal("test") })
	gate.release <- nil // 11-20's segment: the seal is done
	gate.wait(t)        // 21-24's segment
	sim.take(cfg.Dir, "seal 21-24 in flight", all...)
	gate.on.Store(false)
	gate.release <- nil
	if err := result(t, "Seal", sealed); err != nil {
		t.Fatal(err)
	}
	sim.acked.Store(uint64(len(log.want)))
	add("g", 3, "g") // 25-27, left in the journal
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	sim.snap = nil
	sim.take(cfg.Dir, "after close", powerLoss, killed)
	checkImages(t, cfg, sim.images, log)
}

// Continue names the empty journal after the seq it continues from, so the
// journal's name rule holds across a restart.
func TestSealContinueNamesJournal(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	prev := batch.Hash([]byte("segment 100 in the store"))
	if err := sp.Continue(1, 100, prev); err != nil {
		t.Fatal(err)
	}
	if names := journalFiles(t, cfg.Dir); !slices.Equal(names, []string{journalName(101)}) {
		t.Fatalf("journal files %q, want %s", names, journalName(101))
	}
	recs := batchtest.Records("a", 2)
	appendRecs(t, sp, recs, "c2")
	if recs[0].Seq != 101 {
		t.Fatalf("seq %d, want 101", recs[0].Seq)
	}
	sp.Close()
	sp = openSpool(t, cfg)
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.Datas(batchtest.CheckChain(t, segs, 100, prev)); !slices.Equal(got, batchtest.Lines("a", 1, 2)) {
		t.Fatalf("data %q", got)
	}
	if c := sp.Cursor(); string(c) != "c2" {
		t.Fatalf("cursor %q", c)
	}
}

// Continue moves a fresh spool to another generation: state.json says so,
// its segments are of that generation, and a reopen with Generation 0
// keeps it while one naming the old generation is refused.
func TestSealContinueInGeneration(t *testing.T) {
	cfg := spoolConfig(t) // Generation 0: a new spool is in generation 1
	sp := openSpool(t, cfg)
	if g := sp.Config().Generation; g != 1 {
		t.Fatalf("new spool in generation %d, want 1", g)
	}
	prev := batch.Hash([]byte("segment 40 of generation 1, where generation 2 forked"))
	if err := sp.Continue(2, 40, prev); err != nil {
		t.Fatal(err)
	}
	if g := sp.Config().Generation; g != 2 {
		t.Fatalf("generation %d after Continue(2, ...), want 2", g)
	}
	appendRecs(t, sp, batchtest.Records("a", 3), "")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	if err := sp.Continue(3, 0, batch.ZeroHash); err == nil {
		t.Fatal("Continue on a spool that sealed a segment succeeded")
	}
	sp.Close()
	segs := sealedFiles(t, cfg.Dir)
	if len(segs) != 1 || segs[0].Name != batch.SegmentName(2, 41, 43) || segs[0].Meta.Generation != 2 {
		t.Fatalf("sealed %v, want one segment %s", segs, batch.SegmentName(2, 41, 43))
	}
	batchtest.CheckChain(t, segs, 40, prev)

	sp = openSpool(t, cfg)
	if g := sp.Config().Generation; g != 2 {
		t.Fatalf("reopened with generation 0: in generation %d, want state.json's 2", g)
	}
	sp.Close()
	old := cfg
	old.Generation = 1
	if _, err := Open(old, nil, quiet); err == nil || !strings.Contains(err.Error(), "generation 2, not 1") {
		t.Fatalf("reopen as generation 1: %v, want it refused naming generation 2", err)
	}
}

// Generation 0 is no generation: Continue refuses it and leaves the
// spool fresh, and a state.json naming it is damaged.
func TestSealContinueGenerationZeroRefused(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	if err := sp.Continue(0, 40, batch.ZeroHash); err == nil || !strings.Contains(err.Error(), "generation 0") {
		t.Fatalf("Continue(0, ...): %v, want it refused naming generation 0", err)
	}
	if !sp.Fresh() || sp.Config().Generation != 1 {
		t.Fatalf("after the refused Continue: fresh %v, generation %d", sp.Fresh(), sp.Config().Generation)
	}
	sp.Close()
	state := `{"format":1,"stream":"` + cfg.Stream + `","generation":0,"sealed_seq":0,"last_hash":"` + batch.ZeroHash + `"}`
	if err := os.WriteFile(filepath.Join(cfg.Dir, "state.json"), []byte(state), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(cfg, nil, quiet); err == nil || !strings.Contains(err.Error(), "damaged (generation 0)") {
		t.Fatalf("open with state.json in generation 0: %v, want it refused as damaged", err)
	}
}

// ReadSealed serves the newest segment from memory and older ones from
// disk, the same bytes either way.
func TestSealReadSealed(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 5
	sp := openSpool(t, cfg, "t")
	appendRecs(t, sp, batchtest.Records("a", 10), "")
	settle(t, sp)
	p := sp.Pending(0)
	if len(p) != 2 {
		t.Fatalf("pending %+v", p)
	}
	for _, seg := range p {
		got, err := sp.ReadSealed(seg.Name)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(cfg.Dir, "sealed", seg.Name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("ReadSealed(%s) differs from the file", seg.Name)
		}
	}
	sp.Confirm("t", 10)
	if _, err := sp.ReadSealed(p[1].Name); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadSealed of a confirmed segment: err %v, want not exist", err)
	}
}
