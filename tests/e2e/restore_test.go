package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/internal/ferrytest"
	"github.com/ferry-dr/ferry/receiver"
)

func (s *stream) restoreArgs(extra ...string) []string {
	return append([]string{"restore", "--store", s.store, "--stream", s.name, "--state", s.state,
		"--apply", "file:" + s.replica}, extra...)
}

// A seq boundary inside a segment: the replica is exactly the first N
// lines, and a second restore on the same state goes on from there.
func TestRestoreUntilSeq(t *testing.T) {
	s := newStream(t, "restore-seq")
	input := logLines(61, 1, 1000)
	s.ship(input, "--max-records", "100")
	if n := len(s.segments()); n != 10 {
		t.Fatalf("want 10 segments, have %d", n)
	}
	r := mustFerry(t, nil, s.restoreArgs("--until", "437")...)
	s.wantReplica(prefixLines(input, 437), "after --until 437")
	if !strings.Contains(r.Stderr, "restored through seq 437 (inside segment") {
		t.Errorf("summary does not say where it stopped:\n%s", r)
	}
	if cp := s.checkpointSeq(); cp != 437 {
		t.Fatalf("checkpoint at seq %d, want 437", cp)
	}
	mustFerry(t, nil, s.restoreArgs("--until", "437")...)
	s.wantReplica(prefixLines(input, 437), "after the same restore again")
	mustFerry(t, nil, s.restoreArgs("--until", "901")...)
	s.wantReplica(prefixLines(input, 901), "after --until 901 on the same state")
	// Without a boundary: the rest; past the end: an error naming the end.
	failFerry(t, nil, []string{"ends at seq 1000", "before the boundary seq 1200"}, s.restoreArgs("--until", "1200")...)
	s.wantReplica(input, "after --until past the end")
	failFerry(t, nil, []string{"past the boundary seq 10"}, s.restoreArgs("--until", "10")...)
}

func TestRestoreRefusesForeignStateAndTarget(t *testing.T) {
	s := newStream(t, "restore-refuse")
	s.ship(logLines(62, 1, 50))
	mustFerry(t, nil, s.restoreArgs("--until", "20")...)
	other := newStream(t, "restore-other")
	other.store, other.state = s.store, s.state
	failFerry(t, nil, []string{"belongs to stream", "restore-refuse"},
		"restore", "--store", s.store, "--stream", other.name, "--state", s.state, "--apply", "file:"+other.replica)
	// A new state over an existing target.
	failFerry(t, nil, []string{s.replica, "already holds"},
		"restore", "--store", s.store, "--stream", s.name, "--state", filepath.Join(t.TempDir(), "state"), "--apply", "file:"+s.replica)
	failFerry(t, nil, []string{"neither a seq nor an RFC 3339 time"}, s.restoreArgs("--until", "yesterday")...)
}

// timedInput is n ndjson records whose times rise by 10s from base,
// except every 7th, stamped 150s earlier than its place: times are mostly
// but not strictly monotonic. data holds each record's line.
func timedInput(base time.Time, n int) (input []byte, data [][]byte, times []time.Time) {
	for i := 1; i <= n; i++ {
		at := base.Add(time.Duration(i) * 10 * time.Second)
		if i%7 == 3 {
			at = at.Add(-150 * time.Second)
		}
		line := fmt.Sprintf("record %04d at %s\n", i, at.Format(time.RFC3339))
		j, _ := json.Marshal(map[string]any{"data": line, "time": at})
		input = append(append(input, j...), '\n')
		data, times = append(data, []byte(line)), append(times, at)
	}
	return input, data, times
}

// TestRestoreUntilTime: every record up to the first one stamped after
// the boundary, and none after it even when stamped earlier.
func TestRestoreUntilTime(t *testing.T) {
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	input, data, times := timedInput(base, 300)
	s := newStream(t, "restore-time")
	s.ship(input, "--format", "ndjson", "--max-records", "50")
	for _, until := range []time.Time{
		base.Add(1555 * time.Second), // between records
		times[200],                   // exactly a record's time: it is included
		times[249],                   // the last record of a segment
	} {
		t.Run(until.Format(time.RFC3339), func(t *testing.T) {
			s := *s
			s.t, s.state, s.replica = t, filepath.Join(t.TempDir(), "state"), filepath.Join(t.TempDir(), "replica")
			n := 0
			for n < len(times) && !times[n].After(until) {
				n++
			}
			if n == len(times) || n == 0 {
				t.Fatalf("boundary %s is not inside the stream", until)
			}
			var want []byte
			skipped := 0
			for i := range times {
				if i < n {
					want = append(want, data[i]...)
				} else if !times[i].After(until) {
					skipped++ // stamped before the boundary, but after the stop
				}
			}
			mustFerry(t, nil, s.restoreArgs("--until", until.Format(time.RFC3339Nano))...)
			s.wantReplica(want, "after --until "+until.Format(time.RFC3339))
			if cp := s.checkpointSeq(); cp != uint64(n) {
				t.Fatalf("checkpoint at seq %d, want %d", cp, n)
			}
			mustFerry(t, nil, s.restoreArgs("--until", until.Format(time.RFC3339Nano))...)
			s.wantReplica(want, "after resuming at the same time")
			t.Logf("stopped before seq %d; %d later record(s) stamped before the boundary not applied", n+1, skipped)
		})
	}
}

