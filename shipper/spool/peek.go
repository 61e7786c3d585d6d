package spool

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Generation reads the generation the state.json of the spool in dir pins,
// without opening the spool: its owner may be running (ferry switchover
// checks a primary before stopping it). A spool of another stream, or a
// damaged state.json, is an error naming it.
func Generation(dir, stream string) (uint32, error) {
	path := filepath.Join(dir, "state.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("spool %s: %w", dir, err)
	}
	var st spoolState
	if err := json.Unmarshal(raw, &st); err != nil || st.Generation == 0 {
		return 0, fmt.Errorf("%s is damaged (%v); restore it or start a new spool", path, err)
	}
	if st.Stream != stream {
		return 0, fmt.Errorf("spool belongs to stream %q, not %q", st.Stream, stream)
	}
	return st.Generation, nil
}
