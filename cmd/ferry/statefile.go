package main

import (
	"fmt"
	"io"

	"github.com/ferry-dr/ferry/internal/fsutil"
)

// maxStateFile caps the small JSON files a receiver publishes in its state
// dir (status.json, encryption.json), and a shipper in its spool (LOCK,
// status.json, state.json), as ferry status reads them.
const maxStateFile = 1 << 20

// readStateFile reads one of those files: a regular file (not a FIFO or a
// device that would never end), at most maxStateFile bytes.
func readStateFile(path string) ([]byte, error) {
	f, _, err := fsutil.OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err == nil && len(b) > maxStateFile {
		err = fmt.Errorf("%s is over %d bytes: not a file ferry wrote", path, maxStateFile)
	}
	return b, err
}
