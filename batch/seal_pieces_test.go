package batch

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// TestSealPiecesIsSeal: the pieces SealPieces returns are, end to end,
// exactly the segment Seal builds from the same records (several chunks
// and the last one Seal compresses itself), and Hash is that segment's
// hash; nothing of the segment is copied into one slice.
func TestSealPiecesIsSeal(t *testing.T) {
	recs := make([]Record, 60000) // about 5 MiB: two full chunks and a last one
	for i := range recs {
		at := baseTime.Add(time.Duration(i) * time.Millisecond)
		recs[i] = Record{Seq: uint64(i + 1), Time: at,
			Data: fmt.Appendf(nil, "%s host-%03d GET /api/v1/items/%d 200 %dms\n", at.Format(time.RFC3339Nano), i%251, i%997, i%89)}
	}
	build := func() *Builder {
		b := newBuilder(t)
		b.Reset("pieces", 1, ZeroHash)
		for i := range recs {
			if err := b.Add(&recs[i]); err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	b := build()
	want, wantMeta, err := b.Seal(baseTime)
	if err != nil {
		t.Fatal(err)
	}
	b = build()
	pieces, meta, err := b.SealPieces(baseTime)
	if err != nil {
		t.Fatal(err)
	}
	if len(pieces) < 4 {
		t.Fatalf("%d pieces, want the metadata frame and one per chunk (3 chunks)", len(pieces))
	}
	got := bytes.Join(pieces, nil)
	if !bytes.Equal(got, want) {
		t.Fatalf("pieces join to %d bytes that differ from Seal's %d", len(got), len(want))
	}
	if meta.PayloadSHA256 != wantMeta.PayloadSHA256 || meta.Name() != wantMeta.Name() {
		t.Fatalf("meta %+v, Seal's %+v", meta, wantMeta)
	}
	if b.Hash() != Hash(want) {
		t.Fatalf("Hash %s, want the segment's %s", b.Hash(), Hash(want))
	}
	if _, _, err := Decode(got, 0); err != nil {
		t.Fatalf("the joined pieces do not decode: %v", err)
	}
	if _, _, err := b.SealPieces(baseTime); err == nil {
		t.Fatal("a second SealPieces without Reset was accepted")
	}
}
