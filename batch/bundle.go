package batch

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// A bundle is one object carrying one segment of each of several streams,
// each exactly as it would be stored alone, followed by an index and a
// fixed trailer (docs/FORMAT.md, "Bundles"). It lets a shipper of many
// streams seal and store them with one file and one put per tick instead
// of one per stream. The parts stay segments: each is verified by the
// segment decoder, chained and signed on its own; the index only says
// where they are.

// BundleVersion is the bundle format this code writes and the newest it
// reads. A bundle with a higher version is refused with an upgrade
// message, never guessed at.
const BundleVersion = 1

// Bundle framing. The index and the trailer are zstd skippable frames
// (magic 0x184D2A5D, one below a segment's metadata frame), so a bundle
// of plaintext parts is a valid zstd file: `zstd -dc` prints every part's
// record stream, one after another.
const (
	BundleFrameMagic uint32 = 0x184D2A5D
	bundleIndexTag          = "FERRYBIX"
	bundleTrailerTag        = "FERRYBDL"
	// BundleTrailerSize is the fixed size of the trailer, the last bytes
	// of every bundle.
	BundleTrailerSize = 72
	// bundleIndexHeader is the index frame's magic, size and tag.
	bundleIndexHeader = 16
	// MaxBundleParts caps the parts of one bundle (and so its index,
	// MaxBundleIndexSize) before anything is allocated for them.
	MaxBundleParts = 4096
	// minBundlePart is the smallest part the index may claim: a segment's
	// metadata frame header and tag.
	minBundlePart = 16
	// An index line is "stream gen first last offset length sha256\n",
	// fixed-width lower-case hex: the stream name plus 143 bytes.
	bundleLineFixed = 1 + 8 + 1 + 16 + 1 + 16 + 1 + 16 + 1 + 16 + 1 + 64 + 1
	maxStreamName   = 128
	// MaxBundleIndexSize is the largest index frame: MaxBundleParts lines
	// of the longest stream name.
	MaxBundleIndexSize = bundleIndexHeader + MaxBundleParts*(maxStreamName+bundleLineFixed)
)

// DefaultMaxBundleBytes is the readers' default limit on a bundle's
// stored size, used when OpenBundle is given none: the same as a
// segment's (DefaultMaxSegmentBytes).
const DefaultMaxBundleBytes = DefaultMaxSegmentBytes

// BundlePart is one index entry: where a stream's segment lies in a
// bundle, and the SHA-256 of its bytes (its hash in the stream's chain).
type BundlePart struct {
	Stream     string
	Generation uint32
	FirstSeq   uint64
	LastSeq    uint64
	Offset     int64
	Length     int64
	SHA256     string // 64 lower-case hex digits
}

// Name is the part's segment name (SegmentName), as it would be stored
// alone.
func (p *BundlePart) Name() string { return SegmentName(p.Generation, p.FirstSeq, p.LastSeq) }

// appendLine appends p's index line.
func (p *BundlePart) appendLine(b []byte) []byte {
	return fmt.Appendf(b, "%s %08x %016x %016x %016x %016x %s\n",
		p.Stream, p.Generation, p.FirstSeq, p.LastSeq, p.Offset, p.Length, p.SHA256)
}

// BundleWriter writes a bundle to w: the parts as they are added, then,
// at Close, the index and the trailer. It holds the index, not the parts.
type BundleWriter struct {
	w     io.Writer
	off   int64
	parts []BundlePart
	err   error
}

// NewBundleWriter starts a bundle on w.
func NewBundleWriter(w io.Writer) *BundleWriter { return &BundleWriter{w: w} }

