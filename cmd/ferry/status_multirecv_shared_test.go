package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/metrics"
)

// ferry status --state reads, for each stream of a receiver of many
// streams, the newest of its own status.json and its entries in the
// shared files (one per fleet member sharing the state dir), with the
// running/stale rule of a status.json; a damaged, oversize or FIFO
// shared file is an error naming it.
func TestMultiRecvSharedStatusNewestWins(t *testing.T) {
	state := t.TempDir()
	for _, s := range []string{"a", "b"} {
		if err := os.Mkdir(filepath.Join(state, s), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, s, "LOCK"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	pub := func(stream string, stored uint64, at time.Time) recvPublished {
		lag := 0.0
		return recvPublished{Running: true, PID: os.Getpid(), UpdatedAt: at.UTC(), Stream: stream, StoredSeq: &stored, LagSeconds: &lag}
	}
	// a's own status.json, from when it started a minute ago.
	if err := writeRecvStatus(filepath.Join(state, "a"), pub("a", 1, now.Add(-time.Minute))); err != nil {
		t.Fatal(err)
	}
	// Two fleet members share the state dir: m1 applied b until a
	// minute ago, m2 applies it now, and a.
	m1 := newMultiRecvWatch(state, nil, metrics.Health{}, multiRecvPublished{Fleet: "dr", Member: "m1"})
	m2 := newMultiRecvWatch(state, nil, metrics.Health{}, multiRecvPublished{Fleet: "dr", Member: "m2"})
	if err := m1.writeShared(map[string]recvPublished{"b": pub("b", 2, now.Add(-time.Minute))}, now.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := m2.writeShared(map[string]recvPublished{"a": pub("a", 7, now), "b": pub("b", 5, now)}, now); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"streams-status.m1.json", "streams-status.m2.json"} {
		if _, err := os.Stat(filepath.Join(state, f)); err != nil {
			t.Fatalf("a fleet member's shared file: %v", err)
		}
	}
	stored := func(s multiRecvStatus) map[string]string {
		out := map[string]string{}
		for _, r := range s.Streams {
			v := "-"
			if r.StoredSeq != nil {
				v = strconv.FormatUint(*r.StoredSeq, 10)
			}
			out[r.Stream] = v
		}
		return out
	}
	s, err := readMultiRecvStatus(state, now)
	if err != nil {
		t.Fatal(err)
	}
	if got := stored(s); got["a"] != "7" || got["b"] != "5" {
		t.Fatalf("stored seqs %v, want a 7 and b 5: the newest entries", got)
	}
	if r, err := readRecvStatus(filepath.Join(state, "b"), now); err != nil || r.StoredSeq == nil || *r.StoredSeq != 5 {
		t.Fatalf("ferry status --state STATE/b: %+v, %v; want stored seq 5 from the shared file", r, err)
	}
	// Stale past 10 s, as a status.json is.
	if s, err := readMultiRecvStatus(state, now.Add(11*time.Second)); err != nil || stored(s)["a"] != "-" {
		t.Errorf("an entry 11 s old: %v, %v; want it not taken", stored(s), err)
	}
	// a stops: its last word, newer, wins over the shared file's entry.
	last := pub("a", 8, now.Add(time.Second))
	last.Running, last.LastError = false, "segment damaged"
	if err := writeRecvStatus(filepath.Join(state, "a"), last); err != nil {
		t.Fatal(err)
	}
	if s, err := readMultiRecvStatus(state, now.Add(2*time.Second)); err != nil || stored(s)["a"] != "-" || stored(s)["b"] != "5" {
		t.Errorf("after a's last word: %v, %v; want a's running entry not taken, b's kept", stored(s), err)
	}

	// Hostile shared files are refused, naming the file.
	bad := filepath.Join(state, recvStreamsStatusFile)
	check := func(what string) {
		t.Helper()
		if _, err := readMultiRecvStatus(state, now); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%s: ferry status --state: %v, want an error naming %s", what, err, bad)
		}
		if _, err := readRecvStatus(filepath.Join(state, "a"), now); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%s: ferry status --state STATE/a: %v, want an error naming %s", what, err, bad)
		}
	}
	if err := os.WriteFile(bad, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	check("damaged")
	if err := os.Truncate(bad, maxStreamsStatusFile+1); err != nil {
		t.Fatal(err)
	}
	check("oversize")
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(bad, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); check("a FIFO") }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("reading a FIFO shared file hangs")
	}
}
