package receiver_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/receivertest"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/catalog"
)

// promote creates the record of generation gen of testStream, forked at
// seq fork from the segment whose hash is hash, as ferry promote would.
func promote(t *testing.T, st store.Store, gen uint32, fork uint64, hash string) {
	t.Helper()
	rec := batch.Generation{Stream: receivertest.Stream, Generation: gen, Parent: gen - 1, ForkSeq: fork, ForkHash: hash,
		Time: time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC), Site: "dr-b", Host: "db7", Reason: "promote"}
	if err := catalog.CreateGeneration(context.Background(), st, rec); err != nil {
		t.Fatal(err)
	}
}

// oldData is what an old primary shipped past a fork: records that are
// not the stream's, so a replica that applied them differs from want.
func oldData(seq uint64) []byte { return fmt.Appendf(nil, "divergent %06d\n", seq) }

// forked is a stream promoted once: generation 1 holds 1..20 (g1), its old
// primary went on to ship 21..40 (old) before it was fenced, and
// generation 2, forked at seq 20, holds 21..35 (g2). The history is
// want(1, 35).
type forked struct {
	g1, old, g2 []receivertest.Seg
}

func newForked(t *testing.T) forked {
	t.Helper()
	var f forked
	f.g1 = receivertest.Chain(t, 2, 10)
	prev := f.g1[1].Hash
	for first := uint64(21); first <= 31; first += 10 {
		s := receivertest.SealWith(t, receivertest.Stream, 1, first, first+9, prev, oldData)
		f.old, prev = append(f.old, s), s.Hash
	}
	a := receivertest.SealSeg(t, receivertest.Stream, 2, 21, 25, f.g1[1].Hash)
	f.g2 = []receivertest.Seg{a, receivertest.SealSeg(t, receivertest.Stream, 2, 26, 35, a.Hash)}
	return f
}

// putAll stores the whole forked stream and its record.
func (f forked) putAll(t *testing.T, st store.Store) {
	t.Helper()
	receivertest.Put(t, st, f.g1...)
	receivertest.Put(t, st, f.old...)
	promote(t, st, 2, 20, f.g1[1].Hash)
	receivertest.Put(t, st, f.g2...)
}

// openLogged is open with a logger of its own.
func openLogged(t *testing.T, cfg receiver.Config, log *slog.Logger) *receiver.Receiver {
	t.Helper()
	r, err := receiver.Open(cfg, log)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// A receiver applies generation 1 up to the fork, skips what the old
// primary shipped past it (logged once per segment, counted), and goes on
// in generation 2: the replica is the history.
func TestFollowsAFork(t *testing.T) {
	f := newForked(t)
	st, _ := receivertest.NewStore(t)
	f.putAll(t, st)
	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	var logs ferrytest.LockedBuffer
	r := openLogged(t, receivertest.Config(t, st, ap), logs.Logger(slog.LevelDebug))
	if err := receivertest.Run(t, r); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := ap.Applied(), names(append(slices.Clone(f.g1), f.g2...)...); !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 35), "after following the fork")
	cp := r.Checkpoint()
	receivertest.WantCheckpoint(t, cp, f.g2[1], "after following the fork")
	if cp.Generation != 2 {
		t.Fatalf("checkpoint in generation %d, want 2", cp.Generation)
	}
	if n := r.Stats().Divergent; n != 2 {
		t.Fatalf("Stats.Divergent = %d, want the old primary's 2 segments", n)
	}
	for _, s := range f.old {
		if n := strings.Count(logs.String(), "segment="+s.Name); n != 1 {
			t.Errorf("divergent segment %s logged %d times, want once:\n%s", s.Name, n, logs.String())
		}
	}
}

