package e2e

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// kill -9 while a stdin shipper seals small segments back to back, so
// that seals are in flight at the kill, often two (the newer compressed
// and waiting for the older's segment to be durable: segments are written
// in seq order). After each kill a shipper with empty stdin recovers the
// spool and ships it. The store then holds a prefix of the lines fed,
// each once and in order, with an intact hash chain (verify), and at
// least every line the killed shipper had sealed or journaled:
// status.json's last_seq read just before the kill is a lower bound, as
// kill -9 keeps what was written to the page cache. The unit tests of
// shipper/spool crash at the exact instants (TestSealInFlightCrashImages);
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
		_, sealedBefore := r.sealedThrough()
		p := startFerry(t, pr, s.shipArgs(args...)...)
		pr.Close()
		// The pipe stays open after data: the shipper must not see EOF
		// (it would seal, ship and exit before the kill).
		wrote := make(chan error, 1)
		go func() {
			_, err := pw.Write(data)
			wrote <- err
		}()
		ferrytest.Eventually(t, 60*time.Second, "the shipper sealing segments", func() (bool, string) {
			if p.Exited() {
				t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
			}
			_, n := r.sealedThrough()
			return n > sealedBefore+2, fmt.Sprintf("%d segments in the spool", n)
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
