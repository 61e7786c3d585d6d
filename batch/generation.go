package batch

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// A stream's history is a chain of generations, like PostgreSQL's
// timelines. Generation 1 begins the stream. Promoting a DR site begins
// generation G+1, forked at the last seq F the site had applied: the new
// generation inherits seqs 1..F of the history and its first segment
// starts at F+1, chained (prev_sha256) to the segment that ends at F. Each
// promotion is recorded in a create-only object beside the segments,
// <stream>/generations/GGGGGGGG.json (docs/FORMAT.md, "Generation
// records"); generation 1 is implicit and has none. History (history.go)
// interprets the records of one stream.

// GenerationVersion is the generation record format this ferry writes and
// reads.
const GenerationVersion = 1

// Generation is the JSON content of a generation record.
type Generation struct {
	Version    int       `json:"version"`
	Stream     string    `json:"stream"`
	Generation uint32    `json:"generation"`
	Parent     uint32    `json:"parent"`    // always Generation-1
	ForkSeq    uint64    `json:"fork_seq"`  // last seq inherited from the history before; the first segment starts at ForkSeq+1
	ForkHash   string    `json:"fork_hash"` // Hash of the segment that ends at ForkSeq; "" when ForkSeq is 0
	Time       time.Time `json:"time"`      // when the promotion was recorded
	Site       string    `json:"site"`      // the site promoted
	Host       string    `json:"host"`      // the host that ran the promotion
	Reason     string    `json:"reason"`    // "promote", "switchover", ...
}

// GenerationDir is the List dir of a stream's generation records.
func GenerationDir(stream string) string { return stream + "/generations/" }

// GenerationName is the fixed-width name of the record of generation gen
// (>= 2): GGGGGGGG.json in lower-case hex, so a listing sorts oldest first.
func GenerationName(gen uint32) string { return fmt.Sprintf("%08x.json", gen) }

// GenerationKey is the store object name of the record of generation gen.
func GenerationKey(stream string, gen uint32) string {
	return GenerationDir(stream) + GenerationName(gen)
}

// ParseGenerationName is the inverse of GenerationName; ok is false for any
// other name, including those of generations 0 and 1, which have no record.
func ParseGenerationName(name string) (gen uint32, ok bool) {
	const suffix = ".json"
	if len(name) != 8+len(suffix) || name[8:] != suffix {
		return 0, false
	}
	g, ok := parseHex(name[:8])
	if !ok || g < 2 {
		return 0, false
	}
	return uint32(g), true
}

// MarshalGeneration encodes a record, setting its version and putting its
// time in UTC. The content depends only on the record, so writing it again
// after a failed attempt stores the same bytes. A record ParseGeneration
// would refuse is refused here: records are create-only, so a bad one
// could never be replaced and would stop every reader of the stream.
func MarshalGeneration(g Generation) ([]byte, error) {
	g.Version = GenerationVersion
	g.Time = g.Time.UTC()
	if err := g.check(); err != nil {
		return nil, fmt.Errorf("generation record %s: %w", GenerationName(g.Generation), err)
	}
	data, err := json.Marshal(g)
	if err != nil { // check has ruled out the times json cannot encode
		return nil, fmt.Errorf("generation record %s: %w", GenerationName(g.Generation), err)
	}
	return append(data, '\n'), nil
}

// ParseGeneration decodes the record stored under name (a GenerationName)
// and checks it against the name and itself (parent, fork seq and hash,
// stream name). Unknown fields are ignored; a higher version is refused
// with an upgrade message. The time is returned in UTC.
func ParseGeneration(name string, data []byte) (Generation, error) {
	var g Generation
	gen, ok := ParseGenerationName(name)
	if !ok {
		return g, fmt.Errorf("generation record %s: not a generation record name", name)
	}
	if err := json.Unmarshal(data, &g); err != nil {
		return g, fmt.Errorf("generation record %s is damaged: %v", name, err)
	}
	switch {
	case g.Version > GenerationVersion:
		return g, fmt.Errorf("generation record %s has version %d; this ferry reads %d (upgrade ferry)", name, g.Version, GenerationVersion)
	case g.Version < 1:
		return g, fmt.Errorf("generation record %s is damaged: version %d", name, g.Version)
	case g.Generation != gen:
		return g, fmt.Errorf("generation record %s is damaged: it says generation %d", name, g.Generation)
	}
	if err := g.check(); err != nil {
		return g, fmt.Errorf("generation record %s is damaged: %w", name, err)
	}
	g.Time = g.Time.UTC()
	return g, nil
}

// check reports the first field of g that is inconsistent with the others;
// the version is the caller's business.
func (g Generation) check() error {
	switch {
	case g.Generation < 2:
		return fmt.Errorf("generation %d has no record (generation 1 is implicit)", g.Generation)
	case g.Parent != g.Generation-1:
		return fmt.Errorf("generation %d has parent %d, want %d", g.Generation, g.Parent, g.Generation-1)
	case g.ForkSeq == math.MaxUint64:
		return fmt.Errorf("fork_seq %d leaves no seq for generation %d", g.ForkSeq, g.Generation)
	case g.ForkSeq == 0 && g.ForkHash != "":
		return fmt.Errorf("fork_hash %q with fork_seq 0, want \"\"", g.ForkHash)
	case g.ForkSeq > 0 && (!isHexHash(g.ForkHash) || g.ForkHash == ZeroHash):
		return fmt.Errorf("fork_hash %q is not the SHA-256 of the segment ending at fork_seq %d", g.ForkHash, g.ForkSeq)
	}
	if y := g.Time.UTC().Year(); y < 0 || y > 9999 {
		return fmt.Errorf("time %s is out of range", g.Time.UTC())
	}
	if err := CheckStream(g.Stream); err != nil {
		return err
	}
	return nil
}

// isHexHash reports whether s is a SHA-256 in lower-case hex, as Hash
// writes it.
func isHexHash(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
