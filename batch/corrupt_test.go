package batch

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// allocated returns the bytes allocated on the heap while f runs. Tests
// using it must not run in parallel with others.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

func TestCorruptEveryByte(t *testing.T) {
	for _, f := range goldenFormats {
		t.Run(fmt.Sprintf("v%d", f), func(t *testing.T) { testCorruptEveryByte(t, goldenSegment(t, f), goldenRecordsOf(f)) })
	}
}

func testCorruptEveryByte(t *testing.T, seg []byte, want []Record) {
	_, off, err := ParseMeta(seg)
	if err != nil {
		t.Fatal(err)
	}
	origHash := Hash(seg)
	var corrupt, newer, encrypted, benign int
	for pos := range seg {
		orig := seg[pos]
		for x := 1; x < 256; x++ {
			seg[pos] = orig ^ byte(x)
			s, got, err := Decode(seg, 0)
			switch {
			case errors.Is(err, ErrCorrupt):
				corrupt++
			case isNewerFormat(err):
				newer++
			case isEncrypted(err):
				encrypted++
			case err != nil:
				t.Fatalf("byte %d ^ %#02x: error %v neither wraps ErrCorrupt nor is the newer-format or encrypted error", pos, x, err)
			default:
				// The flip survived: it must be in the metadata JSON, and
				// the records must be exactly the originals.
				if pos < 16 || pos >= off {
					t.Fatalf("byte %d ^ %#02x outside the metadata JSON decoded without error", pos, x)
				}
				checkRecords(t, all(got), want)
				if s.Hash == origHash {
					t.Fatal("segment hash ignores a changed byte")
				}
				benign++
			}
		}
		seg[pos] = orig
	}
	t.Logf("%d flips: %d corrupt, %d newer format, %d encrypted, %d benign metadata changes", len(seg)*255, corrupt, newer, encrypted, benign)
	if newer == 0 || encrypted == 0 || benign == 0 {
		t.Error("expected some flips of each kind; did the golden metadata change?")
	}
}

func TestCorruptTruncated(t *testing.T) {
	for _, f := range goldenFormats {
		t.Run(fmt.Sprintf("v%d", f), func(t *testing.T) { testCorruptTruncated(t, goldenSegment(t, f)) })
	}
}

func testCorruptTruncated(t *testing.T, seg []byte) {
	for n := range len(seg) {
		if _, _, err := Decode(seg[:n], 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d of %d bytes: err = %v", n, len(seg), err)
		}
	}
	for _, tail := range [][]byte{{0}, compress(t, []byte("more"))} {
		if _, _, err := Decode(append(bytes.Clone(seg), tail...), 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("extended by %d bytes: err = %v", len(tail), err)
		}
	}
}

func TestCorruptHeader(t *testing.T) {
	seg := goldenSegment(t, 1) // the header is the same in every format
	put := func(off int, v uint32) []byte {
		c := bytes.Clone(seg)
		binary.LittleEndian.PutUint32(c[off:], v)
		return c
	}
	bigMeta := binary.LittleEndian.AppendUint32(nil, MetaFrameMagic)
	bigMeta = binary.LittleEndian.AppendUint32(bigMeta, MaxMetaSize+1)
	bigMeta = append(bigMeta, make([]byte, MaxMetaSize+1)...)
	cases := []struct {
		name, want string
		seg        []byte
	}{
		{"plain zstd", "not ferry's metadata frame", compress(t, []byte("hello"))},
		{"other skippable magic", "not ferry's metadata frame", put(0, 0x184D2A50)},
		{"frame size 7", "out of range", put(4, 7)},
		{"frame size over max", "out of range", bigMeta},
		{"frame size past end", "truncated", put(4, uint32(len(seg)))},
		{"tag", "tag", append(bytes.Clone(seg[:8]), append([]byte("FERRYSEX"), seg[16:]...)...)},
		{"json", "metadata", rewrapMeta(t, seg, func(js string) string { return js[:len(js)-1] })},
		{"json type", "metadata", rewrapMeta(t, seg, func(js string) string { return strings.Replace(js, `"records":4`, `"records":"4"`, 1) })},
		{"negative size", "negative", rewrapMeta(t, seg, func(js string) string {
			return strings.Replace(js, `"uncompressed_size":`, `"uncompressed_size":-`, 1)
		})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := Decode(c.seg, 0)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrCorrupt mentioning %q", err, c.want)
			}
		})
	}
	if _, _, err := Assemble(Meta{Stream: strings.Repeat("s", MaxMetaSize)}, nil); err == nil || !strings.Contains(err.Error(), "limit 65536") {
		t.Fatalf("Assemble of oversized metadata: %v", err)
	}
}

