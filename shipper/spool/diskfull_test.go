package spool

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// A full disk under the journal: Append refuses with ErrNoSpace and takes
// the partial entry back, nothing is accepted and the cursor does not move;
// once there is room the same spool goes on, and a restart recovers every
// accepted record exactly once.
func TestSpoolJournalDiskFull(t *testing.T) {
	disk := &ferrytest.FullDisk{}
	cfg := spoolConfig(t)
	cfg.Policy = batch.FlushPolicy{MaxRecords: 1000}
	cfg.WriteFile = disk.Write
	sp, err := Open(cfg, []string{"t"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	appendRecs(t, sp, batchtest.Records("a", 10), "c10")
	disk.Full.Store(true)
	_, err = sp.Append(context.Background(), batchtest.Records("b", 5), []byte("c15"))
	if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), cfg.Dir) {
		t.Fatalf("Append on a full disk: %v; want ErrNoSpace naming the spool", err)
	}
	if sp.Err() != nil {
		t.Fatalf("a full disk failed the spool: %v", sp.Err())
	}
	if string(sp.Cursor()) != "c10" || sp.Stats().LastSeq != 10 {
		t.Fatalf("after the refused append: cursor %q, last seq %d; want c10, 10", sp.Cursor(), sp.Stats().LastSeq)
	}
	disk.Full.Store(false)
	appendRecs(t, sp, batchtest.Records("b", 5), "c15")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()

	sp2 := openSpool(t, spoolConfig2(cfg), "t")
	recs := batchtest.CheckChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)
	want := append(batchtest.Lines("a", 1, 10), batchtest.Lines("b", 1, 5)...)
	if got := batchtest.Datas(recs); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("records after the full disk:\n got %v\nwant %v", got, want)
	}
	if string(sp2.Cursor()) != "c15" {
		t.Fatalf("cursor %q, want c15", sp2.Cursor())
	}
}

// spoolConfig2 reopens cfg's spool with plain writes.
func spoolConfig2(cfg Config) Config {
	cfg.WriteFile = nil
	return cfg
}

// A full disk when a segment is sealed: the sealer waits for room instead
// of failing the spool, and the segment appears once there is room.
func TestSpoolSealDiskFull(t *testing.T) {
	disk := &ferrytest.FullDisk{}
	cfg := spoolConfig(t)
	cfg.Policy = batch.FlushPolicy{MaxRecords: 5}
	sp, err := Open(cfg, []string{"t"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	// Fill the disk only for segment writes: the journal has room.
	sp.cfg.WriteFile = func(f *os.File, b []byte) (int, error) {
		if strings.HasSuffix(f.Name(), ".seg.zst") {
			return disk.Write(f, b)
		}
		return f.Write(b)
	}
	disk.Full.Store(true)
	appendRecs(t, sp, batchtest.Records("a", 5), "c5") // hands the batch to the sealer
	waitFor(t, "the sealer tried and met the full disk", func() bool { return disk.Failed.Load() >= 2 })
	if sp.Err() != nil || len(sp.Pending(0)) != 0 {
		t.Fatalf("while the disk is full: err %v, %d segments", sp.Err(), len(sp.Pending(0)))
	}
	disk.Full.Store(false)
	waitFor(t, "the segment sealed once there was room", func() bool { return len(sp.Pending(0)) == 1 })
	if sp.Err() != nil {
		t.Fatal(sp.Err())
	}
	recs := batchtest.CheckChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)
	if len(recs) != 5 {
		t.Fatalf("%d records sealed, want 5", len(recs))
	}
}

// The disk fills exactly when a hand-off writes the leftover of an entry
// split by a seal. Part of that entry is already being sealed, so Append
// must not refuse it (a retry would duplicate those records): it waits for
// room and finishes, and a restart finds every record exactly once.
func TestSpoolLeftoverDiskFull(t *testing.T) {
	disk := &ferrytest.FullDisk{}
	cfg := spoolConfig(t)
	cfg.Policy = batch.FlushPolicy{MaxRecords: 5}
	var first string
	cfg.WriteFile = func(f *os.File, b []byte) (int, error) {
		if first == "" && strings.Contains(f.Name(), "journal-") {
			first = f.Name()
		}
		if f.Name() != first && strings.Contains(f.Name(), "journal-") {
			return disk.Write(f, b)
		}
		return f.Write(b)
	}
	sp, err := Open(cfg, []string{"t"}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	disk.Full.Store(true)
	done := make(chan error, 1)
	go func() {
		_, err := sp.Append(context.Background(), batchtest.Records("a", 8), []byte("c8"))
		done <- err
	}()
	waitFor(t, "the leftover write meeting the full disk", func() bool { return disk.Failed.Load() >= 2 })
	select {
	case err := <-done:
		t.Fatalf("Append returned %v while its leftover could not be written", err)
	case <-time.After(100 * time.Millisecond):
	}
	disk.Full.Store(false)
	if err := <-done; err != nil {
		t.Fatalf("Append after room came back: %v", err)
	}
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	sp2 := openSpool(t, spoolConfig2(cfg), "t")
	recs := batchtest.CheckChain(t, sealedFiles(t, cfg.Dir), 0, batch.ZeroHash)
	if got, want := strings.Join(batchtest.Datas(recs), ""), strings.Join(batchtest.Lines("a", 1, 8), ""); got != want {
		t.Fatalf("records:\n got %q\nwant %q", got, want)
	}
	if string(sp2.Cursor()) != "c8" {
		t.Fatalf("cursor %q, want c8", sp2.Cursor())
	}
}
