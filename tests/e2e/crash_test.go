package e2e

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// logWriter appends numbered lines to a file in bursts, one write per
// burst, and rotates it by rename+create (no copytruncate). It remembers
// every byte written, in order: the rotated files first, then the new one.
type logWriter struct {
	path string

	mu        sync.Mutex
	rng       *rand.Rand
	f         *os.File
	next      int
	rotations int
	all       []byte
}

func newLogWriter(t *testing.T, path string, rng *rand.Rand) *logWriter {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := &logWriter{path: path, rng: rng, f: f}
	t.Cleanup(func() { w.f.Close() })
	return w
}

func (w *logWriter) burst() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	const filler = "the quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	var buf []byte
	for range 1 + w.rng.IntN(40) {
		w.next++
		buf = fmt.Appendf(buf, "%08d tailed %s\n", w.next, filler[:w.rng.IntN(len(filler))])
	}
	if _, err := w.f.Write(buf); err != nil {
		return err
	}
	w.all = append(w.all, buf...)
	return nil
}

// rotate renames the file to PATH.N and creates a new, empty PATH.
func (w *logWriter) rotate() (string, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.f.Close(); err != nil {
		return "", err
	}
	w.rotations++
	old := w.path + "." + strconv.Itoa(w.rotations)
	if err := os.Rename(w.path, old); err != nil {
		return "", err
	}
	f, err := os.Create(w.path)
	if err != nil {
		return "", err
	}
	w.f = f
	return old, nil
}

func (w *logWriter) written() ([]byte, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Clone(w.all), w.next
}

// checkNumbered reports the first duplicate or missing line in a replica
// of numbered lines ("%08d ..."), or "" if the numbers run 1..total.
func checkNumbered(replica []byte, total int) string {
	want := 1
	for i, line := range lines(replica) {
		n, err := strconv.Atoi(string(line[:min(8, len(line))]))
		switch {
		case err != nil:
			return fmt.Sprintf("replica line %d is not a numbered line: %q", i+1, line)
		case n < want:
			return fmt.Sprintf("duplicate: replica line %d is line #%d again (expected #%d)", i+1, n, want)
		case n > want:
			return fmt.Sprintf("gap: lines #%d..#%d missing before replica line %d", want, n-1, i+1)
		}
		want++
	}
	if want-1 != total {
		return fmt.Sprintf("replica ends at line #%d, writer wrote %d lines", want-1, total)
	}
	return ""
}

