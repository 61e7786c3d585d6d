package batch

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

var baseTime = time.Date(2025, 6, 7, 8, 9, 10, 123456789, time.UTC)

// makeRecords returns n records first..first+n-1 with assorted keys, ops and
// binary data. Times are not monotonic, so MinTime and MaxTime are not
// simply the first and last record's.
func makeRecords(first uint64, n int) []Record {
	ops := []string{"put", "del", "", "\x00bin\n"}
	recs := make([]Record, n)
	for i := range recs {
		seq := first + uint64(i)
		r := Record{
			Seq:  seq,
			Time: baseTime.Add(time.Duration(i) * time.Millisecond),
			Op:   ops[i%len(ops)],
		}
		if i%7 == 3 {
			r.Time = r.Time.Add(-time.Hour) // a late arrival
		}
		if i%5 != 4 {
			r.Key = fmt.Appendf(nil, "key:%d\x00\n", i%50)
		}
		switch i % 3 {
		case 0:
			r.Data = fmt.Appendf(nil, "level=info seq=%d msg=%q\n", seq, strings.Repeat("x", i%40))
		case 1:
			r.Data = []byte{0, byte(i), '\n', 0, 0xff, byte(i >> 8)}
		}
		recs[i] = r
	}
	return recs
}

// frames is the decompressed record stream of recs in format 1.
func frames(recs []Record) []byte {
	var b []byte
	for i := range recs {
		b = AppendFrame(b, &recs[i])
	}
	return b
}

// frames2 is the decompressed record stream of recs in format 2.
func frames2(recs []Record) []byte { return AppendStream(nil, 2, recs) }

// framesOf is the record stream of recs in format f.
func framesOf(f int, recs []Record) []byte { return AppendStream(nil, f, recs) }

// goldenSegs is the golden segment of every format, for fuzz seeds.
func goldenSegs(t testing.TB) [][]byte {
	var segs [][]byte
	for _, f := range goldenFormats {
		seg, err := os.ReadFile(goldenSeg(f))
		if err != nil {
			t.Fatal(err)
		}
		segs = append(segs, seg)
	}
	return segs
}

func newBuilder(t testing.TB) *Builder {
	t.Helper()
	b, err := NewBuilder(Fastest)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func build(t testing.TB, b *Builder, stream string, gen uint32, prev string, recs []Record, sealedAt time.Time) ([]byte, Meta) {
	t.Helper()
	b.Reset(stream, gen, prev)
	for i := range recs {
		if err := b.Add(&recs[i]); err != nil {
			t.Fatalf("add record %d: %v", recs[i].Seq, err)
		}
	}
	seg, m, err := b.Seal(sealedAt)
	if err != nil {
		t.Fatal(err)
	}
	return seg, m
}

// all is every record of rs, parsed.
func all(rs Records) []Record {
	var out []Record
	for _, r := range rs.All() {
		out = append(out, r)
	}
	return out
}

func checkRecords(t testing.TB, got, want []Record) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if d := sameRecord(got[i], want[i]); d != "" {
			t.Fatalf("record %d: %s", i, d)
		}
	}
}

// honestMeta is the metadata a Builder would write for recs (minus the
// payload fields, which forge fills in).
func honestMeta(recs []Record) Meta {
	m := Meta{
		Format: 1, Stream: "app", Generation: 1, // frames is format 1
		FirstSeq: recs[0].Seq, LastSeq: recs[len(recs)-1].Seq, Records: uint64(len(recs)),
		MinTime: recs[0].Time.UTC(), MaxTime: recs[0].Time.UTC(),
		UncompressedSize: int64(len(frames(recs))),
		Compression:      "zstd", Encryption: "none",
		PrevSHA256: ZeroHash, SealedAt: baseTime,
	}
	for _, r := range recs {
		if r.Time.Before(m.MinTime) {
			m.MinTime = r.Time.UTC()
		}
		if r.Time.After(m.MaxTime) {
			m.MaxTime = r.Time.UTC()
		}
	}
	return m
}

// honestMeta2 is honestMeta for a format-2 record stream (frames2).
func honestMeta2(recs []Record) Meta {
	m := honestMeta(recs)
	m.Format = 2
	m.UncompressedSize = int64(len(frames2(recs)))
	return m
}

