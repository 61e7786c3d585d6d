package receiver_test

import (
	"errors"
	"os"
	"path/filepath"
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

// The promotion marker: absent (no dir, or a path under a file) is not
// promoted; saved, it reads back and a receiver's state check refuses the
// dir, naming the generation; damaged, it is an error, never taken for
// absent; cleared, the dir receives again.
func TestPromotionMarker(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{filepath.Join(dir, "missing"), filepath.Join(file, "state")} {
		if _, ok, err := receiver.LoadPromotion(d); ok || err != nil {
			t.Fatalf("LoadPromotion(%s): ok=%v err=%v; want not promoted", d, ok, err)
		}
	}
	p := receiver.Promotion{Stream: "app", Generation: 3, ForkSeq: 41, ForkHash: "h41", Time: time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC), Site: "dr-b", ReplicaSize: 7}
	if err := receiver.SavePromotion(dir, p); err != nil {
		t.Fatal(err)
	}
	got, ok, err := receiver.LoadPromotion(dir)
	p.Version = 1
	if err != nil || !ok || got != p {
		t.Fatalf("LoadPromotion: %+v ok=%v err=%v; want %+v", got, ok, err, p)
	}
	err = receiver.CheckNotPromoted(dir)
	if !errors.Is(err, receiver.ErrPromoted) || !strings.Contains(err.Error(), "generation 3") || !strings.Contains(err.Error(), "ferry rejoin") {
		t.Fatalf("CheckNotPromoted: %v; want ErrPromoted naming generation 3 and ferry rejoin", err)
	}
	for _, bad := range []string{"{not json", `{"version":2,"generation":3}`, `{"version":1,"generation":1}`} {
		if err := os.WriteFile(filepath.Join(dir, "promoted.json"), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := receiver.CheckNotPromoted(dir); err == nil || errors.Is(err, receiver.ErrPromoted) || !strings.Contains(err.Error(), "damaged") {
			t.Fatalf("CheckNotPromoted with promoted.json %s: %v; want a damaged-marker error", bad, err)
		}
	}
	if err := receiver.ClearPromotion(dir); err != nil {
		t.Fatal(err)
	}
	if err := receiver.ClearPromotion(dir); err != nil {
		t.Fatalf("ClearPromotion without a marker: %v", err)
	}
	if err := receiver.CheckNotPromoted(dir); err != nil {
		t.Fatalf("after ClearPromotion: %v", err)
	}
}
