package shipper

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/shipper/spool"
)

// quiet is the logger for tests: the code under test logs warnings on
// purpose (torn tails, retries), which would only clutter the output.
var quiet = slog.New(slog.DiscardHandler)

// openSpool opens cfg and closes the spool when the test ends.
func openSpool(t *testing.T, cfg spool.Config, targets ...string) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(cfg, targets, quiet)
	if err != nil {
		t.Fatalf("spool.Open: %v", err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// sealedFiles decodes every segment in the spool dir's sealed/, in name
// order.
func sealedFiles(t *testing.T, dir string) []batchtest.Segment {
	t.Helper()
	return batchtest.ReadDir(t, filepath.Join(dir, "sealed"))
}

// storeSegments decodes every segment of stream in a store.
var storeSegments = batchtest.ReadStore

// fakeSink records every batch a source appends, deep-copying because
// sources reuse their buffers. fail, when set, is returned by the call
// with that index (0-based) instead of recording it.
type fakeSink struct {
	mu      sync.Mutex
	batches [][]batch.Record
	cursors [][]byte
	failAt  int
	failErr error
}

func (s *fakeSink) AppendBatch(ctx context.Context, recs []batch.Record, cursor []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failErr != nil && len(s.batches) == s.failAt {
		return s.failErr
	}
	cp := make([]batch.Record, len(recs))
	for i, r := range recs {
		cp[i] = batch.Record{Time: r.Time, Op: r.Op, Key: bytes.Clone(r.Key), Data: bytes.Clone(r.Data)}
	}
	s.batches = append(s.batches, cp)
	s.cursors = append(s.cursors, bytes.Clone(cursor))
	return nil
}

func (s *fakeSink) records() []batch.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []batch.Record
	for _, b := range s.batches {
		out = append(out, b...)
	}
	return out
}

func (s *fakeSink) datas() []string { return batchtest.Datas(s.records()) }

func (s *fakeSink) lastCursor() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cursors) == 0 {
		return nil
	}
	return slices.Clone(s.cursors[len(s.cursors)-1])
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