// compress wraps raw in a zstd frame the way an arbitrary writer might.
func compress(t testing.TB, raw []byte, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// forge assembles a segment from m and payload with a payload size and
// checksum that match, so only the cross-checks stand between it and the
// caller.
func forge(t testing.TB, m Meta, payload []byte) []byte {
	t.Helper()
	sum := sha256.Sum256(payload)
	m.PayloadSHA256 = hex.EncodeToString(sum[:])
	m.PayloadSize = int64(len(payload))
	seg, _, err := Assemble(m, payload)
	if err != nil {
		t.Fatal(err)
	}
	return seg
}

// rewrapMeta replaces the metadata JSON of seg with edit(json), fixing the
// frame size.
func rewrapMeta(t testing.TB, seg []byte, edit func(string) string) []byte {
	t.Helper()
	_, off, err := ParseMeta(seg)
	if err != nil {
		t.Fatal(err)
	}
	js := edit(string(seg[16:off]))
	out := binary.LittleEndian.AppendUint32(nil, MetaFrameMagic)
	out = binary.LittleEndian.AppendUint32(out, uint32(8+len(js)))
	out = append(out, "FERRYSEG"...)
	out = append(out, js...)
	return append(out, seg[off:]...)
}

func metaJSON(t testing.TB, m Meta) string {
	t.Helper()
	js, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(js)
}

func isNewerFormat(err error) bool {
	return err != nil && !errors.Is(err, ErrCorrupt) &&
		strings.Contains(err.Error(), "is newer than this ferry reads") &&
		strings.Contains(err.Error(), "upgrade ferry")
}

func isEncrypted(err error) bool {
	if err == nil || errors.Is(err, ErrCorrupt) {
		return false
	}
	return errors.Is(err, ErrNoKey) || strings.Contains(err.Error(), "payload is encrypted") &&
		strings.Contains(err.Error(), "cannot decrypt")
}

func TestBuilderRoundTrip(t *testing.T) {
	recs := makeRecords(1000, 3000)
	b := newBuilder(t)
	b.Reset("orders", 7, ZeroHash)
	for i := range recs {
		if err := b.Add(&recs[i]); err != nil {
			t.Fatal(err)
		}
		if b.Records() != i+1 || b.FirstSeq() != 1000 || b.LastSeq() != recs[i].Seq {
			t.Fatalf("after %d adds: Records=%d FirstSeq=%d LastSeq=%d", i+1, b.Records(), b.FirstSeq(), b.LastSeq())
		}
	}
	raw := frames2(recs)
	if want := len(frames(recs)); b.Size() != int64(want) {
		t.Fatalf("Size = %d, want %d (the records' FramedSize)", b.Size(), want)
	}
	sealedAt := time.Date(2025, 6, 7, 9, 0, 0, 5, time.FixedZone("CEST", 2*3600))
	seg, m, err := b.Seal(sealedAt)
	if err != nil {
		t.Fatal(err)
	}

	_, off, err := ParseMeta(seg)
	if err != nil {
		t.Fatal(err)
	}
	payload := seg[off:]
	sum := sha256.Sum256(payload)
	want := Meta{
		Format: 2, Stream: "orders", Generation: 7,
		FirstSeq: 1000, LastSeq: 3999, Records: 3000,
		MinTime: baseTime.Add(-time.Hour + 3*time.Millisecond), MaxTime: baseTime.Add(2998 * time.Millisecond), // 2999 is late
		UncompressedSize: int64(len(raw)), PayloadSize: int64(len(payload)),
		Compression: "zstd", Encryption: "none",
		PayloadSHA256: hex.EncodeToString(sum[:]), PrevSHA256: ZeroHash,
		SealedAt: sealedAt.UTC(),
	}
	if got, w := metaJSON(t, m), metaJSON(t, want); got != w {
		t.Fatalf("Seal meta\n got %s\nwant %s", got, w)
	}
	if m.SealedAt.Location() != time.UTC {
		t.Errorf("SealedAt in %v, want UTC", m.SealedAt.Location())
	}
	if m.Name() != "00000007-00000000000003e8-0000000000000f9f.seg.zst" {
		t.Errorf("Name = %s", m.Name())
	}
	if m.PayloadSize >= m.UncompressedSize {
		t.Errorf("payload %d bytes is not smaller than %d uncompressed", m.PayloadSize, m.UncompressedSize)
	}

	s, rs, err := Decode(seg, 0)
	got := all(rs)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, got, recs)
	if metaJSON(t, s.Meta) != metaJSON(t, want) {
		t.Fatalf("decoded meta\n got %s\nwant %s", metaJSON(t, s.Meta), metaJSON(t, want))
	}
	if s.Hash != Hash(seg) {
		t.Errorf("Segment.Hash %s != Hash(seg) %s", s.Hash, Hash(seg))
	}
	if !bytes.Equal(s.Payload, payload) {
		t.Error("Segment.Payload is not the bytes after the metadata frame")
	}
	dec, err := s.Decompress(0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dec, raw) {
		t.Fatal("Decompress is not the concatenated frames")
	}
}

