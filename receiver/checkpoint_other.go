//go:build !linux

package receiver

import (
	"os"
)

// fdatasync is a plain fsync where fdatasync is not offered.
func fdatasync(f *os.File) error { return f.Sync() }
