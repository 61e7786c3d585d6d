package s3e2e

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
	"github.com/ferry-dr/ferry/internal/ferrytest"
)

// An unplanned failover on S3: a second shipper on the stream is refused
// by the first's writer lease; the primary dies (kill -9) having shipped
// past what the secondary applied; the secondary is promoted and ships
// generation 2; the old primary's shipper restarts fenced and ships
// nothing; rejoin reports exactly the records it had past the fork; the
// old primary then follows generation 2 to the new primary's history.
func TestFailoverUnplannedS3(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, b := h.newStream("fo", "app"), h.newStream("fo", "app") // two sites, one bucket
	aLog := filepath.Join(t.TempDir(), "app.log")
	appendTo := func(path string, data []byte) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	appendTo(aLog, numbered(1, 2000))
	shipA := h.start(nil, nil, a.shipArgs("--source", "tail:"+aLog, "--site", "a",
		"--max-records", "50", "--max-age", "50ms", "--lease-ttl", "5s")...)
	recvB := h.start(nil, nil, b.receiveArgs("--poll-min", "20ms", "--poll-max", "200ms")...)
	ferrytest.Eventually(t, 30*time.Second, "the secondary applies 1000 records", func() (bool, string) {
		cp := b.checkpoint()
		return cp.LastSeq >= 1000, fmt.Sprintf("checkpoint %+v\n%s\n%s", cp, shipA, recvB)
	})

	// A second shipper on the stream, on another spool: refused, naming the first.
	other := h.newStream("fo", "app")
	r := h.run(nil, strings.NewReader("intruder\n"), other.shipArgs("--site", "intruder", "--lease-ttl", "5s")...)
	if r.Code == 0 || !strings.Contains(r.Output(), "held by another shipper, site a") {
		t.Fatalf("a second shipper on the stream: want refused by the writer lease of site a:\n%s", r)
	}

	// The secondary stops; the primary ships on, then dies with lines
	// still in its spool or its file.
	if code := recvB.Terminate(10 * time.Second); code != 0 {
		t.Fatalf("receiver exited %d:\n%s", code, recvB)
	}
	appendTo(aLog, numbered(2001, 1000))
	ferrytest.Eventually(t, 30*time.Second, "the primary stores seq 3000", func() (bool, string) {
		return a.lastStoredSeq() >= 3000, fmt.Sprint(shipA)
	})
	appendTo(aLog, numbered(3001, 200))
	shipA.Kill9()

	// Promote the secondary; it ships generation 2 by tailing its replica.
	r = h.ferry(nil, "promote", "--store", b.url(), "--stream", "app", "--state", b.state, "--site", "b",
		"--json", "--spool", b.spool, "--source", "tail:"+b.replica)
	var p struct {
		Generation  uint32 `json:"generation"`
		ForkSeq     uint64 `json:"fork_seq"`
		LostRecords uint64 `json:"lost_records"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &p); err != nil {
		t.Fatalf("promote --json: %v\n%s", err, r)
	}
	fork := p.ForkSeq
	if p.Generation != 2 || fork < 1000 || fork >= 3000 || p.LostRecords < 3000-fork {
		t.Fatalf("promotion %+v: want generation 2 forked at the secondary's checkpoint, with the records past it in the store", p)
	}
	b.wantReplica(numbered(1, int(fork)), "at the fork")
	appendTo(b.replica, numbered(500_001, 300))
	shipB := h.start(nil, nil, b.shipArgs("--source", "tail:"+b.replica, "--site", "b",
		"--max-records", "64", "--max-age", "50ms", "--lease-ttl", "5s")...)
	ferrytest.Eventually(t, 30*time.Second, "generation 2 stored", func() (bool, string) {
		return storedThrough(b, 2) >= fork+300, fmt.Sprint(shipB)
	})
	if code := shipB.Terminate(30 * time.Second); code != 0 {
		t.Fatalf("new primary's shipper exited %d:\n%s", code, shipB)
	}
	history := append(numbered(1, int(fork)), numbered(500_001, 300)...)
	b.wantReplica(history, "the new primary's log")

	// The old primary comes back fenced: non-zero, nothing shipped.
	before := a.segments()
	r = h.run(nil, nil, a.shipArgs("--source", "tail:"+aLog, "--site", "a", "--shutdown-timeout", "2s")...)
	if r.Code == 0 || !strings.Contains(r.Output(), "fenced") || !strings.Contains(r.Output(), "run ferry rejoin") {
		t.Fatalf("the old primary's shipper: want a fenced exit:\n%s", r)
	}
	if after := a.segments(); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Fatalf("the fenced shipper changed the bucket:\nbefore %v\nafter  %v", before, after)
	}

	// Rejoin: the report holds exactly the records past the fork.
	report := filepath.Join(t.TempDir(), "divergence.ndjson")
	h.ferry(nil, "rejoin", "--store", a.url(), "--stream", "app", "--spool", a.spool, "--state", a.state,
		"--apply", "file:"+aLog, "--report", report)
	sum := ferrytest.ReadDivergenceReport(t, report)
	var seqs []uint64
	var data []byte
	for _, r := range sum.Lines {
		seqs = append(seqs, r.Seq)
		data = append(data, r.Data...)
	}
	if sum.ForkSeq != fork || sum.Records != len(seqs) || len(seqs) == 0 {
		t.Fatalf("report summary %+v with %d records; want fork %d and the records past it", sum, len(seqs), fork)
	}
	for i, s := range seqs {
		if s != fork+1+uint64(i) {
			t.Fatalf("report record %d is seq %d; want %d", i, s, fork+1+uint64(i))
		}
	}
	if want := numbered(int(fork)+1, len(seqs)); !bytes.Equal(data, want) {
		t.Fatalf("report records: %s", describeDiff(want, data))
	}
	t.Logf("fork at seq %d; %d records lost per promote, %d in the report (%d shipped before the fence)", fork, p.LostRecords, sum.Records, sum.InStore)

	// The old primary follows generation 2 to the new primary's history.
	h.ferry(nil, "receive", "--once", "--store", a.url(), "--stream", "app", "--state", a.state, "--apply", "file:"+aLog)
	got, err := os.ReadFile(aLog)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, history) {
		t.Fatalf("old primary after following generation 2: %s", describeDiff(history, got))
	}
}

// storedThrough is the highest seq a stored segment of generation gen
// ends at.
func storedThrough(s *stream, gen uint32) uint64 {
	var last uint64
	for _, name := range s.segments() {
		if g, _, l, _ := batch.ParseSegmentName(name); g == gen {
			last = max(last, l)
		}
	}
	return last
}
