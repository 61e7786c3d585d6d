package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// damagedStream ships 5000 lines in several segments, damages the middle
// segment with damage, and returns the stream, the input, that segment's
// name and its original bytes.
func damagedStream(t *testing.T, name string, damage func(seg []byte) []byte) (*stream, []byte, string, []byte) {
	t.Helper()
	s := newStream(t, name)
	input := logLines(4, 1, 5000)
	s.ship(input, "--max-bytes", "64KiB")
	bad := s.middleSegment()
	orig, err := os.ReadFile(s.segmentPath(bad))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.segmentPath(bad), damage(bytes.Clone(orig)), 0o644); err != nil {
		t.Fatal(err)
	}
	return s, input, bad, orig
}

// checkDamageStopsReceive runs verify and receive --once on a stream whose
// segment bad is damaged: both fail naming it, and the replica holds
// exactly the records before it. Restoring the segment lets receive finish.
func checkDamageStopsReceive(t *testing.T, s *stream, input []byte, bad string, orig []byte, why ...string) {
	t.Helper()
	key := s.name + "/" + bad
	r := failFerry(t, nil, append([]string{key}, why...), "verify", "--store", s.store, "--stream", s.name)
	if !strings.Contains(r.Stdout, "DEFECT") {
		t.Errorf("verify output has no DEFECT line:\n%s", r)
	}
	for _, line := range strings.Split(r.Stdout, "\n") {
		if strings.HasPrefix(line, "DEFECT") && !strings.Contains(line, bad) {
			t.Errorf("verify reports a defect that does not involve the damaged segment %s (every other segment is present and intact): %s", bad, line)
		}
	}

	first, _ := segmentSeqs(t, bad)
	failFerry(t, nil, append([]string{key}, why...), s.receiveArgs("--once")...)
	s.wantReplica(prefixLines(input, int(first-1)), fmt.Sprintf("after receive stopped at %s (records 1..%d only)", bad, first-1))
	if got := s.checkpointSeq(); got != first-1 {
		t.Errorf("checkpoint at seq %d after stopping at %s, want %d", got, bad, first-1)
	}

	// A second attempt stops at the same place and applies nothing twice.
	failFerry(t, nil, []string{key}, s.receiveArgs("--once")...)
	s.wantReplica(prefixLines(input, int(first-1)), "after a second receive stopped at the damaged segment")

	// Nothing was lost: with the segment restored, receive completes.
	if err := os.WriteFile(s.segmentPath(bad), orig, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := s.verify(); r.Code != 0 {
		t.Fatalf("verify after restoring %s: want exit 0:\n%s", bad, r)
	}
	s.receiveOnce()
	s.wantReplica(input, "after restoring the damaged segment")
}

func TestFlippedByteIsCaught(t *testing.T) {
	t.Parallel()
	var flippedAt int
	s, input, bad, orig := damagedStream(t, "flip", func(seg []byte) []byte {
		off := payloadOffset(t, seg)
		flippedAt = off + (len(seg)-off)/2
		seg[flippedAt] ^= 0x01
		return seg
	})
	t.Logf("flipped byte %d of %d in %s", flippedAt, len(orig), bad)
	checkDamageStopsReceive(t, s, input, bad, orig)
}

func TestTruncatedSegmentIsCaught(t *testing.T) {
	t.Parallel()
	s, input, bad, orig := damagedStream(t, "trunc", func(seg []byte) []byte {
		return seg[:len(seg)/2]
	})
	checkDamageStopsReceive(t, s, input, bad, orig)
}

// A segment of stream "a" copied into stream "b" under the name b's next
// segment would have is refused: it belongs to another stream.
func TestSegmentOfAnotherStreamIsRefused(t *testing.T) {
	t.Parallel()
	input := logLines(5, 1, 5000)
	a := newStream(t, "a")
	b := newStream(t, "b")
	b.store = a.store // one store, two streams
	a.ship(input, "--max-bytes", "64KiB")
	b.ship(input, "--max-bytes", "64KiB")

	aSegs, bSegs := a.segments(), b.segments()
	if len(aSegs) < 3 || len(aSegs) != len(bSegs) {
		t.Fatalf("want the same >= 3 segment names in both streams; a has %v, b has %v", aSegs, bSegs)
	}
	victim := bSegs[len(bSegs)/2]
	if victim != aSegs[len(aSegs)/2] {
		t.Fatalf("streams cut differently: a %v, b %v", aSegs, bSegs)
	}
	orig, err := os.ReadFile(b.segmentPath(victim))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := os.ReadFile(a.segmentPath(victim))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.segmentPath(victim), foreign, 0o644); err != nil {
		t.Fatal(err)
	}

	checkDamageStopsReceive(t, b, input, victim, orig, "stream")
}

// A segment missing from the middle of the store is a gap: receive --once
// waits gap-timeout, then fails naming the missing seq range, having
// applied only what precedes it. When the segment reappears, receive
// completes.
func TestGapIsReportedAndFilled(t *testing.T) {
	t.Parallel()
	s := newStream(t, "gap")
	input := logLines(6, 1, 5000)
	s.ship(input, "--max-bytes", "64KiB")
	missing := s.middleSegment()
	first, last := segmentSeqs(t, missing)
	aside := filepath.Join(s.dir, missing)
	if err := os.Rename(s.segmentPath(missing), aside); err != nil {
		t.Fatal(err)
	}

	seqs := fmt.Sprintf("%d..%d", first, last)
	r := failFerry(t, nil, []string{seqs, "missing"}, s.receiveArgs("--once", "--gap-timeout", "200ms")...)
	t.Logf("receive across a gap: %s", strings.TrimSpace(r.Stderr))
	s.wantReplica(prefixLines(input, int(first-1)), fmt.Sprintf("with seq %s missing (records 1..%d only)", seqs, first-1))

	failFerry(t, nil, []string{"gap", seqs}, "verify", "--store", s.store, "--stream", s.name)

	if err := os.Rename(aside, s.segmentPath(missing)); err != nil {
		t.Fatal(err)
	}
	s.receiveOnce("--gap-timeout", "200ms")
	s.wantReplica(input, "after the missing segment came back")
}