func TestBuilderLevels(t *testing.T) {
	recs := makeRecords(1, 500)
	for _, l := range []Level{"", Fastest, Default, Better, Best} {
		b, err := NewBuilder(l)
		if err != nil {
			t.Fatalf("level %q: %v", l, err)
		}
		seg, _ := build(t, b, "s", 0, ZeroHash, recs, baseTime)
		_, rs, err := Decode(seg, 0)
		got := all(rs)
		if err != nil {
			t.Fatalf("level %q: %v", l, err)
		}
		checkRecords(t, got, recs)
	}
	if _, err := NewBuilder("fast"); err == nil || !strings.Contains(err.Error(), `"fast"`) {
		t.Fatalf("unknown level: err = %v", err)
	}
}

func TestBuilderReuse(t *testing.T) {
	b := newBuilder(t)
	recs1 := makeRecords(1, 200)
	seg1, m1 := build(t, b, "a", 1, ZeroHash, recs1, baseTime)
	keep := bytes.Clone(seg1)

	recs2 := makeRecords(201, 50)
	seg2, m2 := build(t, b, "b", 2, Hash(seg1), recs2, baseTime.Add(time.Second))
	if !bytes.Equal(seg1, keep) {
		t.Fatal("reusing the Builder changed an earlier segment's bytes")
	}
	s2, got, err := Decode(seg2, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, all(got), recs2)
	if s2.Meta.Stream != "b" || s2.Meta.Generation != 2 || m2.FirstSeq != 201 || m2.Records != 50 {
		t.Fatalf("second segment meta leaks the first: %+v", s2.Meta)
	}
	if m2.UncompressedSize != int64(len(frames2(recs2))) {
		t.Fatalf("second UncompressedSize %d includes the first segment", m2.UncompressedSize)
	}

	// Same input, same bytes: sealing is deterministic.
	again, m1b := build(t, b, "a", 1, ZeroHash, recs1, baseTime)
	if !bytes.Equal(again, seg1) || metaJSON(t, m1b) != metaJSON(t, m1) {
		t.Fatal("rebuilding the same records produced different bytes")
	}
}

func TestBuilderRefuses(t *testing.T) {
	b := newBuilder(t)
	b.Reset("s", 1, ZeroHash)
	if err := b.Add(&Record{Seq: 0}); err == nil || !strings.Contains(err.Error(), ">= 1") {
		t.Fatalf("seq 0 first: err = %v", err)
	}
	if _, _, err := b.Seal(baseTime); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("seal after only refused adds: err = %v", err)
	}
	if err := b.Add(&Record{Seq: 10, Time: baseTime}); err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{12, 10, 9, 0} {
		err := b.Add(&Record{Seq: seq, Time: baseTime})
		if err == nil || !strings.Contains(err.Error(), "does not follow 10") {
			t.Fatalf("seq %d after 10: err = %v", seq, err)
		}
	}
	for _, tm := range []time.Time{
		time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		if err := b.Add(&Record{Seq: 11, Time: tm}); err == nil || !strings.Contains(err.Error(), "outside the framing's range") {
			t.Fatalf("time %v: err = %v", tm, err)
		}
	}
	// The refusals left the Builder intact.
	if err := b.Add(&Record{Seq: 11, Time: baseTime}); err != nil {
		t.Fatal(err)
	}
	seg, m, err := b.Seal(baseTime)
	if err != nil {
		t.Fatal(err)
	}
	if m.Records != 2 || m.LastSeq != 11 {
		t.Fatalf("meta after refusals: %+v", m)
	}
	if _, got, err := Decode(seg, 0); err != nil || got.Len() != 2 {
		t.Fatalf("decode: %d records, %v", got.Len(), err)
	}

	b.Reset("s", 1, ZeroHash)
	if _, _, err := b.Seal(baseTime); err == nil {
		t.Fatal("sealed an empty segment")
	}
}

