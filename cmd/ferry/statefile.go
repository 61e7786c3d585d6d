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
	return readStateFileMax(path, maxStateFile)
}

// readStateFileMax is readStateFile with a cap of max bytes.
func readStateFileMax(path string, max int64) ([]byte, error) {
	f, _, err := fsutil.OpenRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err == nil && int64(len(b)) > max {
		err = fmt.Errorf("%s is over %d bytes: not a file ferry wrote", path, max)
	}
	return b, err
}
