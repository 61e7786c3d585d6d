package e2e

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// An unplanned failover over direct links only: the primary ships to the
// secondary's listener and dies; the secondary is promoted (the record goes
// into its inbox), its listener then refuses the old generation, the old
// primary rejoins from a copy of the new primary's history and listens, and
// the new primary ships generation 2 to it, carrying the history in the
// handshake. Both logs end equal.
func TestFailoverUnplannedLink(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	a, b := newSite(t, base, "a"), newSite(t, base, "b")
	addrB, addrA := ferrytest.FreeAddr(t), ferrytest.FreeAddr(t)
	link := []string{"--insecure", "--token", "failover-link-token", "--stream", "app"}

	stopApp := make(chan struct{})
	written := appLines(t, a.log, "a", stopApp)
	recvB := startFerry(t, nil, append([]string{"receive", "--listen", addrB, "--state", b.state, "--apply", "file:" + b.log}, link...)...)
	shipA := startFerry(t, nil, append([]string{"ship", "--store", "tcp://" + addrB, "--spool", a.spool, "--source", "tail:" + a.log,
		"--max-records", "40", "--max-age", "20ms"}, link...)...)
	waitApplied(t, b.state, 300, 30*time.Second)
	shipA.Kill9()
	close(stopApp)
	written()
	if code := recvB.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exited %d:\n%s", code, recvB)
	}

	r := mustFerry(t, nil, "promote", "--store", "tcp://"+addrB, "--stream", "app", "--state", b.state, "--site", "b",
		"--spool", b.spool, "--source", "tail:"+b.log)
	fork := readCheckpoint(t, b.state).LastSeq
	t.Logf("promoted at seq %d:\n%s", fork, r.Stdout)

	// The old primary, restarted against the promoted site's listener
	// (the site listens again, say, before it is reconfigured): refused.
	recvB2 := startFerry(t, nil, append([]string{"receive", "--listen", addrB, "--state", filepath.Join(b.dir, "state2"),
		"--inbox", filepath.Join(b.state, "inbox"), "--apply", "file:" + filepath.Join(b.dir, "other.log")}, link...)...)
	time.Sleep(300 * time.Millisecond)
	failFerry(t, nil, []string{"fenced", fmt.Sprintf("promoted at seq %d", fork)},
		append([]string{"ship", "--store", "tcp://" + addrB, "--spool", a.spool, "--source", "tail:" + a.log, "--shutdown-timeout", "2s"}, link...)...)
	recvB2.Terminate(10 * time.Second)

	// Rejoin from a copy of the new primary's history (direct links only:
	// there is no shared store), then receive generation 2 over a link.
	report := filepath.Join(a.dir, "divergence.ndjson")
	mustFerry(t, nil, "rejoin", "--store", filepath.Join(b.spool, "history"), "--stream", "app", "--spool", a.spool,
		"--state", a.state, "--apply", "file:"+a.log, "--report", report)
	if sum := ferrytest.ReadDivergenceReport(t, report); sum.ForkSeq != fork || sum.Records != len(sum.Lines) {
		t.Fatalf("report summary %+v with %d records; want fork %d", sum, len(sum.Lines), fork)
	}
	if got := readFile(t, a.log); !bytes.Equal(got, numberedLines("a", 1, int(fork))) {
		t.Fatalf("old primary's log after rejoin: %s", describeDiff(numberedLines("a", 1, int(fork)), got))
	}
	recvA := startFerry(t, nil, append([]string{"receive", "--listen", addrA, "--state", a.state, "--apply", "file:" + a.log}, link...)...)
	stopB := make(chan struct{})
	writtenB := appLines(t, b.log, "b", stopB)
	shipB := startFerry(t, nil, append([]string{"ship", "--store", "tcp://" + addrA, "--spool", b.spool, "--source", "tail:" + b.log,
		"--max-records", "40", "--max-age", "20ms"}, link...)...)
	time.Sleep(400 * time.Millisecond)
	close(stopB)
	nb := writtenB()
	waitApplied(t, a.state, fork+uint64(nb), 30*time.Second)
	shipB.Terminate(30 * time.Second)
	recvA.Terminate(30 * time.Second)
	want := append(numberedLines("a", 1, int(fork)), numberedLines("b", 1, nb)...)
	for _, f := range []string{a.log, b.log} {
		if got := readFile(t, f); !bytes.Equal(got, want) {
			t.Fatalf("%s after generation 2 over the link: %s", f, describeDiff(want, got))
		}
	}
}
