package batch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// streamDecode is Decode by way of a SegmentReader: the segment verified
// and decompressed as it is read.
func streamDecode(data []byte, limit int64, workers int) (*Segment, Records, error) {
	sr, err := NewSegmentReader(bytes.NewReader(data), 0, limit)
	if err != nil {
		return nil, Records{}, err
	}
	s, raw, err := sr.Decompress(nil, workers)
	if err != nil {
		return nil, Records{}, err
	}
	recs, err := s.ParseRecords(raw, Records{})
	if err != nil {
		return nil, Records{}, err
	}
	return s, recs, nil
}

// wholeDecode is ReadSegment followed by Decode: the segment read whole,
// then verified and decompressed.
func wholeDecode(data []byte, limit int64) (*Segment, Records, error) {
	data, err := ReadSegment(bytes.NewReader(data), nil, 0, limit)
	if err != nil {
		return nil, Records{}, err
	}
	return Decode(data, limit)
}

// sameVerdict fails the test unless streamDecode, synchronous and not,
// gives what wholeDecode gives for data: the same records and hash, or
// the same error.
func sameVerdict(t *testing.T, data []byte, limit int64) {
	t.Helper()
	for _, workers := range []int{1, 2} {
		sameVerdictOf(t, data, limit, workers)
	}
}

func sameVerdictOf(t *testing.T, data []byte, limit int64, workers int) {
	t.Helper()
	ws, wrecs, werr := wholeDecode(data, limit)
	gs, grecs, gerr := streamDecode(data, limit, workers)
	switch {
	case werr == nil && gerr == nil:
		if gs.Hash != ws.Hash || gs.Meta.Name() != ws.Meta.Name() {
			t.Fatalf("stream: hash %s of %s; read whole: %s of %s", gs.Hash, gs.Meta.Name(), ws.Hash, ws.Meta.Name())
		}
		checkRecords(t, all(grecs), all(wrecs))
	case werr != nil && gerr != nil:
		if gerr.Error() != werr.Error() {
			t.Fatalf("stream (%d workers) says %v\nread whole says %v", workers, gerr, werr)
		}
	default:
		t.Fatalf("stream (%d workers) says %v, read whole says %v", workers, gerr, werr)
	}
}

func TestSegmentReaderMatchesDecode(t *testing.T) {
	recs := makeRecords(1, 300)
	multi, _ := build(t, newBuilder(t), "app", 1, ZeroHash, bigRecords(1, 3*ChunkSize+500), baseTime)
	segs := map[string][]byte{
		"golden v1":          goldenSegment(t, 1),
		"golden v2":          goldenSegment(t, 2),
		"no content size v2": forge(t, honestMeta2(recs), compress(t, frames2(recs))),
		"multi-frame":        multi,
		"no content size":    forge(t, honestMeta(recs), compress(t, frames(recs))),
		"empty":              nil,
		"not a segment":      []byte("garbage that is not a segment at all"),
	}
	for i, seg := range hostileSegments(t) {
		segs[fmt.Sprint("hostile ", i)] = seg
	}
	for name, seg := range segs {
		t.Run(name, func(t *testing.T) {
			sameVerdict(t, seg, 64<<20)
			sameVerdict(t, seg, int64(len(seg))) // the limit is the stored size
			sameVerdict(t, seg, int64(len(seg))-1)
		})
	}
}

func TestSegmentReaderDamage(t *testing.T) {
	for _, f := range goldenFormats {
		t.Run(fmt.Sprintf("v%d", f), func(t *testing.T) { testSegmentReaderDamage(t, goldenSegment(t, f)) })
	}
}

func testSegmentReaderDamage(t *testing.T, seg []byte) {
	for n := range len(seg) {
		sameVerdict(t, seg[:n], 1<<20)
	}
	for _, tail := range [][]byte{{0}, compress(t, []byte("more")), make([]byte, 100)} {
		long := append(bytes.Clone(seg), tail...)
		sameVerdict(t, long, 1<<20)
		if _, err := ReadSegment(bytes.NewReader(long), nil, 0, int64(len(seg))+10); !errors.Is(err, ErrSegmentTooLarge) && len(tail) > 10 {
			t.Errorf("extended past the limit: %v", err)
		}
	}
	for pos := range seg {
		orig := seg[pos]
		for _, x := range []byte{1, 0x80, 0xff} {
			seg[pos] = orig ^ x
			sameVerdict(t, seg, 1<<20)
		}
		seg[pos] = orig
	}
}

