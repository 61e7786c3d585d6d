package s3e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/internal/versitygw"
)

// pass is a proxy rule that forwards a request untouched: it spaces the
// faults so that each lands on a different segment's first attempt.
var pass = versitygw.Stall(0)

// TestShipThroughPutFaults ships through 500s, a 503 SlowDown, a
// connection dropped mid-body, a stalled PUT and a PUT whose answer is
// lost after the server stored it. ship must exit 0 with every segment
// stored exactly once, and every retry must resend identical bytes.
func TestShipThroughPutFaults(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withProxy)
	p := h.proxy
	// This test names path-style addressing in a config file, the way the
	// sample etc/ferry-s3.toml does; the others rely on ferry's choice.
	cfg := h.writeConfig("ferry.toml", "[s3]\npath_style = true\n")
	s := h.newStream("faults/put", "app")
	const total = 20_000
	input := numbered(1, total)

	// Rules are used in order, one per PUT attempt: segment 1 gets a 500
	// then succeeds, segment 2 a SlowDown, segment 3 a reset mid-body,
	// segment 4 a stall, segment 5 a lost answer, segment 6 a 500 again.
	// The writer lease is created first (a conditional PUT) and lets it
	// pass; the faults are for the segments.
	p.Inject(versitygw.Put, 1, pass)
	retried := 0
	for _, f := range []struct {
		fault versitygw.Fault
		retry bool
	}{
		{versitygw.Status(http.StatusInternalServerError, ""), true},
		{versitygw.SlowDown(), true},
		{versitygw.DropRequest(100), true},
		{versitygw.Stall(1500 * time.Millisecond), false},
		{versitygw.LoseResponse(), false},
		{versitygw.Status(http.StatusServiceUnavailable, ""), true},
	} {
		p.Inject(versitygw.Put, 1, f.fault)
		if f.retry {
			p.Inject(versitygw.Put, 1, pass)
			retried++
		}
	}

	start := time.Now()
	r := h.ferry(bytes.NewReader(input), s.shipArgs("--config", cfg, "--max-bytes", "32KiB")...)
	t.Logf("ship through faults took %s; requests %v", time.Since(start).Round(time.Millisecond), p.Counts())
	if n := p.Pending(); n != 0 {
		t.Fatalf("%d injected faults were never used: fewer PUTs than the test assumes\n%s", n, r)
	}
	names := s.segments()
	if msg := checkContiguous(names, total); msg != "" {
		t.Fatalf("segments after ship through faults: %s\n%s", msg, r)
	}
	if len(names) < 8 {
		t.Fatalf("only %d segments; the faults need at least 8", len(names))
	}
	if got, want := segmentPuts(p, h.bucket, s.dirKey()), len(names)+retried; got != want {
		t.Errorf("%d segment PUTs for %d segments and %d failed attempts; want %d (one retry per failure, none after a success)",
			got, len(names), retried, want)
	}
	if n := strings.Count(r.Stderr, "retrying"); n < retried {
		t.Errorf("ship logged %d retries, want at least %d:\n%s", n, retried, r)
	}

	// Every complete PUT body the proxy saw for a key is the stored object.
	for _, name := range names {
		key := s.dirKey() + name
		stored := h.object(key)
		bodies := p.Bodies(h.bucket + "/" + key)
		if len(bodies) == 0 {
			t.Errorf("segment %s: the proxy saw no complete PUT body", name)
		}
		for i, b := range bodies {
			if !bytes.Equal(b, stored) {
				t.Errorf("segment %s: PUT body %d of %d (%d bytes) differs from the stored object (%d bytes)",
					name, i+1, len(bodies), len(b), len(stored))
			}
		}
	}
	// Complete bodies per faulted segment: a failed attempt plus its retry,
	// except the reset mid-body (incomplete, not recorded) and the stall and
	// lost answer (one attempt that reached the server).
	for i, want := range []int{2, 2, 1, 1, 1, 2} {
		if n := len(p.Bodies(h.bucket + "/" + s.dirKey() + names[i])); n != want {
			t.Errorf("faulted segment %s has %d complete PUT bodies, want %d", names[i], n, want)
		}
	}

	v := h.ferry(nil, "verify", "--config", cfg, "--store", s.url(), "--stream", s.name)
	if !strings.Contains(v.Stdout, "hash chain ok") {
		t.Errorf("verify:\n%s", v)
	}
	s.receiveOnce("--config", cfg)
	s.wantReplica(input, "after ship through faults")
}

