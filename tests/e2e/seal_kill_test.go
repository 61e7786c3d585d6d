package e2e

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// kill -9 while a stdin shipper seals small segments back to back (128
// KiB: a seal in flight at almost any moment, the journal files of the
// sealing batch and the open one live). After each kill a shipper with
// empty stdin recovers the spool (sealed segments, journal records not
// yet sealed) and ships it. The store then holds a prefix of the lines
// fed, each once and in order, with an intact hash chain (verify), and at
// least every line the killed shipper had sealed or journaled:
// status.json's last_seq read just before the kill is a lower bound, as
// kill -9 keeps what was written to the page cache. The unit tests of
// shipper/spool crash at exact instants (TestSealInFlightCrashImages);
// this runs the real binary.
func TestShipStdinKill9WhileSealing(t *testing.T) {
	t.Parallel()
	rng := seededRand(t)
	s := newStream(t, "sealkill")
	r := &tailRig{stream: s} // for statusSeq and sealedThrough
	args := []string{"--max-bytes", "128KiB", "--max-age", "1h"}
	var fed []byte // what the store may hold: the lines recovered so far
	next := 1
	for k := range 3 {
		data := logLines(uint64(k), next, 150_000) // about 13 MiB
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		p := startFerry(t, pr, s.shipArgs(args...)...)
		pr.Close()
		// Half the lines first, until status.json (rewritten every second)
		// shows them accepted; then the rest, killed while it seals. The
		// pipe stays open: the shipper must not see EOF (it would seal,
		// ship and exit before the kill).
		half := len(prefixLines(data, 75_000))
		if _, err := pw.Write(data[:half]); err != nil {
			t.Fatal(err)
		}
		ferrytest.Eventually(t, 60*time.Second, "status.json to show the first half accepted", func() (bool, string) {
			if p.Exited() {
				t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
			}
			got := r.statusSeq()
			return got >= uint64(next+75_000-1), fmt.Sprintf("status.json says seq %d", got)
		})
		sealedBefore, _ := r.sealedThrough()
		wrote := make(chan error, 1)
		go func() {
			_, err := pw.Write(data[half:])
			wrote <- err
		}()
		ferrytest.Eventually(t, 60*time.Second, "the shipper sealing segments", func() (bool, string) {
			if p.Exited() {
				t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
			}
			last, _ := r.sealedThrough()
			return last > sealedBefore+3000, fmt.Sprintf("sealed through seq %d", last) // 2 segments of 128 KiB or more
		})
		time.Sleep(time.Duration(rng.Int64N(int64(100 * time.Millisecond))))
		journaled := r.statusSeq()
		sealed, _ := r.sealedThrough()
		p.Kill9()
		pw.Close()
		<-wrote // done, or EPIPE: the reader is gone

		s.ship(nil, args...)
		s.receiveOnce()
		got := s.readReplica()
		all := append(bytes.Clone(fed), data...)
		if !bytes.HasPrefix(all, got) {
			t.Fatalf("kill -9 #%d: the replica is not a prefix of the lines fed (a line lost, repeated or out of order): %s",
				k+1, describeDiff(all, got))
		}
		n := len(lines(got))
		if uint64(n) < max(journaled, sealed) {
			t.Fatalf("kill -9 #%d: the store holds %d lines, but the killed shipper had sealed through seq %d and journaled through %d",
				k+1, n, sealed, journaled)
		}
		t.Logf("kill -9 #%d: sealed through seq %d, journaled through %d (status.json) at the kill; %d lines recovered of %d fed",
			k+1, sealed, journaled, n, len(lines(all)))
		fed, next = got, n+1
	}
	if v := s.verify(); v.Code != 0 {
		t.Fatalf("verify: want exit 0:\n%s", v)
	}
}
