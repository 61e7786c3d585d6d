package batch

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// bundleSeg is one stream's segment for a bundle test.
type bundleSeg struct {
	stream string
	data   []byte
	hash   string
	recs   []Record
}

// bundleSegs builds a segment for each stream (formats alternating 2, 1),
// n records each, the second stream's in generation 2.
func bundleSegs(t testing.TB, n int, streams ...string) []bundleSeg {
	t.Helper()
	b := newBuilder(t)
	var out []bundleSeg
	for i, st := range streams {
		if err := b.SetFormat(2 - i%2); err != nil {
			t.Fatal(err)
		}
		recs := makeRecords(uint64(10*i+1), n)
		seg, _ := build(t, b, st, uint32(1+i%2), ZeroHash, recs, goldenSealedAt)
		out = append(out, bundleSeg{st, seg, b.Hash(), recs})
	}
	return out
}

// writeBundle writes segs into a bundle.
func writeBundle(t testing.TB, segs []bundleSeg) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewBundleWriter(&buf)
	for _, s := range segs {
		if err := w.Add(s.data, s.hash); err != nil {
			t.Fatal(err)
		}
	}
	n, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Fatalf("Close says %d bytes, wrote %d", n, buf.Len())
	}
	return buf.Bytes()
}

// countingReader counts ReadAt calls and the bytes they asked for.
type countingReader struct {
	r     io.ReaderAt
	calls atomic.Int64
	bytes atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.calls.Add(1)
	c.bytes.Add(int64(len(p)))
	return c.r.ReadAt(p, off)
}

