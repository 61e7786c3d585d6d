package receiver_test

import (
	"context"
	"errors"
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
	"github.com/ferry-dr/ferry/store/storetest"
)

func TestGapFailsOnceRun(t *testing.T) {
	segs := receivertest.Chain(t, 3, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[0], segs[2])
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, nil)
	cfg.GapTimeout = 100 * time.Millisecond

	ap := newRecorder(replica)
	cfg.Applier = ap
	r := receivertest.Open(t, cfg)
	start := time.Now()
	err := receivertest.Run(t, r)
	if !errors.Is(err, receiver.ErrGap) {
		t.Fatalf("Run: %v, want ErrGap", err)
	}
	if took := time.Since(start); took < cfg.GapTimeout {
		t.Fatalf("gap reported after %s, before the %s gap timeout", took, cfg.GapTimeout)
	}
	for _, s := range []string{"11..20", segs[2].Name} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("gap error %q does not mention %s", err, s)
		}
	}
	if got, want := ap.Applied(), names(segs[0]); !slices.Equal(got, want) {
		t.Fatalf("applied %v, want %v", got, want)
	}
	receivertest.WantCheckpoint(t, r.Checkpoint(), segs[0], "after the gap")
	receivertest.WantFile(t, replica, receivertest.Want(1, 10), "after the gap")
	r.Close()

	receivertest.Put(t, st, segs[1])
	cfg.Applier = newRecorder(replica)
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[2], "after the gap was filled")
	receivertest.WantFile(t, replica, receivertest.Want(1, 30), "after the gap was filled")
}

// A running receiver waits a gap out, logging it once it is older than the
// gap timeout, and carries on when the missing segment arrives.
func TestGapWaitedOutWhileRunning(t *testing.T) {
	segs := receivertest.Chain(t, 3, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[0], segs[2])
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, newRecorder(replica))
	cfg.Once = false
	cfg.GapTimeout = 20 * time.Millisecond
	var logs ferrytest.LockedBuffer
	r, err := receiver.Open(cfg, logs.Logger(slog.LevelInfo))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()

	receivertest.Eventually(t, "the gap to be logged", func() bool { return strings.Contains(logs.String(), "gap in stream") })
	select {
	case err := <-done:
		t.Fatalf("Run returned %v on a gap; a running receiver waits it out", err)
	default:
	}
	if cp := r.Checkpoint(); cp.LastSeq != 10 {
		t.Fatalf("checkpoint at seq %d while 11..20 is missing, want 10", cp.LastSeq)
	}
	if l := logs.String(); !strings.Contains(l, "missing_from=11") || !strings.Contains(l, "missing_to=20") {
		t.Errorf("gap log does not name the missing range 11..20:\n%s", l)
	}

	receivertest.Put(t, st, segs[1])
	receivertest.Eventually(t, "the receiver to pass the gap", func() bool { return r.Checkpoint().LastSeq == 30 })
	cancel()
	receivertest.WaitReturned(t, done, "Run did not return after cancel")
	receivertest.WantFile(t, replica, receivertest.Want(1, 30), "after the gap was filled")
}

// The gap timeout measures how long one range has been missing. When a gap
// fills and the receiver stops at a new one, the new one starts its own
// clock rather than inheriting the old gap's age.
func TestGapTimeoutRestartsForANewGap(t *testing.T) {
	segs := receivertest.Chain(t, 5, 10)
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[0], segs[2], segs[4]) // 11..20 and 31..40 missing
	clk := ferrytest.NewClock(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
	lists := 0
	faulty := &storetest.Faulty{Store: st}
	faulty.ListFn = func(ctx context.Context, dir, after string, fn func(store.Object) error) error {
		if dir != batch.StreamDir(receivertest.Stream) { // the generation records
			return st.List(ctx, dir, after, fn)
		}
		lists++
		switch lists {
		case 2: // 11..20 arrives after 50 minutes; the receiver stops at 31..40
			clk.Advance(50 * time.Minute)
			receivertest.Put(t, st, segs[1])
		case 3: // 31..40 has been missing for 20 minutes
			clk.Advance(20 * time.Minute)
		case 4:
			receivertest.Put(t, st, segs[3])
		}
		return st.List(ctx, dir, after, fn)
	}
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, faulty, newRecorder(replica))
	cfg.GapTimeout = time.Hour
	cfg.Now = clk.Now

	r := receivertest.Open(t, cfg)
	if err := receivertest.Run(t, r); err != nil {
		t.Fatalf("Run: %v (after %d lists); the second gap was missing for 20 minutes of a 1h timeout", err, lists)
	}
	receivertest.WantCheckpoint(t, r.Checkpoint(), segs[4], "after both gaps filled")
	receivertest.WantFile(t, replica, receivertest.Want(1, 50), "after both gaps filled")
}
