package receiver_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/receiver/receivertest"
)

// writeStray writes data as segment name of testStream straight into the
// dir store at root, as a second writer that bypasses Put's checks would.
func writeStray(t *testing.T, root, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, receivertest.Stream), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, receivertest.Stream, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// wantOverlap fails the test unless err is the overlap error naming each
// of what.
func wantOverlap(t *testing.T, err error, what ...string) {
	t.Helper()
	if !errors.Is(err, receiver.ErrOverlap) {
		t.Fatalf("Run: %v, want ErrOverlap", err)
	}
	for _, s := range append(what, "two writers") {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not mention %q", err, s)
		}
	}
}

// The adversarial case: two writers stored 1..2 and 1..3. The receiver
// applied 1..2; while 1..3 is there, every run stops with an error naming
// both, and none returns nil or applies anything past seq 2.
func TestStrayOverlappingTheAppliedSegment(t *testing.T) {
	a := receivertest.SealSeg(t, receivertest.Stream, 1, 1, 2, batch.ZeroHash)
	stray := receivertest.SealSeg(t, receivertest.Stream, 1, 1, 3, batch.ZeroHash)
	next := receivertest.SealSeg(t, receivertest.Stream, 1, 3, 5, a.Hash)
	st, root := receivertest.NewStore(t)
	receivertest.Put(t, st, a)
	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	cfg := receivertest.Config(t, st, ap)
	r := receivertest.Open(t, cfg)
	if err := receivertest.Run(t, r); err != nil {
		t.Fatal(err)
	}
	writeStray(t, root, stray.Name, stray.Data)
	writeStray(t, root, next.Name, next.Data) // the store refuses it beside the stray
	for i := range 2 {
		wantOverlap(t, receivertest.Run(t, r), a.Name, "seq 1..2", stray.Name, "seq 1..3", "which this site applied")
		if i == 0 {
			r.Close()
			r = receivertest.Open(t, reopen(cfg, replica))
		}
	}
	if got := ap.Applied(); !slices.Equal(got, names(a)) {
		t.Fatalf("applied %v, want only %s", got, a.Name)
	}
	receivertest.WantFile(t, replica, receivertest.Want(1, 2), "with the stray segment in the store")

	// Once it is removed, the stream goes on.
	if err := os.Remove(filepath.Join(root, receivertest.Stream, stray.Name)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	cfg.Applier = newRecorder(replica)
	receivertest.WantCheckpoint(t, receivertest.RunOnce(t, cfg), next, "after the stray segment was removed")
	receivertest.WantFile(t, replica, receivertest.Want(1, 5), "after the stray segment was removed")
}

// A stray that lies inside the applied segment, and one holding another
// segment's bytes under an overlapping name, are caught the same way.
func TestStrayInsideTheAppliedSegment(t *testing.T) {
	segs := receivertest.Chain(t, 2, 10)
	for _, tc := range []struct {
		desc, name string
		data       []byte
	}{
		{"narrower", batch.SegmentName(1, 1, 5), receivertest.SealSeg(t, receivertest.Stream, 1, 1, 5, batch.ZeroHash).Data},
		{"another segment's bytes", batch.SegmentName(1, 5, 15), segs[1].Data},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st, root := receivertest.NewStore(t)
			receivertest.Put(t, st, segs[0])
			replica := filepath.Join(t.TempDir(), "replica")
			cfg := receivertest.Config(t, st, newRecorder(replica))
			receivertest.RunOnce(t, cfg)
			writeStray(t, root, tc.name, tc.data)
			writeStray(t, root, segs[1].Name, segs[1].Data) // the store refuses it beside the stray
			r := receivertest.Open(t, reopen(cfg, replica))
			wantOverlap(t, receivertest.Run(t, r), segs[0].Name, tc.name)
			receivertest.WantFile(t, replica, receivertest.Want(1, 10), "with the stray segment in the store")
		})
	}
}

// Two segments not applied yet that overlap each other: nothing of either
// is applied, and the error names both.
func TestListedSegmentsOverlap(t *testing.T) {
	segs := receivertest.Chain(t, 1, 2)
	b := receivertest.SealSeg(t, receivertest.Stream, 1, 3, 5, segs[0].Hash)
	c := receivertest.SealSeg(t, receivertest.Stream, 1, 3, 6, segs[0].Hash)
	st, root := receivertest.NewStore(t)
	receivertest.Put(t, st, segs[0], b)
	writeStray(t, root, c.Name, c.Data)
	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	r := receivertest.Open(t, receivertest.Config(t, st, ap))
	wantOverlap(t, receivertest.Run(t, r), b.Name, "seq 3..5", c.Name, "seq 3..6")
	if got := ap.Applied(); len(got) != 0 {
		t.Fatalf("applied %v, want nothing: the pass that lists the overlap applies none of it", got)
	}
	// The same segments met one pass at a time.
	st2, root2 := receivertest.NewStore(t)
	receivertest.Put(t, st2, segs[0], b)
	replica2 := filepath.Join(t.TempDir(), "replica")
	cfg := receivertest.Config(t, st2, newRecorder(replica2))
	receivertest.RunOnce(t, cfg)
	writeStray(t, root2, c.Name, c.Data)
	wantOverlap(t, receivertest.Run(t, receivertest.Open(t, reopen(cfg, replica2))), b.Name, c.Name)
	receivertest.WantFile(t, replica2, receivertest.Want(1, 5), "with the stray segment in the store")
}
