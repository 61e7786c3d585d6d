package batch

import (
	"bytes"
	"fmt"
	"testing"
	"time"
	"unsafe"
)

// quietRecords are n records of a quiet stream from seq on: log lines of
// about 80 bytes.
func quietRecords(seq uint64, n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		at := baseTime.Add(time.Duration(i) * 10 * time.Millisecond)
		recs[i] = Record{Seq: seq + uint64(i), Time: at,
			Data: fmt.Appendf(nil, "%s %08d GET /api/v1/items/%d 200\n", at.Format(time.RFC3339Nano), seq+uint64(i), i%997)}
	}
	return recs
}

// buildInto resets b and builds recs into it, sealed at baseTime.
func buildInto(t *testing.T, b *Builder, recs []Record) []byte {
	t.Helper()
	b.Reset("quiet", 1, ZeroHash)
	for i := range recs {
		if err := b.Add(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	data, _, err := b.Seal(baseTime)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestQuietBuilderKeepsItsBuffer: a stream whose segments stay small
// (one of many quiet streams, issue 23) builds its next segment in the
// chunk buffer its last one used: adding the same number of records
// again allocates nothing. Growing it from 4 KiB for every segment was
// 16% of a 100-part bundle's CPU.
func TestQuietBuilderKeepsItsBuffer(t *testing.T) {
	b := newBuilder(t)
	buildInto(t, b, quietRecords(1, 200))
	if b.raw == nil || cap(*b.raw) == 0 {
		t.Fatal("a sealed 200-record segment left the Builder no buffer")
	}
	kept := unsafe.SliceData(*b.raw)
	next := quietRecords(201, 200)
	b.Reset("quiet", 1, ZeroHash)
	for i := range next {
		if err := b.Add(&next[i]); err != nil {
			t.Fatal(err)
		}
	}
	if unsafe.SliceData(*b.raw) != kept {
		t.Fatalf("the next segment's 200 records went into a new %d-byte buffer, not the one kept from the last segment", cap(*b.raw))
	}
	if _, _, err := b.Seal(baseTime); err != nil {
		t.Fatal(err)
	}
}

// TestQuietBuilderStartsAtLastSize: the first buffer of a segment is made
// for what the last one needed, not grown to it by doubling.
func TestQuietBuilderStartsAtLastSize(t *testing.T) {
	b := newBuilder(t)
	buildInto(t, b, quietRecords(1, 400)) // about 32 KiB framed
	need := int(b.meta.UncompressedSize)  // one chunk: its raw bytes
	b.Reset("quiet", 1, ZeroHash)
	b.raw = nil // as if the buffer had been given up
	r := quietRecords(401, 1)[0]
	if err := b.Add(&r); err != nil {
		t.Fatal(err)
	}
	if cap(*b.raw) < need {
		t.Fatalf("the first record of a segment went into a %d-byte buffer; the last segment needed %d", cap(*b.raw), need)
	}
}

// TestBuilderBufferBounded: what a Builder keeps between segments is
// bounded: a quiet segment after a busier one gives up a buffer four
// times what it needed; a segment past smallChunk leaves a full-size
// buffer to the shared pool, not to the Builder; and the segment after
// it starts in a buffer of at most smallChunk (a quiet stream holds no
// full-size buffer until it needs one).
func TestBuilderBufferBounded(t *testing.T) {
	b := newBuilder(t)
	buildInto(t, b, quietRecords(1, 700)) // ~56 KiB
	if b.raw == nil || cap(*b.raw) < 40<<10 {
		t.Fatalf("setup: the segment's buffer is %v", b.raw)
	}
	buildInto(t, b, quietRecords(701, 20)) // ~1.6 KiB: kept until the next Reset
	b.Reset("quiet", 1, ZeroHash)
	if b.raw != nil {
		t.Fatalf("after a 20-record segment the Builder kept a %d-byte buffer", cap(*b.raw))
	}

	buildInto(t, b, quietRecords(1, 3000)) // ~240 KiB: a full-size buffer
	b.Reset("quiet", 1, ZeroHash)
	if b.raw != nil {
		t.Fatalf("after a %d-byte segment the Builder kept a %d-byte buffer instead of giving it back to the pool", 240<<10, cap(*b.raw))
	}
	r := quietRecords(3001, 1)[0]
	if err := b.Add(&r); err != nil {
		t.Fatal(err)
	}
	if cap(*b.raw) > smallChunk {
		t.Fatalf("the first record after a large segment took a %d-byte buffer, want at most %d", cap(*b.raw), smallChunk)
	}
}

// TestSealCompressesLastChunkInPlace: Seal compresses a segment's last
// chunk itself instead of handing it to a goroutine it would only wait
// for; a quiet stream's segment is one small chunk.
func TestSealCompressesLastChunkInPlace(t *testing.T) {
	b := newBuilder(t)
	buildInto(t, b, quietRecords(1, 200))
	if len(b.chunks) != 0 {
		t.Fatalf("Seal of a one-chunk segment submitted %d chunks to compressing goroutines", len(b.chunks))
	}
	if b.raw == nil || len(*b.raw) == 0 {
		t.Fatal("the sealed chunk's buffer left the Builder")
	}
}

// TestReusedBuilderSameBytes: a segment built in a reused Builder (kept
// buffer, after segments of other sizes and a busy one) is byte for byte
// the one a fresh Builder builds.
func TestReusedBuilderSameBytes(t *testing.T) {
	reused := newBuilder(t)
	want := quietRecords(1, 300)
	for _, n := range []int{700, 20, 30000, 300, 5} {
		buildInto(t, reused, quietRecords(1, n))
		got := buildInto(t, reused, want)
		if !bytes.Equal(got, buildInto(t, newBuilder(t), want)) {
			t.Fatalf("after a %d-record segment a reused Builder built different bytes", n)
		}
	}
}
