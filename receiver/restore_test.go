package receiver_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/store"
)

// restoreConfig is testConfig for a restore to seq until into replica.
func restoreConfig(t *testing.T, st store.Store, replica string, until uint64) receiver.Config {
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	cfg.Once = false // the boundary alone must end the run
	cfg.Until = until
	return cfg
}

// reopen is cfg on the same state and replica with a new applier (a new
// process, as far as the receiver can tell).
func reopen(cfg receiver.Config, replica string) receiver.Config {
	cfg.Applier = &apply.File{Path: replica}
	return cfg
}

func TestRestoreUntilSeqInsideSegment(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 5, 10)
	receivertest.Put(t, st, segs...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := restoreConfig(t, st, replica, 23)

	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantFile(t, replica, receivertest.Want(1, 23), "after --until 23")
	if cp.LastSeq != 23 || cp.Segment != segs[2].Name || cp.PartialHash != segs[2].Hash || cp.LastHash != segs[1].Hash {
		t.Fatalf("checkpoint after --until 23 = %+v; want last_seq 23 inside %s (partial hash %.16s), chain hash of %s (%.16s)",
			cp, segs[2].Name, segs[2].Hash, segs[1].Name, segs[1].Hash)
	}
	if got := loadCheckpoint(t, cfg); got.LastSeq != 23 || got.PartialHash != segs[2].Hash {
		t.Fatalf("checkpoint on disk = %+v, want the partial one", got)
	}

	// Again with the same boundary: nothing to do.
	receivertest.RunOnce(t, reopen(cfg, replica))
	receivertest.WantFile(t, replica, receivertest.Want(1, 23), "after a second --until 23")

	// Further, still inside a segment, then the boundary at a segment's end.
	more := reopen(cfg, replica)
	more.Until = 27
	if cp := receivertest.RunOnce(t, more); cp.LastSeq != 27 || cp.PartialHash != segs[2].Hash || cp.LastHash != segs[1].Hash {
		t.Fatalf("checkpoint after --until 27 = %+v", cp)
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 27), "after --until 27")
	more = reopen(cfg, replica)
	more.Until = 40
	receivertest.WantCheckpoint(t, receivertest.RunOnce(t, more), segs[3], "after --until 40")
	receivertest.WantFile(t, replica, receivertest.Want(1, 40), "after --until 40")

	// An ordinary receiver continues from a partial checkpoint too.
	more = reopen(cfg, replica)
	more.Until = 44
	receivertest.RunOnce(t, more)
	plain := reopen(cfg, replica)
	plain.Until, plain.Once = 0, true
	receivertest.WantCheckpoint(t, receivertest.RunOnce(t, plain), segs[4], "after an unbounded run")
	receivertest.WantFile(t, replica, receivertest.Want(1, 50), "after an unbounded run")
}

func TestRestoreUntilSeqRefusals(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 3, 10)
	receivertest.Put(t, st, segs...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := restoreConfig(t, st, replica, 31)

	r := receivertest.Open(t, cfg)
	if err := receivertest.Run(t, r); !errors.Is(err, receiver.ErrNotReached) {
		t.Fatalf("--until past the end: got %v, want ErrNotReached", err)
	}
	r.Close()
	receivertest.WantFile(t, replica, receivertest.Want(1, 30), "after --until past the end")

	back := reopen(cfg, replica)
	back.Until = 12
	r = receivertest.Open(t, back)
	if err := receivertest.Run(t, r); err == nil || errors.Is(err, receiver.ErrNotReached) {
		t.Fatalf("--until behind the checkpoint: got %v, want a refusal", err)
	}
	r.Close()
	receivertest.WantFile(t, replica, receivertest.Want(1, 30), "after a refused --until")
}

// A crash between applying part of a segment and checkpointing it is
// undone on restart like any other.
func TestRestoreCrashInsidePartialSegment(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 4, 10)
	receivertest.Put(t, st, segs...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := restoreConfig(t, st, replica, 25)
	receivertest.RunOnce(t, cfg) // partial at 25

	ap := newRecorder(replica)
	ap.failState = func(string) error { return errors.New("injected crash before the checkpoint") }
	crash := cfg
	crash.Applier, crash.Until = ap, 35
	r := receivertest.Open(t, crash)
	if err := receivertest.Run(t, r); err == nil {
		t.Fatal("run with a failing State succeeded")
	}
	r.Close()
	if cp := loadCheckpoint(t, cfg); cp.LastSeq != 25 {
		t.Fatalf("checkpoint after the crash at seq %d, want 25", cp.LastSeq)
	}
	resume := reopen(cfg, replica)
	resume.Until = 35
	receivertest.RunOnce(t, resume)
	receivertest.WantFile(t, replica, receivertest.Want(1, 35), "after resuming past the crash")
}

