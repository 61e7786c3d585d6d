package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
)

func seqsOf(recs []batch.Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func TestSpoolSeqsGapless(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	r1 := batchtest.Records("a", 3)
	appendRecs(t, sp, r1, "")
	r2 := batchtest.Records("b", 2)
	appendRecs(t, sp, r2, "")
	if got := append(seqsOf(r1), seqsOf(r2)...); !equalSeqs(got, 1, 5) {
		t.Fatalf("seqs %v, want 1..5", got)
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	r3 := batchtest.Records("c", 2)
	appendRecs(t, sp, r3, "")
	if !equalSeqs(seqsOf(r3), 6, 7) {
		t.Fatalf("after seal: seqs %v, want 6..7", seqsOf(r3))
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	sp = openSpool(t, cfg)
	r4 := batchtest.Records("d", 1)
	appendRecs(t, sp, r4, "")
	if r4[0].Seq != 8 {
		t.Fatalf("after reopen: seq %d, want 8", r4[0].Seq)
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	all := batchtest.CheckChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)
	want := append(append(append(batchtest.Lines("a", 1, 3), batchtest.Lines("b", 1, 2)...), batchtest.Lines("c", 1, 2)...), batchtest.Lines("d", 1, 1)...)
	if got := batchtest.Datas(all); !slices.Equal(got, want) {
		t.Fatalf("sealed data %q, want %q", got, want)
	}
	if st := sp.Stats(); st.LastSeq != 8 {
		t.Fatalf("Stats.LastSeq %d, want 8", st.LastSeq)
	}
}

func equalSeqs(got []uint64, from, to uint64) bool {
	if uint64(len(got)) != to-from+1 {
		return false
	}
	for i, s := range got {
		if s != from+uint64(i) {
			return false
		}
	}
	return true
}

func TestSpoolAppendSetsTime(t *testing.T) {
	cfg := spoolConfig(t)
	clk := newClock()
	cfg.Now = clk.Now
	sp := openSpool(t, cfg)
	given := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	recs := []batch.Record{{Data: []byte("x")}, {Time: given, Data: []byte("y")}}
	appendRecs(t, sp, recs, "")
	if !recs[0].Time.Equal(clk.Now()) || !recs[1].Time.Equal(given) {
		t.Fatalf("times %v %v: want the clock for a zero time and the given time otherwise", recs[0].Time, recs[1].Time)
	}
}

func TestSpoolMaxRecords(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("r", 25), "c25")
	settle(t, sp)
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); len(got) != 2 || got[0] != [2]uint64{1, 10} || got[1] != [2]uint64{11, 20} {
		t.Fatalf("sealed %v, want [1 10] [11 20]", got)
	}
	batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	if st := sp.Stats(); st.LastSeq != 25 || st.SealedPending != 2 || st.RecordsIn != 25 || st.SegmentsOut != 2 {
		t.Fatalf("stats %+v", st)
	}
	// 21..25 are open: the next record joins them and the batch seals at 10.
	appendRecs(t, sp, batchtest.Records("s", 5), "c30")
	settle(t, sp)
	segs = sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); len(got) != 3 || got[2] != [2]uint64{21, 30} {
		t.Fatalf("sealed %v, want a third segment 21..30", got)
	}
	all := batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	if got, want := batchtest.Datas(all), append(batchtest.Lines("r", 1, 25), batchtest.Lines("s", 1, 5)...); !slices.Equal(got, want) {
		t.Fatalf("data %q, want %q", got, want)
	}
}

func TestSpoolMaxRecordsLeftoverSurvivesReopen(t *testing.T) {
	// The 5 records left open after a mid-entry seal live in the rewritten
	// journal; reopening reseals exactly them.
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("r", 25), "c25")
	sp.Close()
	sp = openSpool(t, cfg)
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); len(got) != 3 || got[2] != [2]uint64{21, 25} {
		t.Fatalf("sealed %v, want 1..10 11..20 21..25", got)
	}
	all := batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	if got := batchtest.Datas(all); !slices.Equal(got, batchtest.Lines("r", 1, 25)) {
		t.Fatalf("data %q", got)
	}
	if c := sp.Cursor(); string(c) != "c25" {
		t.Fatalf("cursor %q, want c25", c)
	}
}

