package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// A receiver left running picks up what several separate ship runs put in
// the store, and exits 0 on SIGTERM.
func TestReceiveWhileShipping(t *testing.T) {
	t.Parallel()
	s := newStream(t, "live")
	recv := startFerry(t, nil, s.receiveArgs("--poll-min", "50ms", "--poll-max", "200ms")...)

	// The replica only ever grows by whole records, in order.
	checkPrefix := func(all []byte) (bool, string) {
		if recv.Exited() {
			t.Fatalf("receiver exited with %d while the stream was being shipped:\n%s", recv.Code(), recv)
		}
		got := s.readReplica()
		if !bytes.HasPrefix(all, got) {
			t.Fatalf("replica is not a prefix of what was shipped: %s", describeDiff(all, got))
		}
		return bytes.Equal(got, all), fmt.Sprintf("replica has %d of %d bytes", len(got), len(all))
	}

	var all []byte
	for run := range 4 {
		chunk := logLines(7, run*20000+1, 20000)
		s.ship(chunk, "--max-bytes", "64KiB", "--max-age", "100ms")
		all = append(all, chunk...)
		_, state := checkPrefix(all)
		t.Logf("after ship run %d: %s", run+1, state)
	}
	ferrytest.Eventually(t, 60*time.Second, "replica converges to the 4 ship runs", func() (bool, string) { return checkPrefix(all) })

	if code := recv.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exit %d on SIGTERM, want 0:\n%s", code, recv)
	}
	s.wantReplica(all, "after SIGTERM")
	if got := s.checkpointSeq(); got != 80000 {
		t.Errorf("checkpoint at seq %d, want 80000", got)
	}
}

// The exec applier runs the command once per segment with the segment's
// records on stdin and FERRY_* in its environment. A failing command is
// retried, and the checkpoint does not move past the segment until the
// command succeeds.
func TestExecApplierEnvAndRetry(t *testing.T) {
	t.Parallel()
	s := newStream(t, "ex")
	input := logLines(8, 1, 3000)
	s.ship(input, "--max-bytes", "64KiB")
	infos := s.lsJSON()
	if len(infos) < 3 {
		t.Fatalf("want at least 3 segments, have %d", len(infos))
	}
	failing := infos[1] // fails 3 times before it succeeds
	const failures = 3

	work := filepath.Join(s.dir, "exec")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(work, "out")
	// Each attempt counts itself per segment, snapshots the checkpoint, logs
	// its environment, and then fails (attempt 1 without reading stdin,
	// later ones after reading it) or appends stdin to out.
	script := fmt.Sprintf(`set -e
w=%q
n=$(cat "$w/attempts.$FERRY_FIRST_SEQ" 2>/dev/null || echo 0)
n=$((n+1))
echo $n > "$w/attempts.$FERRY_FIRST_SEQ"
mkdir "$w/checkpoint.$FERRY_FIRST_SEQ.$n"
cp %q "$w/checkpoint.$FERRY_FIRST_SEQ.$n/"
echo "$FERRY_STREAM $FERRY_GENERATION $FERRY_FIRST_SEQ $FERRY_LAST_SEQ $FERRY_SEGMENT $n" >> "$w/env.log"
if [ "$FERRY_FIRST_SEQ" = %d ] && [ $n -le %d ]; then
	[ $n -eq 1 ] || cat > /dev/null
	exit 1
fi
cat >> "$w/out"
`, work, filepath.Join(s.state, "checkpoint.ferry"), failing.FirstSeq, failures)
	scriptPath := filepath.Join(work, "apply.sh")
	if err := os.WriteFile(scriptPath, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// retry_min has no flag; a config file sets it so the test does not
	// wait out the default 1s backoff.
	cfg := filepath.Join(s.dir, "receive.toml")
	if err := os.WriteFile(cfg, []byte("[receive]\nretry_min = \"50ms\"\nretry_max = \"200ms\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustFerry(t, nil, "receive", "--config", cfg, "--store", s.store, "--stream", s.name, "--state", s.state,
		"--apply", "exec:/bin/sh "+scriptPath, "--once")

	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, input) {
		t.Fatalf("exec applier output: %s", describeDiff(input, got))
	}

	envLog, err := os.ReadFile(filepath.Join(work, "env.log"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, si := range infos {
		attempts := 1
		if si.Segment == failing.Segment {
			attempts = failures + 1
		}
		for n := 1; n <= attempts; n++ {
			want = append(want, fmt.Sprintf("%s 1 %d %d %s %d", s.name, si.FirstSeq, si.LastSeq, si.Segment, n))
		}
	}
	if gotLines := strings.Split(strings.TrimSpace(string(envLog)), "\n"); !slices.Equal(gotLines, want) {
		t.Fatalf("exec attempts (stream gen first last segment attempt):\ngot  %q\nwant %q", gotLines, want)
	}

	// While the command kept failing, the checkpoint stayed at the end of
	// the previous segment.
	for n := 1; n <= failures+1; n++ {
		snap := filepath.Join(work, "checkpoint."+strconv.FormatUint(failing.FirstSeq, 10)+"."+strconv.Itoa(n))
		if got := readCheckpoint(t, snap).LastSeq; got != failing.FirstSeq-1 {
			t.Errorf("during attempt %d on %s the checkpoint was at seq %d, want %d", n, failing.Segment, got, failing.FirstSeq-1)
		}
	}
	if got := s.checkpointSeq(); got != infos[len(infos)-1].LastSeq {
		t.Errorf("final checkpoint at seq %d, want %d", got, infos[len(infos)-1].LastSeq)
	}
}

// SIGTERM stops a shipper reading a pipe that never ends: it seals and
// sends what it has read, and exits 143, as stdin did not reach its end
// (a shipper of a tail: or dir: source, a service, exits 0).
func TestShipFromOpenPipeStopsOnSIGTERM(t *testing.T) {
	t.Parallel()
	s := newStream(t, "pipe")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	p := startFerry(t, pr, s.shipArgs("--max-age", "100ms")...)
	input := logLines(15, 1, 500)
	if _, err := pw.Write(input); err != nil {
		t.Fatal(err)
	}
	ferrytest.Eventually(t, 30*time.Second, "lines written to the pipe reach the store", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("shipper exited with %d while its input was open:\n%s", p.Code(), p)
		}
		got := s.pollCat()
		return got == string(input), fmt.Sprintf("store holds %d of %d bytes", len(got), len(input))
	})
	// Nothing more arrives on the pipe; SIGTERM alone must end the read.
	if code := p.Terminate(10 * time.Second); code != 143 {
		t.Fatalf("shipper exit %d on SIGTERM before EOF, want 143:\n%s", code, p)
	}
	s.receiveOnce()
	s.wantReplica(input, "after SIGTERM of a shipper reading a pipe")
}