// Add appends one stream's complete segment. Parts must come in strictly
// ascending order of stream name (one part per stream), so a set of
// segments has one bundle. hash is the segment's batch.Hash (a Builder's
// Hash after Seal), or "" to compute it here. The segment's metadata
// frame is checked and names the part; its payload is not decoded.
func (w *BundleWriter) Add(segment []byte, hash string) error {
	if w.err != nil {
		return w.err
	}
	if len(w.parts) == MaxBundleParts {
		return fmt.Errorf("bundle: more than %d parts", MaxBundleParts)
	}
	m, off, err := ParseMeta(segment)
	if err != nil {
		return fmt.Errorf("bundle: part %d: %w", len(w.parts)+1, err)
	}
	if int64(len(segment)-off) != m.PayloadSize {
		return fmt.Errorf("bundle: part %s/%s: payload is %d bytes, metadata says %d: %w", m.Stream, m.Name(), len(segment)-off, m.PayloadSize, ErrCorrupt)
	}
	if err := CheckStream(m.Stream); err != nil {
		return fmt.Errorf("bundle: part %d: %w", len(w.parts)+1, err)
	}
	if n := len(w.parts); n > 0 && w.parts[n-1].Stream >= m.Stream {
		return fmt.Errorf("bundle: part %q after %q: parts must come in ascending order of stream name, one per stream", m.Stream, w.parts[n-1].Stream)
	}
	if m.Generation == 0 {
		return fmt.Errorf("bundle: part %s: generation 0: %w", m.Stream, ErrCorrupt)
	}
	if hash == "" {
		hash = Hash(segment)
	}
	if !isHex64(hash) {
		return fmt.Errorf("bundle: part %s: hash %q is not 64 lower-case hex digits", m.Stream, hash)
	}
	if _, err := w.w.Write(segment); err != nil {
		w.err = fmt.Errorf("bundle: write part %s: %w", m.Stream, err)
		return w.err
	}
	w.parts = append(w.parts, BundlePart{Stream: m.Stream, Generation: m.Generation, FirstSeq: m.FirstSeq,
		LastSeq: m.LastSeq, Offset: w.off, Length: int64(len(segment)), SHA256: hash})
	w.off += int64(len(segment))
	return nil
}

// Parts are the parts added so far, in bundle order.
func (w *BundleWriter) Parts() []BundlePart { return w.parts }

// Close writes the index and the trailer and returns the bundle's size.
// It does not close the underlying writer. A bundle holds at least one
// part.
func (w *BundleWriter) Close() (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	if len(w.parts) == 0 {
		return 0, errors.New("bundle: no parts")
	}
	idx := make([]byte, bundleIndexHeader, bundleIndexHeader+len(w.parts)*(bundleLineFixed+16))
	for i := range w.parts {
		idx = w.parts[i].appendLine(idx)
	}
	binary.LittleEndian.PutUint32(idx, BundleFrameMagic)
	binary.LittleEndian.PutUint32(idx[4:], uint32(len(idx)-8))
	copy(idx[8:], bundleIndexTag)
	sum := sha256.Sum256(idx)
	tr := make([]byte, 0, BundleTrailerSize)
	tr = binary.LittleEndian.AppendUint32(tr, BundleFrameMagic)
	tr = binary.LittleEndian.AppendUint32(tr, BundleTrailerSize-8)
	tr = append(tr, bundleTrailerTag...)
	tr = binary.LittleEndian.AppendUint32(tr, BundleVersion)
	tr = binary.LittleEndian.AppendUint32(tr, uint32(len(w.parts)))
	tr = binary.LittleEndian.AppendUint64(tr, uint64(w.off))
	tr = binary.LittleEndian.AppendUint64(tr, uint64(len(idx)))
	tr = append(tr, sum[:]...)
	for _, b := range [][]byte{idx, tr} {
		if _, err := w.w.Write(b); err != nil {
			w.err = fmt.Errorf("bundle: write index: %w", err)
			return 0, w.err
		}
	}
	w.err = errors.New("bundle: closed")
	return w.off + int64(len(idx)) + BundleTrailerSize, nil
}

// BundleTrailer is a bundle's decoded trailer.
type BundleTrailer struct {
	Version     int
	Parts       int
	IndexOffset int64
	IndexLength int64
	IndexSHA256 [sha256.Size]byte
}