// Forged segments carry a valid payload checksum, so only the metadata
// cross-checks and the record parser can catch them.
func TestForged(t *testing.T) {
	recs := makeRecords(1, 3)
	four := makeRecords(1, 4)
	cases := []struct {
		name, want string
		inMeta     bool          // refused by ParseMeta, before the payload
		payload    []Record      // framed and compressed as the payload
		edit       func(*Meta)   // applied to the honest metadata of recs
		compressed func() []byte // overrides payload
	}{
		{name: "out of order", want: "record seq 3 where 2 expected", payload: []Record{recs[0], recs[2], recs[1]}},
		{name: "duplicate", want: "record seq 2 where 3 expected", payload: []Record{recs[0], recs[1], recs[1]}},
		{name: "gap", want: "record seq 3 where 2 expected", payload: []Record{recs[0], recs[2]}},
		{name: "seq shifted", want: "record seq 2 where 1 expected", payload: makeRecords(2, 3)},
		{name: "fewer than claimed", want: "holds 2 records, metadata says 3", payload: recs[:2]},
		{name: "more than claimed", want: "record seq 4 where 4 expected (segment 1..3)", payload: four},
		{name: "seq range vs records", want: "does not match 4 records", inMeta: true, payload: recs, edit: func(m *Meta) { m.Records = 4 }},
		{name: "first seq 0", want: "seq range 0..2", inMeta: true, payload: makeRecords(0, 3), edit: func(m *Meta) { m.FirstSeq, m.LastSeq = 0, 2 }},
		{name: "last before first", want: "seq range 3..1", inMeta: true, payload: recs, edit: func(m *Meta) { m.FirstSeq, m.LastSeq = 3, 1 }},
		{name: "time before min", want: "outside segment range", payload: recs, edit: func(m *Meta) { m.MinTime = m.MinTime.Add(time.Nanosecond) }},
		{name: "time after max", want: "outside segment range", payload: recs, edit: func(m *Meta) { m.MaxTime = m.MaxTime.Add(-time.Nanosecond) }},
		{name: "claims fewer bytes", want: "decompresses to", payload: recs, edit: func(m *Meta) { m.UncompressedSize-- }},
		{name: "claims more bytes", want: "decompresses to", payload: recs, edit: func(m *Meta) { m.UncompressedSize++ }},
		{name: "torn last frame", want: "record truncated", compressed: func() []byte { return compress(t, frames(recs)[:len(frames(recs))-1]) }},
		{name: "not zstd", want: "zstd", compressed: func() []byte { return frames(recs) }},
		{name: "unknown compression", want: `unknown compression "lz4"`, payload: recs, edit: func(m *Meta) { m.Compression = "lz4" }},
		{name: "zstd checksum", want: "zstd", compressed: func() []byte {
			p := compress(t, frames(recs), zstd.WithEncoderCRC(true))
			p[len(p)-1] ^= 1 // the frame's content checksum
			return p
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := honestMeta(recs)
			var payload []byte
			if c.compressed != nil {
				payload = c.compressed()
				raw, err := zstd.NewReader(nil)
				if err != nil {
					t.Fatal(err)
				}
				dec, _ := raw.DecodeAll(payload, nil)
				raw.Close()
				m.UncompressedSize = int64(len(dec))
			} else {
				payload = compress(t, frames(c.payload))
				m.UncompressedSize = int64(len(frames(c.payload)))
			}
			if c.edit != nil {
				c.edit(&m)
			}
			seg := forge(t, m, payload)
			if _, err := Open(seg); !c.inMeta && err != nil {
				t.Fatalf("Open (checksum only) refused the forgery: %v", err)
			}
			_, got, err := Decode(seg, 0)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrCorrupt mentioning %q", err, c.want)
			}
			if got.Len() != 0 {
				t.Fatalf("records returned with an error: %d", got.Len())
			}
		})
	}
	// The honest version of the same forgery decodes, so the cases above
	// fail for the reason they name.
	if _, got, err := Decode(forge(t, honestMeta(recs), compress(t, frames(recs))), 0); err != nil || got.Len() != 3 {
		t.Fatalf("honest forgery: %d records, %v", got.Len(), err)
	}
}

