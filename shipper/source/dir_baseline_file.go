package source

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ferry-dr/ferry/batch"
	"github.com/ferry-dr/ferry/internal/fsutil"
)

// dirBaselineFile is SPOOL/dirbaseline.json: the last baseline this spool
// completed (a batch.Baseline without stream and generation). The source
// reads it to tell whether a scheduled baseline was missed while it was
// down; ferry ship to write the last one's marker again at start
// (shipper.BaselineMarkers).
const dirBaselineFile = "dirbaseline.json"

// LoadLastBaseline reads the last baseline the spool in dir completed.
// ok is false when it has completed none.
func LoadLastBaseline(dir string) (b batch.Baseline, ok bool, err error) {
	path := filepath.Join(dir, dirBaselineFile)
	raw, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return b, false, nil
	}
	if err != nil {
		return b, false, fmt.Errorf("dir source: %w", err)
	}
	if err := json.Unmarshal(raw, &b); err != nil || b.BeginSeq == 0 || b.EndSeq <= b.BeginSeq {
		return b, false, fmt.Errorf("dir source: %s is damaged (%v); remove it (the next baseline then starts at once)", path, err)
	}
	return b, true, nil
}

// SaveLastBaseline records b as the last baseline the spool in dir
// completed (ferry sync --rejoin: the stream's last one, which a new spool
// did not ship itself).
func SaveLastBaseline(dir string, b batch.Baseline) error { return saveLastBaseline(dir, b) }

func saveLastBaseline(dir string, b batch.Baseline) error {
	raw, _ := json.Marshal(b)
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, dirBaselineFile), append(raw, '\n'), 0o644); err != nil {
		return fmt.Errorf("dir source: record the completed baseline: %w", err)
	}
	return nil
}
