//go:build !linux

package fsutil

import (
	"errors"
	"os"
)

// Syncfs is not offered here: callers check SyncfsReportsErrors first.
func Syncfs(*os.File) error { return errors.New("syncfs is Linux only") }

// SyncfsReportsErrors is false where there is no syncfs(2).
func SyncfsReportsErrors() bool { return false }
