package apply_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/apply"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

func TestFileRefusesForeignFile(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, receivertest.Chain(t, 1, 10)...)
	replica := filepath.Join(t.TempDir(), "replica")
	orig := []byte("somebody else's data\n")
	if err := os.WriteFile(replica, orig, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	r, err := receiver.Open(cfg, receivertest.Quiet)
	if err == nil {
		r.Close()
		t.Fatal("Open with a non-empty replica and a new state dir succeeded")
	}
	if !errors.Is(err, receiver.ErrFatal) {
		t.Errorf("Open: %v, want ErrFatal", err)
	}
	for _, s := range []string{replica, "move the file away"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("Open: %q does not mention %q", err, s)
		}
	}
	receivertest.WantFile(t, replica, orig, "after the refused Open")

	// Moved away, the receiver starts.
	if err := os.Remove(replica); err != nil {
		t.Fatal(err)
	}
	cfg.Applier = &apply.File{Path: replica}
	receivertest.RunOnce(t, cfg)
	receivertest.WantFile(t, replica, receivertest.Want(1, 10), "after the file was moved away")
}

func TestFileRefusesShortFile(t *testing.T) {
	st, _ := receivertest.NewStore(t)
	receivertest.Put(t, st, receivertest.Chain(t, 2, 10)...)
	replica := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st, &apply.File{Path: replica})
	receivertest.RunOnce(t, cfg)
	if err := os.Truncate(replica, int64(len(receivertest.Want(1, 20)))-5); err != nil {
		t.Fatal(err)
	}

	cfg.Applier = &apply.File{Path: replica}
	r, err := receiver.Open(cfg, receivertest.Quiet)
	if err == nil {
		r.Close()
		t.Fatal("Open with a replica shorter than the checkpoint succeeded")
	}
	if !errors.Is(err, receiver.ErrFatal) || !strings.Contains(err.Error(), "shorter") || !strings.Contains(err.Error(), replica) {
		t.Fatalf("Open: %v, want ErrFatal saying %s is shorter than the checkpoint", err, replica)
	}
}

func TestFileNotRestored(t *testing.T) {
	a := &apply.File{Path: filepath.Join(t.TempDir(), "replica")}
	segs := receivertest.Chain(t, 1, 1)
	if err := a.Apply(t.Context(), &segs[0].Meta, batch.Records{}); !errors.Is(err, receiver.ErrFatal) {
		t.Fatalf("Apply before Restore: %v, want ErrFatal", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close of an unopened applier: %v", err)
	}
}

// FileState and FileSize are the File applier's checkpoint state, the one
// State writes; a state that is not a File's has no size.
func TestFileStateRoundTrip(t *testing.T) {
	a := &apply.File{Path: filepath.Join(t.TempDir(), "replica")}
	if err := a.Restore(apply.FileState(0)); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	st, err := a.State()
	if err != nil {
		t.Fatal(err)
	}
	if size, ok := apply.FileSize(st); !ok || size != 0 {
		t.Fatalf("FileSize(State() = %s) = %d, %v; want 0, true", st, size, ok)
	}
	if size, ok := apply.FileSize(apply.FileState(12345)); !ok || size != 12345 {
		t.Fatalf("FileSize(FileState(12345)) = %d, %v", size, ok)
	}
	for _, other := range []string{"", `{"partial":null}`, "not json"} {
		if _, ok := apply.FileSize([]byte(other)); ok {
			t.Errorf("FileSize(%q): ok; want false for a state that is not a File's", other)
		}
	}
}