// A reader's error is returned as it is, never as damage, wherever it
// happens.
func TestSegmentReaderReadError(t *testing.T) {
	seg, _ := build(t, newBuilder(t), "app", 1, ZeroHash, bigRecords(1, 3*ChunkSize), baseTime)
	boom := errors.New("connection reset")
	for _, at := range []int{0, 5, 100, len(seg) / 2, len(seg) - 1} {
		for _, workers := range []int{1, 2} {
			broken := io.MultiReader(bytes.NewReader(seg[:at]), iotest.ErrReader(boom))
			sr, err := NewSegmentReader(broken, 0, 64<<20)
			if err == nil {
				_, _, err = sr.Decompress(nil, workers)
			}
			if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
				t.Errorf("%d workers: error after %d bytes: %v, want %v alone", workers, at, err, boom)
			}
		}
		broken := io.MultiReader(bytes.NewReader(seg[:at]), iotest.ErrReader(boom))
		if _, err := ReadSegment(broken, nil, 0, 64<<20); !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
			t.Errorf("ReadSegment: error after %d bytes: %v, want %v alone", at, err, boom)
		}
	}
}

// incompressible is a segment of about n bytes of random data, which
// takes as much stored as decompressed.
func incompressible(t testing.TB, n int) []byte {
	rng := rand.NewChaCha8([32]byte{18})
	var recs []Record
	for seq, size := uint64(1), 0; size < n; seq++ {
		data := make([]byte, 64<<10)
		rng.Read(data)
		recs = append(recs, Record{Seq: seq, Time: baseTime, Data: data})
		size += len(data)
	}
	seg, _ := build(t, newBuilder(t), "app", 1, ZeroHash, recs, baseTime)
	return seg
}

// Decompress holds the record stream, not the stored bytes as well:
// what it allocates is the claim and a few MiB of decoder, where reading
// the segment whole first takes its stored size more.
func TestSegmentReaderMemory(t *testing.T) {
	seg := incompressible(t, 24<<20)
	m, _, err := ParseMeta(seg)
	if err != nil {
		t.Fatal(err)
	}
	whole := func() {
		data, err := ReadSegment(bytes.NewReader(seg), nil, int64(len(seg)), 64<<20)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(data)
		if err == nil {
			_, err = s.DecompressInto(nil, 64<<20, 2)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	w := allocated(whole)
	if w < uint64(len(seg))+uint64(m.UncompressedSize) {
		t.Fatalf("reading whole allocated %d bytes, less than stored plus decompressed: the test measures nothing", w)
	}
	for _, workers := range []int{1, 2} {
		streamed := func() {
			sr, err := NewSegmentReader(bytes.NewReader(seg), int64(len(seg)), 64<<20)
			if err == nil {
				_, _, err = sr.Decompress(nil, workers)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		streamed() // the pooled decoder's own buffers
		goroutines := runtime.NumGoroutine()
		s := allocated(streamed)
		t.Logf("%.1f MiB stored, %.1f MiB decompressed: read whole %.1f MiB allocated, streamed with %d workers %.1f MiB",
			float64(len(seg))/(1<<20), float64(m.UncompressedSize)/(1<<20), float64(w)/(1<<20), workers, float64(s)/(1<<20))
		if s > uint64(m.UncompressedSize)*9/8+4<<20 {
			t.Fatalf("%d workers: streamed allocated %d bytes for a claim of %d", workers, s, m.UncompressedSize)
		}
		if n := runtime.NumGoroutine(); n > goroutines {
			t.Fatalf("%d workers: %d goroutines after Decompress, %d before", workers, n, goroutines)
		}
	}
}

func TestReadSegment(t *testing.T) {
	data, _ := build(t, newBuilder(t), "app", 1, ZeroHash, bigRecords(1, 160_000), baseTime)
	size := int64(len(data))
	for _, tc := range []struct {
		desc   string
		listed int64
		buf    []byte
	}{
		{"listed exactly", size, nil},
		{"listed short", 10, nil},
		{"listed negative", -1, nil},
		{"not listed", 0, nil},
		{"reused buffer", size, make([]byte, 7, 2*size)},
		{"small buffer", size, make([]byte, 3)},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := ReadSegment(iotest.HalfReader(bytes.NewReader(data)), tc.buf, tc.listed, size)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, %v; want the %d bytes", len(got), err, len(data))
			}
			if cap(tc.buf) >= len(data)+1 && &got[0] != &tc.buf[:1][0] {
				t.Fatal("a big enough buffer was not reused")
			}
			if cap(tc.buf) < len(data)+1 && int64(cap(got)) > size+1 {
				t.Fatalf("buffer of %d bytes for %d: sized from anything but the metadata", cap(got), size)
			}
		})
	}
	limit := size - 1
	want := fmt.Sprintf("metadata says %d bytes (%s) stored, over the limit of %d", size, sizeString(size), limit)
	if _, err := ReadSegment(bytes.NewReader(data), nil, 10, limit); !errors.Is(err, ErrSegmentTooLarge) || !strings.Contains(err.Error(), want) {
		t.Fatalf("over the limit: %v", err)
	}
	want = fmt.Sprintf("%d bytes (%s) stored, over the limit of %d", size, sizeString(size), limit)
	if _, err := ReadSegment(bytes.NewReader(data), nil, size, limit); !errors.Is(err, ErrSegmentTooLarge) || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("listed over the limit: %v", err)
	}
	// Past what the metadata says: damage, and none of it held.
	long := append(bytes.Clone(data), make([]byte, 1000)...)
	got, err := ReadSegment(bytes.NewReader(long), nil, 0, 2*size)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "truncated or extended") || int64(len(got)) > size+1 {
		t.Fatalf("extended: %d bytes, %v", len(got), err)
	}
	if _, err := ReadSegment(bytes.NewReader(long), nil, 0, size+500); !errors.Is(err, ErrSegmentTooLarge) {
		t.Fatalf("extended past the limit: %v", err)
	}
	// Cut short: returned for Open to report.
	got, err = ReadSegment(bytes.NewReader(data[:size-7]), nil, 0, size)
	if err != nil || !bytes.Equal(got, data[:size-7]) {
		t.Fatalf("cut short: %d bytes, %v", len(got), err)
	}
}