// A resumed restore continues in the very segment it stopped in.
func TestRestoreResumeRefusesReplacedSegment(t *testing.T) {
	st, root := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 3, 10)
	receivertest.Put(t, st, segs...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := restoreConfig(t, st, replica, 15)
	receivertest.RunOnce(t, cfg)

	// Same name and chain, other content (a record's time differs).
	other := sealSegTimes(t, 11, 20, segs[0].Hash, func(seq uint64) int { return int(seq) + 1 })
	if other.Name != segs[1].Name || other.Hash == segs[1].Hash {
		t.Fatalf("replacement %s (%.16s) is not a different %s", other.Name, other.Hash, segs[1].Name)
	}
	if err := os.Remove(filepath.Join(root, receivertest.Stream, segs[1].Name)); err != nil {
		t.Fatal(err)
	}
	receivertest.Put(t, st, other)
	resume := reopen(cfg, replica)
	resume.Until = 25
	r := receivertest.Open(t, resume)
	if err := receivertest.Run(t, r); !errors.Is(err, receiver.ErrChain) {
		t.Fatalf("resume into a replaced segment: got %v, want ErrChain", err)
	}
	r.Close()
	receivertest.WantFile(t, replica, receivertest.Want(1, 15), "after the refused resume")
}

// sealSegTimes is sealSeg with record seq at base + secs(seq) seconds.
func sealSegTimes(t *testing.T, first, last uint64, prev string, secs func(uint64) int) receivertest.Seg {
	t.Helper()
	b, err := batch.NewBuilder(batch.Fastest)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset(receivertest.Stream, 1, prev)
	for seq := first; seq <= last; seq++ {
		r := batch.Record{Seq: seq, Time: timeBase.Add(time.Duration(secs(seq)) * time.Second), Data: receivertest.RecData(seq)}
		if err := b.Add(&r); err != nil {
			t.Fatal(err)
		}
	}
	data, meta, err := b.Seal(timeBase)
	if err != nil {
		t.Fatal(err)
	}
	return receivertest.Seg{Name: meta.Name(), Data: data, Meta: meta, Hash: batch.Hash(data)}
}

var timeBase = time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)

// TestRestoreUntilTime: the boundary is before the first record whose
// time is after UntilTime, even when a later record is earlier again.
func TestRestoreUntilTime(t *testing.T) {
	// Seconds of seqs 1..15: mostly rising, 8 and 14 out of order.
	secs := map[uint64]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 9, 8: 7, 9: 12, 10: 10,
		11: 13, 12: 14, 13: 15, 14: 11, 15: 16}
	at := func(seq uint64) int { return secs[seq] }
	s1 := sealSegTimes(t, 1, 5, batch.ZeroHash, at)
	s2 := sealSegTimes(t, 6, 10, s1.Hash, at)
	s3 := sealSegTimes(t, 11, 15, s2.Hash, at)
	for _, tc := range []struct {
		name    string
		until   int
		through uint64 // last seq applied
	}{
		{"before everything", 0, 0},
		{"whole first segment", 5, 5},
		{"later record earlier again", 10, 8},         // seq 9 (12s) stops it; seq 10 (10s) is not applied
		{"out-of-order record after the stop", 11, 8}, // nor seq 14 (11s)
		{"at a segment's end", 12, 10},                // seq 11 (13s) is the first after
		{"inside the last segment", 14, 12},
		{"past the end", 100, 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := receivertest.NewStore(t)
			receivertest.Put(t, st, s1, s2, s3)
			replica := filepath.Join(t.TempDir(), "replica")
			cfg := restoreConfig(t, st, replica, 0)
			cfg.UntilTime = timeBase.Add(time.Duration(tc.until) * time.Second)
			cp := receivertest.RunOnce(t, cfg)
			if cp.LastSeq != tc.through {
				t.Fatalf("applied through seq %d, want %d", cp.LastSeq, tc.through)
			}
			receivertest.WantFile(t, replica, receivertest.Want(1, tc.through), "after the time boundary")
			// Resumed: nothing more.
			if cp := receivertest.RunOnce(t, reopen(cfg, replica)); cp.LastSeq != tc.through {
				t.Fatalf("resumed: applied through seq %d, want %d", cp.LastSeq, tc.through)
			}
			receivertest.WantFile(t, replica, receivertest.Want(1, tc.through), "after resuming at the time boundary")
		})
	}
}
