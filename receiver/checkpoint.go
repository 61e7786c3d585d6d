// Package receiver is the secondary side: it lists a store after its
// checkpoint, verifies each segment (checksum, sequence continuity, hash
// chain), applies it through an Applier, and only then advances a durable
// checkpoint. Segments are applied strictly in order, exactly once for
// appliers that keep state in the checkpoint.
package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
)

// Checkpoint is STATE/checkpoint.json: how far the receiver has applied.
type Checkpoint struct {
	Format     int             `json:"format"`
	Stream     string          `json:"stream"`
	Generation uint32          `json:"generation"`
	LastSeq    uint64          `json:"last_seq"`  // last applied seq, 0 = nothing yet
	LastHash   string          `json:"last_hash"` // hash of the last applied segment
	Segment    string          `json:"segment,omitempty"`
	AppliedAt  time.Time       `json:"applied_at,omitzero"`
	Applier    json.RawMessage `json:"applier,omitempty"` // applier state at LastSeq
	// PartialHash is set when a restore boundary fell inside segment
	// Segment: its records up to LastSeq are applied, the rest are not,
	// and LastHash is the hash of the segment before it (restore.go).
	PartialHash string `json:"partial_hash,omitempty"`
}

const checkpointFile = "checkpoint.json"

// LoadCheckpoint reads the checkpoint in dir. ok is false when there is
// none yet.
func LoadCheckpoint(dir string) (cp Checkpoint, ok bool, err error) {
	path := filepath.Join(dir, checkpointFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return cp, false, nil
	}
	if err != nil {
		return cp, false, err
	}
	if err := json.Unmarshal(raw, &cp); err != nil {
		return cp, false, fmt.Errorf("checkpoint %s is damaged: %v", path, err)
	}
	if cp.Format != 1 {
		return cp, false, fmt.Errorf("checkpoint %s has format %d; this ferry reads 1", path, cp.Format)
	}
	return cp, true, nil
}

func saveCheckpoint(dir string, cp Checkpoint) error {
	raw, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, checkpointFile), append(raw, '\n'), 0o644)
}

func newCheckpoint(stream string, gen uint32) Checkpoint {
	return Checkpoint{Format: 1, Stream: stream, Generation: gen, LastHash: batch.ZeroHash}
}