// SetPrev after Reset("") gives the bytes Reset(prev) gives, even with
// chunks compressed before the predecessor was known; a Builder whose
// predecessor was never set refuses to seal.
func TestBuilderSetPrev(t *testing.T) {
	recs := makeRecords(1, 20000) // several chunks
	prev := Hash([]byte("predecessor"))
	want, wantMeta := build(t, newBuilder(t), "a", 1, prev, recs, baseTime)

	b := newBuilder(t)
	b.Reset("a", 1, "")
	for i := range recs {
		if err := b.Add(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := b.Seal(baseTime); err == nil || !strings.Contains(err.Error(), "predecessor") {
		t.Fatalf("seal without a predecessor: err = %v", err)
	}
	b.SetPrev(prev)
	got, m, err := b.Seal(baseTime)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) || metaJSON(t, m) != metaJSON(t, wantMeta) {
		t.Fatal("SetPrev before Seal built different bytes than Reset with the hash")
	}
	if m.PrevSHA256 != prev {
		t.Fatalf("prev_sha256 %s, want %s", m.PrevSHA256, prev)
	}
}

// A record with no time must not produce a segment the decoder refuses.
func TestBuilderZeroTime(t *testing.T) {
	recs := []Record{{Seq: 1, Data: []byte("a")}, {Seq: 2, Time: baseTime}}
	seg, m := build(t, newBuilder(t), "s", 1, ZeroHash, recs, baseTime)
	if !m.MinTime.Equal(time.Unix(0, 0)) || !m.MaxTime.Equal(baseTime) {
		t.Fatalf("min/max time %v %v", m.MinTime, m.MaxTime)
	}
	_, got, err := Decode(seg, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !got.At(0).Time.Equal(time.Unix(0, 0)) || !got.Time(0).Equal(time.Unix(0, 0)) {
		t.Fatalf("zero time decoded as %v, want the Unix epoch", got.At(0).Time)
	}
}

func TestChain(t *testing.T) {
	b := newBuilder(t)
	prev := ZeroHash
	var segs [][]byte
	for i := range 4 {
		seg, m := build(t, b, "app", 3, prev, makeRecords(uint64(1+10*i), 10), baseTime.Add(time.Duration(i)*time.Second))
		if m.PrevSHA256 != prev {
			t.Fatalf("segment %d: PrevSHA256 %s, want %s", i, m.PrevSHA256, prev)
		}
		segs = append(segs, seg)
		prev = Hash(seg)
	}
	if ZeroHash != strings.Repeat("0", 64) {
		t.Fatalf("ZeroHash = %s", ZeroHash)
	}
	for i, seg := range segs {
		s, err := Open(seg)
		if err != nil {
			t.Fatal(err)
		}
		want := ZeroHash
		if i > 0 {
			want = Hash(segs[i-1])
		}
		if s.Meta.PrevSHA256 != want {
			t.Fatalf("segment %d: prev_sha256 %s, want %s", i, s.Meta.PrevSHA256, want)
		}
		sum := sha256.Sum256(seg)
		if s.Hash != hex.EncodeToString(sum[:]) {
			t.Fatalf("segment %d: Hash is not the SHA-256 of the whole file", i)
		}
	}
}

func TestParseMetaOffset(t *testing.T) {
	seg, want := build(t, newBuilder(t), "s", 1, ZeroHash, makeRecords(1, 3), baseTime)
	m, off, err := ParseMeta(seg)
	if err != nil {
		t.Fatal(err)
	}
	if size := binary.LittleEndian.Uint32(seg[4:]); off != 8+int(size) {
		t.Fatalf("offset %d, want 8 + frame size %d", off, size)
	}
	if string(seg[8:16]) != "FERRYSEG" || seg[16] != '{' || seg[off-1] != '}' {
		t.Fatalf("frame layout: % x", seg[:off])
	}
	if binary.LittleEndian.Uint32(seg[off:]) != 0xFD2FB528 {
		t.Fatalf("payload does not start with the zstd magic: % x", seg[off:off+4])
	}
	if metaJSON(t, m) != metaJSON(t, want) {
		t.Fatalf("ParseMeta\n got %s\nwant %s", metaJSON(t, m), metaJSON(t, want))
	}
	// ParseMeta checks framing only: a damaged payload passes it.
	seg[len(seg)-1] ^= 1
	if _, _, err := ParseMeta(seg); err != nil {
		t.Fatalf("ParseMeta looked at the payload: %v", err)
	}
	if _, err := Open(seg); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of damaged payload: %v", err)
	}
}

func TestMetaExtension(t *testing.T) {
	recs := makeRecords(1, 20)
	seg, _ := build(t, newBuilder(t), "s", 1, ZeroHash, recs, baseTime)
	// Unknown fields, anywhere, of any type, are ignored.
	ext := rewrapMeta(t, seg, func(js string) string {
		js = strings.TrimSuffix(js, "}") + `,"key_id":"k1"}`
		return strings.Replace(js, "{", `{"zz_new":{"nested":[1,2,{"x":null}]},`, 1)
	})
	s, got, err := Decode(ext, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, all(got), recs)
	if s.Meta.Stream != "s" {
		t.Fatalf("meta after extension: %+v", s.Meta)
	}
	// A missing encryption field means plaintext (segments that predate it).
	noEnc := rewrapMeta(t, seg, func(js string) string { return strings.Replace(js, `"encryption":"none",`, "", 1) })
	if _, got, err := Decode(noEnc, 0); err != nil || got.Len() != len(recs) {
		t.Fatalf("without encryption field: %d records, %v", got.Len(), err)
	}
	// A missing compression field is not assumed to be zstd.
	noComp := rewrapMeta(t, seg, func(js string) string { return strings.Replace(js, `"compression":"zstd",`, "", 1) })
	if _, _, err := Decode(noComp, 0); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("without compression field: %v", err)
	}
}