// kill -9 of a tailing shipper at random moments, across two rotations (one
// while it runs, one while it is dead): every line written reaches the
// store exactly once, in order.
func TestTailShipperSurvivesKill9(t *testing.T) {
	t.Parallel()
	rng := seededRand(t)
	s := newStream(t, "tail")
	logPath := filepath.Join(s.dir, "logs", "app.log")
	if err := os.Mkdir(filepath.Dir(logPath), 0o755); err != nil {
		t.Fatal(err)
	}
	w := newLogWriter(t, logPath, rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())))
	if err := w.burst(); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				writerDone <- nil
				return
			case <-time.After(time.Millisecond):
			}
			if err := w.burst(); err != nil {
				writerDone <- err
				return
			}
		}
	}()
	stopWriter := sync.OnceFunc(func() { close(stop) })
	t.Cleanup(stopWriter)

	ship := func() *ferrytest.Process {
		return startFerry(t, nil, s.shipArgs("--source", "tail:"+logPath, "--max-age", "100ms", "--max-bytes", "64KiB")...)
	}
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }

	p := ship()
	// Until the first segment is sealed the spool may hold no file position;
	// a rotation while stopped could then skip the old file by design.
	ferrytest.Eventually(t, 30*time.Second, "first segment in the store", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
		}
		return len(s.segments()) > 0, "no segment yet"
	})

	// One rotation while the shipper runs, a later one while it is dead.
	// Before the second, the shipper must have shipped a line of the file
	// the first rotation created: two rotations while it still reads the
	// file before them is TestTailTwoRotationsWhileStopped.
	kills := 3 + rng.IntN(3)
	rotateRunning := rng.IntN(kills - 1)
	rotateDown := rotateRunning + 1 + rng.IntN(kills-1-rotateRunning)
	shippedPastRotation := 0
	for k := range kills {
		time.Sleep(between(100*time.Millisecond, 600*time.Millisecond))
		if k == rotateDown {
			ferrytest.Eventually(t, 30*time.Second, "a line of the new file shipped", func() (bool, string) {
				if p.Exited() {
					t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
				}
				s.pollReceiveOnce()
				n := len(s.readReplica())
				return n > shippedPastRotation, fmt.Sprintf("replica has %d bytes, rotation was at %d", n, shippedPastRotation)
			})
		}
		p.Kill9()
		_, n := w.written()
		t.Logf("kill -9 #%d of the shipper at line %d", k+1, n)
		if k == rotateDown {
			old, err := w.rotate()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("rotated to %s while the shipper was dead", filepath.Base(old))
		}
		time.Sleep(between(0, 50*time.Millisecond))
		p = ship()
		if k == rotateRunning {
			time.Sleep(between(0, 200*time.Millisecond))
			old, err := w.rotate()
			if err != nil {
				t.Fatal(err)
			}
			all, n := w.written()
			shippedPastRotation = len(all)
			t.Logf("rotated to %s while the shipper ran, at line %d", filepath.Base(old), n)
		}
	}
	time.Sleep(between(100*time.Millisecond, 300*time.Millisecond))
	stopWriter()
	if err := <-writerDone; err != nil {
		t.Fatalf("writer: %v", err)
	}
	all, total := w.written()
	t.Logf("writer wrote %d lines, %d bytes", total, len(all))

	// Drain through the store into a replica until it holds every line.
	ferrytest.Eventually(t, 60*time.Second, "replica holds every line written", func() (bool, string) {
		if p.Exited() {
			t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
		}
		s.pollReceiveOnce()
		got := s.readReplica()
		if !bytes.HasPrefix(all, got) {
			t.Fatalf("replica is not a prefix of the lines written: %s; %s", checkNumbered(got, total), describeDiff(all, got))
		}
		return len(got) == len(all), fmt.Sprintf("replica has %d of %d bytes", len(got), len(all))
	})
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("shipper exit %d on SIGTERM, want 0:\n%s", code, p)
	}
	s.receiveOnce()
	got := s.readReplica()
	if msg := checkNumbered(got, total); msg != "" {
		t.Fatalf("replica after %d kills: %s", kills, msg)
	}
	if !bytes.Equal(got, all) {
		t.Fatalf("replica after %d kills: %s", kills, describeDiff(all, got))
	}
	if r := s.verify(); r.Code != 0 {
		t.Fatalf("verify after kills: want exit 0:\n%s", r)
	}
}

// kill -9 of a receiver at random moments while it applies to a file: the
// replica never holds anything but a prefix of the stream, and the final
// replica is the stream exactly once.
func TestReceiverSurvivesKill9(t *testing.T) {
	t.Parallel()
	rng := seededRand(t)
	s := newStream(t, "rkill")
	input := logLines(9, 1, 300_000)
	s.ship(input, "--max-bytes", "256KiB")
	t.Logf("%d segments, %d bytes", len(s.segments()), len(input))

	kills := 4 + rng.IntN(3)
	for k := range kills {
		// Kill once the replica passes a random point in the k-th slice of
		// the stream, plus a random delay, so kills land mid-apply as well as
		// between applies.
		target := int64(len(input)) * int64(k*100+rng.IntN(80)+10) / int64(kills*100)
		p := startFerry(t, nil, s.receiveArgs("--poll-min", "50ms", "--poll-max", "200ms")...)
		deadline := time.Now().Add(60 * time.Second)
		for {
			if p.Exited() {
				t.Fatalf("receiver exited with %d before kill #%d:\n%s", p.Code(), k+1, p)
			}
			if fi, err := os.Stat(s.replica); err == nil && fi.Size() >= target {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("replica did not reach %d bytes within 60s:\n%s", target, p)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(20 * time.Millisecond))))
		p.Kill9()
		got := s.readReplica()
		if !bytes.HasPrefix(input, got) {
			t.Fatalf("after kill -9 #%d the replica is not a prefix of the stream: %s", k+1, describeDiff(input, got))
		}
		cp := readCheckpoint(t, s.state)
		t.Logf("kill -9 #%d: checkpoint at seq %d, replica %d bytes (%d applied past the checkpoint)",
			k+1, cp.LastSeq, len(got), int64(len(got))-cp.Applier.Size)
	}

	s.receiveOnce()
	s.wantReplica(input, fmt.Sprintf("after %d kills of the receiver", kills))
	if got := s.checkpointSeq(); got != 300_000 {
		t.Errorf("checkpoint at seq %d, want 300000", got)
	}
}