// A receiver held up below the fork (a segment missing) meets the old
// primary's segments at every poll: each is logged and counted once.
func TestDivergentSegmentsLoggedOnce(t *testing.T) {
	f := newForked(t)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, f.g1[0])
	receivertest.Put(t, st, f.old...)
	promote(t, st, 2, 20, f.g1[1].Hash)
	receivertest.Put(t, st, f.g2...)
	replica := filepath.Join(t.TempDir(), "replica")
	var logs ferrytest.LockedBuffer
	r := openLogged(t, receivertest.Config(t, st, newRecorder(replica)), logs.Logger(slog.LevelDebug))
	// Generation 1 ends at the fork, so 11..20 are missing, not to come.
	if err := receivertest.Run(t, r); !errors.Is(err, receiver.ErrGap) || !strings.Contains(err.Error(), "seq 11..20 missing before generation 2, forked at seq 20") {
		t.Fatalf("Run with seq 11..20 missing: %v, want ErrGap for 11..20", err)
	}
	receivertest.Put(t, st, f.g1[1])
	if err := receivertest.Run(t, r); err != nil {
		t.Fatalf("Run: %v", err)
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 35), "after the gap filled")
	if n := r.Stats().Divergent; n != 2 {
		t.Fatalf("Stats.Divergent = %d, want 2", n)
	}
	for _, s := range f.old {
		if n := strings.Count(logs.String(), "segment="+s.Name); n != 1 {
			t.Errorf("divergent segment %s logged %d times over several polls, want once", s.Name, n)
		}
	}
}

// A checkpoint exactly at the fork continues in generation 2 at once; the
// old primary's segments are never even listed.
func TestFollowsAForkFromTheForkSeq(t *testing.T) {
	f := newForked(t)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, f.g1...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, newRecorder(replica))
	receivertest.WantCheckpoint(t, receivertest.RunOnce(t, cfg), f.g1[1], "before the promotion")

	receivertest.Put(t, st, f.old...)
	promote(t, st, 2, 20, f.g1[1].Hash)
	receivertest.Put(t, st, f.g2...)
	ap := newRecorder(replica)
	cfg.Applier = ap
	r := receivertest.Open(t, cfg)
	if err := receivertest.Run(t, r); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := ap.Applied(), names(f.g2...); !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 35), "after the fork")
	if cp := r.Checkpoint(); cp.Generation != 2 {
		t.Fatalf("checkpoint in generation %d, want 2", cp.Generation)
	}
}

// The race a stale history would lose: the receiver last read the history
// before the promotion; since then the record was created, the old
// primary shipped past the fork, and generation 2 began. The pass that
// finds those segments reads the history before it applies any of them.
func TestHistoryReadBeforeApplying(t *testing.T) {
	t.Run("below the fork", func(t *testing.T) {
		f := newForked(t)
		inner, _ := receivertest.NewStore(t)
		st := &countingStore{Store: inner}
		receivertest.Put(t, st, f.g1[0])
		replica := filepath.Join(t.TempDir(), "replica")
		r := receivertest.Open(t, receivertest.Config(t, st, newRecorder(replica)))
		if err := receivertest.Run(t, r); err != nil {
			t.Fatal(err)
		}
		// An idle pass (nothing new) does not read the history.
		reads := st.histLists.Load()
		if err := receivertest.Run(t, r); err != nil {
			t.Fatal(err)
		}
		if n := st.histLists.Load(); n != reads {
			t.Fatalf("a run with nothing new read the generation records %d times, want none", n-reads)
		}

		receivertest.Put(t, st, f.g1[1])
		promote(t, st, 2, 20, f.g1[1].Hash)
		receivertest.Put(t, st, f.old...)
		receivertest.Put(t, st, f.g2...)
		if err := receivertest.Run(t, r); err != nil {
			t.Fatalf("Run: %v", err)
		}
		receivertest.WantFile(t, replica, receivertest.Want(1, 35), "after the promotion")
		if n := r.Stats().Divergent; n != 2 {
			t.Fatalf("Stats.Divergent = %d, want 2", n)
		}
	})
	t.Run("at the fork", func(t *testing.T) {
		f := newForked(t)
		st, _ := receivertest.NewStore(t)
		receivertest.Put(t, st, f.g1...)
		replica := filepath.Join(t.TempDir(), "replica")
		r := receivertest.Open(t, receivertest.Config(t, st, newRecorder(replica)))
		if err := receivertest.Run(t, r); err != nil {
			t.Fatal(err)
		}
		promote(t, st, 2, 20, f.g1[1].Hash)
		receivertest.Put(t, st, f.old...) // generation 2 has shipped nothing yet
		if err := receivertest.Run(t, r); err != nil {
			t.Fatalf("Run: %v", err)
		}
		receivertest.WantFile(t, replica, receivertest.Want(1, 20), "before generation 2 shipped")
		receivertest.Put(t, st, f.g2...)
		if err := receivertest.Run(t, r); err != nil {
			t.Fatalf("Run: %v", err)
		}
		receivertest.WantFile(t, replica, receivertest.Want(1, 35), "after generation 2 shipped")
	})
}