func TestSpoolMaxBytes(t *testing.T) {
	cfg := spoolConfig(t)
	// Each record is 23 bytes of framing + 27 of data = 50: the fourth
	// record reaches 200.
	cfg.Policy.MaxBytes = 200
	sp := openSpool(t, cfg)
	for i := range 10 {
		rec := batch.Record{Data: bytes.Repeat([]byte{'a' + byte(i)}, 27)}
		if rec.FramedSize() != 50 {
			t.Fatalf("framed size %d", rec.FramedSize())
		}
		appendRecs(t, sp, []batch.Record{rec}, "")
	}
	settle(t, sp)
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); len(got) != 2 || got[0] != [2]uint64{1, 4} || got[1] != [2]uint64{5, 8} {
		t.Fatalf("sealed %v, want [1 4] [5 8]", got)
	}
	for _, s := range segs {
		// max_bytes measures FramedSize (200 here); the record stream
		// frames the same records in the segment's format.
		if want := len(batch.AppendStream(nil, s.Meta.Format, s.Records)); s.Meta.UncompressedSize != int64(want) {
			t.Errorf("segment %s: %d uncompressed bytes, want %d", s.Name, s.Meta.UncompressedSize, want)
		}
	}
	batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
}

func TestSpoolMaxAge(t *testing.T) {
	cfg := spoolConfig(t)
	clk := newClock()
	cfg.Now = clk.Now
	cfg.Policy.MaxAge = time.Second
	sp := openSpool(t, cfg)
	if !sp.Deadline().IsZero() {
		t.Fatal("empty spool has a deadline")
	}
	t0 := clk.Now()
	appendRecs(t, sp, batchtest.Records("a", 1), "")
	clk.Advance(500 * time.Millisecond)
	appendRecs(t, sp, batchtest.Records("b", 1), "")
	if got, want := sp.Deadline(), t0.Add(time.Second); !got.Equal(want) {
		t.Fatalf("deadline %v, want %v (first record + max_age)", got, want)
	}
	if err := sp.SealIfDue(t0.Add(999 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if n := len(sealedFiles(t, cfg.Dir)); n != 0 {
		t.Fatalf("sealed %d segments before max_age", n)
	}
	if err := sp.SealIfDue(t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if !sp.Deadline().IsZero() {
		t.Fatal("deadline left after handing the batch to the sealer")
	}
	settle(t, sp)
	segs := sealedFiles(t, cfg.Dir)
	if got := batchtest.SeqRanges(segs); len(got) != 1 || got[0] != [2]uint64{1, 2} {
		t.Fatalf("sealed %v, want [1 2]", got)
	}
	if !sp.Deadline().IsZero() {
		t.Fatal("deadline left after sealing")
	}
	// The age counts from the first record of the new batch.
	clk.Advance(10 * time.Second)
	appendRecs(t, sp, batchtest.Records("c", 1), "")
	if got, want := sp.Deadline(), clk.Now().Add(time.Second); !got.Equal(want) {
		t.Fatalf("second batch deadline %v, want %v", got, want)
	}
}

func TestSpoolSealEmptyIsNoop(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	if n := len(sealedFiles(t, cfg.Dir)); n != 0 {
		t.Fatalf("%d segments after sealing nothing", n)
	}
}

func TestSpoolConfirmTwoTargets(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 2
	sp := openSpool(t, cfg, "a", "b")
	appendRecs(t, sp, batchtest.Records("r", 6), "")
	settle(t, sp)
	p := sp.Pending(0)
	if len(p) != 3 || p[0].FirstSeq != 1 || p[2].LastSeq != 6 {
		t.Fatalf("pending %+v, want 3 segments 1..6", p)
	}
	if p := sp.Pending(2); len(p) != 2 || p[0].FirstSeq != 3 {
		t.Fatalf("Pending(2) = %+v, want from seq 3", p)
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(cfg.Dir, "sealed", name))
		return err == nil
	}
	sp.Confirm("a", 4)
	if !exists(p[0].Name) || !exists(p[1].Name) || len(sp.Pending(0)) != 3 {
		t.Fatal("a segment left the spool confirmed by one of two targets")
	}
	sp.Confirm("b", 2)
	if exists(p[0].Name) || !exists(p[1].Name) {
		t.Fatal("after both confirmed 1..2: want segment 1 gone, segment 2 kept")
	}
	if got := sp.Pending(0); len(got) != 2 || got[0].Name != p[1].Name {
		t.Fatalf("pending %+v", got)
	}
	sp.Confirm("b", 6)
	if exists(p[1].Name) || !exists(p[2].Name) {
		t.Fatal("b at 6, a at 4: want segment 2 gone, segment 3 kept")
	}
	sp.Confirm("a", 6)
	if exists(p[2].Name) || len(sp.Pending(0)) != 0 {
		t.Fatal("segment 3 still in the spool after both confirmed it")
	}
	if st := sp.Stats(); st.SealedPending != 0 || st.SpoolBytes != 0 {
		t.Fatalf("stats after confirming everything: %+v", st)
	}
}

func TestSpoolBackpressure(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 1
	cfg.Limit = 1 // any sealed byte is over the limit
	sp := openSpool(t, cfg, "t")
	appendRecs(t, sp, batchtest.Records("a", 1), "") // seals seq 1
	settle(t, sp)

	type result struct {
		seq uint64
		err error
	}
	appendAsync := func(ctx context.Context) chan result {
		ch := make(chan result, 1)
		go func() {
			recs := batchtest.Records("b", 1)
			_, err := sp.Append(ctx, recs, nil)
			ch <- result{recs[0].Seq, err}
		}()
		return ch
	}
	done := appendAsync(context.Background())
	select {
	case r := <-done:
		t.Fatalf("Append over the limit returned at once: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	sp.Confirm("t", 1)
	select {
	case r := <-done:
		if r.err != nil || r.seq != 2 {
			t.Fatalf("Append after Confirm: seq %d err %v, want seq 2", r.seq, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Append still blocked after Confirm freed the spool")
	}

	// Seq 2 is sealed now: the next Append blocks until ctx ends.
	settle(t, sp)
	ctx, cancel := context.WithCancel(context.Background())
	done = appendAsync(ctx)
	select {
	case r := <-done:
		t.Fatalf("Append over the limit returned at once: %+v", r)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	select {
	case r := <-done:
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled Append: err %v, want context.Canceled", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("cancel did not unblock Append")
	}
	sp.Confirm("t", 2)
	recs := batchtest.Records("c", 1)
	appendRecs(t, sp, recs, "")
	if recs[0].Seq != 3 {
		t.Fatalf("seq after a cancelled Append: %d, want 3 (no seq consumed)", recs[0].Seq)
	}
}

func TestSpoolLocked(t *testing.T) {
	cfg := spoolConfig(t)
	openSpool(t, cfg)
	_, err := Open(cfg, nil, quiet)
	if err == nil || !strings.Contains(err.Error(), "in use by another ferry process") {
		t.Fatalf("second Open: err %v, want 'in use by another ferry process'", err)
	}
}

func TestSpoolLockReleasedOnClose(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	sp.Close()
	openSpool(t, cfg)
}

func TestSpoolWrongStreamOrGeneration(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		name := "journal only"
		if sealed {
			name = "sealed"
		}
		t.Run(name, func(t *testing.T) {
			cfg := spoolConfig(t)
			cfg.Generation = 3
			sp := openSpool(t, cfg)
			appendRecs(t, sp, batchtest.Records("a", 2), "")
			if sealed {
				if err := sp.Seal("test"); err != nil {
					t.Fatal(err)
				}
			}
			sp.Close()

			other := cfg
			other.Stream = "other"
			_, err := Open(other, nil, quiet)
			if err == nil || !strings.Contains(err.Error(), `stream "app"`) || !strings.Contains(err.Error(), cfg.Dir) {
				t.Fatalf("reopen as another stream: err %v, want it to name stream \"app\" and the dir", err)
			}
			other = cfg
			other.Generation = 4
			_, err = Open(other, nil, quiet)
			if err == nil || !strings.Contains(err.Error(), "generation 3") {
				t.Fatalf("reopen as another generation: err %v, want it to name generation 3", err)
			}
			// The right config still opens it, and nothing was resealed
			// under the wrong name.
			openSpool(t, cfg)
			for _, s := range sealedFiles(t, cfg.Dir) {
				if s.Meta.Stream != "app" || s.Meta.Generation != 3 {
					t.Fatalf("segment %s of stream %q gen %d", s.Name, s.Meta.Stream, s.Meta.Generation)
				}
			}
		})
	}
}

func TestSpoolDamagedState(t *testing.T) {
	cfg := spoolConfig(t)
	openSpool(t, cfg).Close()
	if err := os.WriteFile(filepath.Join(cfg.Dir, "state.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Open(cfg, nil, quiet)
	if err == nil || !strings.Contains(err.Error(), "state.json is damaged") {
		t.Fatalf("err %v, want state.json is damaged", err)
	}
}

func TestSpoolOversizeRecord(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.MaxRecordSize = 100
	sp := openSpool(t, cfg)
	recs := []batch.Record{{Data: []byte("ok")}, {Data: make([]byte, 100)}}
	_, err := sp.Append(context.Background(), recs, []byte("cur"))
	if !errors.Is(err, batch.ErrTooLarge) {
		t.Fatalf("err %v, want ErrTooLarge", err)
	}
	if recs[0].Seq != 0 {
		t.Fatal("a refused Append assigned seqs")
	}
	if st := sp.Stats(); st.RecordsIn != 0 || st.LastSeq != 0 {
		t.Fatalf("stats after refused Append: %+v", st)
	}
	if c := sp.Cursor(); c != nil {
		t.Fatalf("cursor %q after refused Append", c)
	}
	next := batchtest.Records("n", 1)
	appendRecs(t, sp, next, "")
	if next[0].Seq != 1 {
		t.Fatalf("next seq %d, want 1", next[0].Seq)
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	all := batchtest.CheckChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)
	if len(all) != 1 {
		t.Fatalf("%d records sealed, want 1", len(all))
	}
}

func TestSpoolTimeOutOfRange(t *testing.T) {
	// A record time the framing cannot hold is the caller's error, not a
	// spool failure: the spool keeps working and no seq is used.
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	recs := []batch.Record{{Time: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC), Data: []byte("x")}}
	if _, err := sp.Append(context.Background(), recs, nil); err == nil || !strings.Contains(err.Error(), "outside the range") {
		t.Fatalf("err %v, want a time range error", err)
	}
	if err := sp.Err(); err != nil {
		t.Fatalf("spool failed: %v", err)
	}
	next := batchtest.Records("n", 1)
	appendRecs(t, sp, next, "")
	if next[0].Seq != 1 {
		t.Fatalf("next seq %d, want 1", next[0].Seq)
	}
}

func TestSpoolStreamNameChecked(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Stream = "../x"
	if _, err := Open(cfg, nil, quiet); err == nil {
		t.Fatal("Open accepted stream ../x")
	}
}

// failingSync fails every fsync once armed.
type failingSync struct {
	armed        atomic.Bool
	calls        atomic.Int64
	journalCalls atomic.Int64
}

var errDisk = errors.New("disk on fire")

func (f *failingSync) sync(file *os.File) error {
	f.calls.Add(1)
	if isJournalFile(filepath.Base(file.Name())) {
		f.journalCalls.Add(1)
	}
	if f.armed.Load() {
		return errDisk
	}
	return file.Sync()
}

func TestSpoolFsyncFailure(t *testing.T) {
	for _, mode := range []FsyncMode{FsyncAlways, FsyncBatch} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := spoolConfig(t)
			cfg.Fsync = mode
			fs := &failingSync{}
			cfg.SyncFile = fs.sync
			sp := openSpool(t, cfg)
			ctx := context.Background()
			pos := appendRecs(t, sp, batchtest.Records("ok", 1), "")
			if err := sp.WaitDurable(ctx, pos); err != nil {
				t.Fatal(err)
			}
			fs.armed.Store(true)
			pos, err := sp.Append(ctx, batchtest.Records("bad", 1), nil)
			if err == nil {
				err = sp.WaitDurable(ctx, pos)
			}
			if !errors.Is(err, ErrFailed) || !errors.Is(err, errDisk) {
				t.Fatalf("err %v, want ErrFailed wrapping the fsync error", err)
			}
			// Failed for good, even once the disk "recovers".
			fs.armed.Store(false)
			for range 2 {
				if _, err := sp.Append(ctx, batchtest.Records("later", 1), nil); !errors.Is(err, ErrFailed) {
					t.Fatalf("later Append: err %v, want ErrFailed", err)
				}
			}
			if err := sp.WaitDurable(ctx, pos); !errors.Is(err, ErrFailed) {
				t.Fatalf("later WaitDurable: err %v", err)
			}
			if err := sp.Seal("test"); !errors.Is(err, ErrFailed) {
				t.Fatalf("Seal: err %v, want ErrFailed", err)
			}
			if err := sp.Err(); !errors.Is(err, ErrFailed) {
				t.Fatalf("Err: %v", err)
			}
			if n := len(sealedFiles(t, cfg.Dir)); n != 0 {
				t.Fatalf("%d segments sealed by a failed spool", n)
			}
		})
	}
}

func TestSpoolFsyncFailureWhileSealing(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Fsync = FsyncAlways
	fs := &failingSync{}
	cfg.SyncFile = fs.sync
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("a", 3), "")
	fs.armed.Store(true)
	if err := sp.Seal("test"); !errors.Is(err, ErrFailed) {
		t.Fatalf("Seal: err %v, want ErrFailed", err)
	}
	if _, err := sp.Append(context.Background(), batchtest.Records("b", 1), nil); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append after failed seal: err %v", err)
	}
	sp.Close()
	// The restart recovers: the records were durable in the journal.
	fs.armed.Store(false)
	openSpool(t, cfg)
	if got := batchtest.SeqRanges(sealedFiles(t, cfg.Dir)); len(got) != 1 || got[0] != [2]uint64{1, 3} {
		t.Fatalf("after restart: sealed %v, want [1 3]", got)
	}
}

func TestSpoolFsyncOff(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Fsync = FsyncOff
	fs := &failingSync{}
	cfg.SyncFile = fs.sync
	sp := openSpool(t, cfg)
	pos := appendRecs(t, sp, batchtest.Records("a", 3), "")
	if err := sp.WaitDurable(context.Background(), pos); err != nil {
		t.Fatal(err)
	}
	if n := fs.journalCalls.Load(); n != 0 {
		t.Fatalf("fsync off synced the journal %d times", n)
	}
}

func TestSpoolGroupCommit(t *testing.T) {
	cfg := spoolConfig(t)
	var journalSyncs atomic.Int64
	cfg.SyncFile = func(f *os.File) error {
		if isJournalFile(filepath.Base(f.Name())) {
			journalSyncs.Add(1)
			time.Sleep(time.Millisecond) // a disk, roughly
		}
		return f.Sync()
	}
	sp := openSpool(t, cfg)
	const workers, each = 32, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	seqs := make(chan uint64, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				recs := []batch.Record{{Data: []byte{byte(w), byte(i)}}}
				pos, err := sp.Append(context.Background(), recs, nil)
				if err == nil {
					err = sp.WaitDurable(context.Background(), pos)
				}
				if err != nil {
					errs <- err
					return
				}
				seqs <- recs[0].Seq
			}
		})
	}
	wg.Wait()
	close(errs)
	close(seqs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for s := range seqs {
		if seen[s] || s < 1 || s > workers*each {
			t.Fatalf("seq %d duplicated or out of range", s)
		}
		seen[s] = true
	}
	n := journalSyncs.Load()
	t.Logf("%d appends, %d journal fsyncs", workers*each, n)
	if n == 0 || n > workers*each/4 {
		t.Fatalf("%d fsyncs for %d appends: group commit should need far fewer", n, workers*each)
	}
}

