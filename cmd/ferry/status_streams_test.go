package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// ferry status --spool SPOOL/NAME reads the newer of the stream's own
// status.json and its entry in SPOOL/streams-status.json; a damaged
// shared file is an error naming it.
func TestStreamsStatusNewerWins(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "a")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{"state.json": `{"stream":"a","generation":1}`, "LOCK": strconv.Itoa(os.Getpid())} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An older ship's own status.json, from before.
	old := shipStatus{Role: "shipper", Running: true, PID: os.Getpid(), UpdatedAt: time.Now().Add(-time.Minute).UTC(), LastSeq: 3}
	if err := writeShipStatus(dir, old); err != nil {
		t.Fatal(err)
	}
	p := newStreamsStatus(root, time.Hour)
	seq := uint64(7)
	snap := func(now time.Time) shipStatus {
		return shipStatus{Role: "shipper", Running: true, PID: os.Getpid(), UpdatedAt: now.UTC(), Stream: "a", LastSeq: seq}
	}
	p.add("a", snap)
	p.add("b", snap)
	if err := p.publish(time.Now()); err != nil {
		t.Fatal(err)
	}
	s, err := readShipStatus(dir, time.Now())
	if err != nil || !s.Running || s.LastSeq != 7 {
		t.Fatalf("running stream: %+v, %v; want running at seq 7 (the shared file)", s, err)
	}
	// A status older than 10 x statusEvery is stale, as a status.json is.
	if s, _ := readShipStatus(dir, time.Now().Add(11*statusEvery)); s.Running {
		t.Errorf("a shared entry 11 s old taken as running")
	}
	seq = 9
	p.remove("a", dir, snap)
	if err := p.publish(time.Now()); err != nil {
		t.Fatal(err)
	}
	s, err = readShipStatus(dir, time.Now())
	if err != nil || s.Running || s.LastSeq != 9 {
		t.Fatalf("stopped stream: %+v, %v; want its last word: not running, seq 9", s, err)
	}
	if err := os.WriteFile(filepath.Join(root, streamsStatusFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readShipStatus(dir, time.Now()); err == nil || !strings.Contains(err.Error(), streamsStatusFile) {
		t.Errorf("damaged shared file: %v, want an error naming it", err)
	}
	// A FIFO nobody writes is refused at once, naming it, not waited on.
	if err := os.Remove(filepath.Join(root, streamsStatusFile)); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(root, streamsStatusFile), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := readShipStatus(dir, time.Now()); done <- err }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), streamsStatusFile) {
			t.Errorf("shared file as a FIFO: %v, want an error naming it", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reading a FIFO as the shared status file hung")
	}
}