// Generations 1 -> 2 -> 3 -> 4, forked at 20, 20 and 30: generation 2
// owns nothing (generation 3 forked where it did), and what 2 and 3
// shipped past their ends is not applied.
func TestFollowsAChainOfForks(t *testing.T) {
	g1 := receivertest.Chain(t, 2, 10)
	g1old := receivertest.SealWith(t, receivertest.Stream, 1, 21, 30, g1[1].Hash, oldData)
	g2old := receivertest.SealWith(t, receivertest.Stream, 2, 21, 30, g1[1].Hash, oldData)
	g3 := receivertest.SealSeg(t, receivertest.Stream, 3, 21, 30, g1[1].Hash)
	g3old := receivertest.SealWith(t, receivertest.Stream, 3, 31, 35, g3.Hash, oldData)
	g4 := receivertest.SealSeg(t, receivertest.Stream, 4, 31, 40, g3.Hash)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, g1...)
	receivertest.Put(t, st, g1old, g2old, g3, g3old, g4)
	promote(t, st, 2, 20, g1[1].Hash)
	promote(t, st, 3, 20, g1[1].Hash)
	promote(t, st, 4, 30, g3.Hash)

	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	r := receivertest.Open(t, receivertest.Config(t, st, ap))
	if err := receivertest.Run(t, r); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := ap.Applied(), names(g1[0], g1[1], g3, g4); !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 40), "after the forks")
	if cp := r.Checkpoint(); cp.Generation != 4 {
		t.Fatalf("checkpoint in generation %d, want 4", cp.Generation)
	}
	if n := r.Stats().Divergent; n != 2 {
		t.Fatalf("Stats.Divergent = %d, want 2 (generation 1's and 3's past their ends)", n)
	}
}

// The history forked from a chain other than the one applied here: the
// record's fork hash is not the hash of the last segment applied.
func TestForkFromAnotherChainStops(t *testing.T) {
	f := newForked(t)
	other := receivertest.SealWith(t, receivertest.Stream, 1, 11, 20, f.g1[0].Hash, oldData)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, f.g1...)
	promote(t, st, 2, 20, other.Hash)
	receivertest.Put(t, st, receivertest.SealSeg(t, receivertest.Stream, 2, 21, 25, other.Hash))
	replica := filepath.Join(t.TempDir(), "replica")
	r := receivertest.Open(t, receivertest.Config(t, st, newRecorder(replica)))
	for range 2 {
		err := receivertest.Run(t, r)
		if !errors.Is(err, receiver.ErrHistory) {
			t.Fatalf("Run: %v, want ErrHistory", err)
		}
		for _, s := range []string{batch.GenerationKey(receivertest.Stream, 2), "another chain", "rejoin"} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not mention %q", err, s)
			}
		}
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 20), "after the fork from another chain")
}

