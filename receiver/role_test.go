package receiver_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/receiver"
)

// A site promoted to write generation 2 and then fenced in it (a failback,
// or a switchover back) gets a new checkpoint at the fork from
// StartCheckpoint, which replaces the one from before its promotion and
// clears the promotion; any other dir with a checkpoint is refused.
func TestStartCheckpointAfterPromotion(t *testing.T) {
	dir := t.TempDir()
	if err := receiver.StartCheckpoint(dir, "app", 1, 10, "h10", nil); err != nil {
		t.Fatal(err)
	}
	if err := receiver.StartCheckpoint(dir, "app", 2, 30, "h30", nil); err == nil || !strings.Contains(err.Error(), "already has a checkpoint") {
		t.Fatalf("a second StartCheckpoint: %v; want refused", err)
	}
	p := receiver.Promotion{Stream: "app", Generation: 2, ForkSeq: 10, ForkHash: "h10", Time: time.Now(), Site: "b", ReplicaSize: -1}
	if err := receiver.SavePromotion(dir, p); err != nil {
		t.Fatal(err)
	}
	if err := receiver.StartCheckpoint(dir, "app", 3, 30, "h30", nil); err == nil {
		t.Fatal("StartCheckpoint for generation 3 replaced the checkpoint of a site promoted to write generation 2")
	}
	if err := receiver.StartCheckpoint(dir, "app", 2, 30, "h30", nil); err != nil {
		t.Fatalf("StartCheckpoint on the promoted site fenced in generation 2: %v", err)
	}
	cp, ok, err := receiver.LoadCheckpoint(dir)
	if err != nil || !ok || cp.Generation != 2 || cp.LastSeq != 30 || cp.LastHash != "h30" {
		t.Fatalf("checkpoint %+v ok=%v err=%v; want generation 2 at seq 30", cp, ok, err)
	}
	if err := receiver.CheckNotPromoted(dir); err != nil {
		t.Fatalf("still promoted: %v", err)
	}
}
