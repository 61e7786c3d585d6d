package store

import (
	"fmt"
	"strings"

	"github.com/ferry-dr/ferry/batch"
)

// SegmentObject is an object whose name's last element is a segment name
// (batch.SegmentName): a segment of the stream named by its directory.
type SegmentObject struct {
	Name        string // full object name, "<stream>/GGGGGGGG-FFFFFFFFFFFFFFFF-LLLLLLLLLLLLLLLL.seg.zst"
	Gen         uint32
	First, Last uint64
}

// ParseSegmentObject parses name as a segment object; ok is false if its
// last element is not exactly a segment name.
func ParseSegmentObject(name string) (seg SegmentObject, ok bool) {
	base := name[strings.LastIndexByte(name, '/')+1:]
	gen, first, last, ok := batch.ParseSegmentName(base)
	if !ok {
		return SegmentObject{}, false
	}
	return SegmentObject{Name: name, Gen: gen, First: first, Last: last}, true
}

// Overlaps reports whether s and o, two objects in one directory, are
// different segments of the same generation that share a seq: what only
// two writers on one stream produce, and what Put refuses. Segments of
// different generations may overlap (a fork, as after a failover).
func (s SegmentObject) Overlaps(o SegmentObject) bool {
	return s.Gen == o.Gen && s.Name != o.Name && s.First <= o.Last && o.First <= s.Last
}

// OverlapError is the error of a Put of segment put that the stored
// segment stored overlaps. It wraps ErrConflict.
func OverlapError(put, stored SegmentObject) error {
	return fmt.Errorf("put %s (seq %d..%d): %w: %s (seq %d..%d) of the same generation %d overlaps it, "+
		"so two writers are shipping one stream (split brain); nothing was stored: stop all but one writer",
		put.Name, put.First, put.Last, ErrConflict, stored.Name, stored.First, stored.Last, put.Gen)
}