func TestDecodeNewerFormat(t *testing.T) {
	recs := makeRecords(1, 5)
	m := honestMeta(recs)
	m.Format = FormatVersion + 1
	_, _, err := Decode(forge(t, m, compress(t, frames(recs))), 0)
	if !isNewerFormat(err) || !strings.Contains(err.Error(), fmt.Sprintf("format %d is newer than this ferry reads (%d)", FormatVersion+1, FormatVersion)) {
		t.Fatalf("format %d: err = %v, want a non-corrupt error asking to upgrade", m.Format, err)
	}
	for _, f := range []int{0, -1} {
		m.Format = f
		if _, _, err := Decode(forge(t, m, compress(t, frames(recs))), 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("format %d: err = %v, want ErrCorrupt", f, err)
		}
	}
}

func TestDecodeEncrypted(t *testing.T) {
	recs := makeRecords(1, 5)
	m := honestMeta(recs)
	m.Encryption = "rot13"
	seg := forge(t, m, []byte("opaque ciphertext"))
	s, err := Open(seg)
	if err != nil {
		t.Fatalf("Open must verify an encrypted payload's checksum without decrypting: %v", err)
	}
	if _, err := s.Decompress(0); !isEncrypted(err) || !strings.Contains(err.Error(), "(rot13)") {
		t.Fatalf("Decompress: err = %v, want the encrypted error", err)
	}
	if _, _, err := Decode(seg, 0); !isEncrypted(err) {
		t.Fatalf("Decode: err = %v, want the encrypted error", err)
	}
	// age without an identity: ErrNoKey naming the segment and its keys
	// (batch/crypt tests decrypting).
	m.Encryption, m.Recipients = EncryptionAge, []string{"0123456789abcdef"}
	seg = forge(t, m, []byte("opaque ciphertext"))
	_, _, err = Decode(seg, 0)
	if !errors.Is(err, ErrNoKey) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), m.Name()) ||
		!strings.Contains(err.Error(), "0123456789abcdef") || !IsUnreadable(err) {
		t.Fatalf("Decode of age without identity: err = %v, want ErrNoKey naming the segment and key", err)
	}
}

