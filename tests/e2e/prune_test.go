package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Retention with a lagging receiver: prune deletes only what every
// registered receiver applied (and never the newest segment), --dry-run
// deletes nothing, the pruned archive still verifies, and the lagging
// receiver then catches up from what was kept.
func TestPruneKeepsWhatAReceiverHasNotApplied(t *testing.T) {
	t.Parallel()
	s := newStream(t, "prune")
	first, second := logLines(31, 1, 10000), logLines(31, 10001, 10000)
	s.ship(first, "--max-bytes", "64KiB")
	slow := newStream(t, s.name)
	slow.store = s.store
	slow.receiveOnce("--id", "slow")
	lagAt := slow.checkpointSeq()
	if lagAt != 10000 {
		t.Fatalf("slow receiver at %d, want 10000", lagAt)
	}
	s.ship(second, "--max-bytes", "64KiB")
	s.receiveOnce("--id", "fast")
	before := s.segments()

	out := mustFerry(t, nil, "prune", "--store", s.store, "--stream", s.name, "--keep-min", "1", "--dry-run").Stdout
	if !strings.Contains(out, "would delete") || !strings.Contains(out, "receiver slow has applied only through generation 1 seq 10000") {
		t.Fatalf("prune --dry-run:\n%s", out)
	}
	if got := s.segments(); len(got) != len(before) {
		t.Fatalf("--dry-run deleted %d segments", len(before)-len(got))
	}
	mustFerry(t, nil, "prune", "--store", s.store, "--stream", s.name, "--keep-min", "1")
	after := s.segments()
	if len(after) == 0 || len(after) >= len(before) {
		t.Fatalf("prune left %d of %d segments", len(after), len(before))
	}
	firstKept, _ := segmentSeqs(t, after[0])
	if firstKept != lagAt+1 {
		t.Fatalf("oldest kept segment starts at seq %d, want %d (the slow receiver's next)", firstKept, lagAt+1)
	}
	mustFerry(t, nil, "verify", "--store", s.store, "--stream", s.name)

	// The lagging receiver catches up from what was kept.
	slow.receiveOnce("--id", "slow")
	slow.wantReplica(append(append([]byte(nil), first...), second...), "slow receiver after pruning")
	// Now everything but the newest segment may go.
	out = mustFerry(t, nil, "prune", "--store", s.store, "--stream", s.name, "--keep-for", "1ns").Stdout
	if got := s.segments(); len(got) != 1 || !strings.Contains(out, "always kept") {
		t.Fatalf("after both receivers applied everything: %d segments left\n%s", len(got), out)
	}

	// Bad input: no policy, a tcp:// store.
	failFerry(t, nil, []string{"keep_for"}, "prune", "--store", s.store, "--stream", s.name)
	failFerry(t, nil, []string{"tcp://"}, "prune", "--store", "tcp://127.0.0.1:1", "--stream", s.name, "--keep-min", "3")
	failFerry(t, nil, []string{"retention.schedule"}, "prune", "--config", writeFile(t, "bad.toml",
		"stream = \"x\"\nstore = \"/x\"\n[retention]\nkeep_min = 3\nschedule = \"every tuesday\"\n"))
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
