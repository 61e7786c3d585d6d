package receiver_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// recorder is an apply.File that remembers which segments it applied and
// can fail its State call, which is how a test stops the receiver between
// an Apply and the checkpoint write that should follow it.
type recorder struct {
	*apply.File

	mu        sync.Mutex
	applied   []string
	failState func(last string) error // called with the last applied segment
}

var (
	_ receiver.Applier  = (*recorder)(nil)
	_ receiver.Stateful = (*recorder)(nil)
)

// DeferSync hides File's (a different signature, so recorder is
// not a SyncDeferrer): the receiver checkpoints every segment it applies,
// which the crash-between-apply-and-checkpoint tests rely on. Groups are
// tested in group_test.go.
func (a *recorder) DeferSync() {}

func newRecorder(path string) *recorder {
	return &recorder{File: &apply.File{Path: path}}
}

func (a *recorder) Apply(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	if err := a.File.Apply(ctx, meta, recs); err != nil {
		return err
	}
	a.mu.Lock()
	a.applied = append(a.applied, meta.Name())
	a.mu.Unlock()
	return nil
}

func (a *recorder) State() (json.RawMessage, error) {
	a.mu.Lock()
	fail, last := a.failState, ""
	if len(a.applied) > 0 {
		last = a.applied[len(a.applied)-1]
	}
	a.mu.Unlock()
	if fail != nil && last != "" {
		if err := fail(last); err != nil {
			return nil, err
		}
	}
	return a.File.State()
}

func (a *recorder) Applied() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.applied...)
}

// names returns the names of segs.
func names(segs ...receivertest.Seg) []string {
	out := make([]string, len(segs))
	for i, s := range segs {
		out[i] = s.Name
	}
	return out
}

// loadCheckpoint reads the checkpoint in cfg's state dir.
func loadCheckpoint(t *testing.T, cfg receiver.Config) receiver.Checkpoint {
	t.Helper()
	cp, ok, err := receiver.LoadCheckpoint(cfg.StateDir)
	if err != nil || !ok {
		t.Fatalf("LoadCheckpoint(%s): ok=%v err=%v", cfg.StateDir, ok, err)
	}
	return cp
}
