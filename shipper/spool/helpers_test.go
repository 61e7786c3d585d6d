package spool

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// quiet is the logger for tests: the code under test logs warnings on
// purpose (torn tails, retries), which would only clutter the output.
var quiet = slog.New(slog.DiscardHandler)

// newClock is an injectable Config.Now that moves only when told to.
func newClock() *ferrytest.Clock {
	return ferrytest.NewClock(time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC))
}

// spoolConfig is a small-limits config for a spool in a fresh temp dir.
func spoolConfig(t *testing.T) Config {
	return Config{Dir: t.TempDir(), Stream: "app", Fsync: FsyncBatch}
}

// openSpool opens cfg and closes the spool when the test ends.
func openSpool(t *testing.T, cfg Config, targets ...string) *Spool {
	t.Helper()
	sp, err := Open(cfg, targets, quiet)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

func appendRecs(t *testing.T, sp *Spool, recs []batch.Record, cursor string) uint64 {
	t.Helper()
	var c []byte
	if cursor != "" {
		c = []byte(cursor)
	}
	pos, err := sp.Append(context.Background(), recs, c)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	return pos
}

// sealedFiles decodes every segment in the spool dir's sealed/, in name
// order.
func sealedFiles(t *testing.T, dir string) []batchtest.Segment {
	t.Helper()
	return batchtest.ReadDir(t, filepath.Join(dir, "sealed"))
}

// sealedCount is how many segment files sealed/ holds, by name only: a
// condition to poll while the spool removes confirmed segments (reading
// them, as sealedFiles does, fails on one removed between the listing
// and the read).
func sealedCount(t *testing.T, dir string) int {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "sealed"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".seg.zst") && !strings.HasPrefix(e.Name(), ".") {
			n++
		}
	}
	return n
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

// copyDir copies the regular files of src (recursively) to a new temp dir,
// skipping LOCK, as a crash image of a spool.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if d.Name() == "LOCK" {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}
