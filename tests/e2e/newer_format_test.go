package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// newerFormat rewrites the middle segment of s in the store as if a newer
// ferry had written it (its metadata's format raised to 9) and returns
// its name and its first seq.
func newerFormat(t *testing.T, s *stream) (string, uint64) {
	t.Helper()
	bad := s.middleSegment()
	seg, err := os.ReadFile(s.segmentPath(bad))
	if err != nil {
		t.Fatal(err)
	}
	written := fmt.Sprintf(`"format":%d`, batch.FormatVersion)
	if !bytes.Contains(seg, []byte(written)) {
		t.Fatalf("segment %s does not hold %s", bad, written)
	}
	if err := os.WriteFile(s.segmentPath(bad), bytes.Replace(seg, []byte(written), []byte(`"format":9`), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	first, _ := segmentSeqs(t, bad)
	return bad, first
}

// A receiver that meets a segment of a newer format than it reads stops
// at once, naming the segment and saying to upgrade: reading it again
// cannot help, so it does not spend its retry window (5 min for --once;
// without end for the service) on it. What comes before is applied.
func TestReceiveStopsAtOnceOnANewerFormat(t *testing.T) {
	t.Parallel()
	s := newStream(t, "newer")
	input := logLines(7, 1, 5000)
	s.ship(input, "--max-bytes", "64KiB")
	bad, first := newerFormat(t, s)
	want := fmt.Sprintf("segment format 9 is newer than this ferry reads (%d); upgrade ferry", batch.FormatVersion)
	for _, args := range [][]string{s.receiveArgs("--once"), s.receiveArgs()} {
		p := startFerry(t, nil, args...)
		code, ok := p.Wait(60 * time.Second)
		if !ok {
			p.Kill9()
			t.Fatalf("%s: still running 60s after it met %s, a segment of a newer format:\n%s", strings.Join(args, " "), bad, p)
		}
		if code == 0 || !strings.Contains(p.Stderr(), want) || !strings.Contains(p.Stderr(), bad) {
			t.Fatalf("%s: exit %d; want a non-zero exit saying %q and naming %s:\n%s", strings.Join(args, " "), code, want, bad, p)
		}
		if strings.Contains(p.Stderr(), "damaged") {
			t.Errorf("%s: a segment of a newer format is not damaged:\n%s", strings.Join(args, " "), p)
		}
		s.wantReplica(prefixLines(input, int(first-1)), fmt.Sprintf("after receive stopped at %s (records 1..%d only)", bad, first-1))
	}
}

// Receiving many streams, the stream with a segment of a newer format
// stops at once and says why in its status.json; the others go on.
func TestReceiveManyStopsAStreamOnANewerFormat(t *testing.T) {
	t.Parallel()
	good, newer := newStream(t, "good"), newStream(t, "newer")
	newer.store = good.store // one store
	input := logLines(8, 1, 5000)
	good.ship(input, "--max-bytes", "64KiB")
	newer.ship(input, "--max-bytes", "64KiB")
	bad, first := newerFormat(t, newer)
	state, out := filepath.Join(good.dir, "states"), filepath.Join(good.dir, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	p := startFerry(t, nil, "receive", "--store", good.store, "--stream", "good,newer", "--state", state,
		"--apply", "file:"+filepath.Join(out, "{stream}.log"))
	want := fmt.Sprintf("segment format 9 is newer than this ferry reads (%d); upgrade ferry", batch.FormatVersion)
	var st struct {
		Running   bool   `json:"running"`
		LastError string `json:"last_error"`
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		raw, err := os.ReadFile(filepath.Join(state, "newer", "status.json"))
		if err == nil && json.Unmarshal(raw, &st) == nil && !st.Running && strings.Contains(st.LastError, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream newer: status.json %s does not say it stopped on %q 60s after it met %s:\n%s", raw, want, bad, p)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(st.LastError, bad) {
		t.Errorf("stream newer: last_error %q does not name %s", st.LastError, bad)
	}
	waitApplied(t, filepath.Join(state, "good"), 5000, 60*time.Second)
	if got := readFile(t, filepath.Join(out, "good.log")); !bytes.Equal(got, input) {
		t.Fatalf("stream good: %s", describeDiff(input, got))
	}
	if got := readFile(t, filepath.Join(out, "newer.log")); !bytes.Equal(got, prefixLines(input, int(first-1))) {
		t.Fatalf("stream newer: %s", describeDiff(prefixLines(input, int(first-1)), got))
	}
	if code := p.Terminate(20 * time.Second); code != 0 {
		t.Fatalf("exit %d:\n%s", code, p)
	}
}