// A segment partly in the history and partly past a fork stops the
// receiver, naming it.
func TestStraddlingSegmentStops(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs...)
	promote(t, st, 2, 15, segs[0].Hash) // any hash: the record is not checked before seq 15
	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	r := receivertest.Open(t, receivertest.Config(t, st, ap))
	for range 2 {
		err := receivertest.Run(t, r)
		if !errors.Is(err, receiver.ErrHistory) || !strings.Contains(err.Error(), segs[1].Name) || !strings.Contains(err.Error(), "straddles seq 15") {
			t.Fatalf("Run: %v, want ErrHistory naming %s", err, segs[1].Name)
		}
	}
	if got := ap.Applied(); slices.Contains(got, segs[1].Name) {
		t.Fatalf("applied %v, including the straddling segment", got)
	}
}

// A site that applied past a fork (it went on receiving from the old
// primary) has diverged: it stops, and says to run ferry rejoin.
func TestDivergedCheckpointStops(t *testing.T) {
	f := newForked(t)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, f.g1...)
	receivertest.Put(t, st, f.old[0])
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, newRecorder(replica))
	r := receivertest.Open(t, cfg)
	if err := receivertest.Run(t, r); err != nil {
		t.Fatal(err)
	}
	promote(t, st, 2, 20, f.g1[1].Hash)
	receivertest.Put(t, st, f.g2...)
	wantDiverged := func(err error) {
		t.Helper()
		if !errors.Is(err, batch.ErrDiverged) || !strings.Contains(err.Error(), "run ferry rejoin") {
			t.Fatalf("Run: %v, want the checkpoint diverged, run ferry rejoin", err)
		}
	}
	wantDiverged(receivertest.Run(t, r)) // the receiver that was running
	r.Close()
	wantDiverged(receivertest.Run(t, receivertest.Open(t, reopen(cfg, replica)))) // and after a restart
}

// Config.Generation only seeds a new state: a checkpoint that followed
// the history into generation 2 opens with the configured 1 and goes on.
func TestOpenKeepsTheCheckpointsGeneration(t *testing.T) {
	f := newForked(t)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, f.g1...)
	promote(t, st, 2, 20, f.g1[1].Hash)
	receivertest.Put(t, st, f.g2[0])
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, newRecorder(replica))
	cfg.Generation = 1
	if cp := receivertest.RunOnce(t, cfg); cp.Generation != 2 {
		t.Fatalf("checkpoint in generation %d, want 2", cp.Generation)
	}
	receivertest.Put(t, st, f.g2[1])
	receivertest.WantCheckpoint(t, receivertest.RunOnce(t, reopen(cfg, replica)), f.g2[1], "after reopening with generation 1 configured")
	receivertest.WantFile(t, replica, receivertest.Want(1, 35), "after reopening")
}

// A new state seeded with a generation the store has no record of stops
// at once, naming the record it looked for.
func TestUnknownGenerationStops(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, receivertest.Chain(t, 1, 10)...)
	cfg := receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "replica")))
	cfg.Generation = 3
	err := receivertest.Run(t, receivertest.Open(t, cfg))
	if !errors.Is(err, receiver.ErrHistory) || !strings.Contains(err.Error(), batch.GenerationKey(receivertest.Stream, 3)) {
		t.Fatalf("Run: %v, want ErrHistory naming %s", err, batch.GenerationKey(receivertest.Stream, 3))
	}
}

// A damaged generation record stops the receiver, naming it; it is not
// retried as if the store had failed.
func TestDamagedGenerationRecordStops(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, receivertest.Chain(t, 1, 10)...)
	key := batch.GenerationKey(receivertest.Stream, 2)
	if err := st.Put(context.Background(), key, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	cfg := receivertest.Config(t, st, newRecorder(filepath.Join(t.TempDir(), "replica")))
	cfg.RetryMin, cfg.RetryMax = time.Hour, time.Hour // a retry would hang the test
	err := receivertest.Run(t, receivertest.Open(t, cfg))
	if !errors.Is(err, receiver.ErrHistory) || !strings.Contains(err.Error(), key) {
		t.Fatalf("Run: %v, want ErrHistory naming %s", err, key)
	}
}

