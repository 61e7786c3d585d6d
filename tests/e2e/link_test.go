package e2e

import (
	"bytes"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// Direct link: ship over TCP to `ferry receive --listen`, which stores each
// segment in its inbox before acknowledging and applies from there. A wrong
// token is refused on both ends and nothing from that shipper is accepted;
// a second ship run continues the stream over the link.
func TestDirectLinkShipReceive(t *testing.T) {
	t.Parallel()
	s := newStream(t, "link")
	addr := ferrytest.FreeAddr(t)
	recv := startFerry(t, nil, "receive", "--listen", addr, "--insecure", "--token", "s3cret-link-token",
		"--stream", s.name, "--state", s.state, "--apply", "file:"+s.replica, "--poll-min", "20ms", "--poll-max", "100ms")
	ferrytest.Eventually(t, 10*time.Second, "receiver listening", func() (bool, string) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil, fmt.Sprint(err)
	})

	bad := failFerry(t, bytes.NewReader([]byte("intruder\n")), []string{"token"},
		"ship", "--store", "tcp://"+addr, "--insecure", "--token", "wrong-link-token-0000", "--stream", s.name,
		"--spool", filepath.Join(s.dir, "spool-bad"))
	if strings.Contains(bad.Output(), "s3cret-link-token") {
		t.Fatalf("the receiver's token leaked into the shipper's output:\n%s", bad)
	}

	first := logLines(11, 1, 30000)
	second := logLines(11, 30001, 20000)
	mustFerry(t, bytes.NewReader(first), "ship", "--store", "tcp://"+addr, "--insecure", "--token", "s3cret-link-token",
		"--stream", s.name, "--spool", s.spool, "--max-bytes", "64KiB")
	// A new spool continues the stream from what the receiver holds.
	mustFerry(t, bytes.NewReader(second), "ship", "--store", "tcp://"+addr, "--insecure", "--token", "s3cret-link-token",
		"--stream", s.name, "--spool", filepath.Join(s.dir, "spool2"), "--max-bytes", "64KiB")
	all := append(append([]byte(nil), first...), second...)
	ferrytest.Eventually(t, 30*time.Second, "replica has both ship runs", func() (bool, string) {
		got := s.readReplica()
		if !bytes.HasPrefix(all, got) {
			t.Fatalf("replica is not a prefix of what was shipped: %s", describeDiff(all, got))
		}
		return bytes.Equal(got, all), fmt.Sprintf("%d of %d bytes", len(got), len(all))
	})
	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exit %d on SIGTERM:\n%s", code, recv)
	}
	out := recv.Stderr() + recv.Stdout()
	if !strings.Contains(out, "token") || !strings.Contains(out, "refused") {
		t.Errorf("receiver log does not report the refused token:\n%s", out)
	}
	if strings.Contains(out, "s3cret-link-token") || strings.Contains(out, "wrong-link-token") {
		t.Errorf("a token appears in the receiver log:\n%s", out)
	}
	if bytes.Contains(s.readReplica(), []byte("intruder")) {
		t.Fatal("a record from the refused shipper was applied")
	}
	// The inbox is an ordinary directory store: verify reads it.
	mustFerry(t, nil, "verify", "--store", filepath.Join(s.state, "inbox"), "--stream", s.name)
}

// Plaintext needs an explicit --insecure on both ends.
func TestDirectLinkRefusesPlaintextWithoutInsecure(t *testing.T) {
	t.Parallel()
	s := newStream(t, "plain")
	failFerry(t, nil, []string{"insecure"}, "receive", "--listen", ferrytest.FreeAddr(t), "--token", linkToken,
		"--stream", s.name, "--state", s.state, "--apply", "file:"+s.replica)
	failFerry(t, bytes.NewReader([]byte("x\n")), []string{"insecure"}, "ship", "--store", "tcp://"+ferrytest.FreeAddr(t),
		"--token", linkToken, "--stream", s.name, "--spool", s.spool)
}
