package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// A promotion recorded in the store fences the old primary: its next
// ferry ship exits non-zero with the history's message and ships nothing.
func TestShipFencedByPromotion(t *testing.T) {
	t.Parallel()
	s := newStream(t, "app")
	s.ship(logLines(1, 1, 500))
	before := s.segments()

	rec := `{"version":1,"stream":"app","generation":2,"parent":1,"fork_seq":0,"fork_hash":"",` +
		`"time":"2026-03-01T03:00:00Z","site":"dr-b","host":"db7","reason":"promote"}` + "\n"
	dir := filepath.Join(s.streamDir(), "generations")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "00000002.json"), []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}
	failFerry(t, bytes.NewReader(logLines(1, 501, 100)),
		[]string{"fenced: generation 2 was promoted at seq 0 on dr-b at 2026-03-01T03:00:00Z; run ferry rejoin"},
		s.shipArgs()...)
	if after := s.segments(); !slices.Equal(after, before) {
		t.Fatalf("a fenced ship stored segments: %v, was %v", after, before)
	}
}

// While one ferry ship holds the stream's writer lease, another (its own
// spool) is refused, naming the holder; once the first exits cleanly it
// has released the lease and the other starts at once.
func TestShipWriterLease(t *testing.T) {
	t.Parallel()
	s := newStream(t, "app")
	logPath := filepath.Join(s.dir, "app.log")
	if err := os.WriteFile(logPath, logLines(1, 1, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	first := startFerry(t, nil, s.shipArgs("--source", "tail:"+logPath, "--max-age", "100ms", "--site", "primary-a")...)
	lease := filepath.Join(s.streamDir(), "claims", "writer.json")
	ferrytest.Eventually(t, 15*time.Second, "the first shipper's lease", func() (bool, string) {
		_, err := os.Stat(lease)
		return err == nil, first.String()
	})

	other := filepath.Join(s.dir, "spool-b")
	args := []string{"ship", "--store", s.store, "--stream", s.name, "--spool", other, "--site", "primary-b"}
	failFerry(t, bytes.NewReader(logLines(1, 101, 10)),
		[]string{"writer lease", "held by another shipper", "site primary-a", s.spool, "from now"}, args...)

	if code := first.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("first shipper exited %d:\n%s", code, first)
	}
	mustFerry(t, bytes.NewReader(logLines(1, 101, 10)), args...)
}
