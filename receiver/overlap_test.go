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
)

// writeStray writes data as segment name of testStream straight into the
// dir store at root, as a second writer that bypasses Put's checks would.
func writeStray(t *testing.T, root, name string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(root, testStream), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, testStream, name), data, 0o644); err != nil {
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
	a := sealSeg(t, testStream, 1, 1, 2, batch.ZeroHash)
	stray := sealSeg(t, testStream, 1, 1, 3, batch.ZeroHash)
	next := sealSeg(t, testStream, 1, 3, 5, a.hash)
	st, root := newStore(t)
	put(t, st, a)
	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	cfg := testConfig(t, st, ap)
	r := open(t, cfg)
	if err := run(t, r); err != nil {
		t.Fatal(err)
	}
	writeStray(t, root, stray.name, stray.data)
	writeStray(t, root, next.name, next.data) // the store refuses it beside the stray
	for i := range 2 {
		wantOverlap(t, run(t, r), a.name, "seq 1..2", stray.name, "seq 1..3", "which this site applied")
		if i == 0 {
			r.Close()
			r = open(t, reopen(cfg, replica))
		}
	}
	if got := ap.Applied(); !slices.Equal(got, names(a)) {
		t.Fatalf("applied %v, want only %s", got, a.name)
	}
	wantFile(t, replica, want(1, 2), "with the stray segment in the store")

	// Once it is removed, the stream goes on.
	if err := os.Remove(filepath.Join(root, testStream, stray.name)); err != nil {
		t.Fatal(err)
	}
	r.Close()
	cfg.Applier = newRecorder(replica)
	wantCheckpoint(t, runOnce(t, cfg), next, "after the stray segment was removed")
	wantFile(t, replica, want(1, 5), "after the stray segment was removed")
}

// A stray that lies inside the applied segment, and one holding another
// segment's bytes under an overlapping name, are caught the same way.
func TestStrayInsideTheAppliedSegment(t *testing.T) {
	segs := chain(t, 2, 10)
	for _, tc := range []struct {
		desc, name string
		data       []byte
	}{
		{"narrower", batch.SegmentName(1, 1, 5), sealSeg(t, testStream, 1, 1, 5, batch.ZeroHash).data},
		{"another segment's bytes", batch.SegmentName(1, 5, 15), segs[1].data},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			st, root := newStore(t)
			put(t, st, segs[0])
			replica := filepath.Join(t.TempDir(), "replica")
			cfg := testConfig(t, st, newRecorder(replica))
			runOnce(t, cfg)
			writeStray(t, root, tc.name, tc.data)
			writeStray(t, root, segs[1].name, segs[1].data) // the store refuses it beside the stray
			r := open(t, reopen(cfg, replica))
			wantOverlap(t, run(t, r), segs[0].name, tc.name)
			wantFile(t, replica, want(1, 10), "with the stray segment in the store")
		})
	}
}

// Two segments not applied yet that overlap each other: nothing of either
// is applied, and the error names both.
func TestListedSegmentsOverlap(t *testing.T) {
	segs := chain(t, 1, 2)
	b := sealSeg(t, testStream, 1, 3, 5, segs[0].hash)
	c := sealSeg(t, testStream, 1, 3, 6, segs[0].hash)
	st, root := newStore(t)
	put(t, st, segs[0], b)
	writeStray(t, root, c.name, c.data)
	replica := filepath.Join(t.TempDir(), "replica")
	ap := newRecorder(replica)
	r := open(t, testConfig(t, st, ap))
	wantOverlap(t, run(t, r), b.name, "seq 3..5", c.name, "seq 3..6")
	if got := ap.Applied(); len(got) != 0 {
		t.Fatalf("applied %v, want nothing: the pass that lists the overlap applies none of it", got)
	}
	// The same segments met one pass at a time.
	st2, root2 := newStore(t)
	put(t, st2, segs[0], b)
	replica2 := filepath.Join(t.TempDir(), "replica")
	cfg := testConfig(t, st2, newRecorder(replica2))
	runOnce(t, cfg)
	writeStray(t, root2, c.name, c.data)
	wantOverlap(t, run(t, open(t, reopen(cfg, replica2))), b.name, c.name)
	wantFile(t, replica2, want(1, 5), "with the stray segment in the store")
}
