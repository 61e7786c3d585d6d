package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// TestManyStreamReceiverKilledMidGroupSync: a many-stream receiver
// applying bundles shares its streams' syncs (receiver.SyncGroup: the
// parts of a bundle applied without fsync, one syncfs for their data,
// then their checkpoints written and one syncfs for those). Killed with
// -9 six times at random moments while bundles keep coming, so that
// kills land between the two syncs, during them and between a stream's
// apply and its checkpoint: after each kill every replica is a prefix of
// its file (nothing out of order or twice), and at the end every replica
// is exact: nothing lost, nothing repeated.
func TestManyStreamReceiverKilledMidGroupSync(t *testing.T) {
	t.Parallel()
	r := newBundleRig(t, 30, "")
	replicas, state := filepath.Join(r.dir, "replicas"), filepath.Join(r.dir, "state")
	if err := os.Mkdir(replicas, 0o755); err != nil {
		t.Fatal(err)
	}
	sp := startFerry(t, nil, "ship", "--config", r.cfg)
	ferrytest.Eventually(t, 30*time.Second, "the ship to make the store", func() (bool, string) {
		_, err := os.Stat(r.store)
		return err == nil, fmt.Sprint(err)
	})
	recv := func() *ferrytest.Process {
		return startFerry(t, nil, "receive", "--store", r.store, "--stream", "s-*", "--state", state,
			"--apply", "file:"+filepath.Join(replicas, "{stream}.log"), "--poll-min", "20ms", "--poll-max", "100ms")
	}
	rp := recv()
	var logs []*ferrytest.Process
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range append(logs, sp, rp) {
				t.Logf("%s", ferrytest.Clip(p.String()))
			}
		}
	})
	prefixes := func() {
		t.Helper()
		for n, w := range r.writers {
			want, _ := w.written()
			got, _ := os.ReadFile(filepath.Join(replicas, n+".log"))
			if !bytes.HasPrefix(want, got) {
				t.Fatalf("replica of %s is not a prefix of its file (a line twice, lost or out of order): %s", n, describeDiff(want, got))
			}
		}
	}
	for round := range 14 {
		r.burst()
		time.Sleep(time.Duration(150+r.rng.IntN(350)) * time.Millisecond)
		if round%2 == 1 && round < 13 {
			rp.Kill9()
			logs = append(logs, rp)
			prefixes()
			rp = recv()
		}
	}
	alive := func() {
		for _, p := range []*ferrytest.Process{sp, rp} {
			if p.Exited() {
				t.Fatalf("exited with %d:\n%s", p.Code(), p)
			}
		}
	}
	bundles := r.waitStored(alive)
	ferrytest.Eventually(t, 90*time.Second, "every replica exact", func() (bool, string) {
		alive()
		for n, w := range r.writers {
			want, _ := w.written()
			got, _ := os.ReadFile(filepath.Join(replicas, n+".log"))
			if !bytes.HasPrefix(want, got) {
				t.Fatalf("replica of %s is not a prefix of its file (a line twice, lost or out of order): %s", n, describeDiff(want, got))
			}
			if len(got) != len(want) {
				return false, fmt.Sprintf("%s: %d of %d bytes", n, len(got), len(want))
			}
		}
		return true, ""
	})
	t.Logf("%d bundles; the receiver killed 6 times; 30 streams applied exactly", len(bundles))
	if code := rp.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receive exit %d on SIGTERM:\n%s", code, rp)
	}
	if code := sp.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("ship exit %d on SIGTERM:\n%s", code, sp)
	}
}