func TestSpoolSyncLoop(t *testing.T) {
	// Under fsync batch, the group committer makes appends nobody waits
	// for durable.
	cfg := spoolConfig(t)
	var syncs atomic.Int64
	cfg.SyncFile = func(f *os.File) error { syncs.Add(1); return f.Sync() }
	sp := openSpool(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sp.SyncLoop(ctx) }()
	before := syncs.Load()
	pos := appendRecs(t, sp, batchtest.Records("a", 1), "")
	waitFor(t, "SyncLoop to fsync the journal", func() bool { return syncs.Load() > before })
	// WaitDurable returns without needing a sync of its own.
	waitFor(t, "synced to reach pos", func() bool {
		sp.mu.Lock()
		defer sp.mu.Unlock()
		return sp.synced >= pos
	})
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("SyncLoop: %v", err)
	}
}

func TestSpoolLargeEntryIsWaitedFor(t *testing.T) {
	// An entry over 8 MiB drops the reusable buffer; its bytes must still
	// count, or WaitDurable would return before the entry is on disk.
	cfg := spoolConfig(t)
	var syncs atomic.Int64
	cfg.SyncFile = func(f *os.File) error { syncs.Add(1); return f.Sync() }
	sp := openSpool(t, cfg)
	small := appendRecs(t, sp, batchtest.Records("a", 1), "")
	if err := sp.WaitDurable(context.Background(), small); err != nil {
		t.Fatal(err)
	}
	big := appendRecs(t, sp, []batch.Record{{Data: make([]byte, 9<<20)}}, "")
	if big < small+9<<20 {
		t.Fatalf("position after a 9 MiB entry is %d, after the small one %d", big, small)
	}
	before := syncs.Load()
	if err := sp.WaitDurable(context.Background(), big); err != nil {
		t.Fatal(err)
	}
	if syncs.Load() == before {
		t.Fatal("WaitDurable returned for a 9 MiB entry without an fsync")
	}
	fi, err := os.Stat(journalPath(t, cfg.Dir))
	if err != nil {
		t.Fatal(err)
	}
	if uint64(fi.Size()) != big {
		t.Fatalf("journal is %d bytes, position says %d", fi.Size(), big)
	}
}

