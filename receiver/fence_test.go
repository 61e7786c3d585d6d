package receiver_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// Config.Fence is asked before each apply and each checkpoint: a refusal
// before an apply stops Run with ErrFenced, nothing applied; a refusal
// at the checkpoint leaves the applied segment uncheckpointed, and the
// next Open undoes it, so the next owner applies it exactly once.
func TestFenceStopsApplyAndCheckpoint(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 2, 5)
	receivertest.Put(t, st, segs...)
	replica := filepath.Join(t.TempDir(), "replica")

	var calls, allow atomic.Int64 // calls answered yes while calls <= allow
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	cfg.Fence = func() error {
		if calls.Add(1) > allow.Load() {
			return errors.New("lease gone")
		}
		return nil
	}
	r := receivertest.Open(t, cfg)
	if err := r.Run(context.Background()); !errors.Is(err, receiver.ErrFenced) {
		t.Fatalf("fence refusing: Run = %v, want ErrFenced", err)
	}
	receivertest.WantFile(t, replica, nil, "after a fence refused the first apply")
	r.Close()

	// Allowed to apply the first segment, refused at its checkpoint.
	calls.Store(0)
	allow.Store(1)
	cfg.Applier = &apply.File{Path: replica}
	r = receivertest.Open(t, cfg)
	if err := r.Run(context.Background()); !errors.Is(err, receiver.ErrFenced) {
		t.Fatalf("fence refusing the checkpoint: Run = %v, want ErrFenced", err)
	}
	if r.Checkpoint().LastSeq != 0 {
		t.Fatalf("checkpoint moved to %d past a refused fence", r.Checkpoint().LastSeq)
	}
	r.Close()

	cfg.Fence = nil
	cfg.Applier = &apply.File{Path: replica}
	receivertest.RunOnce(t, cfg)
	receivertest.WantFile(t, replica, receivertest.Want(1, 10), "after the next owner applied")
}
