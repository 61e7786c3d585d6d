package main

import (
	"bytes"
	"testing"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/bundletest"
	"github.com/ferry-dr/ferry/receiver"
	"github.com/ferry-dr/ferry/store/dir"
)

// rejoin's divergence report and promote's loss count read a stream's
// bundle parts as its segments.
func TestRejoinAndPromoteReadParts(t *testing.T) {
	st, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := bundletest.NewWriter(t, st, "00000000000000d1")
	w.Bundle(t, []string{"app", "web"}, 10)     // app 1..10
	w.Alone(t, "app", 5)                        // 11..15
	_, parts := w.Bundle(t, []string{"app"}, 7) // 16..22

	recs := map[uint64]batch.Record{}
	if err := divergentInStore(t.Context(), st, "app", 1, 12, 1<<20, nil, recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 10 {
		t.Fatalf("divergent records past seq 12: %d, want 10 (13..22, the last 7 in a bundle)", len(recs))
	}
	for seq := uint64(13); seq <= 22; seq++ {
		if !bytes.Equal(recs[seq].Data, bundletest.RecData("app", seq)) {
			t.Fatalf("record %d: %q", seq, recs[seq].Data)
		}
	}

	var p promotion
	cp := receiver.Checkpoint{Generation: 1, LastSeq: 8}
	if err := beyondFork(t.Context(), st, "app", cp, &p); err != nil {
		t.Fatal(err)
	}
	if p.LostSegments != 3 || p.LostRecords != 14 || p.LostBytes < int64(len(parts[0].Data)) {
		t.Fatalf("beyond seq 8: %d segments, %d records, %d bytes; want 3, 14, at least the last part's %d",
			p.LostSegments, p.LostRecords, p.LostBytes, len(parts[0].Data))
	}
}
