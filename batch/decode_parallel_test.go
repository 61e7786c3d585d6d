package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// decodeInto is Decode by way of DecompressInto and ParseRecords.
func decodeInto(data []byte, limit int64, workers int, raw []byte, into Records) (*Segment, []Record, error) {
	s, err := Open(data)
	if err != nil {
		return nil, nil, err
	}
	raw, err = s.DecompressInto(raw, limit, workers)
	if err != nil {
		return s, nil, err
	}
	recs, err := s.ParseRecords(raw, into)
	if err != nil {
		return s, nil, err
	}
	return s, all(recs), nil
}

// bigRecords returns records of about size framed bytes in all, each
// carrying a few KiB of data that compresses like text.
func bigRecords(first uint64, size int) []Record {
	var recs []Record
	for n, seq := 0, first; n < size; seq++ {
		line := fmt.Appendf(nil, "seq=%d %s\n", seq, strings.Repeat(fmt.Sprintf("field%d=%x ", seq%13, seq*2654435761), 200))
		r := Record{Seq: seq, Time: baseTime, Data: line}
		n += r.FramedSize()
		recs = append(recs, r)
	}
	return recs
}

func TestSplitFramesOfBuilderSegment(t *testing.T) {
	recs := bigRecords(1, 5*ChunkSize+ChunkSize/2)
	seg, m := build(t, newBuilder(t), "app", 1, ZeroHash, recs, baseTime)
	s, err := Open(seg)
	if err != nil {
		t.Fatal(err)
	}
	frames, total, ok := splitFrames(s.Payload)
	if !ok || total != m.UncompressedSize || len(frames) != 6 {
		t.Fatalf("splitFrames: ok=%v, %d frames declaring %d bytes; want 6 frames declaring %d", ok, len(frames), total, m.UncompressedSize)
	}
	if frames[0].in != 0 || frames[len(frames)-1].end != len(s.Payload) {
		t.Fatalf("frames cover payload bytes %d..%d of %d", frames[0].in, frames[len(frames)-1].end, len(s.Payload))
	}
	for i := 1; i < len(frames); i++ {
		if frames[i].in != frames[i-1].end || frames[i].at != frames[i-1].at+frames[i-1].size {
			t.Fatalf("frame %d does not follow frame %d: %+v after %+v", i, i-1, frames[i], frames[i-1])
		}
	}
}

// DecompressInto and ParseRecords give what Decompress and Records give,
// for any number of workers and any buffer handed in.
func TestDecompressIntoMatchesDecompress(t *testing.T) {
	multi, _ := build(t, newBuilder(t), "app", 1, ZeroHash, bigRecords(1, 3*ChunkSize+500), baseTime)
	small, _ := build(t, newBuilder(t), "app", 1, ZeroHash, makeRecords(1, 300), baseTime)
	recs := makeRecords(1, 300)
	skippable := forge(t, honestMeta(recs), slices.Concat(
		[]byte{0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'a', 'b', 'c'},
		fuzzEncoder.EncodeAll(frames(recs[:100]), nil),
		[]byte{0x5f, 0x2a, 0x4d, 0x18, 0, 0, 0, 0},
		fuzzEncoder.EncodeAll(frames(recs[100:]), nil)))
	streamed := forge(t, honestMeta(makeRecords(1, 300)), compress(t, frames(makeRecords(1, 300)))) // no content size
	for name, seg := range map[string][]byte{"multi-frame": multi, "one frame": small, "skippable frames": skippable, "no content size": streamed} {
		t.Run(name, func(t *testing.T) {
			s, err := Open(seg)
			if err != nil {
				t.Fatal(err)
			}
			want, err := s.Decompress(0)
			if err != nil {
				t.Fatal(err)
			}
			wantRecs, err := s.Records(0)
			if err != nil {
				t.Fatal(err)
			}
			for _, workers := range []int{0, 1, 2, 3, 16} {
				for _, dst := range [][]byte{nil, make([]byte, 10), make([]byte, 0, len(want)), make([]byte, 5, 2*len(want))} {
					got, err := s.DecompressInto(dst, 0, workers)
					if err != nil {
						t.Fatalf("%d workers, cap %d: %v", workers, cap(dst), err)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("%d workers, cap %d: %d bytes differ from Decompress's %d", workers, cap(dst), len(got), len(want))
					}
					if cap(dst) >= len(want) && &got[0] != &dst[:1][0] {
						t.Fatalf("%d workers: a buffer of capacity %d was not reused for %d bytes", workers, cap(dst), len(want))
					}
					recs, err := s.ParseRecords(got, RecordsOf(makeRecords(1, 2)))
					if err != nil {
						t.Fatal(err)
					}
					checkRecords(t, all(recs), all(wantRecs))
				}
			}
		})
	}
}

