package batch

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite testdata/golden-v*.* from the current encoder")

// goldenSeg and goldenHex are the golden files of a format.
func goldenSeg(format int) string { return fmt.Sprintf("testdata/golden-v%d.seg.zst", format) }
func goldenHex(format int) string { return fmt.Sprintf("testdata/golden-v%d.hex", format) }

// goldenFormats are the formats pinned by a golden file: every format
// this ferry reads.
var goldenFormats = []int{1, 2}

// goldenRecords are the fixed contents of the golden segment: keys, ops,
// binary data with NULs and newlines, an empty record and a late arrival.
func goldenRecords() []Record {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	return []Record{
		{Seq: 1, Time: t0, Key: []byte("user:1"), Op: "put", Data: []byte(`{"name":"ada"}`)},
		{Seq: 2, Time: t0.Add(time.Millisecond), Key: []byte("user:2"), Op: "put", Data: []byte{0, 0xff, '\n', 0, 'b', 'i', 'n'}},
		{Seq: 3, Time: t0.Add(2 * time.Millisecond), Key: []byte("user:1"), Op: "del"},
		{Seq: 4, Time: t0.Add(time.Millisecond / 2), Data: []byte("hello\nworld\n")},
	}
}

// goldenRecordsOf are the records of the golden segment of a format:
// format 2's has a fifth record, with the time of the one before it, which
// format 2 frames without a time.
func goldenRecordsOf(format int) []Record {
	recs := goldenRecords()
	if format >= 2 {
		recs = append(recs, Record{Seq: 5, Time: recs[3].Time, Data: []byte("same time\n")})
	}
	return recs
}

var goldenSealedAt = time.Date(2025, 1, 2, 3, 4, 6, 0, time.UTC)

// goldenSegment builds the golden segment of a format from goldenRecords.
func goldenSegment(t testing.TB, format int) []byte {
	t.Helper()
	b := newBuilder(t)
	if err := b.SetFormat(format); err != nil {
		t.Fatal(err)
	}
	seg, _ := build(t, b, "app", 1, ZeroHash, goldenRecordsOf(format), goldenSealedAt)
	return seg
}

// TestGolden pins formats 1 and 2. (a) The encoder still produces the
// committed bytes: field order, JSON encoding, record framing and zstd
// output are unchanged. If only the zstd library's output changed, the
// format did not: review, then -update. (b) The committed file still
// decodes to the same records and metadata, whatever the encoder does
// today: old segments stay readable.
func TestGolden(t *testing.T) {
	for _, f := range goldenFormats {
		t.Run(fmt.Sprintf("v%d", f), func(t *testing.T) { testGolden(t, f) })
	}
}

