package shipper

import (
	"log/slog"
	"path/filepath"
	"testing"
	"time"

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