func TestSpoolConcurrentAppendsWithSeals(t *testing.T) {
	// Multi-record appends seal mid-entry and replace the journal file
	// while other goroutines' group-commit fsyncs are in flight on the old
	// one; that must neither fail the spool nor lose or reorder a record.
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 4
	cfg.SyncFile = func(f *os.File) error {
		time.Sleep(100 * time.Microsecond)
		return f.Sync()
	}
	sp := openSpool(t, cfg, "t")
	const workers, each = 6, 12
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				recs := []batch.Record{{Data: fmt.Appendf(nil, "%d-%d-a", w, i)}, {Data: fmt.Appendf(nil, "%d-%d-b", w, i)}, {Data: fmt.Appendf(nil, "%d-%d-c", w, i)}}
				pos, err := sp.Append(context.Background(), recs, fmt.Appendf(nil, "%d-%d", w, i))
				if err == nil {
					err = sp.WaitDurable(context.Background(), pos)
				}
				if err != nil {
					t.Error(err)
					return
				}
				if recs[1].Seq != recs[0].Seq+1 || recs[2].Seq != recs[1].Seq+1 {
					t.Errorf("one append got seqs %d %d %d", recs[0].Seq, recs[1].Seq, recs[2].Seq)
				}
			}
		})
	}
	wg.Wait()
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	all := batchtest.CheckChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)
	if len(all) != workers*each*3 {
		t.Fatalf("%d records sealed, want %d", len(all), workers*each*3)
	}
	// Each worker's records appear in its own order.
	next := map[string]int{}
	for _, r := range all {
		var w, i int
		var part string
		if _, err := fmt.Sscanf(strings.ReplaceAll(string(r.Data), "-", " "), "%d %d %s", &w, &i, &part); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprint(w)
		if want := next[key]; i*3+int(part[0]-'a') != want {
			t.Fatalf("worker %d: record %q out of order", w, r.Data)
		}
		next[key]++
	}
}

