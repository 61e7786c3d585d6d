package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// FuzzDecode feeds arbitrary bytes to Decode. It must never panic, and
// every outcome must be one a caller can act on: records that survive a
// rebuild unchanged, ErrCorrupt, or one of the two deliberate non-corrupt
// refusals (a newer format, an encrypted payload).
func FuzzDecode(f *testing.F) {
	for _, golden := range goldenSegs(f) {
		f.Add(golden)
		f.Add(golden[:len(golden)/2])
		f.Add(golden[:20])
	}
	f.Add([]byte{})
	f.Add([]byte("garbage that is not a segment at all\x00\xff"))
	f.Add(compress(f, []byte("plain zstd")))
	recs := makeRecords(1, 40)
	m := honestMeta(recs)
	f.Add(forge(f, m, compress(f, frames(recs))))
	f.Add(forge(f, honestMeta2(recs), compress(f, frames2(recs))))
	m.Format = FormatVersion + 1
	f.Add(forge(f, m, compress(f, frames(recs))))
	m.Format, m.Encryption = 1, "age"
	f.Add(forge(f, m, []byte("ciphertext")))
	for _, seg := range hostileSegments(f) {
		f.Add(seg)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		s, rs, err := Decode(data, 64<<20)
		got := all(rs)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSegmentTooLarge) && !isNewerFormat(err) && !isEncrypted(err) {
				t.Fatalf("error is neither ErrCorrupt nor ErrSegmentTooLarge nor a newer-format or encrypted refusal: %v", err)
			}
			if got != nil {
				t.Fatalf("%d records returned with error %v", len(got), err)
			}
			return
		}
		if s == nil {
			t.Fatal("records without a segment")
		}
		if uint64(len(got)) != s.Meta.Records {
			t.Fatalf("decoded %d records, metadata says %d", len(got), s.Meta.Records)
		}
		if size := int64(len(framesOf(s.Meta.Format, got))); size != s.Meta.UncompressedSize {
			t.Fatalf("records frame to %d bytes, metadata says %d", size, s.Meta.UncompressedSize)
		}

		// Whatever Decode accepts, a Builder must reproduce.
		b, err := NewBuilder(Fastest)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.SetFormat(s.Meta.Format); err != nil {
			t.Fatal(err)
		}
		b.Reset(s.Meta.Stream, s.Meta.Generation, s.Meta.PrevSHA256)
		for i := range got {
			if err := b.Add(&got[i]); err != nil {
				t.Fatalf("rebuild: add record %d: %v", got[i].Seq, err)
			}
		}
		sealedAt := s.Meta.SealedAt
		if y := sealedAt.UTC().Year(); y < 0 || y > 9999 {
			sealedAt = sealedAt.AddDate(-y+2000, 0, 0) // JSON times have four-digit years
		}
		seg, _, err := b.Seal(sealedAt)
		if err != nil {
			t.Fatalf("rebuild: seal: %v", err)
		}
		_, again, err := Decode(seg, 64<<20)
		checkRecords(t, all(again), got)
		if err != nil {
			t.Fatalf("rebuilt segment: %v", err)
		}
	})
}

// FuzzParseFrame checks that ParseFrame never panics, refuses with
// ErrCorrupt, and that whatever it accepts re-frames to the same bytes.
func FuzzParseFrame(f *testing.F) {
	for _, r := range goldenRecords() {
		f.Add(AppendFrame(nil, &r))
	}
	f.Add(frames(goldenRecords()))
	f.Add(frames2(goldenRecordsOf(2)))
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 19})
	f.Add(append([]byte{0, 0, 0, 19}, make([]byte, 19)...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := ParseFrame(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || n != 0 {
				t.Fatalf("n=%d err=%v, want 0 and ErrCorrupt", n, err)
			}
			return
		}
		if n < RecordOverhead || n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		if n != r.FramedSize() {
			t.Fatalf("consumed %d, FramedSize %d", n, r.FramedSize())
		}
		if err := r.CheckSize(MaxFramedRecord); err != nil {
			t.Fatalf("parsed record fails CheckSize: %v", err)
		}
		if re := AppendFrame(nil, &r); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-framed\n% x\nwant\n% x", re, b[:n])
		}
	})
}

var fuzzEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))