// TestReceiverSurvivesServerRestart stops the S3 server while a
// long-running receiver is working through a backlog, then restarts it:
// the receiver logs retries, keeps running and ends with the full replica.
func TestReceiverSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.newStream("outage", "app")
	const total = 40_000
	input := numbered(1, total)
	s.ship(input, "--max-bytes", "32KiB")
	if n := len(s.segments()); n < 40 {
		t.Fatalf("%d segments; the test wants a backlog of at least 40", n)
	}

	// Short retry waits keep the test short. The exec applier appends each
	// segment and then pauses, so that the backlog takes a few seconds
	// and the outage lands in the middle of it.
	cfg := h.writeConfig("receive.toml", "[receive]\nretry_min = \"100ms\"\nretry_max = \"500ms\"\n")
	apply := fmt.Sprintf("exec:cat >> '%s' && sleep 0.03", s.replica)
	rcv := h.start(nil, nil, "receive", "--config", cfg, "--store", s.url(), "--stream", s.name,
		"--state", s.state, "--apply", apply, "--poll-min", "50ms", "--poll-max", "200ms")

	ferrytest.Eventually(t, 30*time.Second, "receiver applies part of the backlog", func() (bool, string) {
		return s.checkpoint().LastSeq >= total/10, fmt.Sprintf("checkpoint %+v\n%s", s.checkpoint(), rcv)
	})
	h.srv.Stop()
	atStop := s.checkpoint().LastSeq
	if atStop >= total {
		t.Fatalf("the receiver finished the backlog before the server was stopped; the outage tested nothing")
	}
	ferrytest.Eventually(t, 15*time.Second, "receiver logs retries while S3 is down", func() (bool, string) {
		return strings.Contains(rcv.Stderr(), "retrying"), rcv.String()
	})
	time.Sleep(time.Second) // a few more failed attempts
	if rcv.Exited() {
		t.Fatalf("receiver exited (%d) while S3 was down; it should wait for it:\n%s", rcv.Code(), rcv)
	}
	h.srv.Restart(t)

	ferrytest.Eventually(t, 60*time.Second, "receiver catches up after the restart", func() (bool, string) {
		return s.checkpoint().LastSeq == total, fmt.Sprintf("checkpoint %+v\n%s", s.checkpoint(), rcv)
	})
	if code := rcv.Terminate(30 * time.Second); code != 0 {
		t.Errorf("receiver exited %d after SIGTERM, want 0:\n%s", code, rcv)
	}
	t.Logf("server stopped at checkpoint seq %d of %d; receiver log:\n%s", atStop, total, ferrytest.Clip(rcv.Stderr()))
	s.wantReplica(input, "after the S3 outage")
}

