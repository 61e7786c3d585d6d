package e2e

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// A link receiver in rolling mode keeps its checkpoint behind what it has
// applied (tcp.checkpoint_delay). Killed -9 again and again while small
// segments trickle in, it must each time cut its replica back to the
// checkpoint and apply the rest again from its inbox: in the end the
// replica is the input, every line once.
func TestLinkReceiverKill9WhileCheckpointHeld(t *testing.T) {
	t.Parallel()
	rng := seededRand(t)
	s := newStream(t, "hold")
	addr := ferrytest.FreeAddr(t)
	input := logLines(31, 1, 60_000)
	// A long delay, so that most kills find segments applied past the
	// checkpoint.
	conf := filepath.Join(t.TempDir(), "receive.toml")
	if err := os.WriteFile(conf, []byte("[tcp]\ncheckpoint_delay = \"2s\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	recvArgs := []string{"--insecure", "--token", linkToken, "--config", conf}
	recv := startReceiver(t, s, addr, recvArgs...)
	pr, pw := io.Pipe()
	shipper := startFerry(t, pr, "ship", "--store", "tcp://"+addr, "--insecure", "--token", linkToken,
		"--stream", s.name, "--spool", s.spool, "--max-age", "10ms", "--shutdown-timeout", "60s")

	// Write the input in small pieces, killing the receiver -9 at random
	// points and restarting it. A kill waits up to 10 more pieces for the
	// replica to be ahead of the checkpoint: on a loaded machine the
	// shipper's reconnect after a restart can take longer than a few
	// pieces, and a kill before anything new arrived tests nothing.
	const pieces = 80
	kills, ahead := 0, 0
	nextKill := 5 + rng.IntN(10)
	for i := range pieces {
		chunk := input[len(input)*i/pieces : len(input)*(i+1)/pieces]
		if _, err := pw.Write(chunk); err != nil {
			t.Fatalf("feed the shipper: %v", err)
		}
		time.Sleep(time.Duration(20+rng.IntN(30)) * time.Millisecond)
		if i >= nextKill && (i >= nextKill+10 || replicaAhead(t, s)) {
			recv.Kill9()
			kills++
			got := s.readReplica()
			if !bytes.HasPrefix(input, got) {
				t.Fatalf("after kill -9 #%d the replica is not a prefix of the input: %s", kills, describeDiff(input, got))
			}
			if cp := readCheckpoint(t, s.state); int64(len(got)) > cp.Applier.Size {
				ahead++ // applied past the checkpoint: the case under test
			}
			recv = startReceiver(t, s, addr, recvArgs...)
			nextKill = i + 5 + rng.IntN(10)
		}
	}
	pw.Close()
	if code, ok := shipper.Wait(60 * time.Second); !ok || code != 0 {
		t.Fatalf("shipper: exit %d (finished %t):\n%s", code, ok, shipper)
	}
	ferrytest.Eventually(t, 30*time.Second, "replica complete", func() (bool, string) {
		got := s.readReplica()
		if !bytes.HasPrefix(input, got) {
			t.Fatalf("replica is not a prefix of the input: %s", describeDiff(input, got))
		}
		return bytes.Equal(got, input), fmt.Sprintf("%d of %d bytes", len(got), len(input))
	})
	recv.Terminate(10 * time.Second)
	t.Logf("%d kills, %d of them with the replica ahead of the checkpoint", kills, ahead)
	if kills < 3 || ahead == 0 {
		t.Fatalf("%d kills, %d with the replica ahead of the checkpoint: the case under test did not happen", kills, ahead)
	}
}

// replicaAhead reports whether the live receiver of s has applied past
// its checkpoint (false before its first checkpoint).
func replicaAhead(t *testing.T, s *stream) bool {
	t.Helper()
	cp, ok := tryCheckpoint(t, s.state)
	return ok && int64(len(s.readReplica())) > cp.Applier.Size
}