func TestDecodeLimit(t *testing.T) {
	recs := makeRecords(1, 100)
	seg, m := build(t, newBuilder(t), "s", 1, ZeroHash, recs, baseTime)
	n := m.UncompressedSize
	if _, _, err := Decode(seg, n); err != nil {
		t.Fatalf("limit == size: %v", err)
	}
	_, _, err := Decode(seg, n-1)
	if !errors.Is(err, ErrSegmentTooLarge) || errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("claims %d uncompressed bytes (%s), over the limit of %d", n, sizeString(n), n-1)) {
		t.Fatalf("limit size-1: err = %v", err)
	}
	for _, l := range []int64{0, -1} {
		if _, _, err := Decode(seg, l); err != nil {
			t.Fatalf("limit %d means the default: %v", l, err)
		}
	}
	big := honestMeta(recs)
	big.UncompressedSize = DefaultMaxUncompressed + 1
	if _, _, err := Decode(forge(t, big, []byte("x")), 0); !errors.Is(err, ErrSegmentTooLarge) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("claim over the default limit: %v", err)
	}
}

// A payload may be any sequence of zstd frames, including skippable ones:
// what counts is the stream they decompress to.
func TestPayloadMultipleFrames(t *testing.T) {
	recs := makeRecords(1, 10)
	raw := frames(recs)
	skip := binary.LittleEndian.AppendUint32(nil, 0x184D2A50)
	skip = binary.LittleEndian.AppendUint32(skip, 3)
	skip = append(skip, "abc"...)
	payload := append(compress(t, raw[:100]), skip...)
	payload = append(payload, compress(t, raw[100:])...)
	_, got, err := Decode(forge(t, honestMeta(recs), payload), 0)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, all(got), recs)
}

// Records's accessors read what At parses, for records with and without
// op and key, across sub-ranges.
func TestRecordsAccessors(t *testing.T) {
	recs := []Record{
		{Seq: 5, Time: baseTime, Data: []byte("plain")},
		{Seq: 6, Time: baseTime.Add(time.Second), Op: "put", Key: []byte("a/b"), Data: []byte("with op and key")},
		{Seq: 7, Op: "del", Key: []byte("k")},
		{Seq: 8, Time: baseTime, Key: bytes.Repeat([]byte("k"), 300), Data: []byte{0, 1, 2}},
	}
	rs := RecordsOf(recs)
	for _, sub := range []struct{ i, j int }{{0, 4}, {1, 3}, {2, 2}, {3, 4}} {
		s := rs.Slice(sub.i, sub.j)
		want := recs[sub.i:sub.j]
		if s.Len() != len(want) {
			t.Fatalf("Slice(%d, %d).Len() = %d", sub.i, sub.j, s.Len())
		}
		var framed int64
		for i, w := range want {
			framed += int64(w.FramedSize())
			if d := sameRecord(s.At(i), w); d != "" {
				t.Fatalf("Slice(%d, %d).At(%d): %s", sub.i, sub.j, i, d)
			}
			if s.Seq(i) != w.Seq || !s.Time(i).Equal(time.Unix(0, timeNanos(w.Time))) || !bytes.Equal(s.Data(i), w.Data) {
				t.Fatalf("Slice(%d, %d) record %d: seq %d time %v data %q", sub.i, sub.j, i, s.Seq(i), s.Time(i), s.Data(i))
			}
		}
		if s.Framed() != framed {
			t.Fatalf("Slice(%d, %d).Framed() = %d, want %d", sub.i, sub.j, s.Framed(), framed)
		}
	}
}