// A buffer too small for the claim is replaced once by one that holds the
// claim (and an eighth of slack), never grown step by step past it.
func TestDecompressIntoGrowsOnce(t *testing.T) {
	recs := bigRecords(1, 5*ChunkSize)
	seg, m := build(t, newBuilder(t), "app", 1, ZeroHash, recs, baseTime)
	s, err := Open(seg)
	if err != nil {
		t.Fatal(err)
	}
	claim := m.UncompressedSize
	for _, dst := range [][]byte{nil, make([]byte, 0, 3*ChunkSize), make([]byte, 0, claim)} {
		for _, workers := range []int{1, 2} {
			var got []byte
			n := allocated(func() { got, err = s.DecompressInto(dst, 0, workers) })
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case int64(cap(dst)) >= claim && &got[0] != &dst[:1][0]:
				t.Fatalf("a buffer of %d bytes was not reused for a claim of %d", cap(dst), claim)
			case int64(cap(dst)) < claim && int64(cap(got)) != withSlack(claim):
				t.Fatalf("buffer of %d bytes for a claim of %d, want %d", cap(got), claim, withSlack(claim))
			case n > uint64(withSlack(claim))+4<<20: // and the decoders' state
				t.Fatalf("allocated %d bytes for a claim of %d", n, claim)
			}
			rs, err := s.ParseRecords(got, Records{})
			if err != nil {
				t.Fatal(err)
			}
			checkRecords(t, all(rs), recs)
		}
	}
}

// forgedFrame is a frame declaring a content size of fcs bytes and a 1 MiB
// window that holds a single raw byte.
func forgedFrame(fcs uint32) []byte {
	p := binary.LittleEndian.AppendUint32(nil, zstdMagic)
	p = append(p, 0x80, 0x50) // 4-byte content size, not single segment; window 2^(10+10)
	p = binary.LittleEndian.AppendUint32(p, fcs)
	return append(p, 0x09, 0, 0, 'x') // last block, raw, 1 byte
}

