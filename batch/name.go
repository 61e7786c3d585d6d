package batch

import (
	"fmt"
	"math"

	"github.com/ferry-dr/ferry/internal/ident"
)

// SegmentSuffix ends every segment name; the payload is zstd, so tools
// recognise it.
const SegmentSuffix = ".seg.zst"

// SegmentName returns the fixed-width name of a segment:
// GGGGGGGG-FFFFFFFFFFFFFFFF-LLLLLLLLLLLLLLLL.seg.zst (generation, first and
// last seq in lower-case hex). Names sort lexically in (generation, seq)
// order.
func SegmentName(gen uint32, first, last uint64) string {
	return fmt.Sprintf("%08x-%016x-%016x%s", gen, first, last, SegmentSuffix)
}

// ParseSegmentName is the inverse of SegmentName. ok is false for any name
// that is not exactly a segment name (lower-case hex, fixed widths). The
// receiver parses every name it lists or is offered, so this avoids
// regexp and fmt.
func ParseSegmentName(name string) (gen uint32, first, last uint64, ok bool) {
	const n = 8 + 1 + 16 + 1 + 16
	if len(name) != n+len(SegmentSuffix) || name[8] != '-' || name[25] != '-' || name[n:] != SegmentSuffix {
		return 0, 0, 0, false
	}
	g, ok1 := parseHex(name[:8])
	f, ok2 := parseHex(name[9:25])
	l, ok3 := parseHex(name[26:n])
	if !ok1 || !ok2 || !ok3 || l < f {
		return 0, 0, 0, false
	}
	return uint32(g), f, l, true
}

// parseHex parses lower-case hex digits (at most 16) into a uint64.
func parseHex(s string) (uint64, bool) {
	var v uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case '0' <= c && c <= '9':
			v = v<<4 | uint64(c-'0')
		case 'a' <= c && c <= 'f':
			v = v<<4 | uint64(c-'a'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// NameAfter returns a name that sorts after every segment of generation gen
// whose first seq is <= seq, and before every segment with a higher first
// seq or generation: the List "after" argument that resumes after seq.
func NameAfter(gen uint32, seq uint64) string {
	return SegmentName(gen, seq, math.MaxUint64)
}

// SegmentKey is the store object name of a segment of stream.
func SegmentKey(stream, name string) string { return stream + "/" + name }

// StreamDir is the List dir holding a stream's segments.
func StreamDir(stream string) string { return stream + "/" }

// CheckStream validates a stream name: 1-128 characters from [A-Za-z0-9._@-]
// (ferry sync names its streams NAME@SITE),
// starting with a letter or digit, so it is safe as a path element.
func CheckStream(s string) error {
	if !validStream(s) {
		return fmt.Errorf("stream name %q invalid: use 1-128 of A-Z a-z 0-9 . _ - @ starting with a letter or digit", s)
	}
	return nil
}

// validStream is ^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$.
func validStream(s string) bool { return ident.Valid(s, "._@-") }