// TestBuilderSmallBatchMemory: an open batch holding a few records holds
// about what they take, not a full chunk buffer (issue 23: 100 streams'
// open batches held 2 MiB each), and a Reset Builder holds none.
func TestBuilderSmallBatchMemory(t *testing.T) {
	const builders = 64
	heap := func() int64 {
		runtime.GC()
		runtime.GC() // and the pools' victim caches
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	before := heap()
	bs := make([]*Builder, builders)
	for i := range bs {
		b, err := NewBuilder(Fastest)
		if err != nil {
			t.Fatal(err)
		}
		b.Reset("s", 1, ZeroHash)
		for _, r := range makeRecords(1, 20) {
			if err := b.Add(&r); err != nil {
				t.Fatal(err)
			}
		}
		bs[i] = b
	}
	grown := heap() - before
	// Full-size chunk buffers would be builders x 2 MiB = 128 MiB.
	if limit := int64(builders * 64 << 10); grown > limit {
		t.Errorf("%d builders with 20 records each hold %d KiB of heap, want at most %d KiB", builders, grown>>10, limit>>10)
	}
	// A batch past 64 KiB uses a full-size buffer, and Reset gives it back.
	b := bs[0]
	for seq := uint64(21); b.Size() < 128<<10; seq++ {
		r := Record{Seq: seq, Time: baseTime, Data: bytes.Repeat([]byte("x"), 1000)}
		if err := b.Add(&r); err != nil {
			t.Fatal(err)
		}
	}
	if b.raw == nil || cap(*b.raw) < ChunkSize {
		t.Fatalf("a batch of %d bytes does not fill a full-size chunk buffer", b.Size())
	}
	b.Reset("s", 1, ZeroHash)
	if b.raw != nil {
		t.Errorf("a Reset Builder still holds a %d-byte chunk buffer", cap(*b.raw))
	}
	runtime.KeepAlive(bs)
}

// OpenPayload makes Open's checks and gives Open's verdicts, without the
// segment's hash (the second SHA-256 pass over its payload).
func TestOpenPayload(t *testing.T) {
	for _, f := range goldenFormats {
		seg := goldenSegment(t, f)
		want, err := Open(seg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := OpenPayload(seg)
		if err != nil || got.Hash != "" || metaJSON(t, got.Meta) != metaJSON(t, want.Meta) || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("format %d: OpenPayload gave %+v, %v; want Open's segment without its hash", f, got, err)
		}
		for pos := range seg {
			seg[pos] ^= 0x41
			_, werr := Open(seg)
			_, gerr := OpenPayload(seg)
			if fmt.Sprint(werr) != fmt.Sprint(gerr) {
				t.Fatalf("format %d, byte %d changed: OpenPayload says %v, Open %v", f, pos, gerr, werr)
			}
			seg[pos] ^= 0x41
		}
	}
}

// TestChunkBuffersOutliveGC: the chunk buffers a Builder gives back are
// there for the next segment even after garbage collections (a sync.Pool
// empties in two), so a busy stream does not make 2 MiB buffers of fresh
// memory anew every few seals.
func TestChunkBuffersOutliveGC(t *testing.T) {
	for _, l := range []*freeList{rawPool, outPool} {
		for len(l.c) > 0 { // start from an empty list
			<-l.c
		}
		b := l.get()
		l.put(b)
		runtime.GC()
		runtime.GC()
		runtime.GC()
		if got := l.get(); got != b {
			t.Fatalf("after three GCs the list of %d-byte buffers made a new one instead of giving back the one put", l.size)
		}
	}
}

// TestBusyBuilderChunksStartFullSize: once a segment has filled a chunk,
// its next chunk starts in a full-size buffer; growing each one from
// 4 KiB made 128 KiB of garbage per 2 MiB chunk (70 MB per GiB shipped).
func TestBusyBuilderChunksStartFullSize(t *testing.T) {
	b, err := NewBuilder(Fastest)
	if err != nil {
		t.Fatal(err)
	}
	b.Reset("s", 1, ZeroHash)
	seq := uint64(1)
	add := func() {
		r := Record{Seq: seq, Time: baseTime, Data: bytes.Repeat([]byte("y"), 100)}
		seq++
		if err := b.Add(&r); err != nil {
			t.Fatal(err)
		}
	}
	add()
	if cap(*b.raw) >= ChunkSize {
		t.Fatalf("the first record of a segment took a full-size buffer (%d bytes)", cap(*b.raw))
	}
	for len(b.chunks) == 0 {
		add()
	}
	add()
	if cap(*b.raw) < ChunkSize {
		t.Fatalf("the chunk after a full one started in a %d-byte buffer, want a full-size one", cap(*b.raw))
	}
}