// A claim over the limit is refused before anything is allocated for it;
// a claim within it is allocated once, and a payload that falls short of
// it is corrupt.
func TestForgedHugeClaim(t *testing.T) {
	const limit = 64 << 20
	recs := makeRecords(1, 3)
	m := honestMeta(recs)
	m.UncompressedSize = 1 << 30
	seg := forge(t, m, compress(t, frames(recs)))
	var err error
	n := allocated(func() { _, _, err = Decode(seg, limit) })
	if !errors.Is(err, ErrSegmentTooLarge) || !strings.Contains(err.Error(), "claims 1073741824 uncompressed bytes (1.0 GiB), over the limit of 67108864 (64.0 MiB)") {
		t.Fatalf("err = %v, want ErrSegmentTooLarge naming the claim and the limit", err)
	}
	if n > 1<<20 {
		t.Fatalf("allocated %d KiB for a tiny payload claiming 1 GiB over a 64 MiB limit", n>>10)
	}
	t.Logf("over the limit: allocated %.1f KiB", float64(n)/(1<<10))
	m.UncompressedSize = 48 << 20
	seg = forge(t, m, compress(t, frames(recs)))
	n = allocated(func() { _, _, err = Decode(seg, limit) })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	if n > uint64(withSlack(48<<20))+16<<20 {
		t.Fatalf("allocated %d MiB for a tiny payload claiming 48 MiB", n>>20)
	}
	t.Logf("within the limit: allocated %.1f MiB", float64(n)/(1<<20))
}

// zeroBomb compresses n zero bytes without holding them in memory.
func zeroBomb(t testing.TB, n int, opts ...zstd.EOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := zstd.NewWriter(&buf, append([]zstd.EOption{zstd.WithEncoderConcurrency(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for ; n > 0; n -= len(zeros) {
		if _, err := w.Write(zeros[:min(n, len(zeros))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestForgedBomb(t *testing.T) {
	bomb := zeroBomb(t, 100<<20, zstd.WithWindowSize(MaxWindowSize))
	m := honestMeta(makeRecords(1, 1))
	m.UncompressedSize = 1 << 10
	seg := forge(t, m, bomb)
	t.Logf("100 MiB of zeros in %d bytes", len(bomb))
	var err error
	n := allocated(func() { _, _, err = Decode(seg, 0) })
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "decompresses to more than the 1024 bytes metadata says") {
		t.Fatalf("err = %v", err)
	}
	if n > 64<<20 {
		t.Fatalf("allocated %d MiB decoding a bomb that claims 1 KiB", n>>20)
	}
	t.Logf("allocated %.1f MiB", float64(n)/(1<<20))

	// The pooled decoder abandoned mid-frame still decodes the next segment.
	recs := makeRecords(1, 100)
	good, _ := build(t, newBuilder(t), "s", 1, ZeroHash, recs, baseTime)
	_, got, err := Decode(good, 0)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, all(got), recs)
}

// A payload frame declaring a window beyond MaxWindowSize is refused before
// the decoder allocates the window.
func TestForgedWindow(t *testing.T) {
	// Single-segment frame header: FHD 0xe0 = 8-byte content size, single
	// segment, no checksum. The window is the content size, 500 MiB, but
	// the only block is one raw byte.
	p := []byte{0x28, 0xb5, 0x2f, 0xfd, 0xe0}
	p = binary.LittleEndian.AppendUint64(p, 500<<20)
	p = append(p, 0x09, 0, 0, 'x')
	m := honestMeta(makeRecords(1, 1))
	m.UncompressedSize = 1
	seg := forge(t, m, p)
	var err error
	n := allocated(func() { _, _, err = Decode(seg, 0) })
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	if n > 64<<20 {
		t.Fatalf("allocated %d MiB for a 17-byte payload declaring a 500 MiB window", n>>20)
	}

	// An honest stream whose window is just over the limit is refused too;
	// one at the limit decodes.
	recs := makeRecords(1, 5000) // over one block, so the header is written with the window
	for _, c := range []struct {
		window int
		ok     bool
	}{{MaxWindowSize, true}, {2 * MaxWindowSize, false}} {
		m := honestMeta(recs)
		payload := compress(t, frames(recs), zstd.WithWindowSize(c.window), zstd.WithSingleSegment(false))
		_, _, err := Decode(forge(t, m, payload), 0)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrCorrupt)) {
			t.Fatalf("window %d MiB: err = %v", c.window>>20, err)
		}
	}
}
