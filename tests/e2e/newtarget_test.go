package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// A target added to a spool that has shipped before (--also) gets the
// stream's whole history, copied byte for byte from the target that has
// it, before the spool's new segments: verify on it starts at seq 1, and a
// receiver reading only it rebuilds everything.
func TestNewTargetBackfilledFromAnotherTarget(t *testing.T) {
	t.Parallel()
	s := newStream(t, "backfill")
	first, second := logLines(41, 1, 6000), logLines(41, 6001, 2000)
	s.ship(first, "--max-bytes", "16KiB")
	old := s.segments()
	if len(old) < 4 {
		t.Fatalf("want several segments, have %d", len(old))
	}
	archive := filepath.Join(s.dir, "archive")
	r := s.ship(second, "--max-bytes", "16KiB", "--also", archive)
	if !strings.Contains(r.Output(), "backfill") {
		t.Errorf("ship does not log the backfill:\n%s", r)
	}

	a := newStream(t, s.name)
	a.store = archive
	got, want := a.segments(), s.segments()
	if !slices.Equal(got, want) {
		t.Fatalf("archive holds %d segments %v..., the store %d", len(got), got[:min(len(got), 2)], len(want))
	}
	for _, name := range old {
		x, _ := os.ReadFile(s.segmentPath(name))
		y, err := os.ReadFile(a.segmentPath(name))
		if err != nil || !bytes.Equal(x, y) {
			t.Fatalf("segment %s in the archive is not a byte-identical copy (err %v)", name, err)
		}
	}
	v := a.verify()
	if v.Code != 0 || strings.Contains(v.Output(), "history starts") {
		t.Fatalf("verify on the backfilled archive:\n%s", v)
	}
	if ls := mustFerry(t, nil, "ls", "--store", archive, "--stream", s.name).Stdout; !strings.Contains(ls, "history starts at seq 1 ") {
		t.Errorf("ls does not say where the history starts:\n%s", ls)
	}
	a.receiveOnce()
	a.wantReplica(append(append([]byte(nil), first...), second...), "rebuilt from the backfilled archive alone")
}

// A new target no other target can backfill is refused, naming what is
// missing and both ways on; start_now (--start-now) starts it mid-stream
// on purpose with a start marker, which verify and ls report. Without
// the marker, verify reports the missing start and exits non-zero.
func TestNewTargetWithoutHistoryRefusedOrStartedNow(t *testing.T) {
	t.Parallel()
	s := newStream(t, "midstream")
	s.ship(logLines(43, 1, 3000), "--max-bytes", "16KiB")
	_, base := segmentSeqs(t, s.segments()[len(s.segments())-1])

	fresh := filepath.Join(s.dir, "fresh")
	args := []string{"ship", "--store", fresh, "--stream", s.name, "--spool", s.spool, "--max-bytes", "16KiB"}
	second := logLines(43, 3001, 1000)
	r := failFerry(t, bytes.NewReader(second), []string{"target store", "holds nothing of stream", fmt.Sprintf("seq 1..%d", base),
		"cp -a", "start_now", "--start-now store"}, args...)
	if strings.Contains(r.Output(), "panic") {
		t.Fatalf("%s", r)
	}
	f := newStream(t, s.name)
	f.store = fresh
	if n := len(f.segments()); n != 0 {
		t.Fatalf("the refused target got %d segments", n)
	}

	mustFerry(t, bytes.NewReader(second), append(args, "--start-now", "store")...)
	segs := f.segments()
	if len(segs) == 0 {
		t.Fatal("nothing shipped to the target started now")
	}
	if firstSeq, _ := segmentSeqs(t, segs[0]); firstSeq != base+1 {
		t.Fatalf("target started now begins at seq %d, want %d", firstSeq, base+1)
	}
	start := fmt.Sprintf("history starts at seq %d", base+1)
	v := f.verify()
	if v.Code != 0 || !strings.Contains(v.Stdout, start) || !strings.Contains(v.Stdout, "start_now") {
		t.Fatalf("verify on the target started now:\n%s", v)
	}
	if ls := mustFerry(t, nil, "ls", "--store", fresh, "--stream", s.name).Stdout; !strings.Contains(ls, start) {
		t.Errorf("ls does not say where the history starts:\n%s", ls)
	}

	// The same archive without the marker: records are missing.
	markers, _ := filepath.Glob(filepath.Join(fresh, s.name, "starts", "*.json"))
	if len(markers) != 1 {
		t.Fatalf("want one start marker, have %v", markers)
	}
	if err := os.Remove(markers[0]); err != nil {
		t.Fatal(err)
	}
	v = f.verify()
	if v.Code == 0 || !strings.Contains(v.Stdout, fmt.Sprintf("seq 1..%d are MISSING", base)) {
		t.Fatalf("verify on an archive missing its start:\n%s", v)
	}
	if ls := mustFerry(t, nil, "ls", "--store", fresh, "--stream", s.name).Stdout; !strings.Contains(ls, "MISSING") {
		t.Errorf("ls does not report the missing start:\n%s", ls)
	}
}

// A tcp:// link to a new receiver (an empty inbox) added beside a store
// that has the history: the receiver gets it all from the store before
// the spool's segments and applies from seq 1.
func TestNewLinkTargetBackfilledFromStore(t *testing.T) {
	t.Parallel()
	s := newStream(t, "linkfill")
	first, second := logLines(47, 1, 5000), logLines(47, 5001, 1000)
	s.ship(first, "--max-bytes", "16KiB")
	addr := ferrytest.FreeAddr(t)
	recv := startReceiver(t, s, addr, "--insecure", "--token", "tok-for-the-link-test")
	s.ship(second, "--max-bytes", "16KiB", "--also", "tcp://"+addr, "--insecure", "--token", "tok-for-the-link-test")
	all := append(append([]byte(nil), first...), second...)
	ferrytest.Eventually(t, 30*time.Second, "the new receiver applies the whole stream", func() (bool, string) {
		got := s.readReplica()
		if recv.Exited() {
			t.Fatalf("receiver exited:\n%s", recv)
		}
		return bytes.Equal(got, all), fmt.Sprintf("%d of %d bytes", len(got), len(all))
	})
	recv.Terminate(10 * time.Second)
}
