package batch

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// A stream's history in a store normally starts at seq 1. When it does
// not, a start marker beside the segments says why the records before it
// are absent on purpose (docs/FORMAT.md, "Start markers"): retention
// pruned them, or a target was added to a running stream with `start_now`
// and began at the seq the spool stood at. `ferry verify` accepts an
// archive that starts at or before a start marker (or at a baseline), and
// reports any other late start as a defect: records are missing.

// StartVersion is the start marker format this ferry writes and reads.
const StartVersion = 1

// Why a stream's history in a store starts past seq 1 (Start.Reason).
const (
	StartPruned    = "pruned"     // retention deleted the segments before Seq
	StartNewTarget = "new-target" // a target added mid-stream began at Seq (start_now)
)

// Start is the JSON content of a start marker object.
type Start struct {
	Version    int    `json:"version"`
	Stream     string `json:"stream"`
	Generation uint32 `json:"generation"` // of the segment holding Seq
	// Seq is the first seq the store holds (or will hold) on purpose; the
	// records before it are absent by Reason.
	Seq uint64 `json:"seq"`
	// PrevSHA256 is the hash the segment starting at Seq chains to: that
	// of the segment ending at Seq-1, which the store does not hold.
	PrevSHA256 string    `json:"prev_sha256"`
	Reason     string    `json:"reason"`
	Target     string    `json:"target,omitempty"` // the target's name (new-target)
	Host       string    `json:"host,omitempty"`
	Time       time.Time `json:"time"`
}

// StartDir is the List dir of a stream's start markers.
func StartDir(stream string) string { return stream + "/starts/" }

// StartName is the fixed-width marker name of a start: GGGGGGGG-SSSSSSSSSSSSSSSS.json
// (generation and seq in lower-case hex), so a listing sorts oldest first.
func StartName(gen uint32, seq uint64) string { return fmt.Sprintf("%08x-%016x.json", gen, seq) }

// StartKey is the store object name of a start marker.
func StartKey(stream string, s Start) string {
	return StartDir(stream) + StartName(s.Generation, s.Seq)
}

var startRE = regexp.MustCompile(`^([0-9a-f]{8})-([0-9a-f]{16})\.json$`)

// ParseStartName is the inverse of StartName; ok is false for any other
// name.
func ParseStartName(name string) (gen uint32, seq uint64, ok bool) {
	m := startRE.FindStringSubmatch(name)
	if m == nil {
		return 0, 0, false
	}
	g, _ := strconv.ParseUint(m[1], 16, 32)
	s, _ := strconv.ParseUint(m[2], 16, 64)
	if g == 0 || s < 2 {
		return 0, 0, false // seq 1 needs no marker
	}
	return uint32(g), s, true
}

// MarshalStart encodes a start marker.
func MarshalStart(s Start) []byte {
	s.Version = StartVersion
	s.Time = s.Time.UTC()
	data, _ := json.Marshal(s)
	return append(data, '\n')
}

// ParseStart decodes the marker stored under name (a StartName) and
// checks it against the name. Unknown fields are ignored; a higher version
// is refused with an upgrade message.
func ParseStart(name string, data []byte) (Start, error) {
	var s Start
	gen, seq, ok := ParseStartName(name)
	if !ok {
		return s, fmt.Errorf("start marker %s: not a marker name", name)
	}
	if err := json.Unmarshal(data, &s); err != nil {
		return s, fmt.Errorf("start marker %s is damaged: %v", name, err)
	}
	switch {
	case s.Version > StartVersion:
		return s, fmt.Errorf("start marker %s has version %d; this ferry reads %d (upgrade ferry)", name, s.Version, StartVersion)
	case s.Version < 1:
		return s, fmt.Errorf("start marker %s is damaged: version %d", name, s.Version)
	case s.Generation != gen || s.Seq != seq:
		return s, fmt.Errorf("start marker %s is damaged: it says generation %d seq %d", name, s.Generation, s.Seq)
	case len(s.PrevSHA256) != len(ZeroHash):
		return s, fmt.Errorf("start marker %s is damaged: prev_sha256 %q is not a SHA-256", name, s.PrevSHA256)
	}
	return s, nil
}