// ParseBundleTrailer decodes the last BundleTrailerSize bytes of a bundle
// of size bytes and checks every claim it makes against size and the
// format's limits, so that the index it locates may be allocated. A
// version above BundleVersion is refused with an upgrade message that does
// not wrap ErrCorrupt; every other failure does.
func ParseBundleTrailer(tr []byte, size int64) (BundleTrailer, error) {
	var t BundleTrailer
	if len(tr) != BundleTrailerSize || size < BundleTrailerSize {
		return t, fmt.Errorf("bundle of %d bytes is shorter than its %d-byte trailer: %w", size, BundleTrailerSize, ErrCorrupt)
	}
	if m := binary.LittleEndian.Uint32(tr); m != BundleFrameMagic {
		return t, fmt.Errorf("bundle trailer starts with %#08x, not %#08x (not a ferry bundle, or truncated): %w", m, BundleFrameMagic, ErrCorrupt)
	}
	if n := binary.LittleEndian.Uint32(tr[4:]); n != BundleTrailerSize-8 {
		return t, fmt.Errorf("bundle trailer frame size %d, not %d: %w", n, BundleTrailerSize-8, ErrCorrupt)
	}
	if string(tr[8:16]) != bundleTrailerTag {
		return t, fmt.Errorf("bundle trailer lacks the %s tag: %w", bundleTrailerTag, ErrCorrupt)
	}
	v := binary.LittleEndian.Uint32(tr[16:])
	if v == 0 {
		return t, fmt.Errorf("bundle version 0 invalid: %w", ErrCorrupt)
	}
	if v > BundleVersion {
		return t, newerFormat("bundle", int(v), BundleVersion)
	}
	t.Version = int(v)
	parts := binary.LittleEndian.Uint32(tr[20:])
	if parts == 0 || parts > MaxBundleParts {
		return t, fmt.Errorf("bundle claims %d parts, not 1 to %d: %w", parts, MaxBundleParts, ErrCorrupt)
	}
	t.Parts = int(parts)
	off, n := binary.LittleEndian.Uint64(tr[24:]), binary.LittleEndian.Uint64(tr[32:])
	body := uint64(size - BundleTrailerSize)
	if off > body || n != body-off {
		return t, fmt.Errorf("bundle index at %d, %d bytes, does not end at the trailer (offset %d): %w", off, n, body, ErrCorrupt)
	}
	if lo, hi := uint64(bundleIndexHeader+t.Parts*(bundleLineFixed+1)), uint64(bundleIndexHeader+t.Parts*(bundleLineFixed+maxStreamName)); n < lo || n > hi {
		return t, fmt.Errorf("bundle index of %d bytes cannot hold %d parts (%d to %d bytes): %w", n, t.Parts, lo, hi, ErrCorrupt)
	}
	if off < uint64(t.Parts*minBundlePart) {
		return t, fmt.Errorf("bundle parts take %d bytes, too few for %d parts: %w", off, t.Parts, ErrCorrupt)
	}
	t.IndexOffset, t.IndexLength = int64(off), int64(n)
	copy(t.IndexSHA256[:], tr[40:])
	return t, nil
}

// ParseBundleIndex decodes the index frame t locates, checking it against
// t's hash and every rule of its one encoding: fixed-width lower-case hex,
// stream names in strictly ascending order (one part per stream), parts
// that tile the bytes before the index exactly, in order, with no gap or
// overlap. Every failure wraps ErrCorrupt.
func ParseBundleIndex(idx []byte, t BundleTrailer) ([]BundlePart, error) {
	if int64(len(idx)) != t.IndexLength {
		return nil, fmt.Errorf("bundle index is %d bytes, trailer says %d: %w", len(idx), t.IndexLength, ErrCorrupt)
	}
	if sha256.Sum256(idx) != t.IndexSHA256 {
		return nil, fmt.Errorf("bundle index does not match its sha256 in the trailer: %w", ErrCorrupt)
	}
	if binary.LittleEndian.Uint32(idx) != BundleFrameMagic || binary.LittleEndian.Uint32(idx[4:]) != uint32(len(idx)-8) ||
		string(idx[8:16]) != bundleIndexTag {
		return nil, fmt.Errorf("bundle index frame header is not magic %#08x, size %d, tag %s: %w", BundleFrameMagic, len(idx)-8, bundleIndexTag, ErrCorrupt)
	}
	parts := make([]BundlePart, 0, t.Parts)
	rest := idx[bundleIndexHeader:]
	var off int64
	for len(rest) > 0 {
		if len(parts) == t.Parts {
			return nil, fmt.Errorf("bundle index holds more than the %d parts its trailer claims: %w", t.Parts, ErrCorrupt)
		}
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			return nil, fmt.Errorf("bundle index line %d has no newline: %w", len(parts)+1, ErrCorrupt)
		}
		p, err := parseBundleLine(rest[:nl+1])
		if err != nil {
			return nil, fmt.Errorf("bundle index line %d: %w", len(parts)+1, err)
		}
		if n := len(parts); n > 0 && parts[n-1].Stream >= p.Stream {
			return nil, fmt.Errorf("bundle index line %d: stream %q after %q (not in ascending order, or twice): %w", n+1, p.Stream, parts[n-1].Stream, ErrCorrupt)
		}
		if p.Offset != off {
			return nil, fmt.Errorf("bundle index line %d: part %s at offset %d, the part before ends at %d (gap or overlap): %w", len(parts)+1, p.Stream, p.Offset, off, ErrCorrupt)
		}
		if p.Length < minBundlePart || p.Length > t.IndexOffset-off {
			return nil, fmt.Errorf("bundle index line %d: part %s of %d bytes at %d does not lie within the %d bytes of parts: %w", len(parts)+1, p.Stream, p.Length, p.Offset, t.IndexOffset, ErrCorrupt)
		}
		off += p.Length
		parts = append(parts, p)
		rest = rest[nl+1:]
	}
	if len(parts) != t.Parts {
		return nil, fmt.Errorf("bundle index holds %d parts, its trailer claims %d: %w", len(parts), t.Parts, ErrCorrupt)
	}
	if off != t.IndexOffset {
		return nil, fmt.Errorf("bundle parts end at %d, the index starts at %d: %w", off, t.IndexOffset, ErrCorrupt)
	}
	return parts, nil
}

