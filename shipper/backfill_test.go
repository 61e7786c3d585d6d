package shipper

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/store/dir"
)

// A target added to a spool that shipped before is backfilled from the
// target that holds the stream: a damaged segment there stops the copy
// (naming it) with nothing after it copied; once it is repaired the next
// start resumes after the last segment copied, and the new target ends up
// with byte-identical copies of every segment.
func TestBackfillStopsAtDamageAndResumes(t *testing.T) {
	aRoot, bRoot := t.TempDir(), t.TempDir()
	a, err := dir.New(aRoot)
	if err != nil {
		t.Fatal(err)
	}
	b, err := dir.New(bRoot)
	if err != nil {
		t.Fatal(err)
	}
	cfg := shipperConfig(t, Target{Name: "a", Store: a})
	sh := startShipper(t, cfg)
	appendN(t, sh.Shipper, 0, 50) // five segments of 10
	drain(t, sh.Shipper)
	sh.stop(t)
	sh.Close()

	aDir := filepath.Join(aRoot, "app")
	names := segmentFiles(t, aDir)
	if len(names) != 5 {
		t.Fatalf("a holds %d segments, want 5", len(names))
	}
	third := filepath.Join(aDir, names[2])
	good, err := os.ReadFile(third)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(good)
	bad[len(bad)-1] ^= 0xff
	if err := os.WriteFile(third, bad, 0o644); err != nil {
		t.Fatal(err)
	}

	cfg.Targets = []Target{{Name: "a", Store: a}, {Name: "b", Store: b}}
	sh2, err := New(context.Background(), cfg, quiet)
	if err != nil {
		t.Fatalf("New with a new target: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = sh2.Run(ctx) // ends by itself: the damage is fatal
	cancel()
	sh2.Close()
	if err == nil || !strings.Contains(err.Error(), names[2]) || !strings.Contains(err.Error(), "nothing after it copied") {
		t.Fatalf("Run with a damaged source segment: %v; want an error naming %s", err, names[2])
	}
	bDir := filepath.Join(bRoot, "app")
	if got := segmentFiles(t, bDir); len(got) != 2 {
		t.Fatalf("b holds %v, want the two segments before the damaged one", got)
	}

	if err := os.WriteFile(third, good, 0o644); err != nil {
		t.Fatal(err)
	}
	sh3 := startShipper(t, cfg)
	appendN(t, sh3.Shipper, 50, 10)
	drain(t, sh3.Shipper)
	got := segmentFiles(t, bDir)
	if want := segmentFiles(t, aDir); fmt.Sprint(got) != fmt.Sprint(want) || len(got) != 6 {
		t.Fatalf("b holds %v, a %v", got, want)
	}
	for _, n := range got {
		x, _ := os.ReadFile(filepath.Join(aDir, n))
		y, _ := os.ReadFile(filepath.Join(bDir, n))
		if !bytes.Equal(x, y) {
			t.Fatalf("segment %s differs between a and b", n)
		}
	}
}

// segmentFiles lists the segment files in dir, sorted.
func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if _, _, _, ok := batch.ParseSegmentName(e.Name()); ok {
			out = append(out, e.Name())
		}
	}
	return out
}