// A link receiver fed by offers follows a fork too, takes re-offers of
// what it applied in its stride, and stops at an offered overlap.
func TestOffersFollowAFork(t *testing.T) {
	f := newForked(t)
	st, root := receivertest.NewStore(t)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, newRecorder(replica))
	cfg.Once = false
	cfg.PollMin, cfg.PollMax = time.Hour, time.Hour
	r := receivertest.Open(t, cfg)
	done := make(chan error, 1)
	go func() { done <- r.Run(t.Context()) }()
	offer := func(s receivertest.Seg) {
		receivertest.Put(t, st, s)
		r.Offer(s.Name, int64(len(s.Data)))
	}
	for _, s := range f.g1 {
		offer(s)
		receivertest.Eventually(t, s.Name+" applied", func() bool { return r.Applied() == s.Meta.LastSeq })
	}
	promote(t, st, 2, 20, f.g1[1].Hash)
	offer(f.old[0]) // the old primary's, past the fork
	offer(f.g1[1])  // a resend of what was applied
	offer(f.g2[0])
	offer(f.g2[1])
	receivertest.Eventually(t, "generation 2 applied", func() bool { return r.Applied() == 35 })
	stray := receivertest.SealSeg(t, receivertest.Stream, 2, 26, 30, f.g2[0].Hash)
	writeStray(t, root, stray.Name, stray.Data)
	r.Offer(stray.Name, int64(len(stray.Data)))
	select {
	case err := <-done:
		wantOverlap(t, err, f.g2[1].Name, stray.Name)
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop at the offered overlap")
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 35), "after the offers")
}

// A restore to a seq past a fork applies generation 1 up to the fork, then
// generation 2 up to the boundary.
func TestRestoreAcrossAFork(t *testing.T) {
	f := newForked(t)
	st, _ := receivertest.NewStore(t)
	f.putAll(t, st)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := restoreConfig(t, st, replica, 28)
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantFile(t, replica, receivertest.Want(1, 28), "after --until 28")
	if cp.Generation != 2 || cp.LastSeq != 28 || cp.Segment != f.g2[1].Name || cp.PartialHash != f.g2[1].Hash {
		t.Fatalf("checkpoint after --until 28 = %+v; want generation 2, seq 28 inside %s", cp, f.g2[1].Name)
	}
	more := reopen(cfg, replica)
	more.Until = 35
	receivertest.WantCheckpoint(t, receivertest.RunOnce(t, more), f.g2[1], "after --until 35")
	receivertest.WantFile(t, replica, receivertest.Want(1, 35), "after --until 35")
}

// failingGenerations fails the first n listings of the generations dir.
type failingGenerations struct {
	store.Store
	n int
}

func (s *failingGenerations) List(ctx context.Context, dir, after string, fn func(store.Object) error) error {
	if dir == batch.GenerationDir(receivertest.Stream) && s.n > 0 {
		s.n--
		return errors.New("connection reset")
	}
	return s.Store.List(ctx, dir, after, fn)
}

// A store failure reading the generation records is retried, not taken
// for a damaged history.
func TestGenerationReadFailureRetried(t *testing.T) {
	f := newForked(t)
	st, _ := receivertest.NewStore(t)
	f.putAll(t, st)
	flaky := &failingGenerations{Store: st, n: 2}
	out := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, flaky, newRecorder(out))
	cp := receivertest.RunOnce(t, cfg)
	if flaky.n != 0 {
		t.Fatalf("%d listing failures left, want none", flaky.n)
	}
	receivertest.WantCheckpoint(t, cp, f.g2[1], "after retried reads")
	receivertest.WantFile(t, out, receivertest.Want(1, 35), "after retried reads")
}