// FuzzSegmentReader holds the streaming reader to the verdict of reading
// whole on arbitrary bytes.
func FuzzSegmentReader(f *testing.F) {
	for _, golden := range goldenSegs(f) {
		f.Add(golden)
		f.Add(golden[:len(golden)/2])
		f.Add(golden[:20])
	}
	f.Add([]byte{})
	recs := makeRecords(1, 40)
	f.Add(forge(f, honestMeta(recs), compress(f, frames(recs))))
	f.Add(forge(f, honestMeta2(recs), compress(f, frames2(recs))))
	for _, seg := range hostileSegments(f) {
		f.Add(seg)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sameVerdict(t, data, 64<<20)
	})
}

// verifyStream is Open by way of a SegmentReader: the segment verified as
// it is read through a small buffer, never held.
func verifyStream(data []byte, limit int64) (*Segment, error) {
	sr, err := NewSegmentReader(bytes.NewReader(data), 0, limit)
	if err != nil {
		return nil, err
	}
	return sr.Verify(make([]byte, 100))
}

// Verify reaches Open's verdict, with Open's words, on a segment whole,
// cut short anywhere, extended, or with any byte flipped.
func TestSegmentReaderVerify(t *testing.T) {
	seg, _ := build(t, newBuilder(t), "app", 1, ZeroHash, bigRecords(1, 2*ChunkSize+300), baseTime)
	same := func(data []byte) {
		t.Helper()
		want, werr := Open(data)
		got, gerr := verifyStream(data, 64<<20)
		switch {
		case werr == nil && gerr == nil:
			if got.Hash != want.Hash || !reflect.DeepEqual(got.Meta, want.Meta) || got.Payload != nil {
				t.Fatalf("Verify: %s %+v (payload %d bytes); Open: %s %+v", got.Hash, got.Meta, len(got.Payload), want.Hash, want.Meta)
			}
		case werr != nil && gerr != nil:
			if gerr.Error() != werr.Error() {
				t.Fatalf("Verify says %v\nOpen says %v", gerr, werr)
			}
		default:
			t.Fatalf("Verify says %v, Open says %v", gerr, werr)
		}
	}
	same(seg)
	for n := 0; n < len(seg); n += 1 + n/8 {
		same(seg[:n])
	}
	same(append(bytes.Clone(seg), 0))
	for pos := 0; pos < len(seg); pos += 1 + pos/16 {
		seg[pos] ^= 0x20
		same(seg)
		seg[pos] ^= 0x20
	}
	boom := errors.New("connection reset")
	broken := io.MultiReader(bytes.NewReader(seg[:len(seg)/2]), iotest.ErrReader(boom))
	sr, err := NewSegmentReader(broken, 0, 64<<20)
	if err == nil {
		_, err = sr.Verify(make([]byte, 4096))
	}
	if !errors.Is(err, boom) || errors.Is(err, ErrCorrupt) {
		t.Errorf("read error half-way: %v, want %v alone", err, boom)
	}
}