func TestBundleRoundTrip(t *testing.T) {
	segs := bundleSegs(t, 50, "app", "db-1", "mail@site", "x")
	data := writeBundle(t, segs)
	cr := &countingReader{r: bytes.NewReader(data)}
	b, err := OpenBundle(cr, int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	// One read for the trailer, one for the index: two ranged GETs.
	if got := cr.calls.Load(); got != 2 {
		t.Fatalf("OpenBundle made %d reads, want 2", got)
	}
	if got, want := cr.bytes.Load(), b.Trailer.IndexLength+BundleTrailerSize; got != want {
		t.Fatalf("OpenBundle read %d bytes, want the index and trailer, %d", got, want)
	}
	if b.Trailer.Version != BundleVersion || len(b.Parts) != len(segs) {
		t.Fatalf("trailer %+v, %d parts", b.Trailer, len(b.Parts))
	}
	var off int64
	for i, s := range segs {
		p := b.Parts[i]
		m, _, err := ParseMeta(s.data)
		if err != nil {
			t.Fatal(err)
		}
		want := BundlePart{Stream: s.stream, Generation: m.Generation, FirstSeq: m.FirstSeq, LastSeq: m.LastSeq,
			Offset: off, Length: int64(len(s.data)), SHA256: Hash(s.data)}
		if p != want {
			t.Fatalf("part %d: %+v, want %+v", i, p, want)
		}
		off += p.Length
		if p.Name() != m.Name() {
			t.Fatalf("part name %s, segment %s", p.Name(), m.Name())
		}
		if j, ok := b.Find(s.stream); !ok || j != i {
			t.Fatalf("Find(%s) = %d, %v", s.stream, j, ok)
		}
		seg, raw, err := b.OpenPart(i, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(raw, s.data) || seg.Hash != s.hash {
			t.Fatalf("part %d: bytes or hash differ from the segment's", i)
		}
		recs, err := seg.Records(0)
		if err != nil {
			t.Fatal(err)
		}
		checkRecords(t, all(recs), s.recs)
		// The section is the segment's bytes too, for a streaming reader.
		sec, err := io.ReadAll(b.Section(i))
		if err != nil || !bytes.Equal(sec, s.data) {
			t.Fatalf("section %d: %v", i, err)
		}
		// The existing segment reader reads the part from its section.
		sr, err := NewSegmentReader(b.Section(i), p.Length, DefaultMaxSegmentBytes)
		if err != nil {
			t.Fatal(err)
		}
		if vs, err := sr.Verify(make([]byte, 4096)); err != nil || vs.Hash != p.SHA256 {
			t.Fatalf("segment reader on section %d: %v", i, err)
		}
	}
	for _, missing := range []string{"a", "db", "zz"} {
		if _, ok := b.Find(missing); ok {
			t.Fatalf("Find(%s) found a part", missing)
		}
	}
	// OpenPart reuses a buffer that is large enough.
	buf := make([]byte, 0, 1<<20)
	_, raw, err := b.OpenPart(1, buf)
	if err != nil || &raw[0] != &buf[:1][0] {
		t.Fatalf("OpenPart did not read into the buffer given: %v", err)
	}
}

func TestBundleWriterRefuses(t *testing.T) {
	segs := bundleSegs(t, 3, "b", "c")
	for _, c := range []struct {
		name  string
		order []int
		want  string
	}{
		{"descending", []int{1, 0}, "ascending order"},
		{"twice", []int{0, 0}, "ascending order"},
	} {
		w := NewBundleWriter(io.Discard)
		var err error
		for _, i := range c.order {
			if err = w.Add(segs[i].data, ""); err != nil {
				break
			}
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	w := NewBundleWriter(io.Discard)
	if err := w.Add(segs[0].data[:len(segs[0].data)-1], ""); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated segment: %v", err)
	}
	if err := w.Add(segs[0].data, "ABC"); err == nil {
		t.Error("a malformed hash was taken")
	}
	full := NewBundleWriter(io.Discard)
	full.parts = make([]BundlePart, MaxBundleParts)
	if err := full.Add(segs[0].data, ""); err == nil || !strings.Contains(err.Error(), "more than 4096 parts") {
		t.Errorf("part 4097: %v", err)
	}
	if _, err := NewBundleWriter(io.Discard).Close(); err == nil {
		t.Error("an empty bundle was written")
	}
}

// reseal rewrites a bundle's index with lines (what follows the index's
// header) and its trailer to match, as a forger who recomputes every
// hash would; trailer fields are then set by fix.
func reseal(parts []byte, lines string, fix func(tr []byte)) []byte {
	idx := make([]byte, bundleIndexHeader, bundleIndexHeader+len(lines))
	idx = append(idx, lines...)
	binary.LittleEndian.PutUint32(idx, BundleFrameMagic)
	binary.LittleEndian.PutUint32(idx[4:], uint32(len(idx)-8))
	copy(idx[8:], bundleIndexTag)
	tr := make([]byte, BundleTrailerSize)
	binary.LittleEndian.PutUint32(tr, BundleFrameMagic)
	binary.LittleEndian.PutUint32(tr[4:], BundleTrailerSize-8)
	copy(tr[8:], bundleTrailerTag)
	binary.LittleEndian.PutUint32(tr[16:], BundleVersion)
	binary.LittleEndian.PutUint32(tr[20:], uint32(strings.Count(lines, "\n")))
	binary.LittleEndian.PutUint64(tr[24:], uint64(len(parts)))
	binary.LittleEndian.PutUint64(tr[32:], uint64(len(idx)))
	sum := sha256.Sum256(idx)
	copy(tr[40:], sum[:])
	if fix != nil {
		fix(tr)
	}
	out := append(append(append([]byte(nil), parts...), idx...), tr...)
	return out
}

// bundleLines is the index text of parts.
func bundleLines(parts []BundlePart) string {
	var b []byte
	for i := range parts {
		b = parts[i].appendLine(b)
	}
	return string(b)
}

// TestBundleHostile forges every field of the trailer and the index, with
// the hashes recomputed where a forger could, and checks each is refused
// as corruption (or, for a newer version, with the upgrade message)
// before the parts are used.
func TestBundleHostile(t *testing.T) {
	segs := bundleSegs(t, 5, "a", "b", "c")
	good := writeBundle(t, segs)
	b, err := OpenBundle(bytes.NewReader(good), int64(len(good)), 0)
	if err != nil {
		t.Fatal(err)
	}
	partsLen := int(b.Trailer.IndexOffset)
	parts := good[:partsLen]
	honest := b.Parts
	if got := reseal(parts, bundleLines(honest), nil); !bytes.Equal(got, good) {
		t.Fatal("reseal of the honest index differs from the writer's bundle")
	}
	edit := func(f func(p []BundlePart)) string {
		p := append([]BundlePart(nil), honest...)
		f(p)
		return bundleLines(p)
	}
	lines := bundleLines(honest)
	cases := []struct {
		name string
		data []byte
		want string // in the error; "" for any ErrCorrupt
	}{
		{"trailer magic", reseal(parts, lines, func(tr []byte) { tr[0] ^= 1 }), "not a ferry bundle"},
		{"trailer frame size", reseal(parts, lines, func(tr []byte) { tr[4]++ }), "trailer frame size"},
		{"trailer tag", reseal(parts, lines, func(tr []byte) { tr[15] = 'X' }), "tag"},
		{"version 0", reseal(parts, lines, func(tr []byte) { tr[16] = 0 }), "version 0"},
		{"parts 0", reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint32(tr[20:], 0) }), "claims 0 parts"},
		{"parts over the limit", reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint32(tr[20:], MaxBundleParts+1) }), "claims 4097 parts"},
		{"parts one more than the index", reseal(parts, edit(func(p []BundlePart) {
			for i := range p {
				p[i].Stream += strings.Repeat("x", 100)
			}
		}), func(tr []byte) { binary.LittleEndian.PutUint32(tr[20:], 4) }), "claims 4"},
		{"parts one fewer than the index", reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint32(tr[20:], 2) }), "more than the 2 parts"},
		{"parts too many for their bytes", reseal(parts[:40], edit(func(p []BundlePart) {
			p[0].Length, p[1].Offset, p[1].Length, p[2].Offset, p[2].Length = 16, 16, 16, 32, 8
		}), func(tr []byte) { binary.LittleEndian.PutUint32(tr[20:], 3); binary.LittleEndian.PutUint64(tr[24:], 40) }), ""},
		{"index offset + 1", reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint64(tr[24:], uint64(partsLen+1)) }), "does not end at the trailer"},
		{"index offset - 1", reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint64(tr[24:], uint64(partsLen-1)) }), "does not end at the trailer"},
		{"index offset past the object", reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint64(tr[24:], 1<<62) }), "does not end at the trailer"},
		{"index length + 1", reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint64(tr[32:], uint64(len(lines)+17)) }), "does not end at the trailer"},
		{"index length huge", reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint64(tr[32:], 1<<40) }), "does not end at the trailer"},
		{"index hash", reseal(parts, lines, func(tr []byte) { tr[71] ^= 1 }), "sha256"},
		{"index frame magic", forgeIndex(parts, lines, func(idx []byte) { idx[0] ^= 1 }), "frame header"},
		{"index frame size", forgeIndex(parts, lines, func(idx []byte) { idx[4]++ }), "frame header"},
		{"index tag", forgeIndex(parts, lines, func(idx []byte) { idx[8] = 'f' }), "frame header"},
		{"part overlapping the one before", reseal(parts, edit(func(p []BundlePart) { p[1].Offset--; p[1].Length++ }), nil), "gap or overlap"},
		{"gap between parts", reseal(parts, edit(func(p []BundlePart) { p[1].Offset++; p[1].Length-- }), nil), "gap or overlap"},
		{"parts out of order", reseal(parts, edit(func(p []BundlePart) { p[0].Stream, p[1].Stream = p[1].Stream, p[0].Stream }), nil), "ascending order"},
		{"duplicate stream", reseal(parts, edit(func(p []BundlePart) { p[1].Stream = p[0].Stream }), nil), "or twice"},
		{"part outside the object", reseal(parts, edit(func(p []BundlePart) { p[2].Length++ }), nil), "does not lie within"},
		{"part past the index", reseal(parts, edit(func(p []BundlePart) { p[2].Length = 1 << 40 }), nil), "does not lie within"},
		{"part shorter than a header", reseal(parts[:int(honest[2].Offset)+8], edit(func(p []BundlePart) { p[2].Length = 8 }), nil), "does not lie within"},
		{"parts end before the index", reseal(parts, edit(func(p []BundlePart) { p[2].Length-- }), nil), "parts end at"},
		{"stream name invalid", reseal(parts, edit(func(p []BundlePart) { p[0].Stream = "_a" }), nil), "stream"},
		{"generation 0", reseal(parts, edit(func(p []BundlePart) { p[0].Generation = 0 }), nil), "generation 0"},
		{"first seq 0", reseal(parts, edit(func(p []BundlePart) { p[0].FirstSeq = 0 }), nil), "seqs 0.."},
		{"last before first", reseal(parts, edit(func(p []BundlePart) { p[0].LastSeq = p[0].FirstSeq - 1 }), nil), "seqs"},
		{"upper-case hex", reseal(parts, strings.Replace(lines, honest[0].SHA256, strings.ToUpper(honest[0].SHA256), 1), nil), ""},
		{"a field one digit short", reseal(parts, strings.Replace(lines, " 00000001 ", " 0000001 ", 1), nil), ""},
		{"a line short, another long", reseal(parts, strings.Replace(edit(func(p []BundlePart) { p[2].Stream = "cc" }), "a 00000001 ", "a 0000001 ", 1), nil), "not the form"},
		{"two spaces", reseal(parts, strings.Replace(lines, "a ", "a  ", 1), nil), ""},
		{"no final newline", reseal(parts, strings.TrimSuffix(edit(func(p []BundlePart) { p[2].Stream = "cc" }), "\n"),
			func(tr []byte) { binary.LittleEndian.PutUint32(tr[20:], 3) }), "no newline"},
		{"CRLF", reseal(parts, strings.ReplaceAll(lines, "\n", "\r\n"), nil), ""},
		{"a trailing byte after the trailer", append(append([]byte(nil), good...), 0), ""},
		{"a byte before the trailer", append(append(append([]byte(nil), good[:len(good)-BundleTrailerSize]...), 0), good[len(good)-BundleTrailerSize:]...), ""},
	}
	for _, c := range cases {
		_, err := OpenBundle(bytes.NewReader(c.data), int64(len(c.data)), 0)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrCorrupt mentioning %q", c.name, err, c.want)
		}
	}

	// A newer version asks for an upgrade, and is not corruption.
	newer := reseal(parts, lines, func(tr []byte) { tr[16] = 2 })
	if _, err := OpenBundle(bytes.NewReader(newer), int64(len(newer)), 0); errors.Is(err, ErrCorrupt) || !isNewerFormat(err) ||
		!strings.Contains(err.Error(), "bundle format 2 is newer than this ferry reads (1); upgrade ferry") {
		t.Errorf("version 2: %v", err)
	}

	// Oversize: a bundle over the limit is refused before a byte is read;
	// an index claim over the object before the index is read.
	cr := &countingReader{r: bytes.NewReader(good)}
	if _, err := OpenBundle(cr, int64(len(good)), int64(len(good)-1)); !errors.Is(err, ErrSegmentTooLarge) || cr.calls.Load() != 0 {
		t.Errorf("over the limit: %v after %d reads", err, cr.calls.Load())
	}
	huge := reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint64(tr[32:], 1<<40) })
	cr = &countingReader{r: bytes.NewReader(huge)}
	if _, err := OpenBundle(cr, int64(len(huge)), 0); !errors.Is(err, ErrCorrupt) || cr.calls.Load() != 1 || cr.bytes.Load() != BundleTrailerSize {
		t.Errorf("huge index claim: %v after %d reads of %d bytes", err, cr.calls.Load(), cr.bytes.Load())
	}
	// Claims the trailer alone disproves are refused before the index is
	// read (or allocated): one read, of the trailer.
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"index length over what its parts can need", reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint32(tr[20:], 1) })},
		{"index length under what its parts need", reseal(parts, lines, func(tr []byte) { binary.LittleEndian.PutUint32(tr[20:], 4) })},
		{"parts in fewer bytes than their headers", reseal(parts[:40], lines, nil)},
		{"index past the object", huge},
	} {
		cr := &countingReader{r: bytes.NewReader(c.data)}
		if _, err := OpenBundle(cr, int64(len(c.data)), 0); !errors.Is(err, ErrCorrupt) || cr.calls.Load() != 1 {
			t.Errorf("%s: %v after %d reads, want ErrCorrupt after reading the trailer alone", c.name, err, cr.calls.Load())
		}
	}
	// An object shorter than its stated size (a store that lies, or a
	// truncated download) is refused, not read past.
	if _, err := OpenBundle(bytes.NewReader(good[:len(good)-1]), int64(len(good)), 0); !errors.Is(err, ErrCorrupt) {
		t.Errorf("object shorter than its size: %v", err)
	}
}