// Sizes declared in frame headers are not trusted for allocation any more
// than the metadata's claim is, and the claim is allocated only when it is
// within the limit.
func TestDecompressIntoBoundsMemory(t *testing.T) {
	const limit = 64 << 20
	rec := makeRecords(1, 1)
	for _, tc := range []struct {
		name    string
		payload []byte
		claim   int64
	}{
		{"frames declaring 1 GiB", bytes.Repeat(forgedFrame(30<<20), 35), 35 * 30 << 20},
		{"frame declaring too much for its slot", slices.Concat(fuzzEncoder.EncodeAll(bytes.Repeat([]byte("a"), 5000), nil), forgedFrame(1<<20)), 5000 + 1<<20},
		{"tiny payload claiming 1 GiB", fuzzEncoder.EncodeAll(frames(rec), nil), 1 << 30},
		{"tiny payload claiming 48 MiB", fuzzEncoder.EncodeAll(frames(rec), nil), 48 << 20},
		{"frames declaring 2 MiB each, claiming 60 MiB", bytes.Repeat(forgedFrame(2<<20), 30), 60 << 20},
		{"bomb claiming 1 KiB", zeroBomb(t, 100<<20, zstd.WithWindowSize(MaxWindowSize)), 1 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := honestMeta(rec)
			m.UncompressedSize = tc.claim
			seg := forge(t, m, tc.payload)
			var err error
			n := allocated(func() { _, _, err = decodeInto(seg, limit, 4, nil, Records{}) })
			var most int64 // the claim, once, if it is within the limit
			switch {
			case tc.claim > limit && errors.Is(err, ErrSegmentTooLarge):
			case tc.claim <= limit && errors.Is(err, ErrCorrupt):
				most = withSlack(tc.claim)
			default:
				t.Fatalf("err = %v, want ErrCorrupt, or ErrSegmentTooLarge for a claim over %d", err, limit)
			}
			// Plus the decoders' state: the race detector makes sync.Pool
			// drop pooled decoders, so new ones are counted too.
			if n > uint64(most)+36<<20 {
				t.Fatalf("allocated %d MiB", n>>20)
			}
			t.Logf("%v; allocated %.1f MiB", err, float64(n)/(1<<20))
		})
	}
	// A frame window over MaxWindowSize is refused in the parallel path too.
	narrow, err := zstd.NewWriter(nil, zstd.WithSingleSegment(false), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer narrow.Close()
	recs := makeRecords(1, 500)
	wide := narrow.EncodeAll(frames(recs[10:]), nil)
	if wide[4]&0x20 != 0 {
		t.Fatal("EncodeAll wrote a single-segment frame: no window descriptor to forge")
	}
	wide[5] = 14 << 3 // window 2^(10+14) = 16 MiB
	payload := slices.Concat(fuzzEncoder.EncodeAll(frames(recs[:10]), nil), wide)
	if _, _, ok := splitFrames(payload); !ok {
		t.Fatal("splitFrames refuses the payload; the parallel path is not tested")
	}
	_, _, err = decodeInto(forge(t, honestMeta(recs), payload), 0, 4, nil, Records{})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "window") {
		t.Fatalf("window over the limit: err = %v", err)
	}
	if _, _, err := Decode(forge(t, honestMeta(recs), payload), 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Decode of the same: err = %v", err)
	}
}

func BenchmarkDecodeInto(b *testing.B) {
	recs := logRecords(16 << 20)
	seg, m := build(b, newBuilder(b), "app", 1, ZeroHash, recs, baseTime)
	b.Run("Decode", func(b *testing.B) {
		b.SetBytes(m.UncompressedSize)
		for b.Loop() {
			if _, _, err := Decode(seg, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, workers := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.SetBytes(m.UncompressedSize)
			var raw []byte
			var got Records
			for b.Loop() {
				s, err := Open(seg)
				if err != nil {
					b.Fatal(err)
				}
				if raw, err = s.DecompressInto(raw, 0, workers); err != nil {
					b.Fatal(err)
				}
				if got, err = s.ParseRecords(raw, got); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// FuzzDecodeInto holds the parallel path to Decode's verdict on payloads
// whose checksum is right: splitFrames walks headers of untrusted input and
// must never panic, and the two decoders must agree.
func FuzzDecodeInto(f *testing.F) {
	recs := goldenRecords()
	f.Add(fuzzEncoder.EncodeAll(frames(recs), nil), int64(-1))
	f.Add(slices.Concat(fuzzEncoder.EncodeAll(frames(recs[:2]), nil), fuzzEncoder.EncodeAll(frames(recs[2:]), nil)), int64(-1))
	f.Add(slices.Concat(forgedFrame(100), forgedFrame(1<<20)), int64(1<<20+100))
	f.Add([]byte{0x50, 0x2a, 0x4d, 0x18, 1, 0, 0, 0, 0}, int64(0))
	f.Fuzz(func(t *testing.T, payload []byte, claim int64) {
		m := honestMeta(recs)
		if claim >= 0 {
			m.UncompressedSize = claim
		}
		seg := forge(t, m, payload)
		_, want, werr := Decode(seg, 64<<20)
		_, got, err := decodeInto(seg, 64<<20, 3, nil, Records{})
		if (werr == nil) != (err == nil) || (err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSegmentTooLarge)) {
			t.Fatalf("Decode says %v, decodeInto says %v", werr, err)
		}
		if err == nil {
			checkRecords(t, got, all(want))
		}
	})
}