// parseBundleLine decodes one index line, newline included, accepting
// only the form appendLine writes.
func parseBundleLine(line []byte) (BundlePart, error) {
	var p BundlePart
	sp := bytes.IndexByte(line, ' ')
	if sp < 1 || len(line)-sp != bundleLineFixed {
		return p, fmt.Errorf("not the form \"stream gen first last offset length sha256\": %w", ErrCorrupt)
	}
	p.Stream = string(line[:sp])
	if err := CheckStream(p.Stream); err != nil {
		return p, fmt.Errorf("%v: %w", err, ErrCorrupt)
	}
	f := line[sp:]
	hexField := func(at, n int) (uint64, bool) {
		if f[at-1] != ' ' {
			return 0, false
		}
		return parseHex(string(f[at : at+n]))
	}
	gen, ok1 := hexField(1, 8)
	first, ok2 := hexField(10, 16)
	last, ok3 := hexField(27, 16)
	offset, ok4 := hexField(44, 16)
	length, ok5 := hexField(61, 16)
	sum := string(f[78:142])
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 || f[77] != ' ' || !isHex64(sum) || f[142] != '\n' {
		return p, fmt.Errorf("part %s: fields are not fixed-width lower-case hex: %w", p.Stream, ErrCorrupt)
	}
	if gen == 0 || first == 0 || last < first {
		return p, fmt.Errorf("part %s: generation %d, seqs %d..%d: %w", p.Stream, gen, first, last, ErrCorrupt)
	}
	if offset > 1<<62 || length > 1<<62 {
		return p, fmt.Errorf("part %s: offset %d, length %d: %w", p.Stream, offset, length, ErrCorrupt)
	}
	p.Generation, p.FirstSeq, p.LastSeq = uint32(gen), first, last
	p.Offset, p.Length, p.SHA256 = int64(offset), int64(length), sum
	return p, nil
}

// isHex64 reports whether s is 64 lower-case hex digits (a SHA-256).
func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Bundle is an opened bundle: its trailer and index, checked, and the
// reader its parts are read from.
type Bundle struct {
	Trailer BundleTrailer
	Parts   []BundlePart
	r       io.ReaderAt
	size    int64
}