// TestRestoreKilledAndResumed kills restores with SIGKILL mid-way; each
// run on the same state continues, and the last reaches exactly the
// boundary with no line lost or doubled.
func TestRestoreKilledAndResumed(t *testing.T) {
	s := newStream(t, "restore-kill")
	input := logLines(63, 1, 550_000) // ~50 MiB in ~25 segments
	s.ship(input, "--max-bytes", "2MiB")
	segs := s.segments()
	_, lastSeq := segmentSeqs(t, segs[len(segs)-1])
	until := lastSeq - 1234
	args := s.restoreArgs("--until", strconv.FormatUint(until, 10), "--prefetch", "2")
	kills := 0
	var prev uint64
	for range 4 {
		p := startFerry(t, nil, args...)
		ferrytest.Eventually(t, 30*time.Second, "the restore to advance", func() (bool, string) {
			if p.Exited() {
				return true, ""
			}
			cp, ok, err := receiver.LoadCheckpoint(s.state)
			if err != nil || !ok {
				return false, "no checkpoint yet"
			}
			return cp.LastSeq > prev, fmt.Sprintf("checkpoint at seq %d", cp.LastSeq)
		})
		if p.Exited() {
			if code := p.Code(); code != 0 {
				t.Fatalf("restore failed:\n%s", p)
			}
			break
		}
		p.Kill9()
		kills++
		prev = s.checkpointSeq()
		t.Logf("killed at checkpoint seq %d", prev)
	}
	if kills == 0 {
		t.Fatal("the restore finished before it could be killed")
	}
	mustFerry(t, nil, args...)
	s.wantReplica(prefixLines(input, int(until)), fmt.Sprintf("after %d kill(s) and a resume", kills))
}

type drillJSON struct {
	OK               bool      `json:"ok"`
	Segments         int       `json:"segments"`
	Records          int       `json:"records"`
	Bytes            int64     `json:"bytes"`
	LastSeq          uint64    `json:"last_seq"`
	NewestRecordTime time.Time `json:"newest_record_time"`
	RPOSeconds       float64   `json:"rpo_seconds"`
	RTOSeconds       float64   `json:"rto_seconds"`
	Defects          []string  `json:"defects"`
}

func TestDrill(t *testing.T) {
	s := newStream(t, "drill")
	// Stamped an hour ago, so the RPO is known: the newest record is the
	// last one (times rise by 10s but for every 7th, which is earlier).
	base := time.Now().Add(-time.Hour - 3000*time.Second).Truncate(time.Millisecond)
	input, data, times := timedInput(base, 300)
	s.ship(input, "--format", "ndjson", "--max-records", "50")
	segs := s.segments()
	scratch := t.TempDir()

	before := time.Now()
	r := mustFerry(t, nil, "drill", "--store", s.store, "--stream", s.name, "--json", "--scratch", scratch)
	after := time.Now()
	var d drillJSON
	if err := json.Unmarshal([]byte(r.Stdout), &d); err != nil {
		t.Fatalf("drill --json: %v\n%s", err, r)
	}
	newest := times[len(times)-1]
	switch {
	case !d.OK || len(d.Defects) > 0:
		t.Fatalf("drill not ok:\n%s", r)
	case d.Records != len(data) || d.LastSeq != uint64(len(data)):
		t.Errorf("drill restored %d records through seq %d, shipped %d", d.Records, d.LastSeq, len(data))
	case d.Segments != len(segs):
		t.Errorf("drill restored %d segments, the store has %d", d.Segments, len(segs))
	case !d.NewestRecordTime.Equal(newest):
		t.Errorf("newest record time %s, shipped %s", d.NewestRecordTime, newest)
	case d.RPOSeconds < before.Sub(newest).Seconds() || d.RPOSeconds > after.Sub(newest).Seconds():
		t.Errorf("RPO %.3fs, want between %.3fs and %.3fs", d.RPOSeconds, before.Sub(newest).Seconds(), after.Sub(newest).Seconds())
	case d.RTOSeconds <= 0 || d.RTOSeconds > after.Sub(before).Seconds():
		t.Errorf("RTO %.3fs, want > 0 and within the drill's %.3fs", d.RTOSeconds, after.Sub(before).Seconds())
	case d.Bytes <= 0:
		t.Errorf("drill read %d bytes", d.Bytes)
	}
	if ents, _ := os.ReadDir(scratch); len(ents) != 0 {
		t.Errorf("drill left %d entries in its scratch dir", len(ents))
	}

	r = mustFerry(t, nil, "drill", "--store", s.store, "--stream", s.name)
	for _, w := range []string{": OK", "RTO", "RPO", fmt.Sprintf("%d records in %d segments", len(data), len(segs)), "hash chain ok"} {
		if !strings.Contains(r.Stdout, w) {
			t.Errorf("drill output lacks %q:\n%s", w, r)
		}
	}

	// A damaged segment: non-zero, naming it, in both forms.
	bad := s.middleSegment()
	seg, err := os.ReadFile(s.segmentPath(bad))
	if err != nil {
		t.Fatal(err)
	}
	off := payloadOffset(t, seg)
	seg[off+(len(seg)-off)/2] ^= 0x01
	if err := os.WriteFile(s.segmentPath(bad), seg, 0o644); err != nil {
		t.Fatal(err)
	}
	failFerry(t, nil, []string{bad, "FAILED", "DEFECT"}, "drill", "--store", s.store, "--stream", s.name)
	r = failFerry(t, nil, []string{bad}, "drill", "--store", s.store, "--stream", s.name, "--json")
	dec := json.NewDecoder(bytes.NewReader([]byte(r.Stdout)))
	if err := dec.Decode(&d); err != nil || d.OK || len(d.Defects) == 0 {
		t.Errorf("drill --json on a damaged stream: ok %v, defects %q (%v)", d.OK, d.Defects, err)
	}
}