// A seal on the append path costs no journal fsync when nothing waits on
// the journal: the sealed records are durable in their segment, and the
// leftover after the seal point, written to the next journal file, is left
// to the group committer, which a waiter then triggers; that waiter does
// not fsync the sealing batch's file but lets the seal cover it. Under
// fsync "always" the entry is fsynced, and so is its leftover in the next
// file before Append returns.
func TestSealLeavesUncommittedLeftoverToCommitter(t *testing.T) {
	for _, mode := range []FsyncMode{FsyncBatch, FsyncAlways} {
		t.Run(string(mode), func(t *testing.T) {
			cfg := spoolConfig(t)
			cfg.Fsync = mode
			cfg.Policy.MaxRecords = 10
			var mu sync.Mutex
			journalSyncs := 0
			cfg.SyncFile = func(f *os.File) error {
				if isJournalFile(filepath.Base(f.Name())) {
					mu.Lock()
					journalSyncs++
					mu.Unlock()
				}
				return f.Sync()
			}
			sp := openSpool(t, cfg)
			mu.Lock()
			journalSyncs = 0
			mu.Unlock()
			pos := appendRecs(t, sp, batchtest.Records("a", 15), "")
			recs, _, n, err := parseEntry(readJournal(t, cfg.Dir))
			if err != nil || len(recs) != 5 || recs[0].Seq != 11 || n != len(readJournal(t, cfg.Dir)) {
				t.Fatalf("journal after the seal: %d records from seq %v (err %v); want only the leftover 11-15", len(recs), recs, err)
			}
			mu.Lock()
			got := journalSyncs
			mu.Unlock()
			want := map[FsyncMode]int{FsyncBatch: 0, FsyncAlways: 2}[mode]
			if got != want {
				t.Fatalf("journal fsyncs during the append: %d, want %d", got, want)
			}
			if err := sp.WaitDurable(context.Background(), pos); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			got = journalSyncs
			mu.Unlock()
			if mode == FsyncBatch && got != 1 {
				t.Fatalf("WaitDurable on the leftover issued %d journal fsyncs, want 1", got)
			}
			// The sealer removes the sealed journal file after it marks the
			// seal done (settle returns then), so wait for the removal.
			settle(t, sp)
			waitFor(t, "only "+journalName(11)+" left after the seal", func() bool {
				names := journalFiles(t, cfg.Dir)
				return len(names) == 1 && names[0] == journalName(11)
			})
		})
	}
}

