package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// A power loss at a link receiver can leave the newest segment in its inbox
// torn under its final name: the link server publishes a segment before it
// fsyncs it. That segment was never acknowledged, so its shipper still has
// it. The restarted receiver removes it before answering any shipper, tells
// the shipper the newest intact segment, takes the resent copy, and the
// replica ends byte-identical.
func TestLinkInboxTornNewestSegment(t *testing.T) {
	t.Parallel()
	s := newStream(t, "torn")
	addr := ferrytest.FreeAddr(t)
	ship := func(spool string, stdin []byte) ferrytest.Result {
		t.Helper()
		return ferry(t, bytes.NewReader(stdin), "ship", "--store", "tcp://"+addr, "--insecure", "--token", linkToken,
			"--stream", s.name, "--spool", spool, "--max-bytes", "32KiB", "--shutdown-timeout", "2s")
	}
	waitReplica := func(want []byte) {
		t.Helper()
		ferrytest.Eventually(t, 30*time.Second, "replica complete", func() (bool, string) {
			got := s.readReplica()
			if !bytes.HasPrefix(want, got) {
				t.Fatalf("replica is not a prefix of what was shipped: %s", describeDiff(want, got))
			}
			return bytes.Equal(got, want), fmt.Sprintf("%d of %d bytes", len(got), len(want))
		})
	}
	first, second, third := logLines(41, 1, 3000), logLines(41, 3001, 5000), logLines(41, 8001, 2000)

	// The stream starts over the link.
	recv := startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	mustFerry(t, bytes.NewReader(first), "ship", "--store", "tcp://"+addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--spool", s.spool, "--max-bytes", "32KiB")
	waitReplica(first)
	recv.Terminate(10 * time.Second)

	// With the receiver down the second part waits in the spool. A copy of
	// that spool is a shipper none of whose second part was acknowledged.
	if r := ship(s.spool, second); r.Code == 0 || !strings.Contains(r.Output(), "still in spool") {
		t.Fatalf("ship with the receiver down: want a non-zero exit saying what is left in the spool:\n%s", r)
	}
	unacked := filepath.Join(s.dir, "spool-unacked")
	if err := os.CopyFS(unacked, os.DirFS(s.spool)); err != nil {
		t.Fatal(err)
	}
	recv = startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	mustFerry(t, nil, "ship", "--store", "tcp://"+addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--spool", s.spool, "--max-bytes", "32KiB")
	all := append(bytes.Clone(first), second...)
	waitReplica(all)
	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exit %d:\n%s", code, recv)
	}

	// Power loss before the newest segment's fsync: its file is torn.
	inbox := filepath.Join(s.state, "inbox")
	segs := lsSegments(t, inbox, s.name)
	slices.Sort(segs)
	if len(segs) < 3 {
		t.Fatalf("want at least 3 segments in the inbox, have %d", len(segs))
	}
	newest, prev := segs[len(segs)-1], segs[len(segs)-2]
	path := filepath.Join(inbox, s.name, newest)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, fi.Size()/2); err != nil {
		t.Fatal(err)
	}

	// The shipper that never saw the ACKs resends, and goes on.
	recv = startReceiver(t, s, addr, "--insecure", "--token", linkToken)
	if r := ship(unacked, third); r.Code != 0 {
		t.Fatalf("ship after the receiver's restart:\n%s", r)
	}
	all = append(all, third...)
	waitReplica(all)
	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exit %d:\n%s", code, recv)
	}
	log := recv.Stderr()
	removed := false
	for line := range strings.Lines(log) {
		if strings.Contains(line, "level=WARN") && strings.Contains(line, "torn") && strings.Contains(line, s.name+"/"+newest) {
			removed = true
		}
	}
	if !removed {
		t.Errorf("receiver log has no WARN naming the removed segment %s:\n%s", newest, log)
	}
	_, prevLast := segmentSeqs(t, prev)
	if want := fmt.Sprintf("highest_seq=%d", prevLast); !strings.Contains(log, want) {
		t.Errorf("receiver did not announce the newest intact segment (%s) in WELCOME:\n%s", want, log)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() <= 0 {
		t.Errorf("resent segment %s: %v", newest, err)
	}
	mustFerry(t, nil, "verify", "--store", inbox, "--stream", s.name)
}
