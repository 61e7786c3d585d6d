package s3e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// watermark is the part of a published watermark object the tests read.
type watermark struct {
	Receiver   string `json:"receiver"`
	Stream     string `json:"stream"`
	Generation uint32 `json:"generation"`
	AppliedSeq uint64 `json:"applied_seq"`
	Segment    string `json:"segment"`
}

// wantOneWatermark fails the test unless the receiver id has exactly one
// watermark object, named after seq and saying seq, and returns its key.
func wantOneWatermark(t *testing.T, s *stream, id string, seq uint64, segment string) string {
	t.Helper()
	dir := s.dirKey() + "watermarks/" + id + "/"
	keys := s.h.objects(dir)
	if len(keys) != 1 {
		t.Fatalf("receiver %s has %d watermark objects under s3://%s/%s, want exactly 1: %q", id, len(keys), s.h.bucket, dir, keys)
	}
	if want := fmt.Sprintf("%s%016x.json", dir, seq); keys[0] != want {
		t.Errorf("watermark object is %s, want %s", keys[0], want)
	}
	var w watermark
	if err := json.Unmarshal(s.h.object(keys[0]), &w); err != nil {
		t.Fatalf("watermark %s: %v", keys[0], err)
	}
	if want := (watermark{Receiver: id, Stream: s.name, Generation: 1, AppliedSeq: seq, Segment: segment}); w != want {
		t.Errorf("watermark %s says %+v, want %+v", keys[0], w, want)
	}
	return keys[0]
}

// TestWatermarkPublished: after receive --once the store holds exactly one
// watermark object for the receiver, at the last applied seq; the next run
// replaces it and deletes the old one.
func TestWatermarkPublished(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.newStream("wm", "app")
	const id = "dr-site-1"

	s.ship(numbered(1, 5_000), "--max-bytes", "16KiB")
	s.receiveOnce("--id", id)
	cp := s.checkpoint()
	if cp.LastSeq != 5_000 {
		t.Fatalf("checkpoint at %d, want 5000", cp.LastSeq)
	}
	first := wantOneWatermark(t, s, id, cp.LastSeq, cp.Segment)

	s.ship(numbered(5_001, 3_000), "--max-bytes", "16KiB")
	s.receiveOnce("--id", id)
	cp = s.checkpoint()
	if cp.LastSeq != 8_000 {
		t.Fatalf("checkpoint at %d, want 8000", cp.LastSeq)
	}
	if second := wantOneWatermark(t, s, id, cp.LastSeq, cp.Segment); second == first {
		t.Errorf("watermark did not move from %s", first)
	}
	s.wantReplica(numbered(1, 8_000), "after two receives")

	ls := h.ferry(nil, "ls", "--store", s.url(), "--stream", s.name)
	if want := fmt.Sprintf("receiver %s: applied through seq %d", id, cp.LastSeq); !strings.Contains(ls.Stdout, want) {
		t.Errorf("ls does not say %q:\n%s", want, ls)
	}
}

// TestWatermarkRepublishWithoutProgress: a receiver that runs again with
// nothing new to apply (cron'd receive --once, or a restarted idle
// receiver) must keep its one watermark without an error. Its watermark
// name is fixed by the seq, but the body carries published_at, so a
// naive republish collides with its own earlier object.
func TestWatermarkRepublishWithoutProgress(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := h.newStream("wm-again", "app")
	const id = "dr-site-2"
	s.ship(numbered(1, 3_000), "--max-bytes", "16KiB")
	s.receiveOnce("--id", id)
	cp := s.checkpoint()
	wantOneWatermark(t, s, id, cp.LastSeq, cp.Segment)

	again := s.receiveOnce("--id", id)
	for _, bad := range []string{"cannot publish", "split brain", "level=WARN", "level=ERROR"} {
		if strings.Contains(again.Stderr, bad) {
			t.Errorf("receive --once with nothing new to apply says %q; want a quiet no-op:\n%s", bad, again)
		}
	}
	wantOneWatermark(t, s, id, cp.LastSeq, cp.Segment)
}