// forgeIndex is reseal with the index header bytes edited after it is
// built (and the trailer's hash recomputed).
func forgeIndex(parts []byte, lines string, fix func(idx []byte)) []byte {
	data := reseal(parts, lines, nil)
	idx := data[len(parts) : len(data)-BundleTrailerSize]
	fix(idx)
	sum := sha256.Sum256(idx)
	copy(data[len(data)-32:], sum[:])
	return data
}

// TestBundlePartChecks: the index can be forged consistently, so OpenPart
// checks each part's bytes against the index's hash and the segment's
// metadata against the index's entry.
func TestBundlePartChecks(t *testing.T) {
	segs := bundleSegs(t, 5, "a", "b")
	good := writeBundle(t, segs)
	b, err := OpenBundle(bytes.NewReader(good), int64(len(good)), 0)
	if err != nil {
		t.Fatal(err)
	}
	parts := good[:b.Trailer.IndexOffset]

	// A part whose bytes do not match the index's hash.
	bad := append([]byte(nil), good...)
	bad[b.Parts[1].Offset+b.Parts[1].Length-1] ^= 1
	bb, err := OpenBundle(bytes.NewReader(bad), int64(len(bad)), 0)
	if err != nil {
		t.Fatal(err) // the index is intact
	}
	if _, _, err := bb.OpenPart(0, nil); err != nil {
		t.Fatalf("part 0 is intact: %v", err)
	}
	if _, _, err := bb.OpenPart(1, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "index says") {
		t.Errorf("damaged part: %v", err)
	}

	// The index's hash field forged, the index hash recomputed.
	forged := append([]BundlePart(nil), b.Parts...)
	forged[0].SHA256 = Hash(segs[1].data)
	data := reseal(parts, bundleLines(forged), nil)
	fb, err := OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fb.OpenPart(0, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "index says") {
		t.Errorf("forged hash field: %v", err)
	}

	// A valid segment of another stream, indexed under this one with its
	// own (true) hash: a forger reusing a's segment for stream b.
	forged = append([]BundlePart(nil), b.Parts...)
	other := segs[0].data
	newParts := append(append([]byte(nil), other...), other...)
	forged[1].Offset, forged[1].Length, forged[1].SHA256 = int64(len(other)), int64(len(other)), Hash(other)
	m, _, _ := ParseMeta(other)
	forged[1].Generation, forged[1].FirstSeq, forged[1].LastSeq = m.Generation, m.FirstSeq, m.LastSeq
	data = reseal(newParts, bundleLines(forged), nil)
	fb, err = OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fb.OpenPart(1, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "holds segment a/") {
		t.Errorf("another stream's segment: %v", err)
	}
	// The same with the seqs: b's segment indexed with other seqs.
	forged = append([]BundlePart(nil), b.Parts...)
	forged[1].LastSeq++
	data = reseal(parts, bundleLines(forged), nil)
	fb, err = OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fb.OpenPart(1, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "holds segment b/") {
		t.Errorf("other seqs: %v", err)
	}
	// A part whose metadata is intact but whose payload is not what it
	// says, with the index's hash recomputed over it: the segment's own
	// payload check refuses it.
	tampered := append([]byte(nil), parts...)
	tampered[b.Parts[1].Offset+b.Parts[1].Length-1] ^= 1
	forged = append([]BundlePart(nil), b.Parts...)
	forged[1].SHA256 = Hash(tampered[b.Parts[1].Offset:])
	data = reseal(tampered, bundleLines(forged), nil)
	fb, err = OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fb.OpenPart(1, nil); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "payload sha256") {
		t.Errorf("tampered payload: %v", err)
	}
}