// TestTailShipperKill9MidUpload kills a tail shipper with SIGKILL twice
// while it uploads to S3 (the first time with a PUT held in flight by the
// proxy), restarts it on the same spool each time, and appends to the
// file throughout: the stream ends up holding every line exactly once.
func TestTailShipperKill9MidUpload(t *testing.T) {
	t.Parallel()
	h := newHarness(t, withProxy)
	p := h.proxy
	s := h.newStream("crash", "app")
	logPath := filepath.Join(t.TempDir(), "app.log")
	var written []byte
	appendLines := func(first, n int) {
		t.Helper()
		b := numbered(first, n)
		f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		written = append(written, b...)
	}
	args := s.shipArgs("--source", "tail:"+logPath, "--max-bytes", "16KiB", "--max-age", "200ms")
	appendLines(1, 30_000)

	// Run 1: killed while its 16th PUT is held by the proxy.
	p.Inject(versitygw.Put, 15, pass)
	p.Inject(versitygw.Put, 1, versitygw.Stall(time.Minute))
	ship := h.start(nil, nil, args...)
	ferrytest.Eventually(t, 30*time.Second, "a PUT held in flight", func() (bool, string) {
		return p.Pending() == 0, fmt.Sprintf("requests %v\n%s", p.Counts(), ship)
	})
	ship.Kill9()
	t.Logf("kill -9 #1 with a PUT in flight; %d segments stored", len(s.segments()))

	// Run 2: killed in the middle of uploading while the file grows.
	ship = h.start(nil, nil, args...)
	appendLines(30_001, 20_000)
	puts := p.Count(versitygw.Put)
	ferrytest.Eventually(t, 30*time.Second, "more uploads after the restart", func() (bool, string) {
		return p.Count(versitygw.Put) >= puts+25, fmt.Sprintf("requests %v\n%s", p.Counts(), ship)
	})
	ship.Kill9()
	t.Logf("kill -9 #2 mid-upload; %d segments stored", len(s.segments()))

	// Run 3: finishes the file and stops on SIGTERM.
	ship = h.start(nil, nil, args...)
	appendLines(50_001, 10_000)
	const total = 60_000
	ferrytest.Eventually(t, 60*time.Second, "every line stored", func() (bool, string) {
		last := s.lastStoredSeq()
		return last >= total, fmt.Sprintf("stored through seq %d of %d\n%s", last, total, ship)
	})
	if code := ship.Terminate(30 * time.Second); code != 0 {
		t.Errorf("third shipper exited %d after SIGTERM, want 0:\n%s", code, ship)
	}

	if msg := checkContiguous(s.segments(), total); msg != "" {
		t.Fatalf("after two kill -9s: %s", msg)
	}
	v := h.ferry(nil, "verify", "--store", s.url(), "--stream", s.name)
	if !strings.Contains(v.Stdout, fmt.Sprintf("%d records, seq 1..%d", total, total)) {
		t.Errorf("verify:\n%s", v)
	}
	s.receiveOnce()
	s.wantReplica(written, "after two kill -9s of the shipper")
}

// TestShipStartsWhileS3IsDown starts a shipper on a fresh spool while the
// S3 server is down. It should spool and keep retrying, as it does when S3
// goes away later, and deliver once the server is back.
func TestShipStartsWhileS3IsDown(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.newStream("down-at-start", "app")
	const total = 5_000
	input := numbered(1, total)
	h.srv.Stop()
	ship := h.start(nil, bytes.NewReader(input), s.shipArgs("--max-bytes", "16KiB")...)
	if code, exited := ship.Wait(3 * time.Second); exited {
		t.Fatalf("ship exited %d within 3 s because S3 is unreachable at start-up; want it to spool and retry "+
			"(a shipper started by systemd before the S3 endpoint is up loses its input):\n%s", code, ship)
	}
	h.srv.Restart(t)
	code, ok := ship.Wait(60 * time.Second)
	if !ok || code != 0 {
		t.Fatalf("ship after S3 came back: exited %v, code %d; want exit 0:\n%s", ok, code, ship)
	}
	s.receiveOnce()
	s.wantReplica(input, "shipped while S3 was down at start-up")
}

// segmentPuts counts the PUTs of a stream's segments, leaving out those of
// its writer lease (claims/), which the shipper renews and releases.
func segmentPuts(p *versitygw.FaultProxy, bucket, dirKey string) int {
	n := 0
	for _, r := range p.Requests() {
		if r.Kind == versitygw.Put && strings.HasPrefix(r.Path, "/"+bucket+"/"+dirKey) && !strings.Contains(r.Path, "/claims/") {
			n++
		}
	}
	return n
}