func testGolden(t *testing.T, format int) {
	seg := goldenSegment(t, format)
	hexDump := annotate(t, seg)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenSeg(format), seg, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenHex(format), []byte(hexDump), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	committed, err := os.ReadFile(goldenSeg(format))
	if err != nil {
		t.Fatalf("%v (generate it with: go test ./batch -run Golden -update)", err)
	}
	if !bytes.Equal(seg, committed) {
		t.Errorf("encoder output differs from %s (%d bytes now, %d committed); if the change is intended, run go test ./batch -run Golden -update and review the diff", goldenSeg(format), len(seg), len(committed))
	}
	hexCommitted, err := os.ReadFile(goldenHex(format))
	if err != nil {
		t.Fatal(err)
	}
	if string(hexCommitted) != annotate(t, committed) {
		t.Errorf("%s is out of date with %s; run go test ./batch -run Golden -update", goldenHex(format), goldenSeg(format))
	}

	s, recs, err := Decode(committed, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := goldenRecordsOf(format)
	checkRecords(t, all(recs), want)
	const wantMeta = `{"format":%d,"stream":"app","generation":1,"first_seq":1,"last_seq":%d,"records":%[2]d,` +
		`"min_time":"2025-01-02T03:04:05.000000006Z","max_time":"2025-01-02T03:04:05.002000006Z",` +
		`"uncompressed_size":%d,"payload_size":%d,"compression":"zstd","encryption":"none",` +
		`"payload_sha256":"%s","prev_sha256":"0000000000000000000000000000000000000000000000000000000000000000",` +
		`"sealed_at":"2025-01-02T03:04:06Z"}`
	_, off, _ := ParseMeta(committed)
	if got, want := string(committed[16:off]), fmt.Sprintf(wantMeta, format, len(want), map[int]int{1: 152, 2: 103}[format], s.Meta.PayloadSize, s.Meta.PayloadSHA256); got != want {
		t.Fatalf("committed metadata\n got %s\nwant %s", got, want)
	}
	if s.Meta.Name() != fmt.Sprintf("00000001-0000000000000001-%016x.seg.zst", len(want)) {
		t.Fatalf("name %s", s.Meta.Name())
	}
}

// annotate renders seg as an xxd-style dump, one line per field and a
// comment naming it: the worked example of docs/FORMAT.md.
func annotate(t testing.TB, seg []byte) string {
	t.Helper()
	var w strings.Builder
	m, off, err := ParseMeta(seg)
	if err != nil {
		t.Fatal(err)
	}
	field := func(at, n int, what string, args ...any) int {
		dump(&w, seg[at:at+n], at, fmt.Sprintf(what, args...))
		return at + n
	}
	fmt.Fprintf(&w, "# %s: ferry segment format %d, %d bytes, sha256 %s\n", filepath.Base(goldenSeg(m.Format)), m.Format, len(seg), Hash(seg))
	fmt.Fprintf(&w, "# xxd-style: offset, hex, ASCII, field. Regenerate with go test ./batch -run Golden -update\n")
	fmt.Fprintf(&w, "\n# Metadata: a zstd skippable frame\n")
	at := field(0, 4, "magic 0x%08X, little-endian", MetaFrameMagic)
	at = field(at, 4, "frame size %d, little-endian (tag + JSON)", off-8)
	at = field(at, 8, "tag %q", metaTag)
	at = field(at, off-at, "metadata JSON, %d bytes", off-at)

	fmt.Fprintf(&w, "\n# Payload: %d bytes, one zstd frame; sha256 = payload_sha256\n", len(seg)-off)
	at = field(at, 4, "zstd frame magic 0xFD2FB528, little-endian")
	fhd := seg[at]
	single := fhd&(1<<5) != 0
	checksum := fhd&(1<<2) != 0
	didSize := []int{0, 1, 2, 4}[fhd&3]
	fcsSize := []int{0, 2, 4, 8}[fhd>>6]
	if fcsSize == 0 && single {
		fcsSize = 1
	}
	at = field(at, 1, "frame header descriptor: single segment %t, checksum %t, content size field %d bytes", single, checksum, fcsSize)
	if !single {
		wd := seg[at]
		window := uint64(1) << (10 + wd>>3)
		window += window / 8 * uint64(wd&7)
		at = field(at, 1, "window descriptor: %d KiB", window>>10)
	}
	if didSize > 0 {
		at = field(at, didSize, "dictionary id")
	}
	if fcsSize > 0 {
		var fcs [8]byte
		copy(fcs[:], seg[at:at+fcsSize])
		v := binary.LittleEndian.Uint64(fcs[:])
		if fcsSize == 2 {
			v += 256
		}
		at = field(at, fcsSize, "frame content size %d", v)
	}
	for last := false; !last; {
		h := uint32(seg[at]) | uint32(seg[at+1])<<8 | uint32(seg[at+2])<<16
		last = h&1 != 0
		typ := []string{"raw", "RLE", "compressed", "reserved"}[h>>1&3]
		size := int(h >> 3)
		at = field(at, 3, "block header: last %t, %s, size %d", last, typ, size)
		if typ == "RLE" {
			size = 1
		}
		at = field(at, size, "%s block content", typ)
	}
	if checksum {
		at = field(at, 4, "content checksum: low 32 bits of XXH64 of the record stream")
	}
	if at != len(seg) {
		t.Fatalf("annotated %d of %d bytes", at, len(seg))
	}

	s, err := Open(seg)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.Decompress(0)
	if err != nil {
		t.Fatal(err)
	}
	at = 0
	rf := func(n int, what string, args ...any) {
		if n > 0 {
			dump(&w, raw[at:at+n], at, fmt.Sprintf(what, args...))
		}
		at += n
	}
	if m.Format >= 2 {
		annotate2(&w, raw, m.FirstSeq, rf)
		return w.String()
	}
	fmt.Fprintf(&w, "\n# Record stream (zstd -dc): %d bytes = uncompressed_size, big-endian integers\n", len(raw))
	for len(raw) > at {
		r, n, err := ParseFrame(raw[at:])
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&w, "# record %d\n", r.Seq)
		rf(4, "len %d (bytes after this field)", n-4)
		rf(8, "seq %d", r.Seq)
		rf(8, "time %d ns = %s", timeNanos(r.Time), r.Time.Format(time.RFC3339Nano))
		rf(1, "op length %d", len(r.Op))
		rf(len(r.Op), "op %q", r.Op)
		rf(2, "key length %d", len(r.Key))
		rf(len(r.Key), "key %q", r.Key)
		rf(len(r.Data), "data, %d bytes", len(r.Data))
		if len(r.Data) == 0 {
			fmt.Fprintf(&w, "#   (no data)\n")
		}
	}
	return w.String()
}

