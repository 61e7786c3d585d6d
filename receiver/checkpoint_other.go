//go:build !linux

package receiver

import (
	"errors"
	"os"
)

// fdatasync is a plain fsync where fdatasync is not offered.
func fdatasync(f *os.File) error { return f.Sync() }

// syncfs is not offered here: there is no SyncGroup (NewSyncGroup).
func syncfs(*os.File) error { return errors.New("syncfs is Linux only") }

func syncfsReportsErrors() bool { return false }
