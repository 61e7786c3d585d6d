package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// journalBytes is the size of the spool's journal files (journal-*).
func journalBytes(t *testing.T, spool string) int64 {
	t.Helper()
	ents, err := os.ReadDir(spool)
	if errors.Is(err, os.ErrNotExist) {
		return 0 // not created yet
	}
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "journal") {
			continue
		}
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// A tail: source's lines are written once, into segments: the spool's
// journal stays empty while the shipper runs, and kill -9 at random
// moments, during reads, seals and sends alike, neither loses nor repeats
// a line (the restart reads again from the newest segment's cursor).
func TestTailShipperWritesNoJournal(t *testing.T) {
	t.Parallel()
	rng := seededRand(t)
	s := newStream(t, "nojournal")
	logPath := filepath.Join(s.dir, "app.log")
	w := newLogWriter(t, logPath, rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())))
	for range 2000 {
		if err := w.burst(); err != nil {
			t.Fatal(err)
		}
	}
	ship := func() *ferrytest.Process {
		return startFerry(t, nil, s.shipArgs("--source", "tail:"+logPath, "--max-age", "50ms", "--max-bytes", "64KiB")...)
	}
	p := ship()
	kills := 4 + rng.IntN(3)
	for k := range kills {
		deadline := time.Now().Add(time.Duration(20+rng.IntN(300)) * time.Millisecond)
		for time.Now().Before(deadline) {
			if p.Exited() {
				t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
			}
			if n := journalBytes(t, s.spool); n != 0 {
				t.Fatalf("the spool's journal holds %d bytes while a tail: source ships; its lines belong only in segments", n)
			}
			if err := w.burst(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
		p.Kill9()
		_, n := w.written()
		t.Logf("kill -9 #%d at line %d, %d segments in the store", k+1, n, len(s.segments()))
		p = ship()
	}
	all, total := w.written()
	ferrytest.Eventually(t, 60*time.Second, "replica holds every line written", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
		}
		s.pollReceiveOnce()
		got := s.readReplica()
		if !bytes.HasPrefix(all, got) {
			t.Fatalf("replica is not a prefix of the lines written: %s", checkNumbered(got, total))
		}
		return len(got) == len(all), fmt.Sprintf("replica has %d of %d bytes", len(got), len(all))
	})
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("shipper exit %d on SIGTERM, want 0:\n%s", code, p)
	}
	s.receiveOnce()
	if msg := checkNumbered(s.readReplica(), total); msg != "" {
		t.Fatalf("replica after %d kills: %s", kills, msg)
	}
	if r := s.verify(); r.Code != 0 {
		t.Fatalf("verify after kills: want exit 0:\n%s", r)
	}
}
