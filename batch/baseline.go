package batch

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// A baseline of a directory-tree stream is a full copy of the tree shipped
// between a baseline-begin and a baseline-end record (docs/DIRTREE.md). A
// replica built from the begin record onward is exact once it has applied
// the end record, so retention may drop the segments before the begin and
// a restore may start there. The shipper records each completed baseline
// in a small marker object beside the segments (docs/FORMAT.md,
// "Baseline markers"), so finding one needs a List, not a read of every
// segment.

// BaselineVersion is the marker format this ferry writes and reads.
const BaselineVersion = 1

// Baseline is the JSON content of a marker object.
type Baseline struct {
	Version    int       `json:"version"`
	Stream     string    `json:"stream"`
	Generation uint32    `json:"generation"`
	BeginSeq   uint64    `json:"begin_seq"`  // seq of the baseline-begin record
	EndSeq     uint64    `json:"end_seq"`    // seq of the baseline-end record
	BeginTime  time.Time `json:"begin_time"` // time of the baseline-begin record
	EndTime    time.Time `json:"end_time"`   // time of the baseline-end record
	Paths      uint64    `json:"paths"`      // paths the baseline shipped
}

// BaselineDir is the List dir of a stream's baseline markers.
func BaselineDir(stream string) string { return stream + "/baselines/" }

// BaselineName is the fixed-width marker name of a baseline:
// GGGGGGGG-BBBBBBBBBBBBBBBB-EEEEEEEEEEEEEEEE.json (generation, begin and end
// seq in lower-case hex), so a listing sorts oldest first.
func BaselineName(gen uint32, begin, end uint64) string {
	return fmt.Sprintf("%08x-%016x-%016x.json", gen, begin, end)
}

// BaselineKey is the store object name of a marker.
func BaselineKey(stream string, b Baseline) string {
	return BaselineDir(stream) + BaselineName(b.Generation, b.BeginSeq, b.EndSeq)
}

var baselineRE = regexp.MustCompile(`^([0-9a-f]{8})-([0-9a-f]{16})-([0-9a-f]{16})\.json$`)

// ParseBaselineName is the inverse of BaselineName; ok is false for any
// other name.
func ParseBaselineName(name string) (gen uint32, begin, end uint64, ok bool) {
	m := baselineRE.FindStringSubmatch(name)
	if m == nil {
		return 0, 0, 0, false
	}
	g, _ := strconv.ParseUint(m[1], 16, 32)
	b, _ := strconv.ParseUint(m[2], 16, 64)
	e, _ := strconv.ParseUint(m[3], 16, 64)
	if b == 0 || e <= b {
		return 0, 0, 0, false
	}
	return uint32(g), b, e, true
}

// MarshalBaseline encodes a marker. The content depends only on the
// baseline, so writing it again after a failed attempt stores the same
// bytes (stores refuse different content under a used name).
func MarshalBaseline(b Baseline) []byte {
	b.Version = BaselineVersion
	b.BeginTime, b.EndTime = b.BeginTime.UTC(), b.EndTime.UTC()
	data, _ := json.Marshal(b)
	return append(data, '\n')
}

// ParseBaseline decodes the marker stored under name (a BaselineName) and
// checks it against the name. Unknown fields are ignored; a higher version
// is refused with an upgrade message.
func ParseBaseline(name string, data []byte) (Baseline, error) {
	var b Baseline
	gen, begin, end, ok := ParseBaselineName(name)
	if !ok {
		return b, fmt.Errorf("baseline marker %s: not a marker name", name)
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return b, fmt.Errorf("baseline marker %s is damaged: %v", name, err)
	}
	switch {
	case b.Version > BaselineVersion:
		return b, fmt.Errorf("baseline marker %s has version %d; this ferry reads %d (upgrade ferry)", name, b.Version, BaselineVersion)
	case b.Version < 1:
		return b, fmt.Errorf("baseline marker %s is damaged: version %d", name, b.Version)
	case b.Generation != gen || b.BeginSeq != begin || b.EndSeq != end:
		return b, fmt.Errorf("baseline marker %s is damaged: it says generation %d seq %d..%d", name, b.Generation, b.BeginSeq, b.EndSeq)
	}
	return b, nil
}