// TestBundleDamage truncates the bundle at every length and changes every
// byte: each is refused by OpenBundle or by OpenPart, or (a byte whose
// change nothing needs) reads the same records.
func TestBundleDamage(t *testing.T) {
	segs := bundleSegs(t, 4, "a", "b", "c")
	good := writeBundle(t, segs)
	for n := 0; n < len(good); n++ {
		if _, err := OpenBundle(bytes.NewReader(good[:n]), int64(n), 0); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
	}
	readAll := func(data []byte) ([][]Record, error) {
		b, err := OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
		if err != nil {
			return nil, err
		}
		var out [][]Record
		for i := range b.Parts {
			s, _, err := b.OpenPart(i, nil)
			if err != nil {
				return nil, err
			}
			rs, err := s.Records(0)
			if err != nil {
				return nil, err
			}
			out = append(out, all(rs))
		}
		return out, nil
	}
	damaged := append([]byte(nil), good...)
	for i := range damaged {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			damaged[i] ^= x
			got, err := readAll(damaged)
			damaged[i] ^= x
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !isNewerFormat(err) && !errors.Is(err, ErrSegmentTooLarge) {
					t.Fatalf("byte %d ^ %#x: %v", i, x, err)
				}
				continue
			}
			// Only bytes no check covers may change: none in a bundle
			// (the index is hashed, the parts too), but say what changed.
			t.Fatalf("byte %d ^ %#x read without an error (%d parts)", i, x, len(got))
		}
	}
}

