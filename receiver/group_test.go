package receiver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// groupApplier counts the checkpoints (State calls) and deferred Applies
// of an apply.File, and can fail one segment's Apply or its fsyncs.
type groupApplier struct {
	*apply.File
	states, deferred, fails atomic.Int64
	deferring               bool
	failAt                  uint64 // LastSeq of the segment whose Apply fails
	failSync                bool   // Sync fails (a fatal fsync error)
}

func (a *groupApplier) Sync() error {
	if a.failSync {
		return fmt.Errorf("injected fsync failure: %w", receiver.ErrFatal)
	}
	return a.File.Sync()
}

func (a *groupApplier) DeferSync(d bool) {
	a.deferring = d
	a.File.DeferSync(d)
}

func (a *groupApplier) Apply(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	if meta.LastSeq == a.failAt {
		a.fails.Add(1)
		return errors.New("injected apply failure")
	}
	if a.deferring {
		a.deferred.Add(1)
	} else if a.failSync {
		// Apply's own fsync fails after the write, like Sync would.
		if err := a.File.Apply(ctx, meta, recs); err != nil {
			return err
		}
		return a.Sync()
	}
	return a.File.Apply(ctx, meta, recs)
}

func (a *groupApplier) State() (json.RawMessage, error) {
	a.states.Add(1)
	return a.File.State()
}

// Segments that are ready together are applied as a group: one fsync and
// one checkpoint for the group, exactly the same replica.
func TestReadySegmentsShareCheckpoint(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 20, 5)
	receivertest.Put(t, st, segs...)
	out := filepath.Join(t.TempDir(), "replica")
	ap := &groupApplier{File: &apply.File{Path: out}}
	cfg := receivertest.Config(t, st, ap)
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[len(segs)-1], "after the pass")
	receivertest.WantFile(t, out, receivertest.Want(1, 100), "after the pass")
	if ap.deferred.Load() == 0 || ap.states.Load() >= int64(len(segs)) {
		t.Fatalf("%d checkpoints and %d deferred applies for %d ready segments: want them grouped",
			ap.states.Load(), ap.deferred.Load(), len(segs))
	}
}

// A segment that cannot be applied after a group of held ones: the group
// is made durable and checkpointed first, so nothing good is redone.
func TestFailedSegmentAfterGroupKeepsGroup(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 12, 5)
	receivertest.Put(t, st, segs...)
	out := filepath.Join(t.TempDir(), "replica")
	ap := &groupApplier{File: &apply.File{Path: out}, failAt: 45}
	cfg := receivertest.Config(t, st, ap)
	cfg.RetryMax = cfg.RetryMin
	r := receivertest.Open(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	receivertest.Eventually(t, "the failing segment retried", func() bool { return ap.fails.Load() > 1 })
	cancel()
	<-done // a cancelled Run returns nil: the shutdown is normal
	if ap.deferred.Load() == 0 {
		t.Fatal("no segment was held back: the group this test needs did not form")
	}
	receivertest.WantCheckpoint(t, r.Checkpoint(), segs[7], "after segment 41-45 failed")
	receivertest.WantFile(t, out, receivertest.Want(1, 40), "after segment 41-45 failed")
	r.Close()
	ap.failAt = 0
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[len(segs)-1], "after the retry")
	receivertest.WantFile(t, out, receivertest.Want(1, 60), "after the retry")
}

// A group that cannot be made durable leaves the applier ahead of the
// checkpoint: the receiver refuses to go on until reopened, and reopening
// undoes the group, so every record is applied exactly once.
func TestUndurableGroupReplaysExactlyOnce(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 12, 5)
	receivertest.Put(t, st, segs...)
	out := filepath.Join(t.TempDir(), "replica")
	ap := &groupApplier{File: &apply.File{Path: out}, failSync: true}
	cfg := receivertest.Config(t, st, ap)
	r := receivertest.Open(t, cfg)
	if err := receivertest.Run(t, r); err == nil || !errors.Is(err, receiver.ErrFatal) {
		t.Fatalf("Run with a failing fsync: %v, want the fatal error", err)
	}
	if ap.deferred.Load() == 0 {
		t.Fatal("no segment was held back: the group this test needs did not form")
	}
	if err := receivertest.Run(t, r); err == nil || !strings.Contains(err.Error(), "not checkpointed") {
		t.Fatalf("a second Run on a receiver ahead of its checkpoint: %v, want the not-checkpointed error", err)
	}
	r.Close()
	ap.failSync = false
	cp := receivertest.RunOnce(t, cfg)
	receivertest.WantCheckpoint(t, cp, segs[len(segs)-1], "after reopening")
	receivertest.WantFile(t, out, receivertest.Want(1, 60), "after reopening")
}
