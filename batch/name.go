package batch

import (
	"fmt"
	"math"
	"regexp"
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

var nameRE = regexp.MustCompile(`^([0-9a-f]{8})-([0-9a-f]{16})-([0-9a-f]{16})\.seg\.zst$`)

// ParseSegmentName is the inverse of SegmentName. ok is false for any name
// that is not exactly a segment name.
func ParseSegmentName(name string) (gen uint32, first, last uint64, ok bool) {
	m := nameRE.FindStringSubmatch(name)
	if m == nil {
		return 0, 0, 0, false
	}
	var g uint32
	var f, l uint64
	fmt.Sscanf(m[1], "%x", &g)
	fmt.Sscanf(m[2], "%x", &f)
	fmt.Sscanf(m[3], "%x", &l)
	if l < f {
		return 0, 0, 0, false
	}
	return g, f, l, true
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

var streamRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// CheckStream validates a stream name: 1-128 characters from [A-Za-z0-9._-],
// starting with a letter or digit, so it is safe as a path element.
func CheckStream(s string) error {
	if !streamRE.MatchString(s) {
		return fmt.Errorf("stream name %q invalid: use 1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit", s)
	}
	return nil
}
