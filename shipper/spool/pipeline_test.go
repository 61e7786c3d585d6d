package spool

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/batch/batchtest"
)

// TestSealPipelineKeepsOrder appends 24 MiB of records in entries of
// random sizes to a spool with 5 MiB segments: each segment is three
// chunks compressed at once on the Builder's workers, and each seal runs
// while the next batch fills. Every record must come out of the sealed
// segments once, in order, with the segments' seq ranges contiguous and
// their hash chain unbroken; after a restart, the records left in the
// journal follow them.
func TestSealPipelineKeepsOrder(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Policy.MaxBytes = 5 << 20
	// Slow seals: the next batch fills, and is handed over, while one is
	// still being written.
	cfg.SyncFile = func(f *os.File) error {
		if strings.Contains(f.Name(), "sealed") {
			time.Sleep(200 * time.Millisecond)
		}
		return f.Sync()
	}
	sp, err := Open(cfg, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(22, 1))
	var want [][]byte
	var size int
	for entry := 0; size < 24<<20; entry++ {
		recs := make([]batch.Record, 1+rng.IntN(3000))
		for i := range recs {
			n := len(want)
			line := fmt.Appendf(nil, "entry %d record %d %s\n", entry, n, bytes.Repeat([]byte{'a' + byte(n%26)}, rng.IntN(1200)))
			recs[i].Data = line
			want = append(want, line)
			size += recs[i].FramedSize()
		}
		if _, err := sp.Append(context.Background(), recs, fmt.Appendf(nil, "%d", entry)); err != nil {
			t.Fatal(err)
		}
	}
	if err := sp.Close(); err != nil { // the open batch stays in the journal
		t.Fatal(err)
	}
	sealedBefore := len(sealedFiles(t, cfg.Dir))
	if sealedBefore < 4 {
		t.Fatalf("%d segments sealed before the restart, want at least 4 to overlap seals", sealedBefore)
	}
	sp = openSpool(t, cfg) // recovery seals what the journal holds
	if got := sp.Stats().LastSeq; got != uint64(len(want)) {
		t.Fatalf("recovered through seq %d, appended %d", got, len(want))
	}
	segs := sealedFiles(t, cfg.Dir)
	for _, s := range segs[:len(segs)-1] {
		if s.Meta.UncompressedSize <= 2*batch.ChunkSize {
			t.Errorf("segment %s of %d bytes has fewer than three chunks", s.Name, s.Meta.UncompressedSize)
		}
	}
	got := batchtest.CheckChain(t, segs, 0, batch.ZeroHash)
	if len(got) != len(want) {
		t.Fatalf("the sealed segments hold %d records, %d were appended", len(got), len(want))
	}
	for i := range got {
		if got[i].Seq != uint64(i+1) || !bytes.Equal(got[i].Data, want[i]) {
			t.Fatalf("record %d: seq %d data %.40q, want seq %d data %.40q", i, got[i].Seq, got[i].Data, i+1, want[i])
		}
	}
	t.Logf("%d records in %d segments (%d sealed before the restart)", len(got), len(segs), sealedBefore)
}