// FuzzForged reaches what FuzzDecode mostly cannot: a mutated payload
// fails payload_sha256 long before the decompressor or the record checks
// see it. Here the payload checksum is always right, as in a segment forged
// by someone who can write to the store. With raw set, the input is a
// record stream and is compressed first; otherwise it is the payload.
func FuzzForged(f *testing.F) {
	recs := goldenRecords()
	f.Add(frames(recs), uint64(1), uint16(4), int64(-1), true)
	f.Add(compress(f, frames(recs)), uint64(1), uint16(4), int64(152), false)
	f.Add(frames(recs[:2]), uint64(1), uint16(3), int64(-1), true)
	f.Add(zeroBomb(f, 1<<20), uint64(1), uint16(1), int64(1024), false)
	f.Fuzz(func(t *testing.T, in []byte, first uint64, n uint16, claim int64, raw bool) {
		payload := in
		if raw {
			payload = fuzzEncoder.EncodeAll(in, nil)
			if claim < 0 {
				claim = int64(len(in))
			}
		}
		m := Meta{
			Format: 1, Stream: "f", FirstSeq: first, LastSeq: first + uint64(n) - 1, Records: uint64(n),
			MinTime: time.Unix(0, math.MinInt64).UTC(), MaxTime: time.Unix(0, math.MaxInt64).UTC(),
			UncompressedSize: claim, Compression: "zstd", Encryption: "none", PrevSHA256: ZeroHash,
		}
		_, rs, err := Decode(forge(t, m, payload), 64<<20)
		got := all(rs)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !(errors.Is(err, ErrSegmentTooLarge) && claim > 64<<20) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		if len(got) != int(n) || got[0].Seq != first {
			t.Fatalf("%d records from %d, metadata says %d from %d", len(got), got[0].Seq, n, first)
		}
		if raw && !bytes.Equal(frames(got), in) {
			t.Fatal("records re-frame to a different stream")
		}
	})
}

// hostileSegments are the segments a writer ignoring every limit can make
// (issue 18): a bomb, 2 GiB of zeros in a few KiB of RLE blocks claiming
// what it holds, the same bomb claiming 1 KiB, and a flood of one-byte
// records (200,000 here; the e2e test takes 5 M through the binary).
func hostileSegments(t testing.TB) [][]byte {
	var out [][]byte
	bomb := rleBomb(2 << 30)
	for _, claim := range []int64{2 << 30, 1 << 10} {
		m := honestMeta(makeRecords(1, 1000))
		m.UncompressedSize = claim
		out = append(out, forge(t, m, bomb))
	}
	flood := make([]Record, 200_000)
	for i := range flood {
		flood[i] = Record{Seq: uint64(i + 1), Time: baseTime, Data: []byte{'a' + byte(i%26)}}
	}
	seg, _ := build(t, newBuilder(t), "flood", 1, ZeroHash, flood, baseTime)
	return append(out, seg)
}

// rleBomb is a zstd frame of RLE blocks decompressing to n zeros.
func rleBomb(n int64) []byte {
	const block = 128 << 10
	p := binary.LittleEndian.AppendUint32(nil, zstdMagic)
	p = append(p, 0x00, 0x50) // no content size or checksum; window 1 MiB
	for left := n; left > 0; left -= block {
		h := uint32(min(left, block))<<3 | 1<<1
		if left <= block {
			h |= 1
		}
		p = append(p, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return p
}

// Scan and Decode agree on every segment: the same records, the same
// verdict (a damaged segment's records before the damage may have been
// scanned); Scan of a hostile segment is refused or bounded like Decode.
func FuzzScan(f *testing.F) {
	for _, golden := range goldenSegs(f) {
		f.Add(golden)
		f.Add(golden[:len(golden)-3])
	}
	recs := makeRecords(1, 40)
	f.Add(forge(f, honestMeta(recs), compress(f, frames(recs))))
	big := bigRecords(1, 300<<10) // records over Scan's 256 KiB buffer
	f.Add(forge(f, honestMeta(big), compress(f, frames(big))))
	for _, seg := range hostileSegments(f) {
		f.Add(seg)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 64 << 20
		s, want, werr := Decode(data, limit)
		if s == nil {
			return // Open refused it: Scan is never reached
		}
		var got []Record
		err := s.Scan(limit, func(r *Record) error {
			c := *r
			c.Key, c.Data = bytes.Clone(r.Key), bytes.Clone(r.Data)
			got = append(got, c)
			return nil
		})
		if (err == nil) != (werr == nil) || errors.Is(err, ErrCorrupt) != errors.Is(werr, ErrCorrupt) ||
			errors.Is(err, ErrSegmentTooLarge) != errors.Is(werr, ErrSegmentTooLarge) {
			t.Fatalf("Scan says %v, Decode says %v", err, werr)
		}
		if err == nil {
			checkRecords(t, got, all(want))
		}
	})
}