// OpenBundle reads a bundle's trailer and index from r, an object of size
// bytes: two reads (the trailer, then the index it locates), so that a
// store serves them as two ranged GETs. It refuses a bundle over limit
// bytes (DefaultMaxBundleBytes if limit <= 0; ErrSegmentTooLarge), and
// checks every size the trailer and index claim before allocating for it.
// The parts are not read: OpenPart and Section do that.
func OpenBundle(r io.ReaderAt, size, limit int64) (*Bundle, error) {
	if limit <= 0 {
		limit = DefaultMaxBundleBytes
	}
	if size > limit {
		return nil, fmt.Errorf("bundle of %d bytes (%s), over the limit of %d (%s): %w", size, sizeString(size), limit, sizeString(limit), ErrSegmentTooLarge)
	}
	if size < BundleTrailerSize {
		return nil, fmt.Errorf("bundle of %d bytes is shorter than its %d-byte trailer: %w", size, BundleTrailerSize, ErrCorrupt)
	}
	tr := make([]byte, BundleTrailerSize)
	if err := readFullAt(r, tr, size-BundleTrailerSize); err != nil {
		return nil, fmt.Errorf("read bundle trailer: %w", err)
	}
	t, err := ParseBundleTrailer(tr, size)
	if err != nil {
		return nil, err
	}
	idx := make([]byte, t.IndexLength)
	if err := readFullAt(r, idx, t.IndexOffset); err != nil {
		return nil, fmt.Errorf("read bundle index: %w", err)
	}
	parts, err := ParseBundleIndex(idx, t)
	if err != nil {
		return nil, err
	}
	return &Bundle{Trailer: t, Parts: parts, r: r, size: size}, nil
}

// readFullAt fills b from r at off; a short object is corruption.
func readFullAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		return fmt.Errorf("%d of %d bytes at %d (object shorter than it says): %w", n, len(b), off, ErrCorrupt)
	}
	return err
}

// Find returns the index of stream's part, if the bundle carries one.
func (b *Bundle) Find(stream string) (int, bool) {
	lo, hi := 0, len(b.Parts)
	for lo < hi {
		m := (lo + hi) / 2
		if b.Parts[m].Stream < stream {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo, lo < len(b.Parts) && b.Parts[lo].Stream == stream
}

// Section is part i's bytes as a reader (for a streaming reader such as
// NewSegmentReader); whoever reads it checks them against the part's
// SHA256 and metadata, as OpenPart does.
func (b *Bundle) Section(i int) *io.SectionReader {
	p := &b.Parts[i]
	return io.NewSectionReader(b.r, p.Offset, p.Length)
}

// OpenPart reads part i into buf (grown only if too small) and opens it as
// a segment: its bytes must hash to the index's SHA256 and its metadata
// name the stream, generation and seqs the index gives, or it is refused
// (ErrCorrupt) before anything else of it is used. The Segment's Hash is
// the verified hash; its records are decoded as any segment's
// (Segment.Records), under the reader's max_segment_bytes. It returns the
// part's bytes too (in buf's array when it was large enough).
func (b *Bundle) OpenPart(i int, buf []byte) (*Segment, []byte, error) {
	p := &b.Parts[i]
	if int64(cap(buf)) < p.Length {
		buf = make([]byte, p.Length)
	}
	buf = buf[:p.Length]
	if err := readFullAt(b.r, buf, p.Offset); err != nil {
		return nil, nil, fmt.Errorf("bundle part %s/%s: %w", p.Stream, p.Name(), err)
	}
	sum := sha256.Sum256(buf)
	if got := hex.EncodeToString(sum[:]); got != p.SHA256 {
		return nil, nil, fmt.Errorf("bundle part %s/%s: sha256 %s, index says %s: %w", p.Stream, p.Name(), got[:16], p.SHA256[:16], ErrCorrupt)
	}
	s, err := OpenPayload(buf)
	if err != nil {
		return nil, nil, fmt.Errorf("bundle part %s/%s: %w", p.Stream, p.Name(), err)
	}
	if m := &s.Meta; m.Stream != p.Stream || m.Generation != p.Generation || m.FirstSeq != p.FirstSeq || m.LastSeq != p.LastSeq {
		return nil, nil, fmt.Errorf("bundle part %s/%s holds segment %s/%s: %w", p.Stream, p.Name(), m.Stream, m.Name(), ErrCorrupt)
	}
	s.Hash = p.SHA256
	return s, buf, nil
}

// BundleName is the name of a writer's bundle number n (n >= 1) under its
// directory: 16 lower-case hex digits and ".bundle", so a listing sorts
// in the order they were written.
func BundleName(n uint64) string { return fmt.Sprintf("%016x.bundle", n) }

// ParseBundleName accepts exactly BundleName's form.
func ParseBundleName(name string) (uint64, bool) {
	const suffix = ".bundle"
	if len(name) != 16+len(suffix) || name[16:] != suffix {
		return 0, false
	}
	n, ok := parseHex(name[:16])
	return n, ok && n > 0
}
