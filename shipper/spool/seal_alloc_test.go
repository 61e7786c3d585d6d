package spool

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
)

// TestSealWritesFromBuilderBuffers: a seal writes the segment from the
// Builder's compressed chunks (batch.Builder.SealPieces) and allocates far
// less than the segment: assembling each segment into one fresh slice was
// 60% of what ferry ship allocated, and under its memory limit that fresh
// memory cost garbage collections and the kernel's first touch of every
// page. The segment file is still exactly the segment.
func TestSealWritesFromBuilderBuffers(t *testing.T) {
	cfg := spoolConfig(t)
	sp := openSpool(t, cfg)
	batchOf := func(round int) []batch.Record {
		recs := make([]batch.Record, 50000) // about 4 MiB: two chunks and a last one
		at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
		for i := range recs {
			recs[i] = batch.Record{Time: at.Add(time.Duration(i) * time.Millisecond),
				Data: fmt.Appendf(nil, "round=%d host-%03d GET /api/v1/items/%d 200 %dms\n", round, i%251, i%997, i%89)}
		}
		return recs
	}
	// The first seal fills the chunk-buffer pools; the second is measured.
	appendRecs(t, sp, batchOf(1), "")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	appendRecs(t, sp, batchOf(2), "")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	segs := sealedFiles(t, cfg.Dir)
	if len(segs) != 2 || len(segs[1].Records) != 50000 {
		t.Fatalf("sealed %d segments, want 2 of 50000 records", len(segs))
	}
	size := sp.Pending(0)[1].Size
	if alloc := int64(after.TotalAlloc - before.TotalAlloc); alloc > size/4 {
		t.Fatalf("sealing a %d-byte segment allocated %d bytes, want under a quarter of it: the segment is written from the Builder's buffers", size, alloc)
	}
}
