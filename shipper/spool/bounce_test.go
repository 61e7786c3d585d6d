package spool

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ferry-dr/ferry/batch"
)

// TestSealWritesThroughBounceBuffer: a sealed segment in freshly
// allocated memory (here an encrypted one: its ciphertext is new every
// seal) reaches its file in pieces of at most 256 KiB copied into a
// reused buffer, never as its own fresh memory in one write (the
// kernel's first touch of fresh pages made the segment write cost 0.33 s
// per GiB shipped: fsutil.WriteBounced), and the file holds the segment
// whole. A plaintext segment's compressed chunks are buffers the Builder
// reuses, written as they are (TestSealWritesFromBuilderBuffers).
func TestSealWritesThroughBounceBuffer(t *testing.T) {
	cfg := spoolConfig(t)
	cfg.Encrypter, _ = testEncrypter(t)
	var mu sync.Mutex
	var sealedWrites []int
	cfg.WriteFile = func(f *os.File, b []byte) (int, error) {
		if filepath.Base(filepath.Dir(f.Name())) == "sealed" {
			mu.Lock()
			sealedWrites = append(sealedWrites, len(b))
			mu.Unlock()
		}
		return f.Write(b)
	}
	sp := openSpool(t, cfg)
	// 1 MiB of incompressible records: a segment of about 1 MiB.
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]batch.Record, 64)
	for i := range recs {
		d := make([]byte, 16<<10)
		for j := range d {
			d[j] = byte(rng.Uint32())
		}
		recs[i].Data = d
	}
	appendRecs(t, sp, recs, "")
	if err := sp.Seal("test"); err != nil {
		t.Fatal(err)
	}
	pending := sp.Pending(0)
	if len(pending) != 1 || pending[0].LastSeq != uint64(len(recs)) {
		t.Fatalf("sealed %v, want one segment of %d records", pending, len(recs))
	}
	data, err := os.ReadFile(filepath.Join(cfg.Dir, "sealed", pending[0].Name))
	if err != nil {
		t.Fatal(err)
	}
	if seg, err := batch.Open(data); err != nil || !seg.Meta.Encrypted() {
		t.Fatalf("the segment file does not open as an encrypted segment: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, n := range sealedWrites {
		if n > 256<<10 {
			t.Fatalf("a write of %d bytes to the segment file: want pieces of at most 256 KiB through the bounce buffer (writes: %v)", n, sealedWrites)
		}
		total += n
	}
	if total != len(data) || total < 1<<20 || len(sealedWrites) < 4 {
		t.Fatalf("%d bytes in %d writes to the segment file, want the whole ~1 MiB segment in pieces", total, len(sealedWrites))
	}
}