func TestBundleName(t *testing.T) {
	if got := BundleName(0x1f); got != "000000000000001f.bundle" {
		t.Fatal(got)
	}
	if n, ok := ParseBundleName(BundleName(1 << 60)); !ok || n != 1<<60 {
		t.Fatal(n, ok)
	}
	for _, bad := range []string{"", "0000000000000000.bundle", "000000000000001F.bundle", "00000000000001f.bundle",
		"000000000000001f.bundle.zst", "000000000000001f.seg.zst", "0000000000000001f.bundle"} {
		if _, ok := ParseBundleName(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// goldenBundle is the golden bundle: the golden-v2 segment of stream app
// and a two-record format-2 segment of stream web, generation 3.
func goldenBundle(t testing.TB) []byte {
	t.Helper()
	app := goldenSegment(t, 2)
	b := newBuilder(t)
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	web, _ := build(t, b, "web", 3, ZeroHash, []Record{
		{Seq: 7, Time: t0, Data: []byte("GET /index.html 200\n")},
		{Seq: 8, Time: t0, Data: []byte("GET /favicon.ico 404\n")},
	}, goldenSealedAt)
	return writeBundle(t, []bundleSeg{{stream: "app", data: app}, {stream: "web", data: web}})
}

const goldenBundleFile, goldenBundleHex = "testdata/golden-v1.bundle", "testdata/golden-v1.bundle.hex"

// TestBundleGolden pins bundle format 1 as TestGolden pins segments: the
// writer still produces the committed bytes, and the committed bytes
// still open to the same parts and records.
func TestBundleGolden(t *testing.T) {
	data := goldenBundle(t)
	hexDump := annotateBundle(t, data)
	if *update {
		if err := os.WriteFile(goldenBundleFile, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenBundleHex, []byte(hexDump), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	committed, err := os.ReadFile(goldenBundleFile)
	if err != nil {
		t.Fatalf("%v (generate it with: go test ./batch -run Golden -update)", err)
	}
	if !bytes.Equal(data, committed) {
		t.Errorf("bundle writer output differs from %s; if intended, run go test ./batch -run Golden -update and review", goldenBundleFile)
	}
	hexCommitted, err := os.ReadFile(goldenBundleHex)
	if err != nil {
		t.Fatal(err)
	}
	if string(hexCommitted) != annotateBundle(t, committed) {
		t.Errorf("%s is out of date; run go test ./batch -run Golden -update", goldenBundleHex)
	}
	b, err := OpenBundle(bytes.NewReader(committed), int64(len(committed)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Parts) != 2 || b.Parts[0].Name() != "00000001-0000000000000001-0000000000000005.seg.zst" ||
		b.Parts[1].Name() != "00000003-0000000000000007-0000000000000008.seg.zst" {
		t.Fatalf("parts %+v", b.Parts)
	}
	app, err := os.ReadFile(goldenSeg(2))
	if err != nil {
		t.Fatal(err)
	}
	s, raw, err := b.OpenPart(0, nil)
	if err != nil || !bytes.Equal(raw, app) {
		t.Fatalf("part app is not golden-v2.seg.zst: %v", err)
	}
	recs, err := s.Records(0)
	if err != nil {
		t.Fatal(err)
	}
	checkRecords(t, all(recs), goldenRecordsOf(2))
	s, _, err = b.OpenPart(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	recs, err = s.Records(0)
	if err != nil || recs.Len() != 2 {
		t.Fatalf("web: %v", err)
	}
	doc, err := os.ReadFile("../docs/FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, hexCommitted) {
		t.Errorf("docs/FORMAT.md does not contain the current %s", goldenBundleHex)
	}
	for _, want := range []string{
		fmt.Sprintf("magic `0x%08X`", BundleFrameMagic),
		fmt.Sprintf("| `MaxBundleParts` | %d |", MaxBundleParts),
		fmt.Sprintf("%d bytes", BundleTrailerSize),
	} {
		if !bytes.Contains(doc, []byte(want)) {
			t.Errorf("docs/FORMAT.md lacks %q", want)
		}
	}
}

// annotateBundle renders a bundle as an xxd-style dump: the start of each
// part (a segment, dissected in the segment golden files), then the index
// and the trailer field by field.
func annotateBundle(t testing.TB, data []byte) string {
	t.Helper()
	b, err := OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	var w strings.Builder
	fmt.Fprintf(&w, "# %s: ferry bundle format %d, %d bytes, sha256 %s\n", "golden-v1.bundle", b.Trailer.Version, len(data), Hash(data))
	fmt.Fprintf(&w, "# xxd-style: offset, hex, ASCII, field. Regenerate with go test ./batch -run Golden -update\n")
	for i, p := range b.Parts {
		fmt.Fprintf(&w, "\n# Part %d: segment %s/%s, %d bytes, exactly as stored alone\n", i+1, p.Stream, p.Name(), p.Length)
		dump(&w, data[p.Offset:p.Offset+16], int(p.Offset), "its metadata frame: magic, size, tag FERRYSEG")
		fmt.Fprintf(&w, "# ... %d more bytes of the segment\n", p.Length-16)
	}
	at := int(b.Trailer.IndexOffset)
	field := func(n int, what string, args ...any) {
		dump(&w, data[at:at+n], at, fmt.Sprintf(what, args...))
		at += n
	}
	fmt.Fprintf(&w, "\n# Index: a zstd skippable frame, %d bytes\n", b.Trailer.IndexLength)
	field(4, "magic 0x%08X, little-endian", BundleFrameMagic)
	field(4, "frame size %d, little-endian (tag + lines)", b.Trailer.IndexLength-8)
	field(8, "tag %q", bundleIndexTag)
	for i, p := range b.Parts {
		field(len(p.Stream)+bundleLineFixed, "part %d: stream gen first last offset length sha256, newline", i+1)
	}
	fmt.Fprintf(&w, "\n# Trailer: a zstd skippable frame, %d bytes, the end of the bundle\n", BundleTrailerSize)
	field(4, "magic 0x%08X, little-endian", BundleFrameMagic)
	field(4, "frame size %d, little-endian", BundleTrailerSize-8)
	field(8, "tag %q", bundleTrailerTag)
	field(4, "version %d, uint32 little-endian", b.Trailer.Version)
	field(4, "parts %d, uint32 little-endian", b.Trailer.Parts)
	field(8, "index offset %d, uint64 little-endian", b.Trailer.IndexOffset)
	field(8, "index length %d, uint64 little-endian", b.Trailer.IndexLength)
	field(32, "SHA-256 of the index frame")
	if at != len(data) {
		t.Fatalf("annotated %d of %d bytes", at, len(data))
	}
	return w.String()
}

// FuzzOpenBundle feeds OpenBundle any bytes: it must never panic, refuse
// with ErrCorrupt, ErrSegmentTooLarge or the upgrade message, and accept
// only a bundle in its one encoding: the index and trailer rebuilt from
// what it parsed are the bytes it read. Parts it accepts open as their
// index says or are refused.
func FuzzOpenBundle(f *testing.F) {
	if g, err := os.ReadFile(goldenBundleFile); err == nil {
		f.Add(g)
		f.Add(g[len(g)-BundleTrailerSize:])
		f.Add(g[:len(g)-1])
	}
	segs := bundleSegs(f, 3, "a", "b", "c")
	good := writeBundle(f, segs)
	f.Add(good)
	parts := good[:len(good)-BundleTrailerSize-16-3*144]
	f.Add(reseal(parts, "a 00000001 0000000000000001 0000000000000003 0000000000000000 0000000000000010 "+strings.Repeat("0", 64)+"\n", nil))
	f.Add(reseal(nil, "", nil))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := OpenBundle(bytes.NewReader(data), int64(len(data)), 1<<20)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrSegmentTooLarge) && !isNewerFormat(err) {
				t.Fatalf("error not ErrCorrupt, ErrSegmentTooLarge or an upgrade message: %v", err)
			}
			return
		}
		if got := reseal(data[:b.Trailer.IndexOffset], bundleLines(b.Parts), nil); !bytes.Equal(got, data) {
			t.Fatalf("accepted a bundle that is not in its one encoding")
		}
		for i, p := range b.Parts {
			s, raw, err := b.OpenPart(i, nil)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !isNewerFormat(err) {
					t.Fatalf("part %d: %v", i, err)
				}
				continue
			}
			if Hash(raw) != p.SHA256 || s.Meta.Stream != p.Stream || s.Meta.Name() != p.Name() {
				t.Fatalf("part %d opened as %s/%s", i, s.Meta.Stream, s.Meta.Name())
			}
		}
	})
}

// TestBundleStockTools runs the lines docs/FORMAT.md gives for getting a
// part out of a bundle with stock tools (tail, head, od, awk, sha256sum,
// zstd) and checks they give the part's segment and its records.
func TestBundleStockTools(t *testing.T) {
	for _, tool := range []string{"zstd", "od", "tail", "head", "awk", "sha256sum", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found (%v): install it (zstd: apt-get install zstd; the rest: coreutils, grep)", tool, err)
		}
	}
	data, err := os.ReadFile(goldenBundleFile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bundle := filepath.Join(dir, "golden-v1.bundle")
	if err := os.WriteFile(bundle, data, 0o644); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	script := between(t, string(doc), "<!-- bundle-stock-tools -->\n```\n", "```\n")
	cmd := exec.Command("sh", "-ec", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "B="+bundle, "STREAM=web")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	part, err := os.ReadFile(filepath.Join(dir, "part.seg.zst"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenBundle(bytes.NewReader(data), int64(len(data)), 0)
	if err != nil {
		t.Fatal(err)
	}
	web, raw, err := b.OpenPart(1, nil)
	if err != nil || !bytes.Equal(raw, part) {
		t.Fatalf("part.seg.zst is not web's part: %v", err)
	}
	stream, err := web.Decompress(0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasSuffix(out, append([]byte("part.seg.zst: OK\n"), stream...)) {
		t.Fatalf("the documented lines printed\n%q\nwant sha256sum's OK, then web's record stream:\n%q", out, stream)
	}
	// And the whole bundle of plaintext parts is a zstd file: zstd -dc
	// prints every part's record stream, skipping the index and trailer.
	zout, err := exec.Command("zstd", "-dc", bundle).Output()
	if err != nil {
		t.Fatal(err)
	}
	var whole []byte
	for i := range b.Parts {
		s, _, err := b.OpenPart(i, nil)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := s.Decompress(0)
		if err != nil {
			t.Fatal(err)
		}
		whole = append(whole, raw...)
	}
	if !bytes.Equal(zout, whole) {
		t.Fatalf("zstd -dc of the bundle: %d bytes, want the parts' record streams, %d", len(zout), len(whole))
	}
}

// between is the text of s between the first start and the next end.
func between(t testing.TB, s, start, end string) string {
	t.Helper()
	i := strings.Index(s, start)
	if i < 0 {
		t.Fatalf("no %q", start)
	}
	s = s[i+len(start):]
	j := strings.Index(s, end)
	if j < 0 {
		t.Fatalf("no %q after %q", end, start)
	}
	return s[:j]
}

// FuzzParseBundleIndex fuzzes the index's text behind its hash (which
// FuzzOpenBundle's mutations rarely get past): the trailer is made to
// match whatever index the fuzzer writes. It must never panic, refuse
// with ErrCorrupt, and accept only an index in its one encoding whose
// parts tile the bytes before it.
func FuzzParseBundleIndex(f *testing.F) {
	if g, err := os.ReadFile(goldenBundleFile); err == nil {
		b, err := OpenBundle(bytes.NewReader(g), int64(len(g)), 0)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(bundleLines(b.Parts)), uint32(len(b.Parts)), b.Trailer.IndexOffset)
	}
	f.Add([]byte("a 00000001 0000000000000001 0000000000000001 0000000000000000 0000000000000010 "+strings.Repeat("0", 64)+"\n"), uint32(1), int64(16))
	f.Add([]byte(""), uint32(0), int64(0))
	f.Fuzz(func(t *testing.T, lines []byte, parts uint32, partsLen int64) {
		if partsLen < 0 || partsLen > 1<<40 {
			return
		}
		idx := reseal(nil, string(lines), nil)
		idx = idx[:len(idx)-BundleTrailerSize]
		tr := BundleTrailer{Version: 1, Parts: int(parts), IndexOffset: partsLen, IndexLength: int64(len(idx)), IndexSHA256: sha256.Sum256(idx)}
		ps, err := ParseBundleIndex(idx, tr)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("not ErrCorrupt: %v", err)
			}
			return
		}
		if bundleLines(ps) != string(lines) || len(ps) != int(parts) {
			t.Fatalf("accepted an index not in its one encoding")
		}
		var off int64
		for _, p := range ps {
			if p.Offset != off || p.Length < minBundlePart {
				t.Fatalf("parts do not tile: %+v", ps)
			}
			off += p.Length
		}
		if off != partsLen {
			t.Fatalf("parts end at %d, index at %d", off, partsLen)
		}
	})
}

// TestBundleRefusedAsSegment: a ferry that does not know bundles, handed
// one as a segment file (cat, verify), reads the first part's metadata
// and refuses the rest as corruption, as docs/FORMAT.md says.
func TestBundleRefusedAsSegment(t *testing.T) {
	data, err := os.ReadFile(goldenBundleFile)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = Decode(data, 0)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "payload is 1003 bytes, metadata says 109 (truncated or extended)") {
		t.Fatalf("Decode of a bundle: %v", err)
	}
	sr, err := NewSegmentReader(bytes.NewReader(data), int64(len(data)), DefaultMaxSegmentBytes)
	if err == nil {
		_, err = sr.Verify(make([]byte, 4096))
	}
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("segment reader on a bundle: %v", err)
	}
}
