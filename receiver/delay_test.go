package receiver_test

import (
	"context"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// With CheckpointDelay, segments arriving one at a time are reported as
// applied (Applied, OnApplied) at once while their checkpoint waits; a
// crash then (the state and the replica as they are on disk) applies them
// again from the store exactly once; and Run's end makes them durable.
func TestCheckpointDelayHoldsAndReplays(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 3, 5)
	out := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, &apply.File{Path: out})
	cfg.Once = false
	cfg.CheckpointDelay = time.Hour // only the end of Run makes it durable
	var told atomic.Uint64
	cfg.OnApplied = func(seq uint64) { told.Store(seq) }
	r := receivertest.Open(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	for _, s := range segs {
		receivertest.Put(t, st, s)
		r.Wake()
		receivertest.Eventually(t, "segment "+s.Name+" applied", func() bool { return r.Applied() == s.Meta.LastSeq })
		if got := told.Load(); got != s.Meta.LastSeq {
			t.Fatalf("OnApplied last told %d, want %d", got, s.Meta.LastSeq)
		}
		if cp := r.Checkpoint(); cp.LastSeq != 0 {
			t.Fatalf("checkpoint at %d while its delay is an hour, want 0", cp.LastSeq)
		}
	}
	receivertest.WantFile(t, out, receivertest.Want(1, 15), "with the checkpoint held")

	// A crash now: what is on disk is a replica ahead of its checkpoint.
	crashed := t.TempDir()
	copyTree(t, cfg.StateDir, filepath.Join(crashed, "state"))
	// The replica is the same file (a hard link): the file: applier
	// refuses a replica of another inode than its checkpoint's.
	if err := os.Link(out, filepath.Join(crashed, "replica")); err != nil {
		t.Fatal(err)
	}
	cfg2 := cfg
	cfg2.Once, cfg2.CheckpointDelay, cfg2.OnApplied = true, 0, nil
	cfg2.StateDir = filepath.Join(crashed, "state")
	cfg2.Applier = &apply.File{Path: filepath.Join(crashed, "replica")}
	cp := receivertest.RunOnce(t, cfg2)
	receivertest.WantCheckpoint(t, cp, segs[2], "after the crash")
	receivertest.WantFile(t, filepath.Join(crashed, "replica"), receivertest.Want(1, 15), "after the crash: each record once")

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	receivertest.WantCheckpoint(t, r.Checkpoint(), segs[2], "after Run ended")
	r.Close()
	cp, ok, err := receiver.LoadCheckpoint(cfg.StateDir)
	if err != nil || !ok || cp.LastSeq != segs[2].Meta.LastSeq {
		t.Fatalf("checkpoint on disk after Run ended: %+v %v %v, want seq %d", cp, ok, err, segs[2].Meta.LastSeq)
	}
}

// A held checkpoint is saved once its delay has passed, with nothing more
// arriving.
func TestCheckpointDelayExpires(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	segs := receivertest.Chain(t, 1, 5)
	cfg := receivertest.Config(t, st, &apply.File{Path: filepath.Join(t.TempDir(), "replica")})
	cfg.Once = false
	cfg.PollMin, cfg.PollMax = time.Hour, time.Hour // no poll: only the delay's timer may wake Run
	cfg.CheckpointDelay = 50 * time.Millisecond
	r := receivertest.Open(t, cfg)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	receivertest.Put(t, st, segs...)
	r.Wake()
	receivertest.Eventually(t, "the held checkpoint saved", func() bool { return r.Checkpoint().LastSeq == segs[0].Meta.LastSeq })
	cancel()
	<-done
}

// copyTree copies a file or a directory of files.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	fi, err := os.Stat(from)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(to, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		copyTree(t, filepath.Join(from, e.Name()), filepath.Join(to, e.Name()))
	}
}