// The spool's file position names the file being read. If that file is
// rotated away and the file after it is rotated too while the shipper is
// stopped, the middle file's lines must still be shipped: the tail source
// finishes the old file, and must then go on to the middle one, not jump to
// the newest.
func TestTailTwoRotationsWhileStopped(t *testing.T) {
	t.Parallel()
	s := newStream(t, "rot2")
	logPath := filepath.Join(s.dir, "logs", "app.log")
	if err := os.Mkdir(filepath.Dir(logPath), 0o755); err != nil {
		t.Fatal(err)
	}
	a, b, c := numbered("A", 1, 1000), numbered("B", 1001, 1000), numbered("C", 2001, 1000)
	if err := os.WriteFile(logPath, a, 0o644); err != nil {
		t.Fatal(err)
	}
	args := s.shipArgs("--source", "tail:"+logPath, "--max-age", "100ms")
	p := startFerry(t, nil, args...)
	waitReplicaEndsWith := func(p *ferrytest.Process, last []byte) {
		t.Helper()
		ferrytest.Eventually(t, 30*time.Second, fmt.Sprintf("replica ends with %q", last), func() (bool, string) {
			if p.Exited() {
				t.Fatalf("shipper exited with %d:\n%s", p.Code(), p)
			}
			s.pollReceiveOnce()
			got := s.readReplica()
			return bytes.HasSuffix(got, last), fmt.Sprintf("replica has %d bytes", len(got))
		})
	}
	waitReplicaEndsWith(p, lastLine(a))
	p.Kill9()

	// Two rotations while the shipper is down: app.log -> app.log.1 (all of
	// it shipped), then B is written and rotated to app.log.2, then C.
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(logPath, logPath+".2"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(logPath, c, 0o644); err != nil {
		t.Fatal(err)
	}

	p = startFerry(t, nil, args...)
	waitReplicaEndsWith(p, lastLine(c))
	if code := p.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("shipper exit %d on SIGTERM, want 0:\n%s", code, p)
	}
	s.receiveOnce()
	s.wantReplica(bytes.Join([][]byte{a, b, c}, nil), "after two rotations while the shipper was stopped (A, then B, then C)")
}

// numbered returns n lines "PREFIX %08d\n" numbered from first.
func numbered(prefix string, first, n int) []byte {
	var b []byte
	for i := first; i < first+n; i++ {
		b = fmt.Appendf(b, "%s %08d\n", prefix, i)
	}
	return b
}

func lastLine(data []byte) []byte {
	l := lines(data)
	return l[len(l)-1]
}

// A receiver killed while it applies the very first segment (the replica
// has data, the checkpoint has none yet) must resume on restart: the
// checkpoint says "nothing applied", so the file applier cuts the replica
// back to empty and applies again.
func TestReceiverKilledDuringFirstApply(t *testing.T) {
	t.Parallel()
	s := newStream(t, "first")
	input := logLines(14, 1, 200_000)
	s.ship(input, "--max-bytes", "64MiB") // one big segment: a wide window
	if n := len(s.segments()); n != 1 {
		t.Fatalf("want one segment, have %d", n)
	}
	p := startFerry(t, nil, s.receiveArgs("--poll-min", "50ms", "--poll-max", "200ms")...)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if p.Exited() {
			t.Fatalf("receiver exited with %d:\n%s", p.Code(), p)
		}
		if fi, err := os.Stat(s.replica); err == nil && fi.Size() > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica still empty after 60s:\n%s", p)
		}
		time.Sleep(time.Millisecond)
	}
	p.Kill9()
	got := s.readReplica()
	cp := s.checkpointSeq()
	t.Logf("killed with %d bytes in the replica, checkpoint at seq %d", len(got), cp)
	if cp != 0 {
		t.Fatalf("the kill missed the first apply (checkpoint already at seq %d); this test needs a slower first apply", cp)
	}
	if !bytes.HasPrefix(input, got) {
		t.Fatalf("replica after kill -9 is not a prefix of the stream: %s", describeDiff(input, got))
	}

	r := ferry(t, nil, s.receiveArgs("--once")...)
	if r.Code != 0 {
		t.Fatalf("receive after a kill -9 during the first apply: want exit 0 (undo the partial apply, apply again):\n%s", r)
	}
	s.wantReplica(input, "after a kill -9 during the first apply")
}