// annotate2 is annotate's part for a format-2 record stream.
func annotate2(w *strings.Builder, raw []byte, first uint64, rf func(int, string, ...any)) {
	fmt.Fprintf(w, "\n# Record stream (zstd -dc): %d bytes = uncompressed_size, format-2 frames, varints\n", len(raw))
	var prev int64
	for at, i := 0, uint64(0); at < len(raw); i++ {
		r, n, err := ParseFrame2(raw[at:], prev)
		if err != nil {
			panic(err)
		}
		h, k := binary.Uvarint(raw[at:])
		var flags []string
		for bit, name := range []string{"T", "O", "K"} {
			if h&(1<<bit) != 0 {
				flags = append(flags, name)
			}
		}
		if flags == nil {
			flags = []string{"none"}
		}
		fmt.Fprintf(w, "# record %d (seq first_seq + %d)\n", first+i, i)
		rf(k, "head %d = body %d << 3 | flags %s", h, h>>3, strings.Join(flags, ","))
		if h&flagTime != 0 {
			t := timeNanos(r.Time)
			rf(uvarintLen(zigzag(t-prev)), "time delta %+d ns (zigzag %d): %d ns = %s", t-prev, zigzag(t-prev), t, r.Time.Format(time.RFC3339Nano))
		} else {
			fmt.Fprintf(w, "#   (no time: the previous record's)\n")
		}
		if h&flagOp != 0 {
			rf(1, "op length %d", len(r.Op))
			rf(len(r.Op), "op %q", r.Op)
		}
		if h&flagKey != 0 {
			rf(uvarintLen(uint64(len(r.Key))), "key length %d", len(r.Key))
			rf(len(r.Key), "key %q", r.Key)
		}
		rf(len(r.Data), "data, %d bytes", len(r.Data))
		if len(r.Data) == 0 {
			fmt.Fprintf(w, "#   (no data)\n")
		}
		prev = timeNanos(r.Time)
		at += n
	}
}

// dump writes b as xxd lines whose offsets start at base, with note after
// the first line.
func dump(w *strings.Builder, b []byte, base int, note string) {
	for i := 0; i < len(b); i += 16 {
		line := b[i:min(i+16, len(b))]
		var hx, asc strings.Builder
		for j, c := range line {
			if j > 0 && j%2 == 0 {
				hx.WriteByte(' ')
			}
			fmt.Fprintf(&hx, "%02x", c)
			if c >= 0x20 && c < 0x7f {
				asc.WriteByte(c)
			} else {
				asc.WriteByte('.')
			}
		}
		s := fmt.Sprintf("%08x: %-39s  %-16s", base+i, hx.String(), asc.String())
		if i == 0 {
			s += "  " + note
		}
		w.WriteString(strings.TrimRight(s, " ") + "\n")
	}
}

// TestFormatDoc keeps the worked example in docs/FORMAT.md in step with the
// golden file: the annotated dump and the `zstd -dc | xxd` output must
// appear there verbatim.
func TestFormatDoc(t *testing.T) {
	doc, err := os.ReadFile("../docs/FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range goldenFormats {
		committed, err := os.ReadFile(goldenSeg(f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(doc, []byte(annotate(t, committed))) {
			t.Errorf("docs/FORMAT.md does not contain the current %s", goldenHex(f))
		}
		s, err := Open(committed)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := s.Decompress(0)
		if err != nil {
			t.Fatal(err)
		}
		var xxd strings.Builder
		dump(&xxd, raw, 0, "")
		if !bytes.Contains(doc, []byte(fmt.Sprintf("$ zstd -dc golden-v%d.seg.zst | xxd\n", f)+xxd.String())) {
			t.Errorf("docs/FORMAT.md does not contain the xxd of the golden-v%d record stream:\n%s", f, xxd.String())
		}
	}
	for _, want := range []string{
		fmt.Sprintf("| `MaxMetaSize` | %d KiB", MaxMetaSize>>10),
		fmt.Sprintf("| `MaxWindowSize` | %d MiB", MaxWindowSize>>20),
		fmt.Sprintf("| `DefaultMaxUncompressed` | %d GiB", DefaultMaxUncompressed>>30),
		fmt.Sprintf("magic `0x%08X`", MetaFrameMagic),
	} {
		if !bytes.Contains(doc, []byte(want)) {
			t.Errorf("docs/FORMAT.md lacks %q", want)
		}
	}
}