// A state.json save that retires many segments deletes them in the
// background, spaced out, and Close waits until they are gone.
func TestSpoolRetiresManyInBackground(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 1
	sp := openSpool(t, cfg, "a")
	appendRecs(t, sp, batchtest.Records("r", 3*retireInline), "")
	settle(t, sp)
	if n := len(sp.Pending(0)); n != 3*retireInline {
		t.Fatalf("%d segments pending, want %d", n, 3*retireInline)
	}
	// The first Confirm writes state.json and retires them all at once:
	// more than retireInline, so they go in the background.
	sp.Confirm("a", uint64(3*retireInline))
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(sealedFiles(t, cfg.Dir)); n != 0 {
		t.Fatalf("%d files left in sealed/ after Close, want 0: Close must wait for the deletions", n)
	}
}

// Close waits for the sealer to remove the journal files its last seal
// made obsolete: the seal is marked done before that removal, and a Close
// that returned (releasing LOCK) while it still ran would let the next
// Open of the spool race it.
func TestCloseWaitsForTheSealersJournalRemoval(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxRecords = 10
	var removing atomic.Bool
	testHookBeforeJournalRemoval = func() {
		removing.Store(true)
		time.Sleep(300 * time.Millisecond)
	}
	t.Cleanup(func() { testHookBeforeJournalRemoval = nil })
	sp := openSpool(t, cfg)
	appendRecs(t, sp, batchtest.Records("a", 15), "")
	waitFor(t, "the sealer at its journal removal", removing.Load)
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	if names := journalFiles(t, cfg.Dir); len(names) != 1 || names[0] != journalName(11) {
		t.Fatalf("journal files after Close: %v; want only %s (Close returned while the sealer still had the sealed one to remove)", names, journalName(11))
	}
}
