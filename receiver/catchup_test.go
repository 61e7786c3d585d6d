package receiver_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// pacedApplier applies like recorder, a little slowly.
type pacedApplier struct{ *recorder }

func (a pacedApplier) Apply(ctx context.Context, meta *batch.Meta, recs batch.Records) error {
	time.Sleep(15 * time.Millisecond)
	return a.recorder.Apply(ctx, meta, recs)
}

// syncBuffer is a bytes.Buffer safe for a logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}
func (b *syncBuffer) String() string { b.mu.Lock(); defer b.mu.Unlock(); return b.b.String() }

// A pass over a backlog logs "catching up" every CatchUpLog with the seq
// applied and the segments left, and "caught up" at its end; without
// CatchUpLog it logs neither.
func TestCatchUpLog(t *testing.T) {
	segs := receivertest.Chain(t, 20, 5)
	for _, every := range []time.Duration{40 * time.Millisecond, 0} {
		st, _ := receivertest.NewStore(t)
		receivertest.Put(t, st, segs...)
		cfg := receivertest.Config(t, st, pacedApplier{newRecorder(filepath.Join(t.TempDir(), "replica"))})
		cfg.CatchUpLog = every
		var logs syncBuffer
		r, err := receiver.Open(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		if err := receivertest.Run(t, r); err != nil {
			t.Fatal(err)
		}
		r.Close()
		out := logs.String()
		n := strings.Count(out, `msg="catching up"`)
		switch {
		case every == 0 && (n > 0 || strings.Contains(out, "caught up")):
			t.Errorf("CatchUpLog 0 logged progress:\n%s", out)
		case every > 0 && (n < 2 || !strings.Contains(out, `msg="caught up" stream=`+receivertest.Stream+" seq=100") ||
			!strings.Contains(out, "to_seq=100") || !strings.Contains(out, "segments_left=")):
			t.Errorf("CatchUpLog %s over 20 segments of 15 ms: %d \"catching up\" lines; want at least 2, with to_seq=100 and segments_left, then \"caught up\" at seq 100:\n%s", every, n, out)
		}
	}
}
