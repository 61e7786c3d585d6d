package source

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/shipper"
	"github.com/ferry-dr/ferry/shipper/spool"
	"github.com/ferry-dr/ferry/store"
	"github.com/ferry-dr/ferry/store/dir"
)

// quiet is the logger for tests: the code under test logs warnings on
// purpose (torn tails, unreadable paths), which would only clutter the
// output.
var quiet = slog.New(slog.DiscardHandler)

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
	ferrytest.Eventually(t, 10*time.Second, what, func() (bool, string) { return cond(), "still false" })
}

// openSpool opens cfg and closes the spool when the test ends.
func openSpool(t *testing.T, cfg spool.Config) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(cfg, nil, quiet)
	if err != nil {
		t.Fatalf("spool.Open: %v", err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// The sources' tests through a real Shipper. Package shipper's tests have
// helpers of their own like these, which this package cannot import.

// shipperConfig configures a shipper of stream "app", its spool in a temp
// dir, with one target: the directory store it returns.
func shipperConfig(t *testing.T) (shipper.Config, *dir.Store) {
	t.Helper()
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return shipper.Config{
		Spool:   spool.Config{Dir: t.TempDir(), Stream: "app", Policy: batch.FlushPolicy{MaxRecords: 10}},
		Targets: []shipper.Target{{Name: "local", Store: st}},
		Retry:   store.RetryPolicy{Min: time.Millisecond, Max: 5 * time.Millisecond},
	}, st
}

// startShipper runs a Shipper on cfg until the test ends.
func startShipper(t *testing.T, cfg shipper.Config) *shipper.Shipper {
	t.Helper()
	sh, err := shipper.New(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatalf("shipper.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sh.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		sh.Close()
	})
	return sh
}

// drain waits until every target has what was appended to sh.
func drain(t *testing.T, sh *shipper.Shipper) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sh.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
}
